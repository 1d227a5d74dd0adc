"""What serving asks of the runtime, measured on one model: the time ``translate``
adds around a bare fused call, beam search batched across inputs, and sentences
per second under concurrent callers. Each comparison alternates its two sides,
so a noisy spell on a shared machine slows both alike."""
from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from runtime.model import Seq2SeqModel

THREADS = (1, 2, 4)
BEAM = 4
BEAM_BATCH = 64


def _p50_us(times: list[float]) -> float:
    return float(np.percentile(times, 50) * 1e6)


def call_overhead(fused: Seq2SeqModel, texts: list[str], rounds: int) -> dict:
    """``translate([text])`` against the bare fused call on the same ids (batch 1):
    what the API adds (encoding the text, options, ids to string)."""
    ids = {t: fused.vocabulary.encode_inputs([t]) for t in texts}
    bare, full = [], []
    clock = time.perf_counter
    for _ in range(rounds):
        for t in texts:
            started = clock()
            fused.backend.greedy(ids[t])
            bare.append(clock() - started)
            started = clock()
            fused.translate([t])
            full.append(clock() - started)
    return {"bare_fused_p50_us": _p50_us(bare), "translate_p50_us": _p50_us(full),
            "overhead_us": _p50_us(full) - _p50_us(bare)}


def beam(step: Seq2SeqModel, texts: list[str], rounds: int) -> dict:
    """Beam-4: a batch of 64 inputs in one search against the same inputs one at a
    time (sentences per second), and one input against the greedy step loop."""
    batch = list(itertools.islice(itertools.cycle(texts), BEAM_BATCH))
    together, alone, one, greedy = [], [], [], []
    clock = time.perf_counter
    step.translate(batch[:2], beam_size=BEAM)
    for _ in range(rounds):
        started = clock()
        step.translate(batch, beam_size=BEAM, batch_size=BEAM_BATCH)
        together.append(clock() - started)
        started = clock()
        for t in batch:
            step.translate([t], beam_size=BEAM)
        alone.append(clock() - started)
        for t in texts[:20]:
            started = clock()
            step.translate([t], beam_size=BEAM)
            one.append(clock() - started)
            started = clock()
            step.translate([t])
            greedy.append(clock() - started)
    batched, single = BEAM_BATCH / float(np.median(together)), BEAM_BATCH / float(
        np.median(alone))
    return {"batch": BEAM_BATCH, "batched_sentences_per_s": batched,
            "one_at_a_time_sentences_per_s": single, "batched_speedup": batched / single,
            "batch1_p50_us": _p50_us(one), "greedy_step_p50_us": _p50_us(greedy),
            "batch1_vs_greedy": _p50_us(one) / _p50_us(greedy)}


def concurrency(model: Seq2SeqModel, texts: list[str], seconds: float) -> dict:
    """Greedy sentences per second (batch 1 each) with 1, 2 and 4 calling threads
    sharing one loaded model, each thread decoding for about ``seconds``."""
    out = {}
    for n in THREADS:
        def worker(offset: int) -> int:
            done, cycle = 0, itertools.cycle(texts[offset:] + texts[:offset])
            stop = time.perf_counter() + seconds
            while time.perf_counter() < stop:
                model.translate([next(cycle)])
                done += 1
            return done

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda i: model.translate([texts[i % len(texts)]]), range(n)))
            started = time.perf_counter()
            counts = list(pool.map(worker, range(n)))
            elapsed = time.perf_counter() - started
        out[str(n)] = sum(counts) / elapsed
    return {"sentences_per_s": out,
            "speedup": {k: v / out["1"] for k, v in out.items()}}
