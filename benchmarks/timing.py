"""Small timing helpers: wall-clock samples and their percentiles."""
from __future__ import annotations

import time

import numpy as np


def sample(fn, repeats: int, warmup: int = 3) -> list[float]:
    """Seconds per call of ``fn()``, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    out = []
    clock = time.perf_counter
    for _ in range(repeats):
        start = clock()
        fn()
        out.append(clock() - start)
    return out


def stats(seconds: list[float], per: float = 1.0) -> dict:
    """p50 / p99 / mean in microseconds, each divided by ``per`` (e.g. tokens)."""
    a = np.asarray(seconds, dtype=np.float64) * 1e6 / per
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)),
            "mean_us": float(a.mean()), "n": int(a.size)}


def decode_steps(model, text: str) -> int:
    """The steps a greedy decode of ``text`` runs on ``model`` (a runtime model): the
    tokens it yields, plus the end token's own step where it stopped before the
    longest output. Counted on the step loop, which the fused graph equals."""
    n = len(list(model.stream(text)))
    return n if n >= model.vocabulary.max_output_length else n + 1
