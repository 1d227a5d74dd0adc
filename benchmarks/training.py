"""``python -m benchmarks.training``: what padding each batch only to its own longest
pair buys, measured in one run: the same model fits the same pairs for an epoch
with batches cut per batch (``train.fit.Batches``, as ``python -m train`` does) and
padded to the data set's longest pair (arrays, as before), in alternating rounds."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def parser() -> argparse.ArgumentParser:
    from runtime.cli import add_version

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.training",
        description="Time one training epoch with per-batch padding against padding to "
                    "the longest pair, on the CMU dictionary (a slice) with a masked "
                    "Embedding model, in alternating rounds on the same model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_version(p)
    p.add_argument("--words", type=int, default=8000, help="dictionary words to train on")
    p.add_argument("--latent-dim", type=int, default=128)
    p.add_argument("--attention", choices=("luong", "bahdanau"), default="luong")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--json", metavar="FILE", default=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if min(args.words, args.latent_dim, args.batch_size, args.rounds) < 1:
        parser().error("--words, --latent-dim, --batch-size and --rounds must be positive")
    import keras

    from runtime.vocab import Vocabulary
    from train import cmudict, fit
    from train.model import Architecture, build_model

    from runtime.errors import Seq2SeqError

    try:
        train_pairs = cmudict.split(cmudict.load(), args.words)[0]
    except Seq2SeqError as e:
        print(f"error: --words {args.words}: {e}", file=sys.stderr)
        return 2
    vocab = Vocabulary.build([a for a, _ in train_pairs], [b for _, b in train_pairs],
                             "[start]", "[end]", reserve_padding_id=True, target_unit="word")
    keras.utils.set_random_seed(0)
    model = build_model(vocab.input_size, vocab.target_size, args.latent_dim,
                        Architecture(embedding_dim=32, mask=True, attention=args.attention),
                        "adam")
    batches = fit.Batches(vocab, train_pairs, args.batch_size, ids=True, trim_inputs=True,
                          shuffle=True)
    arrays = fit.teacher_forcing_arrays(vocab, train_pairs, ids=True)

    def per_batch():
        model.fit(batches.dataset(), epochs=1, verbose=0, shuffle=False)

    def full():
        model.fit([arrays[0], arrays[1]], arrays[2], sample_weight=arrays[3],
                  batch_size=args.batch_size, epochs=1, verbose=0)

    runs = {"per_batch": per_batch, "longest_pair": full}
    for run in runs.values():  # trace both before timing
        run()
    best = {name: float("inf") for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    result = {"pairs": len(train_pairs), "latent_dim": args.latent_dim,
              "attention": args.attention, "batch_size": args.batch_size,
              "epoch_seconds": {k: round(v, 2) for k, v in best.items()},
              "padded_share": {"per_batch": round(batches.padded_share(), 4),
                               "longest_pair": round(batches.padded_share(False), 4)},
              "speedup": round(best["longest_pair"] / best["per_batch"], 2)}
    print(f"{len(train_pairs)} pairs, one epoch (best of {args.rounds}): per-batch padding "
          f"{best['per_batch']:.1f} s ({result['padded_share']['per_batch']:.0%} padding), "
          f"padded to the longest pair {best['longest_pair']:.1f} s "
          f"({result['padded_share']['longest_pair']:.0%} padding): "
          f"{result['speedup']:.2f}x faster")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
