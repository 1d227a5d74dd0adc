"""Calibration inputs for the full-integer graphs: the ranges a converter fixes
once are measured on what each graph sees in use. The encoder and the fused graph
see input ids; the step sees the encoder's state and then its own, along greedy
paths (what decoding feeds it) and teacher-forced ones (where a beam or a right
answer goes where greedy does not). All of it comes from the fp32 graphs, which
equal Keras (the parity proof checks that afterwards)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.errors import InputError
from runtime.vocab import Vocabulary

# Step calls kept for the step graph's ranges (spread evenly over both paths);
# more adds conversion time without moving the ranges measurably.
MAX_STEP_SAMPLES = 1000


@dataclass(frozen=True)
class Calibration:
    """One calibration set: each list holds one converter call's inputs by name."""
    encoder: list[dict]  # {"input_ids": [1, max_input_length]} per input
    step: list[dict]  # {"token": [1], each state and memory tensor: [1, ...]}
    record: dict  # what artifact.json says of it

    @property
    def fused(self) -> list[dict]:
        """The fused greedy graph runs from input ids, like the encoder."""
        return self.encoder


def build_calibration(builder, vocab: Vocabulary, texts: list[str],
                      targets: list[list[str]] | None, source: str) -> Calibration:
    """Calibration calls for ``texts`` (with ``targets``, right answers per input, the
    teacher-forced path too); ``source`` says in artifact.json where they came from."""
    if not texts:
        raise InputError("full-integer quantization needs calibration inputs; none given")
    import tensorflow as tf

    ids = vocab.encode_inputs(texts)
    encoded = {k: v.numpy() for k, v in builder.encoder_fixed("unrolled")(tf.constant(ids)).items()}
    step = builder.decoder_step(vocab.max_input_length)
    names = [spec.name for spec in step.input_signature[1:]]
    missing = [n for n in names if n not in encoded]
    if missing:  # the builder names both sides; a mismatch is a bug here, not input
        raise RuntimeError(f"the encoder does not give the step's inputs {missing}")
    greedy = _greedy_calls(step, names, encoded, vocab)
    forced = _forced_calls(step, names, encoded, vocab, targets) if targets else []
    calls = _spread(greedy + forced, MAX_STEP_SAMPLES)
    kept_greedy = sum(1 for c in calls if c["path"] == "greedy")
    step_samples = [{k: v for k, v in c.items() if k != "path"} for c in calls]
    encoder = [{"input_ids": ids[i:i + 1]} for i in range(len(ids))]
    record = {"inputs": len(texts), "source": source,
              "step_calls": {"greedy": kept_greedy, "teacher_forced": len(calls) - kept_greedy},
              "graphs": "encoder and fused greedy: the inputs' ids; decoder_step: its "
                        "inputs along greedy and teacher-forced decodes of them"}
    return Calibration(encoder, step_samples, record)


def _row_calls(token, state: dict, rows, path: str) -> list[dict]:
    return [{"path": path, "token": token[i:i + 1], **{k: v[i:i + 1] for k, v in state.items()}}
            for i in rows]


def _greedy_calls(step, names, encoded: dict, vocab: Vocabulary) -> list[dict]:
    """The step's inputs while the fp32 step decodes greedily, rows that have ended
    left out."""
    import tensorflow as tf

    state = {k: encoded[k] for k in names}
    token = np.full(len(next(iter(state.values()))), vocab.start_id, np.int32)
    live = np.ones(len(token), bool)
    calls = []
    for _ in range(vocab.max_output_length):
        calls += _row_calls(token, state, np.flatnonzero(live), "greedy")
        out = step(tf.constant(token), *[tf.constant(state[k]) for k in names])
        token = out["next_token"].numpy()
        state = {k: out[f"{k}_out"].numpy() if f"{k}_out" in out else v
                 for k, v in state.items()}
        live &= token != vocab.end_id
        if not live.any():
            break
    return calls


def _forced_calls(step, names, encoded: dict, vocab: Vocabulary,
                  targets: list[list[str]]) -> list[dict]:
    """The step's inputs while it is fed each input's first right answer."""
    import tensorflow as tf

    answers = [vocab.encode_target(t[0])[:vocab.max_output_length] for t in targets]
    state = {k: encoded[k] for k in names}
    token = np.full(len(answers), vocab.start_id, np.int32)
    calls = []
    for t in range(max(len(a) for a in answers) + 1):
        live = [i for i, a in enumerate(answers) if t <= len(a)]
        calls += _row_calls(token, state, live, "teacher_forced")
        out = step(tf.constant(token), *[tf.constant(state[k]) for k in names])
        token = np.array([a[t] if t < len(a) else vocab.end_id for a in answers], np.int32)
        state = {k: out[f"{k}_out"].numpy() if f"{k}_out" in out else v
                 for k, v in state.items()}
    return calls


def _spread(calls: list[dict], limit: int) -> list[dict]:
    """At most ``limit`` of ``calls``, evenly spaced (so every step position and
    both paths stay represented)."""
    if len(calls) <= limit:
        return calls
    keep = np.linspace(0, len(calls) - 1, limit).round().astype(int)
    return [calls[i] for i in np.unique(keep)]
