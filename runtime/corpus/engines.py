"""The two engines that run the shards: a local process pool, and Ray Data.

Both hand each worker (a pool process, a Ray actor) one loaded model through
``work.ShardTranslator``, and write each finished shard atomically, so either
can be killed and the run resumed."""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import Seq2SeqError
from .shards import ShardStore
from .work import CorpusOptions, ShardTranslator

# A local pool that loses a worker is restarted this many times before the run fails.
MAX_RESTARTS = 3


@dataclass(frozen=True)
class ShardDone:
    """A shard a worker finished and wrote: its line and reject counts."""
    index: int
    lines: int
    rejects: int
    seconds: float  # the worker's time on it
    worker: str  # which worker (pid or actor)


class EngineError(Seq2SeqError):
    """The engine could not finish the run."""


# -- local: a process pool ----------------------------------------------------
_translator: ShardTranslator | None = None


def _init_worker(artifact: str, options: CorpusOptions) -> None:
    global _translator
    _translator = ShardTranslator(artifact, options)


def _run_shard(index: int, first: int, texts: list[str], out: str) -> ShardDone:
    started = time.perf_counter()
    outputs, reasons = _translator(texts)
    ShardStore(Path(out)).write(index, first, outputs, reasons)
    return ShardDone(index, len(texts), sum(r is not None for r in reasons),
                     time.perf_counter() - started, f"pid {os.getpid()}")


def run_local(artifact: str, options: CorpusOptions, texts: list[str], plan: dict,
              store: ShardStore, workers: int, on_done, log) -> None:
    """``plan``: shard index -> (first line, end line) of the shards still to do."""
    context = multiprocessing.get_context("spawn")  # no fork of a loaded runtime
    pending = dict(plan)
    restarts = 0
    while pending:
        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(artifact, options)) as pool:
                futures = [pool.submit(_run_shard, i, lo, texts[lo:hi], str(store.out))
                           for i, (lo, hi) in sorted(pending.items())]
                for future in as_completed(futures):
                    done = future.result()
                    pending.pop(done.index, None)
                    on_done(done)
        except BrokenProcessPool:
            restarts += 1
            for index in list(pending):  # finished before the pool broke (written whole)
                if store.path(index).exists():
                    pending.pop(index)
            if restarts > MAX_RESTARTS:
                raise EngineError(f"the local pool lost a worker {restarts} times; "
                                  f"{len(pending)} shard(s) left undone (rerun to resume)")
            log(f"a worker died; restarting the pool ({restarts} of {MAX_RESTARTS}), "
                f"{len(pending)} shard(s) to go")


# -- ray: Ray Data map_batches over an actor pool -----------------------------
class RayTranslator:
    """A Ray Data callable class: each actor loads the model once."""

    def __init__(self, artifact: str, options: dict):
        self.translate = ShardTranslator(artifact, CorpusOptions(**options))
        self.name = f"actor pid {os.getpid()}"

    def __call__(self, batch: dict) -> dict:
        started = time.perf_counter()
        outputs, reasons = self.translate([str(t) for t in batch["text"]])
        seconds = time.perf_counter() - started
        return {"shard": batch["shard"], "line": batch["line"],
                "output": np.array(outputs, dtype=object),
                "reason": np.array(["" if r is None else r for r in reasons], dtype=object),
                "rejected": np.array([r is not None for r in reasons]),
                "seconds": np.full(len(outputs), seconds / max(1, len(outputs))),
                "worker": np.array([self.name] * len(outputs), dtype=object)}


def run_ray(artifact: str, options: CorpusOptions, texts: list[str], plan: dict,
            store: ShardStore, workers: int, address: str | None, on_done, log) -> None:
    """``plan``: shard index -> (first line, end line) of the shards still to do, run on
    Ray Data over ``workers`` actors (joining ``address``, else starting a local Ray);
    each shard is written to ``store`` and passed to ``on_done`` as a ShardDone. Raises
    EngineError when Ray is not installed or returns a shard incomplete."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise EngineError("the ray engine needs Ray: install the project with its [ray] "
                          "extra (pip install 'ray[data]')") from None
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-run INFO lines
    if not ray.is_initialized():
        quiet = dict(log_to_driver=False, logging_level=logging.WARNING)
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=max(workers, os.cpu_count() or 1), include_dashboard=False,
                     **quiet)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards complete in order
    context.enable_progress_bars = False
    items = [{"shard": i, "line": n, "text": texts[n]}
             for i, (lo, hi) in sorted(plan.items()) for n in range(lo, hi)]
    dataset = ray.data.from_items(items).map_batches(
        RayTranslator, fn_constructor_kwargs={"artifact": artifact,
                                              "options": options.as_dict()},
        compute=ray.data.ActorPoolStrategy(size=workers), batch_size=options.batch_size,
        batch_format="numpy")
    current, rows = None, []
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for k in range(len(batch["line"])):
            shard = int(batch["shard"][k])
            if current is not None and shard != current:
                _write_ray_shard(store, current, plan, rows, on_done)
                rows = []
            current = shard
            rows.append((int(batch["line"][k]), batch["output"][k],
                         batch["reason"][k] if batch["rejected"][k] else None,
                         float(batch["seconds"][k]), batch["worker"][k]))
    if rows:
        _write_ray_shard(store, current, plan, rows, on_done)


def _write_ray_shard(store: ShardStore, index: int, plan: dict, rows: list, on_done) -> None:
    lo, hi = plan[index]
    if [r[0] for r in rows] != list(range(lo, hi)):
        raise EngineError(f"Ray returned shard {index} out of order or incomplete")
    store.write(index, lo, [r[1] for r in rows], [r[2] for r in rows])
    on_done(ShardDone(index, len(rows), sum(r[2] is not None for r in rows),
                      sum(r[3] for r in rows), rows[0][4]))
