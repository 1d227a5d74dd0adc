"""``python -m benchmarks.scaling``: how the cost grows with the model.

Three sweeps of untrained models (``benchmarks.synthetic``, the end token
suppressed so every decode runs 20 tokens): the latent size (64 to 1024, the
seed's 28 characters), the output vocabulary (16 to 16,384 words, latent 256,
Embedding inputs of 64) and the input length (16 to 128 characters, latent 256).
Each model is exported in fp32, dynamic int8 and full int8; each path (ONNX
Runtime and LiteRT at each precision, and Keras ``tf.function``) is measured in a
process of its own, so its peak resident memory is its own: per-token and
per-sentence latency (batch 1, one thread, the greedy path export chose), the
files it loads, and peak RSS.

Each point has a floor beside it: the bytes of the step graph (its weights,
which every token reads) over this machine's measured memory read bandwidth:
what a token costs if its weights stream from memory. A path below it runs from
cache; one far above it pays per call or per op rather than per byte; one near
it is held back by memory, and there quantization (4x fewer bytes) pays most.
Writes results.json, report.md and scaling.png.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from runtime.cli import add_version
from runtime.errors import Seq2SeqError

PATHS = ("onnx", "onnx-int8", "onnx-int8-full", "tflite", "tflite-int8", "tflite-int8-full",
         "keras-tf.function")
# The three sweeps and, for each, what stays fixed (benchmarks.synthetic options).
SWEEPS = {
    "latent": ("latent size", (64, 128, 256, 512, 1024)),
    "vocabulary": ("output vocabulary (words)", (16, 256, 4096, 16384)),
    "input": ("input length (characters)", (16, 32, 64, 128)),
}
BASE_LATENT = 256
EMBEDDING = 64  # the vocabulary sweep's inputs: a 16k one-hot input is no one's model
OUTPUT_TOKENS = 20


def _options(sweep: str, value: int) -> tuple[str, list[str]]:
    """The point's directory name and its benchmarks.synthetic options."""
    if sweep == "latent":
        return f"latent{value}-in16", ["--latent-dim", str(value)]
    if sweep == "vocabulary":
        return f"words{value}", ["--latent-dim", str(BASE_LATENT), "--target-words", str(value),
                                 "--embedding-dim", str(EMBEDDING)]
    return (f"latent{BASE_LATENT}-in{value}",
            ["--latent-dim", str(BASE_LATENT), "--max-input-length", str(value)])


def _build(out: Path, sweep: str, value: int, log) -> Path:
    from . import synthetic

    name, options = _options(sweep, value)
    run_dir = out / name
    if not (run_dir / "artifact" / "artifact.json").exists():
        log(f"building {name} (fp32, int8, int8-full)", flush=True)
        code = synthetic.main([*options, "--max-output-length", str(OUTPUT_TOKENS),
                               "--quantize", "int8,int8-full", "--out", str(run_dir),
                               "--force"])
        if code != 0:
            raise Seq2SeqError(f"building the {name} model failed")
    return run_dir


def _texts(vocab, count: int) -> list[str]:
    """Inputs of the full input length: the encoder's cost is at its most."""
    rng = np.random.default_rng(0)
    return [vocab.sample_text(lambda pool: pool[rng.integers(len(pool))],
                              vocab.max_input_length) for _ in range(count)]


def _measure(run_dir: str, path: str, sentences: int, rounds: int) -> dict:
    """In a fresh process: load one path, decode, time, read the peak RSS."""
    from runtime.metadata import load_config

    from .timing import decode_steps

    art = Path(run_dir) / "artifact"
    config = load_config(art)
    vocab = config.vocabulary
    if path == "keras-tf.function":
        os.environ["TF_NUM_INTRAOP_THREADS"] = "1"
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
        from export.pipeline import load_keras_model
        from family.reference import ReferenceDecoder
        from runtime.model import Seq2SeqModel

        from .keras_backends import KerasBackend

        reference = ReferenceDecoder(load_keras_model(Path(run_dir) / "model.keras"), vocab)
        model = Seq2SeqModel(config, KerasBackend(reference, "tf.function"), "fp32")
    else:
        import runtime

        backend, _, precision = path.partition("-")
        model = runtime.load(art, backend=backend, precision=precision or "fp32")
    texts = _texts(vocab, sentences)
    model.translate(texts[:1])  # batch 1 as timed: tf.function traces it here
    # Decode steps per sentence (a quantized variant whose random-weight decodes
    # differ is still timed per step).
    steps = {t: decode_steps(model, t) for t in texts}
    times, tokens = [], []
    for _ in range(rounds):
        for t in texts:
            started = time.perf_counter()
            model.translate([t])
            times.append(time.perf_counter() - started)
            tokens.append(steps[t])
    per_token = float(np.median(np.array(times) / np.array(tokens)))
    return {"tokens": float(np.mean(tokens)), "sentence_us": float(np.median(times)) * 1e6,
            "per_token_us": per_token * 1e6, "peak_rss_bytes": _peak_rss(),
            "outputs": model.translate(texts)}


def _peak_rss() -> int:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss, which
    keeps the forking parent's peak across exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise Seq2SeqError("no VmHWM in /proc/self/status: peak memory is not measurable here")


def _in_own_process(*args) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(_measure, *args).result()


def read_bandwidth() -> float:
    """Bytes per second one core reads from memory: the best of 5 sums over 256 MiB
    (well past any cache here)."""
    a = np.ones(64 << 20, np.float32)
    best = min(_timed(a.sum) for _ in range(5))
    return a.nbytes / best


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def _files(run_dir: Path, path: str) -> tuple[int, int]:
    """(bytes of every file the path loads, bytes of its step graph)."""
    from runtime.metadata import load_config

    config = load_config(run_dir / "artifact")
    if path == "keras-tf.function":
        fp32 = config.graph("onnx", "fp32", "decoder_step")
        return (run_dir / "model.keras").stat().st_size, fp32.bytes
    fmt, _, precision = path.partition("-")
    graphs = [g for g in config.graphs if (g.format, g.precision) == (fmt, precision or "fp32")]
    step = next(g for g in graphs if g.name == "decoder_step")
    return sum(g.bytes for g in graphs), step.bytes


def measure(out: Path, sweeps: dict, paths: list[str], sentences: int, rounds: int,
            log=print) -> dict:
    log("measuring the memory read bandwidth", flush=True)
    bandwidth = read_bandwidth()
    points = []
    for sweep, values in sweeps.items():
        for value in values:
            run_dir = _build(out, sweep, value, log)
            fp32 = None  # the first fp32 path's decodes, which the others are held to
            for path in paths:
                log(f"timing {run_dir.name} on {path}", flush=True)
                got = _in_own_process(str(run_dir), path, sentences, rounds)
                outputs = got.pop("outputs")
                if fp32 is None and path in ("onnx", "tflite", "keras-tf.function"):
                    fp32 = outputs
                size, step_bytes = _files(run_dir, path)
                points.append({"sweep": sweep, "value": value, "path": path, **got,
                               "model_bytes": size, "step_bytes": step_bytes,
                               "floor_us": step_bytes / bandwidth * 1e6,
                               "agrees_with_fp32": None if fp32 is None else float(np.mean(
                                   [a == b for a, b in zip(outputs, fp32)]))})
    return {"read_bandwidth_bytes_per_s": bandwidth, "sentences": sentences, "rounds": rounds,
            "output_tokens": OUTPUT_TOKENS, "base_latent": BASE_LATENT, "points": points,
            "cpu": _cpu()}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def report(r: dict) -> str:
    lines = [f"Batch 1, one thread, {r['output_tokens']} tokens a sentence, median of "
             f"{r['rounds']} rounds of {r['sentences']} sentences; {r['cpu']}; memory read "
             f"bandwidth {r['read_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s (one core). Floor: "
             "the step graph's bytes over that bandwidth.", ""]
    for sweep, (label, _) in SWEEPS.items():
        rows = [p for p in r["points"] if p["sweep"] == sweep]
        if not rows:
            continue
        lines += [f"### By {label}", "",
                  f"| {label} | path | µs/token | floor µs | ms/sentence | tokens | files KiB "
                  "| peak RSS MiB | = fp32 |", "|---|---|---|---|---|---|---|---|---|"]
        for p in rows:
            lines.append(f"| {p['value']} | {p['path']} | {p['per_token_us']:.1f} | "
                         f"{p['floor_us']:.2f} | {p['sentence_us'] / 1e3:.2f} | {p['tokens']:.1f} | "
                         f"{p['model_bytes'] / 1024:.0f} | {p['peak_rss_bytes'] / 2**20:.0f} | "
                         f"{_share(p['agrees_with_fp32'])} |")
        lines.append("")
    lines.append("= fp32: the share of decodes equal to the fp32 path's. The models are "
                 "untrained, so their distributions are flat and a quantized variant's "
                 "argmax moves easily; on a trained model export's accuracy gate measures "
                 "it.")
    return "\n".join(lines)


def _share(value) -> str:
    return "-" if value is None else f"{value:.0%}"


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [s for s in SWEEPS if any(p["sweep"] == s for p in r["points"])]
    fig, axes = plt.subplots(2, len(sweeps), figsize=(5 * len(sweeps), 8), squeeze=False)
    for col, sweep in enumerate(sweeps):
        rows = [p for p in r["points"] if p["sweep"] == sweep]
        top, bottom = axes[0][col], axes[1][col]
        for name in dict.fromkeys(p["path"] for p in rows):
            mine = [p for p in rows if p["path"] == name]
            x = [p["value"] for p in mine]
            line, = top.plot(x, [p["per_token_us"] for p in mine], marker="o", label=name)
            if not name.startswith("keras"):
                top.plot(x, [p["floor_us"] for p in mine], ls=":", color=line.get_color())
            bottom.plot(x, [p["peak_rss_bytes"] / 2**20 for p in mine], marker="o",
                        label=f"{name} peak RSS", color=line.get_color())
            bottom.plot(x, [p["model_bytes"] / 2**20 for p in mine], ls="--",
                        color=line.get_color())
        for ax in (top, bottom):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.set_xlabel(SWEEPS[sweep][0])
        top.set_ylabel("µs per token (dotted: the bandwidth floor)")
        bottom.set_ylabel("MiB: peak RSS (solid), files (dashed)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("How the cost grows: batch 1, one thread")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _values(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    for sweep, (label, values) in SWEEPS.items():
        p.add_argument(f"--{sweep}", type=_values, default=values, metavar="LIST",
                       help=f"the {label} sweep, comma-separated (empty: skip it); "
                            f"default {','.join(map(str, values))}")
    p.add_argument("--paths", default=",".join(PATHS), metavar="LIST",
                   help=f"comma-separated, of {', '.join(PATHS)}")
    p.add_argument("--sentences", type=int, default=10, help="sentences per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="runs/scaling", metavar="DIR")
    args = p.parse_args(argv)
    paths = [x for x in args.paths.split(",") if x]
    unknown = [x for x in paths if x not in PATHS]
    if unknown or not paths:
        p.error(f"unknown path(s) {', '.join(unknown) or '(none given)'}; choose from "
                f"{', '.join(PATHS)}")
    if args.sentences < 1 or args.rounds < 1:
        p.error("--sentences and --rounds must be positive")
    sweeps = {s: getattr(args, s) for s in SWEEPS if getattr(args, s)}
    if not sweeps:
        p.error("every sweep is empty: nothing to measure")
    out = Path(args.out)
    try:
        result = measure(out, sweeps, paths, args.sentences, args.rounds)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .report import save

    save(out, result, report(result))
    chart(result, out / "scaling.png")
    print(f"wrote {out}/scaling.png")
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
