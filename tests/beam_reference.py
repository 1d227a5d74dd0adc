"""Independent answers for the beam search tests, sharing no code with
``runtime.decoding``.

- ``definition_beam``: beam search as the standard defines it (Hugging Face's
  ``BeamSearchScorer``, fairseq's sequence generator; GNMT's length
  normalisation), written literally: every level expands every live prefix by
  every token, Python's ``sorted`` ranks the candidates, and it always runs to the
  maximum length (no early stopping), so the runtime's stopping rule is checked,
  not copied.
- ``best_by_uniform_cost``: the exact most probable output (length penalty 0),
  found by a uniform-cost search over the whole output tree: a beam narrower than
  that tree prunes, and this search does not.

Both score a prefix by teacher forcing it from the start through a step function
``logprobs(text, prefixes) -> [len(prefixes), V]`` (float32 log-probabilities,
floored at 1e-30 and capped at 1 as probabilities, as the definition says).
"""
from __future__ import annotations

import heapq

import numpy as np


def step_logprobs(model):
    """``logprobs(text, prefixes)`` for a loaded runtime model: each prefix run from
    the start token through the model's own step graph."""
    vocab = model.vocabulary

    def logprobs(text: str, prefixes: list[tuple[int, ...]]) -> np.ndarray:
        state = model.encode([text] * len(prefixes))
        token = [vocab.start_id] * len(prefixes)
        for t in range(len(prefixes[0]) + 1):
            probs, state, _ = model.step(token, state)
            if t < len(prefixes[0]):
                token = [p[t] for p in prefixes]
        return np.log(np.clip(probs, 1e-30, 1.0))

    return logprobs


def definition_beam(logprobs, text: str, end: int, steps: int, width: int,
                    length_penalty: float = 1.0) -> list[int]:
    live = [((), 0.0)]  # (tokens, sum of log p)
    finished = []  # (score, order found, tokens)
    for t in range(steps):
        table = logprobs(text, [tokens for tokens, _ in live])
        candidates = sorted(((total + float(table[b][v]), b, v)
                             for b, (_, total) in enumerate(live)
                             for v in range(len(table[b]))),
                            key=lambda c: (-c[0], c[1], c[2]))
        following = []
        for rank, (total, b, v) in enumerate(candidates[:2 * width]):
            tokens = live[b][0]
            if v == end or t == steps - 1:  # it ends: finished only within the top width
                if rank < width:
                    out = tokens if v == end else tokens + (v,)
                    finished.append((total / (t + 1) ** length_penalty, len(finished), out))
            elif len(following) < width:
                following.append((tokens + (v,), total))
        live = following
        if not live:
            break
    return list(max(finished, key=lambda f: (f[0], -f[1]))[2])


def best_by_uniform_cost(logprobs, text: str, end: int, steps: int) -> tuple[list[int], float]:
    """The output with the highest sum(log p) and that sum. Log-probs are never
    positive, so the first complete output popped is the best of all."""
    queue = [(0.0, ())]
    while queue:
        cost, tokens = heapq.heappop(queue)
        if (tokens and tokens[-1] == end) or len(tokens) == steps:
            return list(tokens[:-1] if tokens and tokens[-1] == end else tokens), -cost
        row = logprobs(text, [tokens])[0]
        for v, lp in enumerate(row.tolist()):
            heapq.heappush(queue, (cost - lp, tokens + (v,)))
    raise AssertionError("unreachable: the tree is finite")
