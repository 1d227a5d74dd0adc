"""``python -m benchmarks.corpus ARTIFACT``: lines per second of bulk translation
(``python -m runtime.corpus``) with 1 and 2 workers on each engine, the scaling,
and the workers a cluster would need for a daily volume at that rate.

Each run translates the same corpus (held-out inputs repeated) into a scratch
folder, end to end as a user runs it: start-up (a process pool or a local Ray with
its actors), reading, the shards and the assembly included; the figure is lines
over the whole run's wall time."""
from __future__ import annotations

import argparse
import itertools
import math
import sys
import tempfile
import time
from pathlib import Path

from runtime.cli import add_version
from runtime.errors import Seq2SeqError

ENGINES = ("local", "ray")
DAILY_LINES = 100_000_000


def measure(artifact: Path, lines: int, workers: tuple[int, ...], engines=ENGINES,
            log=print) -> dict:
    from runtime.corpus import CorpusOptions, translate_corpus

    # Enough shards that every worker gets several, at most 2,000 lines each.
    shard_size = min(2000, max(50, lines // (4 * max(workers))))
    heldout = artifact.parent / "heldout.tsv"
    if not heldout.is_file():
        raise Seq2SeqError(f"{heldout}: needed for the corpus (inputs beside the model)")
    texts = [ln.split("\t")[0] for ln in heldout.read_text(encoding="utf-8").splitlines()]
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="corpus-bench-") as tmp:
        source = Path(tmp) / "inputs.txt"
        source.write_text("\n".join(itertools.islice(itertools.cycle(texts), lines)) + "\n",
                          encoding="utf-8")
        outputs = {}
        for engine in engines:
            for n in workers:
                log(f"{engine}, {n} worker(s): {lines:,} lines", flush=True)
                out = Path(tmp) / f"{engine}-{n}.txt"
                started = time.perf_counter()
                summary = translate_corpus(artifact, source, out, CorpusOptions(),
                                           engine=engine, workers=n, shard_size=shard_size,
                                           force=True, log=lambda *a, **k: None)
                wall = time.perf_counter() - started
                outputs[(engine, n)] = out.read_bytes()
                busy = {w: lines_ / s for w, (lines_, s) in summary.workers.items() if s}
                results.setdefault(engine, {})[str(n)] = {
                    "lines_per_s": lines / wall, "seconds": wall,
                    "per_worker_lines_per_s": sorted(busy.values())}
        same = len(set(outputs.values())) == 1
    for engine, by_n in results.items():
        base = by_n[str(workers[0])]["lines_per_s"]
        for entry in by_n.values():
            entry["scaling"] = entry["lines_per_s"] / base
    best = max((e["lines_per_s"] / int(n), engine, n) for engine, by_n in results.items()
               for n, e in by_n.items())
    per_worker = best[0]
    return {"lines": lines, "workers": list(workers), "engines": results,
            "identical_outputs": same,
            "sizing": {"daily_lines": DAILY_LINES, "per_worker_lines_per_s": per_worker,
                       "from": f"{best[1]}, {best[2]} worker(s)",
                       "workers_needed": math.ceil(DAILY_LINES / 86_400 / per_worker)}}


def report(result: dict) -> str:
    lines = [f"Bulk translation of {result['lines']:,} lines, whole runs (start-up included):",
             "", "| engine | workers | lines/s | scaling | each worker's own rate |",
             "|---|---|---|---|---|"]
    for engine, by_n in result["engines"].items():
        for n, e in by_n.items():
            own = ", ".join(f"{v:,.0f}" for v in e["per_worker_lines_per_s"])
            lines.append(f"| {engine} | {n} | {e['lines_per_s']:,.0f} | {e['scaling']:.2f}x | "
                         f"{own} |")
    s = result["sizing"]
    lines += ["", f"Outputs identical across engines and worker counts: "
              f"{'yes' if result['identical_outputs'] else 'NO'}.",
              f"Sizing on paper: {s['daily_lines']:,} lines a day is "
              f"{s['daily_lines'] / 86_400:,.0f} lines/s; at {s['per_worker_lines_per_s']:,.0f} "
              f"lines/s per worker (best measured: {s['from']}) that takes "
              f"{s['workers_needed']} worker(s) running all day."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.corpus", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("artifact", nargs="?", default="runs/demo/artifact", metavar="DIR")
    p.add_argument("--lines", type=int, default=20_000)
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--engines", default=",".join(ENGINES), help="local, ray or both")
    p.add_argument("--out", default="runs/corpus-bench", metavar="DIR")
    args = p.parse_args(argv)
    try:
        workers = tuple(int(w) for w in args.workers.split(","))
    except ValueError:
        p.error(f"--workers takes comma-separated integers, got {args.workers!r}")
    engines = tuple(e for e in args.engines.split(",") if e)
    if any(e not in ENGINES for e in engines) or not engines:
        p.error(f"--engines: choose from {', '.join(ENGINES)}")
    if args.lines < 1 or any(w < 1 for w in workers):
        p.error("--lines and --workers must be positive")
    try:
        result = measure(Path(args.artifact), args.lines, workers, engines,
                         log=lambda *a, **k: print(*a, file=sys.stderr, **k))
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
