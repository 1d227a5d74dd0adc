"""The recurrent cells export rebuilds from trained weights, as TensorFlow ops.

One description covers the family (as in ONNX's LSTM/GRU operators): a cell
has a state of one or two ``[batch, units]`` tensors (``h`` and ``c`` for an
LSTM, ``h`` for a GRU), an input table and a recurrent matrix. Ids index the
input table directly (a gather equals the one-hot product), with an extra
last row, the bias alone, for the all-zero padding id.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from train.structure import CELLS


@dataclass(frozen=True)
class CellWeights:
    kind: str  # "lstm" or "gru"
    units: int
    # [inputs + 1, gates * units]: one-hot row i times the kernel, plus the input bias.
    table: np.ndarray
    recurrent: np.ndarray  # [units, gates * units]
    # GRU with reset_after (Keras 3's default): the bias added to h @ recurrent.
    recurrent_bias: np.ndarray | None = None
    reset_after: bool = False

    @property
    def state_kinds(self) -> tuple[str, ...]:
        return CELLS[self.kind][1]


def _named(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    return {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), dtype=np.float32)
            for w in layer.weights}


def cell_weights(layer: keras.layers.RNN, kind: str) -> CellWeights:
    weights = _named(layer.cell)
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    gates = kernel.shape[1]
    bias = weights.get("bias", np.zeros(gates, np.float32))
    reset_after = kind == "gru" and bool(layer.cell.reset_after)
    recurrent_bias = None
    if reset_after:
        bias, recurrent_bias = (bias[0], bias[1]) if bias.ndim == 2 else (
            bias, np.zeros(gates, np.float32))
    pad = np.zeros((1, gates), np.float32)
    return CellWeights(kind, int(layer.units), np.concatenate([kernel, pad]) + bias, recurrent,
                       recurrent_bias, reset_after)


class CellOps:
    """The cell's step as tf ops. Make it inside the traced function: constants
    captured from outside would become extra graph inputs in tf2onnx."""

    def __init__(self, w: CellWeights):
        self.w = w
        self.table = tf.constant(w.table)
        self.recurrent = tf.constant(w.recurrent)
        if w.recurrent_bias is not None:
            self.recurrent_bias = tf.constant(w.recurrent_bias)

    def rows(self, ids):
        return tf.gather(self.table, ids)

    def step(self, xwb, state: tuple) -> tuple:
        """One step from ``xwb`` (rows of the input table) and the state."""
        if self.w.kind == "lstm":
            h, c = state
            i, f, g, o = tf.split(xwb + tf.matmul(h, self.recurrent), 4, axis=-1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c
        (h,) = state
        x_z, x_r, x_h = tf.split(xwb, 3, axis=-1)
        if self.w.reset_after:
            inner = tf.matmul(h, self.recurrent) + self.recurrent_bias
            r_z, r_r, r_h = tf.split(inner, 3, axis=-1)
            z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
            candidate = tf.tanh(x_h + r * r_h)
        else:
            units = self.w.units
            r_zr = tf.matmul(h, self.recurrent[:, :2 * units])
            r_z, r_r = tf.split(r_zr, 2, axis=-1)
            z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
            candidate = tf.tanh(x_h + tf.matmul(r * h, self.recurrent[:, 2 * units:]))
        return (z * h + (1 - z) * candidate,)

    def first_step(self, xwb) -> tuple:
        """The first step from a zero state (cheaper where terms vanish)."""
        if self.w.kind == "lstm":  # h @ R and f * c vanish
            i, _, g, o = tf.split(xwb, 4, axis=-1)
            c = tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c
        zero = tf.zeros([tf.shape(xwb)[0], self.w.units], xwb.dtype)
        return self.step(xwb, (zero,))


def _keras_class(layer):
    return next(cls for cls, _ in CELLS.values() if isinstance(layer, cls))


def keras_layer(layer: keras.layers.RNN, width: int) -> keras.layers.RNN:
    """A fresh Keras copy of ``layer`` that returns its final state, without cuDNN
    (so a GPU machine exports the same graph), holding the trained weights."""
    config = {**layer.get_config(), "return_sequences": False, "return_state": True,
              "use_cudnn": False, "name": f"{layer.name}_export"}
    fresh = _keras_class(layer).from_config(config)
    fresh.build((None, None, width))
    fresh.set_weights(layer.get_weights())
    return fresh
