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
    lengths = np.minimum(lengths, steps)
    return [out[i, :lengths[i]].tolist() for i in range(len(lengths))]


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
                beam_size: int, length_penalty: float = 1.0) -> list[int]:
    """Best hypothesis for one input. A hypothesis ends with the end token or at
    ``steps`` tokens; its score is sum(log p) / length ** length_penalty, where
    length counts the end token. Stops once ``beam_size`` hypotheses ended."""
    state = backend.encode(input_ids[:1])
    seqs: list[list[int]] = [[]]
    scores = np.zeros(1)
    tokens = np.full(1, start, dtype=np.int32)
    finished: list[tuple[float, list[int]]] = []
    for t in range(steps):
        probs, state, _, _ = backend.step(tokens, state)
        _check_finite(probs)
        total = scores[:, None] + np.log(np.maximum(probs, 1e-30))
        flat = total.ravel()
        take = min(flat.size, 2 * beam_size)
        best = np.argpartition(-flat, take - 1)[:take]
        best = best[np.argsort(-flat[best], kind="stable")]
        width = probs.shape[1]
        keep_rows, keep_seqs, keep_scores, keep_tokens = [], [], [], []
        last_step = t == steps - 1
        for index in best:
            row, tok = divmod(int(index), width)
            score = float(flat[index])
            if tok == end or last_step:
                seq = seqs[row] if tok == end else seqs[row] + [tok]
                finished.append((score / (t + 1) ** length_penalty, seq))
            elif len(keep_rows) < beam_size:
                keep_rows.append(row)
                keep_seqs.append(seqs[row] + [tok])
                keep_scores.append(score)
                keep_tokens.append(tok)
        if len(finished) >= beam_size or not keep_rows:
            break
        rows = np.asarray(keep_rows)
        state = tuple(s[rows] for s in state)  # the memory rows travel with their beams
        seqs, scores = keep_seqs, np.asarray(keep_scores)
        tokens = np.asarray(keep_tokens, dtype=np.int32)
    return max(finished, key=lambda f: f[0])[1]
