"""The graphs export converts, built from the trained layers' weights.

* encoder: ``input_ids`` int32 [batch, steps] -> ``h``, ``c`` [batch, latent]
* decoder_step: ``token`` int32 [batch], ``h``, ``c`` -> ``probs`` [batch, vocab],
  ``h_out``, ``c_out``, ``next_token`` int32 (the argmax, so the runtime's loop
  does no work of its own per step)

Ids index the LSTM kernel directly (a gather equals a one-hot matmul), with an
extra all-zero row for the zero-padding id. The ONNX encoder runs a fresh
Keras LSTM (``use_cudnn=False``, so a GPU machine exports too) that tf2onnx
fuses into one ONNX ``LSTM`` op with a dynamic time axis. TFLite cannot take
that loop with builtin ops, so its encoder runs the cell over the fixed
``max_input_length`` steps, unrolled or in a ``WHILE`` (``encoder_choice``
picks): the runtime always pads inputs to that length, as training did, so
every input length gives Keras's answer.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from runtime.vocab import Vocabulary
from train.errors import ModelShapeError
from train.structure import Seq2SeqParts


# How the TFLite encoder runs its fixed number of steps (export measures both).
ENCODER_STYLES = ("unrolled", "loop")


@dataclass(frozen=True)
class LstmWeights:
    # Input rows plus bias, [inputs + 1, 4 * latent]: row i is one-hot i times the
    # kernel, plus the bias; the last row (the zero-padding id) is the bias alone.
    table: np.ndarray
    recurrent: np.ndarray  # [latent, 4 * latent]


def lstm_weights(layer: keras.layers.LSTM) -> LstmWeights:
    cell = layer.cell
    names = (getattr(cell.activation, "__name__", ""),
             getattr(cell.recurrent_activation, "__name__", ""))
    if names != ("tanh", "sigmoid"):
        raise ModelShapeError(f"LSTM {layer.name!r} uses activations {names}; export "
                              "supports the default (tanh, sigmoid)")
    weights = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), dtype=np.float32)
               for w in cell.weights}
    kernel, recurrent = weights["kernel"], weights["recurrent_kernel"]
    bias = weights.get("bias", np.zeros(kernel.shape[1], np.float32))
    pad = np.zeros((1, kernel.shape[1]), np.float32)
    return LstmWeights(np.concatenate([kernel, pad]) + bias, recurrent)


def _cell(xwb, h, c, recurrent):
    """One LSTM step (Keras gate order i, f, g, o); ``xwb`` is a table row."""
    i, f, g, o = tf.split(xwb + tf.matmul(h, recurrent), 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def _first_cell(xwb):
    """The first step from a zero state, where h @ R and f * c vanish."""
    i, _, g, o = tf.split(xwb, 4, axis=-1)
    c = tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


class GraphBuilder:
    def __init__(self, parts: Seq2SeqParts, vocab: Vocabulary):
        self.parts = parts
        self.vocab = vocab
        self.latent = parts.latent_dim
        self.enc = lstm_weights(parts.encoder_lstm)
        self.dec = lstm_weights(parts.decoder_lstm)
        dense = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), np.float32)
                 for w in parts.dense.weights}
        self.dense_kernel = dense["kernel"]
        self.dense_bias = dense.get("bias", np.zeros(parts.target_size, np.float32))

    # -- graph pieces (tf ops; constants are made inside the traced function, since
    #    captured ones would become extra graph inputs in tf2onnx) --------------------
    def _encode_unrolled(self, input_ids):
        # One gather for all steps, then unstacked: about half the time of slicing
        # per step on LiteRT (measured: 101 against 201 µs, 16 steps, latent 128).
        table, recurrent = tf.constant(self.enc.table), tf.constant(self.enc.recurrent)
        rows = tf.unstack(tf.gather(table, input_ids), axis=1)
        h, c = _first_cell(rows[0])
        for row in rows[1:]:
            h, c = _cell(row, h, c, recurrent)
        return h, c

    def _encode_looped(self, input_ids):
        # One cell in a WHILE: its weights are packed once and stay in cache, where
        # the unrolled form packs a copy per step (measured at latent 256, 24 steps:
        # 560 against 985 µs; at latent 128 and 16 steps the unrolled one is faster).
        table, recurrent = tf.constant(self.enc.table), tf.constant(self.enc.recurrent)
        rows = tf.gather(table, input_ids)
        h, c = _first_cell(rows[:, 0])

        def body(t, h, c):
            h, c = _cell(tf.gather(rows, t, axis=1), h, c, recurrent)
            return t + 1, h, c

        steps = self.vocab.max_input_length
        _, h, c = tf.while_loop(lambda t, h, c: t < steps, body, (tf.constant(1), h, c))
        return h, c

    def _keras_encoder_layer(self):
        layer = keras.layers.LSTM(self.latent, return_state=True, use_cudnn=False)
        layer.build((None, None, self.parts.input_size))
        layer.set_weights(self.parts.encoder_lstm.get_weights())
        return layer

    def _step_constants(self):
        w = self.dec
        return tuple(tf.constant(a) for a in (w.table, w.recurrent, self.dense_kernel,
                                              self.dense_bias))

    @staticmethod
    def _step(consts, token, h, c):
        table, recurrent, dense_kernel, dense_bias = consts
        h, c = _cell(tf.gather(table, token), h, c, recurrent)
        return h, c, tf.matmul(h, dense_kernel) + dense_bias

    # -- the graphs export converts -------------------------------------------------
    def encoder_fixed(self, style: str = "unrolled"):
        """Encoder over exactly ``max_input_length`` steps, builtin ops only: the
        cell unrolled, or (``style="loop"``) one cell in a ``WHILE``."""
        encode = self._fixed_encoder(style)
        spec = tf.TensorSpec([None, self.vocab.max_input_length], tf.int32, "input_ids")

        @tf.function(input_signature=[spec])
        def encoder(input_ids):
            h, c = encode(input_ids)
            return {"h": h, "c": c}

        return encoder

    def _fixed_encoder(self, style: str):
        if style not in ENCODER_STYLES:
            raise ValueError(f"encoder style must be one of {ENCODER_STYLES}, got {style!r}")
        return self._encode_unrolled if style == "unrolled" else self._encode_looped

    def encoder_dynamic(self):
        """Encoder with a dynamic time axis (for tf2onnx's fused LSTM op)."""
        layer = self._keras_encoder_layer()
        width = self.parts.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, "input_ids")])
        def encoder(input_ids):
            # one_hot of the padding id (== width) is an all-zero row, as in training.
            _, h, c = layer(tf.one_hot(input_ids, width), training=False)
            return {"h": h, "c": c}

        encoder.keras_layer = layer  # keep the layer alive with the function
        return encoder

    def decoder_step(self):
        latent = self.latent

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, "token"),
                                      tf.TensorSpec([None, latent], tf.float32, "h"),
                                      tf.TensorSpec([None, latent], tf.float32, "c")])
        def decoder_step(token, h, c):
            h, c, logits = self._step(self._step_constants(), token, h, c)
            probs = tf.nn.softmax(logits)
            return {"probs": probs, "h_out": h, "c_out": c,
                    "next_token": tf.argmax(probs, axis=-1, output_type=tf.int32)}

        return decoder_step

    def greedy_fused(self, fmt: str, encoder_style: str = "unrolled"):
        """The whole greedy decode as one graph: ``input_ids`` -> ``output_ids``
        [batch, max_output_length] and ``lengths`` [batch] (end token excluded).

        A ``tf.while_loop`` that stops once every row has emitted the end token;
        tf2onnx makes it an ONNX ``Loop``, the TFLite converter a builtin
        ``WHILE``. Each step writes its column of a preallocated tensor through a
        select (no TensorList, which TFLite cannot run without Flex).
        """
        vocab = self.vocab
        steps, start, end = vocab.max_output_length, vocab.start_id, vocab.end_id
        if fmt == "onnx":
            layer, width = self._keras_encoder_layer(), self.parts.input_size
            time_axis = None

            def encode(ids):
                _, h, c = layer(tf.one_hot(ids, width), training=False)
                return h, c
        else:
            time_axis = vocab.max_input_length
            encode = self._fixed_encoder(encoder_style)

        @tf.function(input_signature=[tf.TensorSpec([None, time_axis], tf.int32, "input_ids")])
        def greedy(input_ids):
            consts = self._step_constants()
            batch = tf.shape(input_ids)[0]
            h, c = encode(input_ids)
            token = tf.fill([batch], start)
            out = tf.zeros([batch, steps], tf.int32)
            done = tf.zeros([batch], tf.bool)
            columns = tf.range(steps)

            def more(t, token, h, c, out, done):
                return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(done)))

            def body(t, token, h, c, out, done):
                h, c, logits = self._step(consts, token, h, c)
                token = tf.argmax(logits, axis=-1, output_type=tf.int32)
                out = tf.where(tf.equal(columns, t)[None, :], token[:, None], out)
                return t + 1, token, h, c, out, tf.logical_or(done, tf.equal(token, end))

            _, _, _, _, out, _ = tf.while_loop(
                more, body, (tf.constant(0), token, h, c, out, done))
            # Each row's length is its first end token. The loop stops early only once
            # every row has one, so columns it never wrote come after all of them.
            where_end = tf.where(tf.equal(out, end), columns[None, :], steps)
            lengths = tf.reduce_min(where_end, axis=1)
            return {"output_ids": out, "lengths": lengths}

        if fmt == "onnx":
            greedy.keras_layer = layer
        return greedy
