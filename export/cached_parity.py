"""Proof that a cached-step model's graphs give Keras's answers (``family.cached``).

The encoder's outputs against their definitions: the empty prefix, position 0, zero
caches, each decoder layer's cross-attention keys and values from its own layers on
Keras's encoder outputs, the masks Keras propagates. Then the step is run along
whole random prefixes, position after position, each step on the caches the one
before returned: its probabilities at every position against the *whole* Keras
model's there (keras.io's way of reading it, what the prefix step reproduces). The
greedy strings are checked against keras.io's loop by ``parity.decode_checks``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from family.cached import CachedParts, cross_caches
from family.prefix import full_output

from .parity import ATOL, Check, _every_length, _random_inputs, step_backend

EXACT = ("next_token", "prefix_out", "position_out", ".prefix", ".position", ".cache")


def graph_checks(directory: Path, variant: tuple[str, str], cached: CachedParts, vocab,
                 texts: list[str], seed: int = 0) -> list[Check]:
    """One Check per output of ``variant``'s encoder and decoder_step graphs: the
    worst max abs difference held to ``ATOL``; the carried prefix and position, the
    zero caches and ``next_token`` (outside near-ties) held to exact equality."""
    fmt, precision = variant
    config, backend = step_backend(directory, fmt, precision)
    parts, length = cached.prefix, cached.length
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    n = len(config.state)

    def note(key, got, want):
        diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
        worst[key] = max(worst.get(key, 0.0), float(diff.max()) if diff.size else 0.0)

    fill = 0
    real = np.array([i for i in range(vocab.target_size) if i != fill], np.int32)
    for ids in (_random_inputs(vocab, rng), vocab.encode_inputs(texts[:32]),
                _every_length(vocab, rng)):
        batch = len(ids)
        state = list(backend.encode(ids))
        encoded = parts.encode(ids)
        masks = [np.asarray(m) for name, m in zip(parts.memory_names, encoded)
                 if name.endswith("_mask")]
        want_memory = [np.asarray(c) for c in cross_caches(cached, encoded)] + masks
        note("encoder.prefix", state[0], np.full((batch, length), fill))
        note("encoder.position", state[1], np.zeros((batch, 1)))
        for s, got in zip(config.state[2:], state[2:n]):
            note(f"encoder.{s.name}", got, np.zeros((batch, s.units)))
        for m, got, want in zip(config.memory, state[n:], want_memory, strict=True):
            note(f"encoder.{m.name}", got, want)
        # A whole prefix of tokens, stepped through position by position.
        prefix = rng.choice(real, (batch, length)).astype(np.int32)
        prefix[:, 0] = vocab.start_id
        want = full_output(parts, ids, prefix)
        for t in range(min(length, vocab.max_output_length)):
            probs, new_state, nxt, _ = backend.step(prefix[:, t], tuple(state))
            written = np.asarray(state[0]).copy()
            written[:, t] = prefix[:, t]
            note("decoder_step.probs", probs, want[:, t])
            note("decoder_step.prefix_out", new_state[0], written)
            note("decoder_step.position_out", new_state[1], np.full((batch, 1), t + 1))
            top2 = np.sort(want[:, t], axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 1e-4
            mismatch = (nxt != want[:, t].argmax(axis=1)) & clear
            worst["decoder_step.next_token"] = max(
                worst.get("decoder_step.next_token", 0.0), float(mismatch.sum()))
            state = list(new_state)  # the memory passed on
    name = f"{fmt}/{precision}"
    checks = []
    for key, value in worst.items():
        exact = key.endswith(EXACT) or key.startswith("encoder.cache")
        bound = "== 0" if exact else f"<= {ATOL:g}"
        checks.append(Check(name, key, value, bound, value == 0 if exact else value <= ATOL))
    return checks
