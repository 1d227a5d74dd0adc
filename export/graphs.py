"""The graphs export converts, built from the trained layers' weights.

* encoder: ``input_ids`` int32 [batch, steps] -> ``h``, ``c`` [batch, latent]
* decoder_step: ``token`` int32 [batch], ``h``, ``c`` -> ``probs`` [batch, vocab],
  ``h_out``, ``c_out``, ``next_token`` int32 (the argmax, so the runtime's loop
  does no work of its own per step)

Ids index the LSTM kernel directly (a gather equals a one-hot matmul), with an
extra all-zero row for the zero-padding id. The ONNX encoder runs a fresh
Keras LSTM (``use_cudnn=False``, so a GPU machine exports too) that tf2onnx
fuses into one ONNX ``LSTM`` op with a dynamic time axis. TFLite cannot take
that loop with builtin ops, so its encoder is the cell unrolled over the fixed
``max_input_length`` steps: the runtime always pads inputs to that length, as
training did, so every input length gives Keras's answer.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from runtime.vocab import Vocabulary
from train.errors import ModelShapeError
from train.structure import Seq2SeqParts


@dataclass(frozen=True)
class LstmWeights:
    kernel: np.ndarray  # [inputs + 1, 4 * latent]; last row zero (padding id)
    recurrent: np.ndarray  # [latent, 4 * latent]
    bias: np.ndarray  # [4 * latent]


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
    return LstmWeights(np.concatenate([kernel, pad]), recurrent, bias)


def _cell(xw, h, c, recurrent, bias):
    z = xw + tf.matmul(h, recurrent) + bias
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
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

    def encoder_unrolled(self):
        """Encoder over exactly ``max_input_length`` steps, builtin ops only."""
        steps, latent, w = self.vocab.max_input_length, self.latent, self.enc

        @tf.function(input_signature=[tf.TensorSpec([None, steps], tf.int32, "input_ids")])
        def encoder(input_ids):
            # Constants made inside the function are embedded in the graph; captured
            # ones would become extra graph inputs in tf2onnx.
            kernel, recurrent, bias = (tf.constant(a) for a in (w.kernel, w.recurrent, w.bias))
            xw = tf.gather(kernel, input_ids)
            h = tf.zeros([tf.shape(input_ids)[0], latent])
            c = h
            for t in range(steps):
                h, c = _cell(xw[:, t], h, c, recurrent, bias)
            return {"h": h, "c": c}

        return encoder

    def encoder_dynamic(self):
        """Encoder with a dynamic time axis (for tf2onnx's fused LSTM op)."""
        layer = keras.layers.LSTM(self.latent, return_state=True, use_cudnn=False)
        layer.build((None, None, self.parts.input_size))
        layer.set_weights(self.parts.encoder_lstm.get_weights())
        width = self.parts.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, "input_ids")])
        def encoder(input_ids):
            # one_hot of the padding id (== width) is an all-zero row, as in training.
            _, h, c = layer(tf.one_hot(input_ids, width), training=False)
            return {"h": h, "c": c}

        encoder.keras_layer = layer  # keep the layer alive with the function
        return encoder

    def decoder_step(self):
        latent, w = self.latent, self.dec
        arrays = (w.kernel, w.recurrent, w.bias, self.dense_kernel, self.dense_bias)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, "token"),
                                      tf.TensorSpec([None, latent], tf.float32, "h"),
                                      tf.TensorSpec([None, latent], tf.float32, "c")])
        def decoder_step(token, h, c):
            kernel, recurrent, bias, dense_kernel, dense_bias = map(tf.constant, arrays)
            h, c = _cell(tf.gather(kernel, token), h, c, recurrent, bias)
            probs = tf.nn.softmax(tf.matmul(h, dense_kernel) + dense_bias)
            return {"probs": probs, "h_out": h, "c_out": c,
                    "next_token": tf.argmax(probs, axis=-1, output_type=tf.int32)}

        return decoder_step
