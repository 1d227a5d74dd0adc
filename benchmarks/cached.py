"""``python -m benchmarks.cached``: the Transformer with a cached step, per token,
against the prefix step, the example's own loop and the RNNs.

keras.io's KerasHub translation model (``benchmarks.keras_hub_translation``,
untrained at the sizes asked, the end token suppressed so every decode runs as long
as asked) is exported twice: with the cached step (``--step cached``, the key/value
caches as state, O(t) a token) and with the prefix step (O(t²)). Against them: the
example's own decode loop (``GreedySampler`` calling the whole model eagerly on the
prompt at every step), the same loop on a ``tf.function`` of the model, and the
plain one-hot LSTM and the Luong-attention LSTM of ``benchmarks.synthetic``. Paths
are timed in alternating rounds, so a noisy spell slows them all alike.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from runtime.cli import add_version
from runtime.errors import Seq2SeqError

from .prefix import RUNTIME_PATHS, _runtime_paths, _time

# The targets at d_model 128, 2 layers, 4 heads, feed-forward 512, 16 input
# steps, 20 tokens: per token at most the multiply-add ratio (about 481k against the
# latent-128 LSTM's 84k) times the LSTM's, and 300x faster than the example's loop.
MAC_RATIO = 5.8
EXAMPLE_TARGET = 300


def _hub(out: Path, d_model: int, layers: int, heads: int, ff: int, source: int,
         length: int, words: int, log,
         exports=(("cached", "cached"), ("prefix", "prefix"))):
    """The example's model, a word vocabulary and texts; exported, for each
    (directory, step) of ``exports``, with that step to ``out/directory``."""
    import keras

    import export
    from runtime.vocab import InputPadding, Vocabulary

    from . import keras_hub_translation as kh

    keras.utils.set_random_seed(0)
    model = kh.build(embed_dim=d_model, intermediate_dim=ff, num_heads=heads,
                     num_layers=layers, eng_vocab_size=words + 2, spa_vocab_size=words + 4,
                     dropout=0.1, sequence_length=max(source, length))
    vocab = Vocabulary(tuple(["", "[UNK]"] + [f"w{i}" for i in range(words)]),
                       tuple(["", "[UNK]", "[start]", "[end]"] + [f"t{i}" for i in range(words)]),
                       "[start]", "[end]", max_input_length=source, max_output_length=length,
                       padding=InputPadding("right", ""), unit="word", target_unit="word",
                       unknown_token="[UNK]")
    dense = model.outputs[0]._keras_history[0].layers[-1]  # the decoder's softmax Dense
    kernel, bias = dense.get_weights()
    bias[[0, 1, vocab.end_id]] = -30.0  # never padding, [UNK] or the end: full-length decodes
    dense.set_weights([kernel, bias])
    rng = np.random.default_rng(1)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, words, source)) for _ in range(16)]
    for directory, step in exports:
        log(f"exporting the Transformer with the {step} step", flush=True)
        export.export_model(model, vocab, out / directory, texts=texts, force=True, step=step,
                            quantize=("int8", "fp16") if step == "cached" else (),
                            log=lambda *a, **k: None)
    return model, vocab, texts


def transformer_run(out: Path, width: int, log=print) -> Path:
    """The Transformer row of ``benchmarks.variants``: the example at the issue's
    shape for a given width (2 layers, 4 heads, feed-forward 4x the width), with
    the cached step in ``out/artifact``, beside ``model.keras`` and ``heldout.tsv``
    as ``benchmarks.synthetic`` writes them."""
    model, vocab, texts = _hub(out, width, 2, 4, 4 * width, 16, 20, 40, log,
                               exports=(("artifact", "cached"),))
    model.save(out / "model.keras")
    (out / "heldout.tsv").write_text("".join(f"{t}\t-\n" for t in texts), encoding="utf-8")
    return out


class _SamplerLoop:
    """The example's ``decode_sequences``: ``GreedySampler`` over the whole model, its
    ``next`` reading position ``index - 1``; ``compiled`` calls a tf.function."""

    def __init__(self, model, vocab, compiled: bool):
        import tensorflow as tf

        self.vocab = vocab
        call = (lambda s, t: model([s, t], training=False))
        self.call = tf.function(call) if compiled else call

    def translate(self, texts, max_length=None):
        import keras_hub
        from keras import ops

        vocab = self.vocab
        ids = ops.convert_to_tensor(vocab.encode_inputs(texts))

        def next(prompt, cache, index):
            return self.call(ids, prompt)[:, index - 1, :], None, cache

        steps = min(max_length or vocab.max_output_length, vocab.max_output_length)
        # The example generates length - 1 tokens after the start: a conservative
        # count here, as the time is divided by the tokens asked for.
        prompt = np.zeros((len(texts), min(steps + 1, vocab.max_output_length)), np.int32)
        prompt[:, 0] = vocab.start_id
        out = keras_hub.samplers.GreedySampler()(next, ops.convert_to_tensor(prompt),
                                                 stop_token_ids=[vocab.end_id], index=1)
        return [vocab.decode_target([int(t) for t in row[1:]]) for row in np.asarray(out)]


def _rnns(out: Path, latent: int, log) -> tuple[dict, dict]:
    from export.pipeline import check_texts
    from runtime.vocab import Vocabulary

    from . import synthetic

    dirs, texts = {}, {}
    for name, options in (("lstm", []), ("lstm-luong", ["--attention", "luong"])):
        log(f"building the {name}", flush=True)
        if synthetic.main(["--latent-dim", str(latent), *options, "--out", str(out / name),
                           "--force"]):
            raise Seq2SeqError(f"building the {name} failed")
        dirs[name] = out / name / "artifact"
        vocab = Vocabulary.load(out / name / "vocab.json")
        texts[name] = check_texts(vocab, out / name / "heldout.tsv", 16)
    return dirs, texts


def measure(out: Path, d_model: int, layers: int, heads: int, ff: int, source: int,
            length: int, latent: int, rounds: int, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    import runtime

    model, vocab, t_texts = _hub(out / "transformer", d_model, layers, heads, ff, source,
                                 length, 40, log)
    models, texts = {}, {}
    for step in ("cached", "prefix"):
        for p, m in _runtime_paths(out / "transformer" / step).items():
            models[(f"transformer-{step}", p)] = m
        texts[f"transformer-{step}"] = t_texts
    for backend, precision in (("onnx", "int8"), ("tflite", "int8"), ("tflite", "fp16")):
        models[("transformer-cached", f"{backend}-{precision}")] = runtime.load(
            out / "transformer" / "cached", backend=backend, precision=precision,
            greedy="step")
    models[("transformer", "keras-example-loop")] = _SamplerLoop(model, vocab, False)
    models[("transformer", "keras-tf.function")] = _SamplerLoop(model, vocab, True)
    texts["transformer"] = t_texts
    rnn_dirs, rnn_texts = _rnns(out, latent, log)
    texts.update(rnn_texts)
    for name, artifact in rnn_dirs.items():
        for p, m in _runtime_paths(artifact).items():
            models[(name, p)] = m
    lengths = sorted({max(1, length // 4), max(1, length // 2), length})
    for key, m in models.items():  # warm up (traces the tf.function at every length)
        for n in lengths:
            m.translate(texts[key[0]][:1], max_length=n)
    log(f"timing {len(models)} paths at output lengths {lengths}, {rounds} rounds", flush=True)
    slow = {("transformer", "keras-example-loop"), ("transformer", "keras-tf.function")}
    per_token = _time(models, texts, lengths, rounds, slow)
    table: dict = {}
    for (name, path, n), us in per_token.items():
        table.setdefault(name, {}).setdefault(path, {})[str(n)] = us
    return {"d_model": d_model, "layers": layers, "heads": heads, "ff_dim": ff,
            "source_steps": source, "length": length, "latent_dim": latent, "rounds": rounds,
            "lengths": lengths, "per_token_us": table, **_ratios(table, lengths, length)}


def _ratios(table: dict, lengths: list[int], length: int) -> dict:
    def best(name, n):
        return min(table[name][p][str(n)] for p in RUNTIME_PATHS)

    n = str(length)
    cached = best("transformer-cached", length)
    lstm = best("lstm", length)
    example = table["transformer"]["keras-example-loop"][n] / cached
    targets = [{"what": f"cached / LSTM latent, best paths, {length} tokens",
                "ratio": cached / lstm, "bound": MAC_RATIO, "met": cached / lstm <= MAC_RATIO},
               {"what": f"example's loop / cached, {length} tokens", "speedup": example,
                "bound": EXAMPLE_TARGET, "met": example >= EXAMPLE_TARGET}]
    return {"prefix_vs_cached": {str(k): best("transformer-prefix", k)
                                 / best("transformer-cached", k) for k in lengths},
            "cached_vs_lstm": {p: table["transformer-cached"][p][n] / table["lstm"][p][n]
                               for p in RUNTIME_PATHS},
            "cached_vs_luong": {p: table["transformer-cached"][p][n]
                                / table["lstm-luong"][p][n] for p in RUNTIME_PATHS},
            "example_loop_vs_cached": example,
            "tf_function_vs_cached": table["transformer"]["keras-tf.function"][n] / cached,
            "targets": targets}


def report(r: dict) -> str:
    lengths = r["lengths"]
    lines = [f"Per token (µs, median; batch 1, one thread), by output length. Transformer "
             f"(KerasHub) d_model {r['d_model']}, {r['layers']} layers a side, {r['heads']} "
             f"heads, feed-forward {r['ff_dim']}, {r['source_steps']} input steps; LSTMs "
             f"latent {r['latent_dim']}:", "",
             "| model | path | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
             "|---|---|" + "---|" * len(lengths)]
    for name, paths in r["per_token_us"].items():
        for path, row in paths.items():
            lines.append(f"| {name} | {path} | "
                         + " | ".join(f"{row[str(n)]:.0f}" for n in lengths) + " |")
    lines += ["", "Prefix step / cached step, best paths: "
              + ", ".join(f"{v:.1f}x at {n}" for n, v in r["prefix_vs_cached"].items()),
              "Cached / plain LSTM, same path: "
              + ", ".join(f"{p} {v:.2f}x" for p, v in r["cached_vs_lstm"].items()),
              "Cached / Luong LSTM, same path: "
              + ", ".join(f"{p} {v:.2f}x" for p, v in r["cached_vs_luong"].items()),
              f"The example's loop / cached (best path): {r['example_loop_vs_cached']:.0f}x; "
              f"the same loop on tf.function / cached: {r['tf_function_vs_cached']:.0f}x",
              "", "Targets:"]
    for t in r["targets"]:
        verdict = "met" if t["met"] else "NOT MET"
        if "speedup" in t:
            lines.append(f"- {t['what']}: {t['speedup']:.0f}x (at least {t['bound']}x): "
                         f"{verdict}")
        else:
            lines.append(f"- {t['what']}: {t['ratio']:.2f}x (at most {t['bound']}x): {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cached", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--d-model", type=int, default=128, help="the Transformer's width")
    p.add_argument("--layers", type=int, default=2, help="Transformer layers a side")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ff-dim", type=int, default=512, help="feed-forward inner width")
    p.add_argument("--source-steps", type=int, default=16, help="input steps")
    p.add_argument("--length", type=int, default=20, help="the longest output")
    p.add_argument("--latent-dim", type=int, default=128, help="the LSTMs' width")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--out", default="runs/cached-bench", metavar="DIR")
    args = p.parse_args(argv)
    sizes = (args.d_model, args.layers, args.heads, args.ff_dim, args.source_steps,
             args.length, args.latent_dim, args.rounds)
    if min(sizes) < 1 or args.d_model % args.heads:
        p.error("sizes and --rounds must be positive, and --d-model must divide by --heads")
    try:
        result = measure(Path(args.out), *sizes)
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
