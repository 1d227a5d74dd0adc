"""``python -m benchmarks.prefix``: the prefix step, per token, as the output grows.

keras.io's Transformer (``benchmarks.keras_io_transformer``, untrained at the sizes
asked, the end token suppressed so every decode runs as long as asked) exported
through the prefix step, against that example's own decode loop (the whole model
called eagerly on the growing prefix, ``decode_sequence``) and the same loop on a
``tf.function`` of the model; and the seed's one-hot LSTM exported both ways
(structured step and ``--step prefix``), which shows what the prefix costs where
a structured step exists. Paths are timed in alternating rounds, so a noisy spell
slows them all alike.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from runtime.cli import add_version
from runtime.errors import Seq2SeqError

RUNTIME_PATHS = ("onnx", "onnx-fused", "tflite", "tflite-fused")


def _transformer(out: Path, d_model: int, length: int, words: int, log):
    """The example's model and a word vocabulary for it, exported to ``out``."""
    import keras

    import export
    from runtime.vocab import InputPadding, Vocabulary

    from . import keras_io_transformer as kio

    keras.utils.set_random_seed(0)
    model = kio.build(embed_dim=d_model, latent_dim=4 * d_model, num_heads=4,
                      sequence_length=length, vocab_size=words + 4)
    vocab = Vocabulary(tuple(["", "[UNK]"] + [f"w{i}" for i in range(words + 2)]),
                       tuple(["", "[UNK]", "[start]", "[end]"] + [f"t{i}" for i in range(words)]),
                       "[start]", "[end]", max_input_length=length, max_output_length=length,
                       padding=InputPadding("right", ""), unit="word", target_unit="word",
                       unknown_token="[UNK]")
    dense = model.outputs[0]._keras_history[0]  # the layer that makes the output
    kernel, bias = dense.get_weights()
    bias[[0, 1, vocab.end_id]] = -30.0  # never padding, [UNK] or the end: full-length decodes
    dense.set_weights([kernel, bias])
    rng = np.random.default_rng(1)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, words, length)) for _ in range(16)]
    log(f"exporting the Transformer (d_model {d_model}, {length} steps)", flush=True)
    export.export_model(model, vocab, out, texts=texts, force=True, log=lambda *a, **k: None)
    return model, vocab, texts


class _ExampleLoop:
    """keras.io's ``decode_sequence``: the whole model on the growing zero-padded
    prefix, position i read at step i; ``compiled`` runs it through a tf.function."""

    def __init__(self, model, vocab, compiled: bool):
        import tensorflow as tf

        self.vocab = vocab
        self.call = tf.function(lambda s, t: model([s, t], training=False)) if compiled else (
            lambda s, t: model([s, t], training=False))

    def translate(self, texts, max_length=None):
        vocab = self.vocab
        ids = vocab.encode_inputs(texts).astype(np.int64)
        prefix = np.zeros((1, vocab.max_output_length), np.int64)
        prefix[0, 0] = vocab.start_id
        out = []
        for i in range(max_length or vocab.max_output_length):
            token = int(np.argmax(np.asarray(self.call(ids, prefix))[0, i]))
            if token == vocab.end_id:
                break
            out.append(token)
            if i + 1 < prefix.shape[1]:
                prefix[0, i + 1] = token
        return [vocab.decode_target(out)]


def _lstm(out: Path, latent: int, log) -> dict:
    """The seed-size one-hot LSTM, structured and through the prefix step."""
    from export.pipeline import check_texts, export_artifact
    from runtime.vocab import Vocabulary

    from . import synthetic

    if synthetic.main(["--latent-dim", str(latent), "--out", str(out / "lstm"), "--force"]):
        raise Seq2SeqError("building the LSTM failed")
    vocab = Vocabulary.load(out / "lstm" / "vocab.json")
    texts = check_texts(vocab, out / "lstm" / "heldout.tsv", 16)
    log("exporting the LSTM through the prefix step", flush=True)
    export_artifact(out / "lstm" / "model.keras", vocab, out / "lstm-prefix", texts=texts,
                    force=True, step="prefix", log=lambda *a, **k: None)
    return {"lstm": out / "lstm" / "artifact", "lstm-prefix": out / "lstm-prefix"}, texts


def _runtime_paths(artifact: Path) -> dict:
    from runtime.model import load

    return {"onnx": load(artifact, backend="onnx", greedy="step"),
            "onnx-fused": load(artifact, backend="onnx", greedy="fused"),
            "tflite": load(artifact, backend="tflite", greedy="step"),
            "tflite-fused": load(artifact, backend="tflite", greedy="fused")}


def _time(models: dict, texts: dict, lengths, rounds: int, slow: set) -> dict:
    """Per (name, path, length): the median time per token (µs), alternating rounds."""
    times: dict = {}
    for _ in range(rounds):
        for n in lengths:
            for (name, path), model in models.items():
                batch = texts[name][:2] if (name, path) in slow else texts[name]
                for t in batch:
                    started = time.perf_counter()
                    model.translate([t], max_length=n)
                    times.setdefault((name, path, n), []).append(
                        (time.perf_counter() - started) / n)
    return {key: float(np.median(v) * 1e6) for key, v in times.items()}


def measure(out: Path, d_model: int, length: int, latent: int, rounds: int, log=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    model, vocab, t_texts = _transformer(out / "transformer", d_model, length, 24, log)
    models = {("transformer", p): m for p, m in _runtime_paths(out / "transformer").items()}
    models[("transformer", "keras-example-loop")] = _ExampleLoop(model, vocab, False)
    models[("transformer", "keras-tf.function")] = _ExampleLoop(model, vocab, True)
    lstm_dirs, l_texts = _lstm(out, latent, log)
    for name, artifact in lstm_dirs.items():
        for p, m in _runtime_paths(artifact).items():
            models[(name, p)] = m
    texts = {"transformer": t_texts, "lstm": l_texts, "lstm-prefix": l_texts}
    lengths = sorted({max(1, length // 4), max(1, length // 2), length})
    for m_key, m in models.items():  # warm up (traces the tf.function)
        m.translate(texts[m_key[0]][:1], max_length=2)
    log(f"timing {len(models)} paths at output lengths {lengths}, {rounds} rounds", flush=True)
    slow = {("transformer", "keras-example-loop")}
    per_token = _time(models, texts, lengths, rounds, slow)
    table = {}
    for (name, path, n), us in per_token.items():
        table.setdefault(name, {}).setdefault(path, {})[str(n)] = us
    best = {n: min(table["transformer"][p][str(n)] for p in RUNTIME_PATHS) for n in lengths}
    return {"d_model": d_model, "length": length, "latent_dim": latent, "rounds": rounds,
            "lengths": lengths, "per_token_us": table,
            "best_vs_example_loop": {str(n): table["transformer"]["keras-example-loop"][str(n)]
                                     / best[n] for n in lengths},
            "best_vs_tf_function": {str(n): table["transformer"]["keras-tf.function"][str(n)]
                                    / best[n] for n in lengths},
            "lstm_prefix_vs_structured": {
                p: {str(n): table["lstm-prefix"][p][str(n)] / table["lstm"][p][str(n)]
                    for n in lengths} for p in RUNTIME_PATHS}}


def report(r: dict) -> str:
    lengths = r["lengths"]
    lines = [f"Per token (µs, median; batch 1, one thread), by output length; Transformer "
             f"d_model {r['d_model']}, {r['length']} steps; LSTM latent {r['latent_dim']}:",
             "", "| model | path | " + " | ".join(f"{n} tokens" for n in lengths) + " |",
             "|---|---|" + "---|" * len(lengths)]
    for name, paths in r["per_token_us"].items():
        for path, row in paths.items():
            lines.append(f"| {name} | {path} | "
                         + " | ".join(f"{row[str(n)]:.0f}" for n in lengths) + " |")
    lines += ["", "Transformer, best runtime path against the example's own loop: "
              + ", ".join(f"{r['best_vs_example_loop'][str(n)]:.0f}x at {n}" for n in lengths),
              "... against the same loop on tf.function: "
              + ", ".join(f"{r['best_vs_tf_function'][str(n)]:.1f}x at {n}" for n in lengths),
              "The LSTM through the prefix step against its structured step: "
              + "; ".join(f"{p} " + ", ".join(f"{v:.1f}x" for v in row.values())
                          for p, row in r["lstm_prefix_vs_structured"].items())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.prefix", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--d-model", type=int, default=32, help="the Transformer's width")
    p.add_argument("--length", type=int, default=20,
                   help="source steps and the longest output (keras.io: 20)")
    p.add_argument("--latent-dim", type=int, default=128, help="the LSTM's width")
    p.add_argument("--rounds", type=int, default=3, help="alternating timing rounds")
    p.add_argument("--out", default="runs/prefix-bench", metavar="DIR")
    args = p.parse_args(argv)
    if min(args.d_model, args.length, args.latent_dim, args.rounds) < 1 or args.d_model % 4:
        p.error("--d-model (a multiple of 4, the heads), --length, --latent-dim and --rounds "
                "must be positive")
    try:
        result = measure(Path(args.out), args.d_model, args.length, args.latent_dim,
                         args.rounds)
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
