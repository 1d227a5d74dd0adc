"""``python -m benchmarks.synthetic``: an untrained model of a given size, exported,
for speed measurements at sizes the built-in data does not produce (the seed's
28 tokens / latent 128, keras.io's ~70-90 tokens / latent 256).

Decode speed does not depend on what the weights learned, only on the shapes
and on how many tokens are decoded; outputs of random weights are random, so
compare their latency, not their text.
"""
from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

from export.__main__ import QUANTIZE, comma_list
from runtime.cli import add_version
from runtime.errors import Seq2SeqError

CHARS = " " + string.ascii_letters + string.digits + ".,;:!?'\"-()[]/&%$#@+*=<>_~|^`{}\\"
ACCENTED = "àâäçéèêëîïôöùûüÿñœæÀÂÄÇÉÈÊËÎÏÔÖÙÛÜŸÑŒÆ"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.synthetic", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--input-tokens", type=int, default=28)
    p.add_argument("--target-tokens", type=int, default=28, help="start and end included")
    p.add_argument("--target-words", type=int, default=0, metavar="N",
                   help="a word-level output vocabulary of N words (w0 w1 ...) instead of "
                        "--target-tokens characters, for output vocabularies of thousands")
    p.add_argument("--max-input-length", type=int, default=16)
    p.add_argument("--max-output-length", type=int, default=20,
                   help="most tokens decoded, end token included")
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    p.add_argument("--layers", type=int, default=1, help="recurrent layers on each side")
    p.add_argument("--bidirectional", action="store_true", help="bidirectional encoder")
    p.add_argument("--embedding-dim", type=int, default=0, metavar="D",
                   help="Embedding inputs of width D (0: one-hot)")
    p.add_argument("--mask", action="store_true", help="Embedding(mask_zero=True)")
    p.add_argument("--attention", choices=("luong", "bahdanau"), default="",
                   help="the decoder attends over the encoder's outputs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quantize", type=comma_list(QUANTIZE), default=[], metavar="LIST",
                   help="comma-separated quantized variants to export as well: int8, fp16")
    p.add_argument("--out", default="runs/seed-size", metavar="DIR")
    p.add_argument("--force", action="store_true")
    args = p.parse_args(argv)
    pool = CHARS + ACCENTED
    if not (2 <= args.input_tokens <= len(pool) and 3 <= args.target_tokens <= len(pool) + 2):
        p.error(f"token counts must be within 2..{len(pool)} (input), 3..{len(pool) + 2} "
                "(target)")
    if args.target_words < 0:
        p.error("--target-words must be positive (or 0: character targets)")
    from train.model import Architecture

    try:
        arch = Architecture(args.cell, args.layers, args.bidirectional, args.embedding_dim,
                            args.mask, attention=args.attention)
    except ValueError as e:
        p.error(str(e))
    try:
        return _build(args, pool, arch)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _build(args, pool: str, arch) -> int:
    import keras

    from export.pipeline import export_artifact
    from runtime.vocab import InputPadding, Vocabulary
    from train.model import build_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    # Embedding inputs pad with the reserved id 0 (token ""), one-hot ones with a space.
    reserved = ("",) if arch.embedding_dim else ()
    chars = args.input_tokens - len(reserved)
    if args.target_words:
        targets = reserved + ("[start]", "[end]") + tuple(f"w{i}"
                                                          for i in range(args.target_words))
        start, end, unit = "[start]", "[end]", "word"
    else:
        targets = reserved + ("\t", "\n") + tuple(pool[:args.target_tokens - 2
                                                       - len(reserved)])
        start, end, unit = "\t", "\n", "char"
    vocab = Vocabulary(reserved + tuple(pool[:chars]), targets, start, end,
                       args.max_input_length, args.max_output_length,
                       InputPadding("right", "" if reserved else " "), target_unit=unit)
    model = build_model(vocab.input_size, vocab.target_size, args.latent_dim, arch)
    # Random weights stop at a random end token; a bias against it makes every
    # decode run to the maximum length, the worst (and comparable) case.
    dense = model.get_layer("decoder_dense")
    kernel, bias = dense.get_weights()
    # Padding (id 0, where inputs are embedded) too: a quantized random model whose
    # probabilities tie would pick it first and decode empty strings.
    bias[[vocab.end_id] + ([0] if reserved else [])] = -50.0
    dense.set_weights([kernel, bias])
    model.save(out / "model.keras")
    vocab.save(out / "vocab.json")
    rows = ["".join(pool[(i * 7 + j) % (chars - 1) + 1]
                    for j in range(1 + i % args.max_input_length)) for i in range(64)]
    (out / "heldout.tsv").write_text("".join(f"{r}\t-\n" for r in rows), encoding="utf-8")
    print(f"model: {model.count_params():,} parameters; exporting", flush=True)
    export_artifact(out / "model.keras", vocab, out / "artifact", texts=rows,
                    quantize=args.quantize, force=args.force)
    print(f"wrote {out}/ (model.keras, vocab.json, heldout.tsv, artifact/)")
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
