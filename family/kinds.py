"""The family's tables, written once: the recurrent cells export rebuilds and the
attention kinds, with their Keras classes. One description of cell, layers and
directions serves the whole family, as PyTorch's ``nn.RNNBase`` and ONNX's
LSTM/GRU operators describe theirs."""
from __future__ import annotations

from dataclasses import dataclass

import keras

from runtime.metadata import ATTENTION_KINDS


@dataclass(frozen=True)
class CellKind:
    name: str  # as artifact.json's architecture records it
    keras_class: type  # the Keras layer
    state: tuple[str, ...]  # the state tensors a layer carries, in order
    gates: int  # blocks of the fused kernels: i, f, c, o (LSTM); z, r, h (GRU)


CELLS = {"lstm": CellKind("lstm", keras.layers.LSTM, ("h", "c"), 4),
         "gru": CellKind("gru", keras.layers.GRU, ("h",), 3)}

# Luong's dot-product Attention and Bahdanau's AdditiveAttention, by the name
# artifact.json records (the runtime's list, so the two cannot drift apart).
ATTENTION = {"luong": keras.layers.Attention, "bahdanau": keras.layers.AdditiveAttention}
if tuple(ATTENTION) != ATTENTION_KINDS:
    raise ImportError(f"family.kinds.ATTENTION {tuple(ATTENTION)} and the runtime's "
                      f"ATTENTION_KINDS {ATTENTION_KINDS} differ")
