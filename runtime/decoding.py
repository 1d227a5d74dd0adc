"""The decode loop, written once over the backend interface (encode, step).

Greedy (batched, each sequence stopping on its own end token), streaming
greedy, beam search with length normalisation, and seeded sampling with
temperature and top-k. Results are token ids without the end token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .backends import Backend
from .errors import InputError

MAX_BEAM = 256


@dataclass(frozen=True)
class DecodeOptions:
    # Beams kept by beam search; 1 is greedy decoding.
    beam_size: int = 1
    # Most tokens decoded per input, end token included; None: the model's maximum.
    max_length: int | None = None
    # Beam search ranks finished hypotheses by log-prob / length ** length_penalty.
    length_penalty: float = 1.0
    # 0 decodes deterministically; above 0, samples from probs ** (1 / temperature).
    temperature: float = 0.0
    # When sampling, draw only from the k most likely tokens (0: all tokens).
    top_k: int = 0
    # Seed of the sampler, for repeatable samples.
    seed: int | None = None

    def validate(self, model_max: int) -> "DecodeOptions":
        def is_int(v):
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        if not is_int(self.beam_size) or not 1 <= self.beam_size <= MAX_BEAM:
            raise InputError(f"beam_size must be an integer from 1 to {MAX_BEAM}, "
                             f"got {self.beam_size!r}")
        if self.max_length is not None and (not is_int(self.max_length)
                                            or not 1 <= self.max_length <= model_max):
            raise InputError(f"max_length must be an integer from 1 to {model_max} (the "
                             f"model's maximum), got {self.max_length!r}")
        if not isinstance(self.temperature, (int, float)) or not (
                0 <= self.temperature < float("inf")):
            raise InputError(f"temperature must be a number >= 0, got {self.temperature!r}")
        if not is_int(self.top_k) or self.top_k < 0:
            raise InputError(f"top_k must be an integer >= 0, got {self.top_k!r}")
        if not isinstance(self.length_penalty, (int, float)) or not np.isfinite(
                self.length_penalty):
            raise InputError(f"length_penalty must be a finite number, "
                             f"got {self.length_penalty!r}")
        if self.beam_size > 1 and self.temperature > 0:
            raise InputError("choose beam search or sampling, not both")
        return self

    def steps(self, model_max: int) -> int:
        return self.max_length or model_max


def _check_finite(probs: np.ndarray) -> None:
    if not np.isfinite(probs).all():
        raise FloatingPointError("the model produced NaN or infinite probabilities; "
                                 "the artifact is broken")


def greedy(backend: Backend, input_ids: np.ndarray, start: int, end: int,
           steps: int, attention: bool = False) -> list:
    """Greedy decode of a batch; finished rows ride along until all are done. With
    ``attention``, each result is ``(ids, weights [len(ids), input steps])``: the
    attention weights of the step that produced each token."""
    batch = input_ids.shape[0]
    if batch == 1 and not attention:
        return [list(stream_greedy(backend, input_ids, start, end, steps))]
    state = backend.encode(input_ids)
    token = np.full(batch, start, dtype=np.int32)
    out = np.empty((batch, steps), dtype=np.int32)
    lengths = np.full(batch, steps)
    active = np.ones(batch, dtype=bool)
    maps = []
    for t in range(steps):
        probs, state, token, weights = backend.step(token, state)
        if attention:
            maps.append(weights)
        out[:, t] = token
        ended = active & (token == end)
        if ended.any():
            lengths[ended] = t
            active &= ~ended
            if not active.any():
                break
    _check_finite(probs)
    ids = [out[i, :lengths[i]].tolist() for i in range(batch)]
    if not attention:
        return ids
    if maps[0] is None:
        raise InputError("this model has no attention, so there are no attention weights")
    stacked = np.stack(maps, axis=1)  # [batch, steps decoded, input steps]
    return [(ids[i], stacked[i, :lengths[i]]) for i in range(batch)]


def fused_greedy(backend: Backend, input_ids: np.ndarray, steps: int) -> list[list[int]]:
    """Greedy decode in one backend call (the fused graph). Greedy is prefix-stable,
    so a shorter ``steps`` is the same decode cut short."""
    out, lengths = backend.greedy(input_ids)
    if steps < out.shape[1]:
        lengths = np.minimum(lengths, steps)
    return [row[:n] for row, n in zip(out.tolist(), lengths.tolist())]


def stream_greedy(backend: Backend, input_ids: np.ndarray, start: int, end: int,
                  steps: int) -> Iterator[int]:
    """Token ids of one input, yielded as they are decoded (batch 1: the fast path)."""
    state = backend.encode(input_ids[:1])
    token = np.full(1, start, dtype=np.int32)
    step = backend.step
    for _ in range(steps):
        probs, state, token, _ = step(token, state)
        tid = int(token[0])
        if tid == end:
            break
        yield tid
    # NaN in the state reaches every later output, so the last step tells.
    _check_finite(probs)


def sample(backend: Backend, input_ids: np.ndarray, start: int, end: int, steps: int,
           temperature: float, top_k: int, rng: np.random.Generator) -> list[list[int]]:
    batch = input_ids.shape[0]
    state = backend.encode(input_ids)
    token = np.full(batch, start, dtype=np.int32)
    seqs: list[list[int]] = [[] for _ in range(batch)]
    active = np.ones(batch, dtype=bool)
    for _ in range(steps):
        probs, state, _, _ = backend.step(token, state)
        _check_finite(probs)
        logits = np.log(np.maximum(probs, 1e-30)) / temperature
        if 0 < top_k < logits.shape[1]:
            kth = np.partition(logits, -top_k, axis=1)[:, -top_k][:, None]
            logits = np.where(logits < kth, -np.inf, logits)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        token = np.array([rng.choice(len(w), p=w) for w in weights], dtype=np.int32)
        for i in np.flatnonzero(active):
            if token[i] == end:
                active[i] = False
            else:
                seqs[i].append(int(token[i]))
        if not active.any():
            break
    return seqs


def beam_search(backend: Backend, input_ids: np.ndarray, start: int, end: int, steps: int,
                beam_size: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Best hypothesis per input, all inputs' beams in one step call (rows = inputs x
    beams), each input's hypotheses ranked on their own.

    A hypothesis ends with the end token or at ``steps`` tokens; its score is
    sum(log p) / length ** length_penalty, where length counts the end token. Per
    step and input, the ``2 * beam_size`` best extensions are taken in order of
    score (ties: lower beam, then lower token id): ending ones are finished, the
    first ``beam_size`` others live on. An input stops once ``beam_size`` of its
    hypotheses have finished or none lives on; its beams then go idle (score
    -inf) while the others decode. The answer is the first best finished one.
    """
    batch, width = input_ids.shape[0], beam_size
    if batch == 1:
        return [_beam_one(backend, input_ids, start, end, steps, width, length_penalty)]
    state = backend.encode(input_ids)
    scores = np.zeros((batch, 1))  # [inputs, beams]; -inf marks an idle beam
    tokens = np.full(batch, start, dtype=np.int32)
    history = np.zeros((batch, 1, 0), dtype=np.int32)  # tokens so far per beam
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    rows_of = np.arange(batch)[:, None]
    for t in range(steps):
        probs, state, _, _ = backend.step(tokens, state)
        _check_finite(probs)
        beams = scores.shape[1]
        total = (scores[:, :, None] + np.log(np.maximum(probs, 1e-30)).reshape(
            batch, beams, -1)).reshape(batch, -1)
        vocab = total.shape[1] // beams
        take = min(total.shape[1], 2 * width)
        order = np.argsort(-total, axis=1, kind="stable")[:, :take]
        best = np.take_along_axis(total, order, axis=1)
        live = np.isfinite(best)
        beam, token = np.divmod(order, vocab)
        ending = live & ((token == end) | (t == steps - 1))
        going = live & ~ending
        rank = np.cumsum(going, axis=1)
        kept = going & (rank <= width)
        for b, c in zip(*np.nonzero(ending)):  # few: at most 2 * width per input
            seq = history[b, beam[b, c]].tolist()
            if token[b, c] != end:
                seq.append(int(token[b, c]))
            finished[b].append((float(best[b, c]) / (t + 1) ** length_penalty, seq))
        done = np.array([len(f) >= width for f in finished]) | ~kept.any(axis=1)
        kept &= ~done[:, None]
        if not kept.any():
            break
        # The kept extensions, in order, fill each input's beams; the rest go idle.
        new_scores = np.full((batch, width), -np.inf)
        new_beam = np.zeros((batch, width), dtype=np.int64)
        new_token = np.full((batch, width), start, dtype=np.int32)
        b, c = np.nonzero(kept)
        slot = rank[b, c] - 1
        new_scores[b, slot] = best[b, c]
        new_beam[b, slot] = beam[b, c]
        new_token[b, slot] = token[b, c]
        history = np.concatenate([history[rows_of, new_beam], new_token[:, :, None]], axis=2)
        rows = (rows_of * beams + new_beam).ravel()  # idle beams copy a live row's state
        state = tuple(s.take(rows, axis=0) for s in state)  # memory rows travel too
        scores, tokens = new_scores, new_token.ravel()
    return [max(f, key=lambda item: item[0])[1] for f in finished]


def _beam_one(backend: Backend, input_ids: np.ndarray, start: int, end: int, steps: int,
              width: int, length_penalty: float) -> list[int]:
    """``beam_search`` for one input, with the per-step work cut to a few numpy calls
    on small arrays and a Python loop over the ``2 * width`` best extensions (at
    batch 1 that work, not the step call, is what a beam costs). Same ranking,
    ties and stopping as the batched search. The step always gets ``width`` rows
    (idle ones at score -inf), so a LiteRT interpreter is never resized mid-search."""
    state = tuple(s.repeat(width, axis=0) for s in backend.encode(input_ids[:1]))
    seqs: list[list[int]] = [[]] * width
    scores = np.full((width, 1), -np.inf)
    scores[0] = 0.0
    tokens = np.full(width, start, dtype=np.int32)
    finished: list[tuple[float, list[int]]] = []
    step, log, floor, inf = backend.step, np.log, np.maximum, -np.inf
    take = 2 * width
    rows = list(range(width))
    for t in range(steps):
        probs, state, _, _ = step(tokens, state)
        flat = (scores + log(floor(probs, 1e-30))).ravel()
        order = (-flat).argsort(kind="stable")[:take]
        vocab = probs.shape[1]
        last = t == steps - 1
        keep_rows, keep_tokens, keep_scores, keep_seqs = [], [], [], []
        for index, score in zip(order.tolist(), flat[order].tolist()):
            if score == inf:  # an idle beam's; the rest are too
                break
            if score != score:  # NaN: the model is broken
                _check_finite(probs)
            row, tok = divmod(index, vocab)
            if tok == end or last:
                finished.append((score / (t + 1) ** length_penalty,
                                 seqs[row] if tok == end else seqs[row] + [tok]))
            elif len(keep_rows) < width:
                keep_rows.append(row)
                keep_tokens.append(tok)
                keep_scores.append(score)
                keep_seqs.append(seqs[row] + [tok])
        if len(finished) >= width or not keep_rows:
            break
        idle = width - len(keep_rows)
        if idle:  # idle beams copy a live one's row, at score -inf
            keep_rows += [keep_rows[0]] * idle
            keep_tokens += [start] * idle
            keep_scores += [inf] * idle
            keep_seqs += [[]] * idle
        if keep_rows != rows:  # the memory rows travel with their beams
            state = tuple(s.take(keep_rows, axis=0) for s in state)
        seqs, tokens = keep_seqs, np.array(keep_tokens, dtype=np.int32)
        scores = np.array(keep_scores)[:, None]
    return max(finished, key=lambda item: item[0])[1]
