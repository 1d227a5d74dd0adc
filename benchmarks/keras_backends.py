"""Native Keras as backends of the runtime's own decode loop, so every path is
measured through the same loop: ``predict`` per step (the keras.io way), a
direct model call per step, and a ``tf.function``-compiled step."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from runtime.backends import Backend
from family.reference import ReferenceDecoder


class KerasBackend(Backend):
    def __init__(self, reference: ReferenceDecoder, mode: str):
        self.name = f"keras-{mode}"
        self.reference = reference
        self.mode = mode
        vocab = reference.vocab
        if mode == "tf.function":
            enc, dec = reference.encoder, reference.decoder
            width = vocab.target_size

            @tf.function(reduce_retracing=True)
            def encode(inputs):
                return enc(inputs, training=False)

            @tf.function(reduce_retracing=True)
            def step(token, state):
                x = (tf.one_hot(token[:, None], width) if reference.parts.decoder_embedding
                     is None else token[:, None])
                return dec([x, *state], training=False)

            self._encode, self._step = encode, step

    def encode(self, input_ids):
        if self.mode == "tf.function":
            out = self._encode(self.reference.encoder_inputs(input_ids))
            return self.reference.initial_state(
                input_ids, out if isinstance(out, (list, tuple)) else [out])
        return self.reference.encode(input_ids, self.mode)

    def step(self, token, state):
        if self.mode == "tf.function":
            probs, state, weights = self.reference.after_step(
                state, self._step(token, tuple(state)))
        else:
            probs, state, weights = self.reference.step(token, state, self.mode)
        return probs, state, probs.argmax(axis=-1).astype(np.int32), weights
