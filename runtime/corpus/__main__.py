"""``python -m runtime.corpus ARTIFACT INPUT --out OUTPUT``: translate a whole corpus."""
from __future__ import annotations

import argparse
import sys

from .. import cli
from ..errors import Seq2SeqError


def parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m runtime.corpus",
        description="Translate a text file (one input a line), a folder of .txt files, or "
                    "a column of a CSV/TSV/Parquet file with an artifact, on a local "
                    "process pool or on Ray Data. Line i of OUTPUT answers input i; lines "
                    "that cannot be translated are empty there and listed in "
                    "OUTPUT.rejects.tsv. Work is kept in shards in OUTPUT.parts/: a run "
                    "killed part way resumes where it stopped when started again.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("artifact", metavar="ARTIFACT", help="artifact directory")
    cli.add_version(p)
    p.add_argument("input", metavar="INPUT", help="text file, folder of .txt files, or "
                   ".csv/.tsv/.parquet file (with --column)")
    p.add_argument("--out", required=True, metavar="OUTPUT", help="output text file")
    p.add_argument("--column", help="the column to translate (CSV, TSV, Parquet)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: a process pool; ray: Ray Data with an actor pool")
    p.add_argument("--workers", type=int, default=1, help="pool processes or Ray actors, "
                   "each with one loaded model")
    p.add_argument("--address", help="ray: the cluster to join (default: a local Ray)")
    p.add_argument("--shard-size", type=int, default=1000,
                   help="lines per shard (the unit written atomically and redone on resume)")
    cli.add_model_options(p, threads_help="backend threads per worker")
    p.add_argument("--batch-size", type=int, default=64, help="texts per decode call")
    cli.add_decode_options(p, instead="rejecting the line")
    p.add_argument("--force", action="store_true",
                   help="start again: replace OUTPUT and discard OUTPUT.parts/")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    return p


def _progress(stream):
    tty = stream.isatty()
    last = [0.0]

    def show(summary, total: int, seconds: float) -> None:
        if not tty and seconds - last[0] < 2 and summary.lines < total:
            return  # a log gets a line every 2 seconds, a terminal every shard
        last[0] = seconds
        rate = summary.lines / seconds if seconds else 0.0
        text = (f"{summary.lines:,}/{total:,} lines ({summary.lines / total:.0%}), "
                f"{rate:,.0f} lines/s, {summary.rejects:,} rejected")
        stream.write(("\r" + text) if tty else text + "\n")
        stream.flush()

    return show


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv``); returns the exit code (2 on a
    toolkit error, printed to standard error)."""
    args = parser().parse_args(argv)
    for name in ("workers", "shard_size", "threads", "batch_size", "beam"):
        if getattr(args, name) < 1:
            parser().error(f"--{name.replace('_', '-')} must be positive")
    from .run import translate_corpus
    from .work import CorpusOptions

    options = CorpusOptions(args.backend, args.precision, args.threads, args.batch_size,
                            args.beam, args.max_length, **cli.policies(args),
                            length_penalty=args.length_penalty)
    try:
        summary = translate_corpus(
            args.artifact, args.input, args.out, options, engine=args.engine,
            workers=args.workers, shard_size=args.shard_size, column=args.column,
            address=args.address, force=args.force,
            progress=None if args.quiet else _progress(sys.stderr),
            log=lambda *a, **k: print(*a, file=sys.stderr, **k))
    except Seq2SeqError as e:
        print(("\n" if not args.quiet and sys.stderr.isatty() else "") + f"error: {e}",
              file=sys.stderr)
        return 2
    if not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    total = summary.lines + 0
    print(f"{args.out}: {summary.shards} shard(s), {summary.resumed_shards} from an earlier "
          f"run; {total:,} lines translated now in {summary.seconds:.1f} s "
          f"({summary.lines_per_s:,.0f} lines/s), {summary.rejects:,} rejected in all "
          f"(listed in {args.out}.rejects.tsv)")
    for worker, (lines, seconds) in sorted(summary.workers.items()):
        print(f"  {worker}: {lines:,} lines, {lines / seconds if seconds else 0:,.0f} "
              "lines/s of its own time")
    return 0


if __name__ == "__main__":
    from ..console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
