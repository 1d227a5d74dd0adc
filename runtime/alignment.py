"""Attention maps: which input tokens each output token attended to."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .vocab import Vocabulary


@dataclass(frozen=True)
class AttentionMap:
    """One decode's attention, as ``translate(..., return_attention=True)`` gives it."""
    text: str  # the decoded output, as translate returns it
    input_tokens: tuple[str, ...]  # the input's characters or words, as the encoder read them
    output_tokens: tuple[str, ...]  # each decoded token (end token excluded)
    # [len(output_tokens), len(input_tokens)]: row t holds the weights of the step that
    # produced output token t over the input tokens. Padding columns are left out, so
    # a row sums to less than 1 where the model attends to padding (an encoder
    # without mask_zero does).
    weights: np.ndarray


def attention_map(vocab: Vocabulary, input_ids: np.ndarray, output_ids: list[int],
                  weights: np.ndarray) -> AttentionMap:
    """The map of one decode from its padded input ids ``[steps]``, its output ids
    and the per-step weights ``[len(output_ids), steps]``."""
    real = np.flatnonzero(input_ids != vocab.pad_id)
    return AttentionMap(text=vocab.decode_target(output_ids),
                        input_tokens=tuple(vocab.input_tokens[i] for i in input_ids[real]),
                        output_tokens=tuple(vocab.target_tokens[i] for i in output_ids),
                        weights=np.asarray(weights, np.float32)[:, real])
