"""``python -m export.keras_io_vocab``: write the vocab.json of a model trained by
keras.io's character-level translation example, from the same data file and
sample count, so that model can be exported without hand-writing the file.

It repeats that example's preprocessing: the first ``num_samples`` lines
(and never the file's last line), ``"\\t"`` + target + ``"\\n"``, sorted character
sets, and encoder inputs padded after the text with the one-hot of a space.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.errors import Seq2SeqError
from runtime.vocab import InputPadding, Vocabulary
from family.pairs import read_pairs
from runtime.cli import add_version


def keras_io_vocabulary(path: Path, num_samples: int) -> Vocabulary:
    """The vocabulary of a keras.io character model trained on the pair file ``path`` with
    ``num_samples``, by the example's own selection; raises Seq2SeqError, naming the file,
    when no pairs are left or the inputs have no space."""
    pairs = read_pairs(path, max_chars=10**9).pairs
    # keras.io takes text.split("\n")[: min(num_samples, len(lines) - 1)]: the last
    # piece is dropped, which is the empty one when the file ends with a newline.
    if not path.read_bytes().endswith(b"\n"):
        pairs = pairs[:-1]
    pairs = pairs[:num_samples]
    if not pairs:
        raise Seq2SeqError(f"{path}: no pairs left after keras.io's selection")
    inputs = [p[0] for p in pairs]
    targets = ["\t" + p[1] + "\n" for p in pairs]
    try:
        return from_keras_io(sorted(set("".join(inputs))), sorted(set("".join(targets))),
                             max(map(len, inputs)), max(map(len, targets)))
    except Seq2SeqError as e:
        raise Seq2SeqError(f"{path}: {e}") from None


def from_keras_io(input_characters, target_characters, max_encoder_seq_length: int,
                  max_decoder_seq_length: int) -> Vocabulary:
    """The vocabulary of a keras.io character model, from the example's own variables
    (as a notebook holds them after its preprocessing cell)."""
    if " " not in input_characters:
        raise Seq2SeqError("no space in input_characters; keras.io pads with the one-hot "
                           "of a space, so its model cannot have been trained on these")
    # Its target texts are "\t" + text + "\n": at most max - 1 tokens are decoded.
    return Vocabulary(tuple(input_characters), tuple(target_characters), "\t", "\n",
                      max_input_length=int(max_encoder_seq_length),
                      max_output_length=int(max_decoder_seq_length) - 1,
                      padding=InputPadding("right", " "))


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv``): write the vocabulary to
    ``--out``; returns the exit code (2 on a toolkit error, printed to standard error)."""
    p = argparse.ArgumentParser(prog="python -m export.keras_io_vocab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("data", metavar="FILE", help="the pair file the model was trained on "
                   "(e.g. fra.txt)")
    p.add_argument("--samples", type=int, default=10000,
                   help="keras.io's num_samples (default 10000, as in the example)")
    p.add_argument("--out", default="vocab.json", metavar="FILE")
    args = p.parse_args(argv)
    if args.samples < 1:
        p.error("--samples must be positive")
    try:
        vocab = keras_io_vocabulary(Path(args.data), args.samples)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    vocab.save(args.out)
    print(f"wrote {args.out}: {vocab.input_size} input tokens, {vocab.target_size} target "
          f"tokens, {vocab.max_input_length} encoder steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
