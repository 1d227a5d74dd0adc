"""Native Keras as backends of the runtime's own decode loop, so every path is
measured through the same loop: ``predict`` per step (the keras.io way), a
direct model call per step, and a ``tf.function``-compiled step."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from runtime.backends import Backend
from train.reference import ReferenceDecoder


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
                probs, *state = dec([x, *state], training=False)
                probs = probs[:, 0, :]
                return probs, tuple(state), tf.argmax(probs, axis=-1, output_type=tf.int32)

            self._encode, self._step = encode, step

    def encode(self, input_ids):
        if self.mode == "tf.function":
            state = self._encode(self.reference.encoder_inputs(input_ids))
            given = iter(state if isinstance(state, (list, tuple)) else [state])
            # Decoder layers started from zeros, as ReferenceDecoder.encode does.
            return tuple(np.asarray(next(given)) if rec.state_from is not None else
                         np.zeros((len(input_ids), rec.units), np.float32)
                         for rec in self.reference.parts.decoder
                         for _ in self.reference.parts.state_kinds)
        return self.reference.encode(input_ids, self.mode)

    def step(self, token, state):
        if self.mode == "tf.function":
            probs, state, nxt = self._step(token, tuple(state))
            return probs.numpy(), tuple(t.numpy() for t in state), nxt.numpy()
        probs, state = self.reference.step(token, state, self.mode)
        return probs, state, probs.argmax(axis=-1).astype(np.int32)
