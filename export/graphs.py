"""The graphs export converts, built from the trained layers' weights.

* encoder: ``input_ids`` int32 [batch, steps] -> the decoder's initial state,
  one tensor per name in ``state_names`` ([batch, latent] each)
* decoder_step: ``token`` int32 [batch] and the state -> ``probs`` [batch, vocab],
  the state as ``NAME_out``, and ``next_token`` int32 (the argmax, so the
  runtime's loop does no work of its own per step)

The state's names come from the cell (``h``, ``c`` for an LSTM, ``h`` for a GRU)
with the decoder layer's index: ``h0``, ``c0``. The ONNX encoder runs a fresh
Keras copy of the encoder layer (no cuDNN, so a GPU machine exports too) that
tf2onnx fuses into one ONNX ``LSTM`` or ``GRU`` op with a dynamic time axis.
TFLite cannot take that loop with builtin ops, so its encoder runs the cell
(``cells.CellOps``) over the fixed ``max_input_length`` steps, unrolled or in a
``WHILE`` (``encoder_choice`` picks): the runtime always pads inputs to that
length, as training did, so every input length gives Keras's answer.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from runtime.vocab import Vocabulary
from train.structure import Seq2SeqParts

from .cells import CellOps, cell_weights, keras_layer

# How the TFLite encoder runs its fixed number of steps (export measures both).
ENCODER_STYLES = ("unrolled", "loop")


class GraphBuilder:
    def __init__(self, parts: Seq2SeqParts, vocab: Vocabulary):
        self.parts = parts
        self.vocab = vocab
        self.latent = parts.latent_dim
        self.enc = cell_weights(parts.encoder_rnn, parts.cell)
        self.dec = cell_weights(parts.decoder_rnn, parts.cell)
        dense = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), np.float32)
                 for w in parts.dense.weights}
        self.dense_kernel = dense["kernel"]
        self.dense_bias = dense.get("bias", np.zeros(parts.target_size, np.float32))
        # One decoder layer: h0 (and c0).
        self.state_names = tuple(f"{kind}0" for kind in parts.state_kinds)

    # -- graph pieces (tf ops, made inside the traced functions) ---------------------
    def _encode_unrolled(self, input_ids):
        # One gather for all steps, then unstacked: about half the time of slicing
        # per step on LiteRT (measured: 101 against 201 µs, 16 steps, latent 128).
        cell = CellOps(self.enc)
        rows = tf.unstack(cell.rows(input_ids), axis=1)
        state = cell.first_step(rows[0])
        for row in rows[1:]:
            state = cell.step(row, state)
        return state

    def _encode_looped(self, input_ids):
        # One cell in a WHILE: its weights are packed once and stay in cache, where
        # the unrolled form packs a copy per step (measured at latent 256, 24 steps:
        # 560 against 985 µs; at latent 128 and 16 steps the unrolled one is faster).
        cell = CellOps(self.enc)
        rows = cell.rows(input_ids)
        state = cell.first_step(rows[:, 0])

        def body(t, *state):
            return (t + 1, *cell.step(tf.gather(rows, t, axis=1), state))

        steps = self.vocab.max_input_length
        _, *state = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(1), *state))
        return tuple(state)

    def _keras_encoder(self):
        """The ONNX encoder: ids -> state through a fresh Keras copy of the layer."""
        width = self.parts.input_size
        layer = keras_layer(self.parts.encoder_rnn, width)

        def encode(ids):
            # one_hot of the padding id (== width) is an all-zero row, as in training.
            _, *state = layer(tf.one_hot(ids, width), training=False)
            return tuple(state)

        return encode, layer

    def _step_constants(self):
        return CellOps(self.dec), tf.constant(self.dense_kernel), tf.constant(self.dense_bias)

    @staticmethod
    def _step(consts, token, state):
        cell, dense_kernel, dense_bias = consts
        state = cell.step(cell.rows(token), state)
        return state, tf.matmul(state[0], dense_kernel) + dense_bias

    def _state_specs(self):
        return [tf.TensorSpec([None, self.latent], tf.float32, name)
                for name in self.state_names]

    def _named_state(self, state, suffix: str = "") -> dict:
        return {f"{name}{suffix}": t for name, t in zip(self.state_names, state)}

    # -- the graphs export converts -------------------------------------------------
    def encoder_fixed(self, style: str = "unrolled"):
        """Encoder over exactly ``max_input_length`` steps, builtin ops only: the
        cell unrolled, or (``style="loop"``) one cell in a ``WHILE``."""
        encode = self._fixed_encoder(style)
        spec = tf.TensorSpec([None, self.vocab.max_input_length], tf.int32, "input_ids")

        @tf.function(input_signature=[spec])
        def encoder(input_ids):
            return self._named_state(encode(input_ids))

        return encoder

    def _fixed_encoder(self, style: str):
        if style not in ENCODER_STYLES:
            raise ValueError(f"encoder style must be one of {ENCODER_STYLES}, got {style!r}")
        return self._encode_unrolled if style == "unrolled" else self._encode_looped

    def encoder_dynamic(self):
        """Encoder with a dynamic time axis (for tf2onnx's fused LSTM / GRU op)."""
        encode, layer = self._keras_encoder()

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, "input_ids")])
        def encoder(input_ids):
            return self._named_state(encode(input_ids))

        encoder.keras_layer = layer  # keep the layer alive with the function
        return encoder

    def decoder_step(self):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, "token"),
                                      *self._state_specs()])
        def decoder_step(token, *state):
            state, logits = self._step(self._step_constants(), token, state)
            probs = tf.nn.softmax(logits)
            return {"probs": probs, **self._named_state(state, "_out"),
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
        layer = None
        if fmt == "onnx":
            encode, layer = self._keras_encoder()
            time_axis = None
        else:
            time_axis = vocab.max_input_length
            encode = self._fixed_encoder(encoder_style)

        @tf.function(input_signature=[tf.TensorSpec([None, time_axis], tf.int32, "input_ids")])
        def greedy(input_ids):
            consts = self._step_constants()
            batch = tf.shape(input_ids)[0]
            state = encode(input_ids)
            token = tf.fill([batch], start)
            out = tf.zeros([batch, steps], tf.int32)
            done = tf.zeros([batch], tf.bool)
            columns = tf.range(steps)

            def more(t, token, out, done, *state):
                return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(done)))

            def body(t, token, out, done, *state):
                state, logits = self._step(consts, token, state)
                token = tf.argmax(logits, axis=-1, output_type=tf.int32)
                out = tf.where(tf.equal(columns, t)[None, :], token[:, None], out)
                return (t + 1, token, out, tf.logical_or(done, tf.equal(token, end)), *state)

            _, _, out, _, *_ = tf.while_loop(
                more, body, (tf.constant(0), token, out, done, *state))
            # Each row's length is its first end token. The loop stops early only once
            # every row has one, so columns it never wrote come after all of them.
            where_end = tf.where(tf.equal(out, end), columns[None, :], steps)
            lengths = tf.reduce_min(where_end, axis=1)
            return {"output_ids": out, "lengths": lengths}

        greedy.keras_layer = layer  # keep the ONNX encoder's layer alive
        return greedy
