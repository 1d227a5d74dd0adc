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

from family.kinds import CELLS


@dataclass(frozen=True)
class CellWeights:
    """One trained recurrent cell's weights, in Keras's gate layout."""
    kind: str  # "lstm" or "gru"
    units: int
    kernel: np.ndarray  # [inputs, gates * units]
    bias: np.ndarray  # [gates * units], added to the input's product
    recurrent: np.ndarray  # [units, gates * units]
    # GRU with reset_after (Keras 3's default): the bias added to h @ recurrent.
    recurrent_bias: np.ndarray | None = None
    reset_after: bool = False

    @property
    def state_kinds(self) -> tuple[str, ...]:
        """The state tensors the cell carries, in order: ``("h", "c")`` (LSTM), ``("h",)``
        (GRU)."""
        return CELLS[self.kind].state

    def table(self, embedding: np.ndarray | None = None) -> np.ndarray:
        """Input rows per id, bias included: ``embedding @ kernel``, or for one-hot
        inputs the kernel's rows plus a last row for the all-zero padding id."""
        if embedding is not None:
            product = embedding.astype(np.float64) @ self.kernel.astype(np.float64)
            return (product + self.bias).astype(np.float32)
        pad = np.zeros((1, self.kernel.shape[1]), np.float32)
        return np.concatenate([self.kernel, pad]) + self.bias


def _named(layer: keras.layers.Layer) -> dict[str, np.ndarray]:
    return {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), dtype=np.float32)
            for w in layer.weights}


def cell_weights(layer: keras.layers.RNN, kind: str) -> CellWeights:
    """The trained weights of ``layer``, a ``kind`` ("lstm" or "gru") layer; a missing bias
    is zeros, and a ``reset_after`` GRU's two bias rows become ``bias`` and
    ``recurrent_bias``."""
    weights = _named(layer.cell)
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    gates = kernel.shape[1]
    bias = weights.get("bias", np.zeros(gates, np.float32))
    reset_after = kind == "gru" and bool(layer.cell.reset_after)
    recurrent_bias = None
    if reset_after:
        bias, recurrent_bias = (bias[0], bias[1]) if bias.ndim == 2 else (
            bias, np.zeros(gates, np.float32))
    return CellWeights(kind, int(layer.units), kernel, bias, recurrent, recurrent_bias,
                       reset_after)


class CellOps:
    """The cell's step as tf ops. Make it inside the traced function: constants
    captured from outside would become extra graph inputs in tf2onnx."""

    def __init__(self, w: CellWeights, table: np.ndarray | None = None):
        self.w = w
        self.recurrent = tf.constant(w.recurrent)
        if w.recurrent_bias is not None:
            self.recurrent_bias = tf.constant(w.recurrent_bias)
        if table is not None:  # the bottom layer: ids index the table
            self.table = tf.constant(table)
        else:  # a layer above another: its sequence output is the input
            self.kernel, self.bias = tf.constant(w.kernel), tf.constant(w.bias)

    def rows(self, ids):
        """``xwb`` for token ids (bottom layer)."""
        return tf.gather(self.table, ids)

    def project(self, x):
        """``xwb`` for the output of the layer below."""
        return tf.matmul(x, self.kernel) + self.bias

    def project_all(self, xs: list) -> list:
        """``xwb`` for every step of the layer below, in one product: the kernel is
        read once for all steps instead of once per step."""
        stacked = tf.stack(xs, axis=1)  # [batch, steps, width]
        flat = tf.reshape(stacked, [-1, stacked.shape[-1]])
        gates = tf.reshape(self.project(flat), [-1, len(xs), self.kernel.shape[1]])
        return tf.unstack(gates, axis=1)

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


def _no_cudnn(config):
    """Turn cuDNN off in a layer config and every layer config nested in it, so a
    GPU machine exports the same graph (tf2onnx cannot convert cuDNN kernels)."""
    if isinstance(config, dict):
        if "use_cudnn" in config:
            config["use_cudnn"] = False
        for value in config.values():
            _no_cudnn(value)
    return config


def keras_encoder(model: keras.Model) -> keras.Model:
    """A fresh Keras copy of the encoder model with cuDNN off and the trained weights.
    Adapted layers (Keras 2 files) become Keras's own class, which computes the same."""
    def fresh(layer):
        config = _no_cudnn(layer.get_config())
        for kind in CELLS.values():
            cls = kind.keras_class
            if isinstance(layer, cls):
                return cls.from_config(config)
        return type(layer).from_config(config)

    clone = keras.models.clone_model(model, clone_function=fresh)
    clone.set_weights(model.get_weights())
    return clone
