"""``python -m benchmarks.variants``: per-token greedy latency of each architecture
of the family (GRU, Embedding inputs, bidirectional, stacked, attention) against
the seed's one-hot LSTM, on every runtime path and Keras, in one run.

Each variant is an untrained model of the same size (``benchmarks.synthetic``,
end token suppressed so every decode runs to the maximum length). Variants are
timed in alternating rounds, so a noisy spell on a shared machine slows them
all alike and the ratios hold.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from runtime.cli import add_version
from runtime.errors import Seq2SeqError

from .cached import EXAMPLE_TARGET, MAC_RATIO

# name -> (benchmarks.synthetic architecture options, encoder units per direction as a
# share of the latent size). "lstm-bidirectional" keeps the decoder's state at the
# latent size (half per direction); "-wide" doubles it (the full size per direction).
VARIANTS = {
    "lstm": ([], 1),
    "gru": (["--cell", "gru"], 1),
    "lstm-embedding": (["--embedding-dim", "64"], 1),
    "lstm-embedding-mask": (["--embedding-dim", "64", "--mask"], 1),
    "lstm-bidirectional": (["--bidirectional"], 0.5),
    "lstm-bidirectional-wide": (["--bidirectional"], 1),
    "lstm-2-layers": (["--layers", "2"], 1),
    "lstm-luong": (["--attention", "luong"], 1),
    "lstm-bahdanau": (["--attention", "bahdanau"], 1),
    # keras.io's KerasHub example at the latent size (d_model), 2 layers a side, 4 heads,
    # feed-forward 4x: the cached step (benchmarks.cached.transformer_run).
    "transformer": (None, 1),
}
PATHS = ("onnx", "onnx-fused", "tflite", "tflite-fused", "keras-tf.function")
# The targets: (variant, baseline, most allowed ratio of per-token times).
TARGETS = (("gru", "lstm", 1.0), ("lstm-embedding", "lstm", 1.0),
           ("lstm-bidirectional", "lstm", 2.2), ("lstm-bidirectional-wide", "lstm", 2.2),
           ("lstm-2-layers", "lstm", 2.2), ("lstm-luong", "lstm", 2.0),
           ("lstm-bahdanau", "lstm", 2.0))
# Attention variants: the best runtime path at least this many times faster per token
# than the keras.io loop (Keras predict per step).
PREDICT_TARGET = 1000
PREDICT_SENTENCES = 3  # predict costs tens of ms per step: a few sentences tell
# The Transformer's targets are benchmarks.cached's: per token at most MAC_RATIO times
# the LSTM's (best paths), and EXAMPLE_TARGET times faster than the example's own loop
# (its "keras-predict" row: the whole model called eagerly on the prefix per step).


def _build(out: Path, name: str, latent: int) -> Path:
    from . import synthetic

    options, share = VARIANTS[name]
    if options is None and not (out / name / "artifact" / "artifact.json").exists():
        from .cached import transformer_run

        return transformer_run(out / name, latent, log=lambda *a, **k: None)
    if not (out / name / "artifact" / "artifact.json").exists():
        size = ["--latent-dim", str(max(1, int(latent * share)))]
        code = synthetic.main([*size, *options, "--out", str(out / name), "--force"])
        if code != 0:
            raise Seq2SeqError(f"building the {name} variant failed")
    return out / name


def _models(run_dir: Path) -> dict:
    from export.pipeline import load_keras_model
    from runtime.metadata import load_config
    from runtime.model import Seq2SeqModel, load
    from family.reference import ReferenceDecoder

    from .keras_backends import KerasBackend

    art = run_dir / "artifact"
    config = load_config(art)
    keras_model = load_keras_model(run_dir / "model.keras")
    models = {"onnx": load(art, backend="onnx", greedy="step"),
              "onnx-fused": load(art, backend="onnx", greedy="fused"),
              "tflite": load(art, backend="tflite", greedy="step"),
              "tflite-fused": load(art, backend="tflite", greedy="fused")}
    if config.step_kind == "cached":  # the example's own loop, eager and compiled
        from .cached import _SamplerLoop

        return {**models,
                "keras-tf.function": _SamplerLoop(keras_model, config.vocabulary, True),
                "keras-predict": _SamplerLoop(keras_model, config.vocabulary, False)}
    reference = ReferenceDecoder(keras_model, config.vocabulary)
    return {**models,
            "keras-tf.function": Seq2SeqModel(config, KerasBackend(reference, "tf.function"),
                                              "fp32"),
            "keras-predict": Seq2SeqModel(config, KerasBackend(reference, "predict"), "fp32")}


def measure(out: Path, latent: int, rounds: int, sentences: int,
            names: list[str] = list(VARIANTS), log=print) -> dict:
    models, texts = {}, {}
    for name in names:
        log(f"building {name}", flush=True)
        run_dir = _build(out, name, latent)
        models[name] = _models(run_dir)
        lines = (run_dir / "heldout.tsv").read_text(encoding="utf-8").splitlines()
        texts[name] = [ln.split("\t")[0] for ln in lines][:sentences]
    times = {(v, p): [] for v in names for p in PATHS}
    from .timing import decode_steps

    tokens = {}
    for v in names:  # warm up; every decode has the same length (end suppressed)
        for p in PATHS:
            models[v][p].translate(texts[v][:2])
        tokens[v] = decode_steps(models[v]["onnx"], texts[v][0])
    log(f"timing {len(names)} variants x {len(PATHS)} paths, {rounds} rounds", flush=True)
    for _ in range(rounds):
        for p in PATHS:
            for v in names:
                model = models[v][p]
                for t in texts[v]:
                    started = time.perf_counter()
                    model.translate([t])
                    times[(v, p)].append((time.perf_counter() - started) / tokens[v])
    per_token = {v: {p: float(np.percentile(times[(v, p)], 50) * 1e6) for p in PATHS}
                 for v in names}
    predict = {}
    attending = [v for v in names if "luong" in v or "bahdanau" in v or v == "transformer"]
    for v in attending + (["lstm"] if attending else []):
        log(f"timing {v} on Keras predict ({PREDICT_SENTENCES} sentences)", flush=True)
        model = models[v]["keras-predict"]
        model.translate(texts[v][:1])
        spent = []
        for t in texts[v][:PREDICT_SENTENCES]:
            started = time.perf_counter()
            model.translate([t])
            spent.append((time.perf_counter() - started) / tokens[v])
        predict[v] = float(np.median(spent) * 1e6)
    vs_lstm = {v: {p: per_token[v][p] / per_token["lstm"][p] for p in PATHS}
               for v in names}
    vs_keras = {v: {p: per_token[v]["keras-tf.function"] / per_token[v][p] for p in PATHS}
                for v in names}
    targets = []
    for variant, base, bound in TARGETS:
        if variant not in names:
            continue
        for p in PATHS[:4]:
            ratio = per_token[variant][p] / per_token[base][p]
            targets.append({"variant": variant, "baseline": base, "path": p,
                            "ratio": ratio, "bound": bound, "met": ratio <= bound})
    # The attention target compares best paths: the app loads whichever is fastest.
    best = {v: min(per_token[v][p] for p in PATHS[:4]) for v in names}
    for v in predict:
        if v != "lstm":
            bound, fewest = ((MAC_RATIO, EXAMPLE_TARGET) if v == "transformer"
                             else (2.0, PREDICT_TARGET))
            ratio = best[v] / best["lstm"]
            targets.append({"variant": v, "baseline": "lstm", "path": "best", "ratio": ratio,
                            "bound": bound, "met": ratio <= bound})
            speedup = predict[v] / best[v]
            targets.append({"variant": v, "baseline": "keras-predict", "path": "best",
                            "speedup": speedup, "bound": fewest, "met": speedup >= fewest})
    return {"latent_dim": latent, "rounds": rounds, "sentences": sentences, "tokens": tokens,
            "per_token_us": per_token, "vs_lstm": vs_lstm, "vs_keras_tf_function": vs_keras,
            "keras_predict_per_token_us": predict,
            "targets": targets}


def report(result: dict) -> str:
    head = ["variant"] + [f"{p} µs/token" for p in PATHS]
    rows = [head, ["---"] * len(head)]
    for v, row in result["per_token_us"].items():
        rows.append([v] + [f"{row[p]:.1f} ({result['vs_lstm'][v][p]:.2f}x)" for p in PATHS])
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    lines.append("Per token, p50, batch 1, one thread; in brackets: against the one-hot "
                 "LSTM on the same path. Runtime paths against Keras (tf.function):")
    for v, row in result["vs_keras_tf_function"].items():
        lines.append(f"- {v}: " + ", ".join(f"{p} {row[p]:.0f}x" for p in PATHS[:4]))
    if result["keras_predict_per_token_us"]:
        lines.append("")
        lines.append("Keras predict per step (the keras.io loop; for the transformer, the "
                     "example's GreedySampler loop calling the model eagerly), per token:")
        for v, us in result["keras_predict_per_token_us"].items():
            lines.append(f"- {v}: {us:.0f} µs")
    lines.append("")
    lines.append("Targets:")
    for t in result["targets"]:
        verdict = "met" if t["met"] else "NOT MET"
        if "speedup" in t:
            lines.append(f"- {t['variant']}, best path, against {t['baseline']}: "
                         f"{t['speedup']:.0f}x faster (at least {t['bound']}x): {verdict}")
        else:
            lines.append(f"- {t['variant']} / {t['baseline']} on {t['path']}: "
                         f"{t['ratio']:.2f}x (at most {t['bound']}x): {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.variants", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="alternating timing rounds")
    p.add_argument("--sentences", type=int, default=20, help="sentences per round and path")
    p.add_argument("--variants", default=",".join(VARIANTS), metavar="LIST",
                   help="comma-separated variants to measure (lstm, the baseline, always)")
    p.add_argument("--out", default="runs/variants-bench", metavar="DIR")
    args = p.parse_args(argv)
    names = ["lstm"] + [v for v in args.variants.split(",") if v and v != "lstm"]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    if args.rounds < 1 or args.sentences < 1 or args.latent_dim < 1:
        p.error("--rounds, --sentences and --latent-dim must be positive")
    out = Path(args.out)
    try:
        result = measure(out, args.latent_dim, args.rounds, args.sentences, names)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from .report import save

    save(Path(args.out), result, report(result))
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
