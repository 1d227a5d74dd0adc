"""Proof that a prefix-step model's graphs give Keras's answers.

The encoder's outputs against the model's own encoder layers run by Keras; the
step's probabilities, at random positions of random prefixes, against the whole
Keras model (``model([source, prefix])[:, position]``, keras.io's way of
reading it); the state it returns against its definition (the token written at
the position, the position one on). Greedy strings are then checked against
keras.io's decode loop by ``parity.decode_checks``, as for every model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from family.prefix import PrefixParts, full_output

from .parity import ATOL, Check, _every_length, _random_inputs, step_backend


def graph_checks(directory: Path, variant: tuple[str, str], parts: PrefixParts, vocab,
                 texts: list[str], seed: int = 0) -> list[Check]:
    """One Check per output of the encoder and decoder_step graphs of ``variant``: the
    worst max abs difference held to ``ATOL``; the carried state and ``next_token``
    (outside near-ties) held to exact equality."""
    fmt, precision = variant
    config, backend = step_backend(directory, fmt, precision)
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    memory_names = [m.name for m in config.memory]
    length = parts.prefix_length

    def note(key, got, want):
        diff = np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))
        worst[key] = max(worst.get(key, 0.0), float(diff.max()) if diff.size else 0.0)

    for ids in (_random_inputs(vocab, rng), vocab.encode_inputs(texts[:32]),
                _every_length(vocab, rng)):
        state = backend.encode(ids)
        want_memory = [np.asarray(t) for t in parts.encode(ids)]
        for name, got, want in zip(memory_names, state[2:], want_memory, strict=True):
            note(f"encoder.{name}", got, want)
        batch = len(ids)
        fill = parts.target.one_hot if parts.target.one_hot else 0
        note("encoder.prefix", state[0], np.full((batch, length), fill))
        note("encoder.position", state[1], np.zeros((batch, 1)))
        # A prefix of tokens, the next one written at a random position.
        real = np.array([i for i in range(vocab.target_size) if i != fill], np.int32)
        prefix = rng.choice(real, (batch, length)).astype(np.int32)
        position = rng.integers(0, min(length, vocab.max_output_length), (batch, 1),
                                dtype=np.int32)
        token = rng.choice(real, batch).astype(np.int32)
        step_state = (prefix, position, *(np.asarray(m) for m in want_memory))
        probs, new_state, nxt, _ = backend.step(token, step_state)
        written = prefix.copy()
        written[np.arange(batch), position[:, 0]] = token
        want = full_output(parts, ids, written)[np.arange(batch), position[:, 0]]
        note("decoder_step.probs", probs, want)
        note("decoder_step.prefix_out", new_state[0], written)
        note("decoder_step.position_out", new_state[1], position + 1)
        top2 = np.sort(want, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 1e-4
        mismatch = (nxt != want.argmax(axis=1)) & clear
        worst["decoder_step.next_token"] = max(worst.get("decoder_step.next_token", 0.0),
                                               float(mismatch.sum()))
    name = f"{fmt}/{precision}"
    checks = []
    for key, value in worst.items():
        exact = key.endswith(("next_token", "prefix_out", "position_out", ".prefix",
                              ".position"))
        bound = "== 0" if exact else f"<= {ATOL:g}"
        checks.append(Check(name, key, value, bound, value == 0 if exact else value <= ATOL))
    return checks
