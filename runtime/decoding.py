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
    """How to decode: greedy, beam search or sampling, and how far."""
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
        """Return self if every option is in range (``max_length`` at most ``model_max``);
        else raise InputError naming the first that is not."""
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
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            raise InputError(f"seed must be an integer >= 0 or None, got {self.seed!r}")
        if self.beam_size > 1 and self.temperature > 0:
            raise InputError("choose beam search or sampling, not both")
        return self

    def steps(self, model_max: int) -> int:
        """Decode steps to run: ``max_length``, else ``model_max``."""
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
    """Sampled decode of a batch, drawing from ``rng``: ``temperature`` must be above 0;
    ``top_k`` above 0 draws only from the k most likely tokens. Ids without the end token."""
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


def _ceiling(live_sum, t: int, steps: int, length_penalty: float):
    """The best score a live hypothesis (log-prob sum ``live_sum`` after step ``t``) can
    still reach: its sum only falls as it grows, so the bound is that sum over the
    most favourable final length, ``steps`` for a positive penalty and the next one
    (t + 2 tokens, end included) otherwise."""
    length = steps if length_penalty > 0 else t + 2
    return live_sum / length ** length_penalty


def _log(probs: np.ndarray) -> np.ndarray:
    # Clipped at 1 too: a float32 softmax may exceed it by an ulp, and the stopping
    # bound relies on log-probs never being positive.
    return np.log(probs.clip(1e-30, 1.0))  # the method: half the call cost of np.clip


def _best(sums: np.ndarray, n: int, take: int, probs: np.ndarray):
    """Each of ``n`` inputs' ``take`` best extensions, from the log-prob sums of its
    rows (``[n * beams, vocab]``): their indices over beams x vocab in rank order
    (ties to the lower index, which is the lower beam, then the lower token) and
    their sums, as lists. A NaN anywhere raises: it sorts last, so the last place
    shows it."""
    if n == 1:  # 1-D: at batch 1 these few calls are a good share of a step's cost
        flat = sums.ravel()
        order = (-flat).argsort(kind="stable")
        if flat[order[-1]] != flat[order[-1]]:
            _check_finite(probs)
        order = order[:take]
        return [order.tolist()], [flat[order].tolist()]
    flat = sums.reshape(n, -1)
    order = (-flat).argsort(axis=1, kind="stable")
    inputs = np.arange(n)[:, None]
    if np.isnan(flat[inputs[:, 0], order[:, -1]]).any():
        _check_finite(probs)
    order = order[:, :take]
    return order.tolist(), flat[inputs, order].tolist()


def beam_search(backend: Backend, input_ids: np.ndarray, start: int, end: int, steps: int,
                beam_size: int, length_penalty: float = 1.0) -> list[list[int]]:
    """Best hypothesis per input by beam search, all inputs' beams in one step call
    (rows = inputs x beams), each input's hypotheses ranked on their own.

    The rule is the standard one (Hugging Face's ``BeamSearchScorer``, fairseq's
    sequence generator), with GNMT's length normalisation:

    - each step extends every live hypothesis by every token and ranks the
      extensions by sum(log p) (ties: lower beam, then lower token id);
    - an extension that ends (the end token, or the ``steps``-th token) becomes a
      finished hypothesis only if it ranks among the first ``beam_size``; its
      score is sum(log p) / length ** length_penalty, length counting the end
      token. Lower-ranked endings are dropped, never finished;
    - the first ``beam_size`` extensions that do not end are the next live beams;
    - an input's search stops when none of its live hypotheses, continued in any
      way, could score above its best finished one (``_ceiling``), or when none
      lives on. So stopping early never changes the answer: it is the answer of a
      search run to ``steps`` tokens.

    The answer is the best finished hypothesis (the earliest found among equals).
    Finished inputs leave the batch, so the rest decode on fewer rows.

    The ranking is numpy's (one sort per step for the whole batch); the rule then
    runs in Python over each input's ``2 * beam_size`` best extensions, which at
    batch 1 costs less than any vectorised form of it. After the first step every
    input has ``beam_size`` rows, idle ones at score -inf copying a live row.
    """
    width, batch = beam_size, input_ids.shape[0]
    # The first step needs one row per input; one input gets ``width`` rows at once
    # so that LiteRT is never resized (a batch resizes anyway as inputs leave).
    beams = width if batch == 1 else 1
    state = tuple(s.repeat(beams, axis=0) for s in backend.encode(input_ids))
    scores = np.full((batch * beams, 1), -np.inf)  # live sums per row; -inf: idle
    scores[::beams] = 0.0
    tokens = np.full(batch * beams, start, dtype=np.int32)
    seqs: list[list[int]] = [[]] * (batch * beams)  # the tokens so far of each row
    best_score, best_seq = [-np.inf] * batch, [[] for _ in range(batch)]
    where = list(range(batch))  # the input each group of ``width`` rows searches for
    step, inf, take = backend.step, -np.inf, 2 * width
    unmoved = list(range(batch * width))
    for t in range(steps):
        probs, state, _, _ = step(tokens, state)
        n, vocab = len(where), probs.shape[1]
        ranked, ranked_scores = _best(scores + _log(probs), n, take, probs)
        last, denominator = t == steps - 1, (t + 1) ** length_penalty
        rows, next_tokens, next_scores, next_seqs, next_where = [], [], [], [], []
        for i in range(n):
            who, base, kept = where[i], i * beams, 0
            for rank, (index, score) in enumerate(zip(ranked[i], ranked_scores[i])):
                if score == inf:  # an idle beam's; the rest are too
                    break
                beam, tok = divmod(index, vocab)
                if tok == end or last:
                    if rank < width and score / denominator > best_score[who]:
                        best_score[who] = score / denominator
                        seq = seqs[base + beam]
                        best_seq[who] = seq if tok == end else seq + [tok]
                elif kept < width:
                    if not kept:
                        leader = score
                    rows.append(base + beam)
                    next_tokens.append(tok)
                    next_scores.append(score)
                    next_seqs.append(seqs[base + beam] + [tok])
                    kept += 1
            if kept and _ceiling(leader, t, steps, length_penalty) > best_score[who]:
                next_where.append(who)
                idle = width - kept
                if idle:  # idle beams copy the leader's row, at score -inf
                    rows += [rows[-kept]] * idle
                    next_tokens += [start] * idle
                    next_scores += [inf] * idle
                    next_seqs += [[]] * idle
            elif kept:  # this input is done: its extensions leave
                del rows[-kept:], next_tokens[-kept:], next_scores[-kept:], next_seqs[-kept:]
        if not next_where:
            break
        if rows != unmoved[:n * beams]:  # the memory rows travel with their beams
            moved = np.array(rows)
            state = tuple(s.take(moved, axis=0) for s in state)
        seqs, tokens, where = next_seqs, np.array(next_tokens, dtype=np.int32), next_where
        beams = width
        scores = np.array(next_scores)[:, None]
    return best_seq


def sequence_scores(backend: Backend, input_ids: np.ndarray, targets: list[list[int]],
                    start: int, end: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Teacher-forced ``(sum(log p), length)`` of each target token sequence (without
    its end token) for its input: the quantities beam search ranks by. The end
    token is scored and counted unless the target already fills ``steps``."""
    full = [list(seq) + [end] if len(seq) < steps else list(seq)[:steps] for seq in targets]
    lengths = np.array([len(seq) for seq in full])
    grid = np.full((len(full), lengths.max()), end, dtype=np.int32)
    for i, seq in enumerate(full):
        grid[i, :len(seq)] = seq
    state = backend.encode(input_ids)
    token = np.full(len(full), start, dtype=np.int32)
    sums = np.zeros(len(full))
    for t in range(grid.shape[1]):
        probs, state, _, _ = backend.step(token, state)
        _check_finite(probs)
        token = grid[:, t]
        sums += np.where(t < lengths, _log(probs)[np.arange(len(full)), token], 0.0)
    return sums, lengths
