"""The graphs export converts for a model cut by ``family.prefix`` (the prefix step).

* encoder: ``input_ids`` int32 [batch, max_input_length] -> ``prefix`` int32
  [batch, T] (the empty buffer), ``position`` int32 [batch, 1] (zeros) and the
  tensors that cross from the encoder part (``memory``..., each mask as float32)
* decoder_step: ``token``, ``prefix``, ``position`` and the memory -> ``probs``
  [batch, vocab] at the position, ``prefix_out`` (the token written in),
  ``position_out`` (one on) and ``next_token`` (the argmax)
* greedy: ``input_ids`` -> ``output_ids`` [batch, max_output_length], ``lengths``

The trained layers run as Keras runs them (``PrefixParts``), inside ``tf.function``s;
TFLite gets them with the variables frozen into constants (``freeze``).
"""
from __future__ import annotations

import tensorflow as tf

from family.prefix import POSITION, PREFIX, PrefixParts
from runtime.vocab import Vocabulary


class PrefixGraphBuilder:
    """``encoder``, ``decoder_step`` and ``greedy_fused`` of a prefix-step model. The
    state is a tuple of tensors (``state_names``), the memory another
    (``memory_names``); a builder for another step overrides ``_start``, ``_step`` and
    the specs (``export.cached_graphs``)."""

    def __init__(self, parts: PrefixParts, vocab: Vocabulary):
        self.parts, self.vocab = parts, vocab
        self.state_names = (PREFIX, POSITION)
        self.state_units = (parts.prefix_length, 1)
        self.state_dtypes = ("int32", "int32")
        self.memory_names = tuple(name for name, _, _ in parts.memory)
        self.attention = None

    def _memory_specs(self):
        return [tf.TensorSpec([None, *shape], tf.dtypes.as_dtype(dtype), name)
                for name, shape, dtype in self.parts.memory]

    def _state_specs(self):
        return [tf.TensorSpec([None, units], tf.dtypes.as_dtype(dtype), name)
                for name, units, dtype in zip(self.state_names, self.state_units,
                                              self.state_dtypes)]

    def _start(self, input_ids):
        """-> (the state before the first step, the memory)."""
        batch = tf.shape(input_ids)[0]
        return ((self.parts.initial_prefix(batch), tf.zeros([batch, 1], tf.int32)),
                tuple(self.parts.encode(input_ids)))

    def _step(self, token, state, memory):
        """Write ``token`` at each row's position, run the rest of the model on the
        prefix and read the probabilities there. -> (probs, the new state)."""
        prefix, position = state
        length = self.parts.prefix_length
        # A finished row never steps past the last position (the runtime decodes at
        # most max_output_length <= T tokens); the clip keeps reads in bounds anyway.
        at = tf.minimum(position[:, 0], length - 1)
        here = tf.equal(tf.range(length)[None, :], at[:, None])
        prefix = tf.where(here, token[:, None], prefix)
        probs = tf.gather(self.parts.decode(memory, prefix), at, axis=1, batch_dims=1)
        return probs, (prefix, position + 1)

    def encoder(self):
        """``input_ids`` -> the initial state and the memory (see the module)."""
        spec = tf.TensorSpec([None, self.vocab.max_input_length], tf.int32, "input_ids")

        @tf.function(input_signature=[spec])
        def encoder(input_ids):
            state, memory = self._start(input_ids)
            names = self.state_names + self.memory_names
            return dict(zip(names, state + memory, strict=True))

        return encoder

    def decoder_step(self):
        """One step: token, state, memory -> probs, ``NAME_out`` per state tensor,
        ``next_token``."""
        n = len(self.state_names)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, "token"),
                                      *self._state_specs(), *self._memory_specs()])
        def decoder_step(token, *tensors):
            probs, state = self._step(token, tuple(tensors[:n]), tuple(tensors[n:]))
            out = {f"{name}_out": t for name, t in zip(self.state_names, state, strict=True)}
            return {"probs": probs, **out,
                    "next_token": tf.argmax(probs, axis=-1, output_type=tf.int32)}

        return decoder_step

    def greedy_fused(self):
        """The whole greedy decode in one graph, a ``tf.while_loop`` over the steps that
        stops once every row has emitted the end token (as ``GraphBuilder``'s)."""
        vocab = self.vocab
        steps, start, end = vocab.max_output_length, vocab.start_id, vocab.end_id
        spec = tf.TensorSpec([None, vocab.max_input_length], tf.int32, "input_ids")

        @tf.function(input_signature=[spec])
        def greedy(input_ids):
            state, memory = self._start(input_ids)
            batch = tf.shape(input_ids)[0]
            token = tf.fill([batch], start)
            out = tf.zeros([batch, steps], tf.int32)
            done = tf.zeros([batch], tf.bool)
            columns = tf.range(steps)

            def more(t, token, out, done, *state):
                return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(done)))

            def body(t, token, out, done, *state):
                probs, state = self._step(token, state, memory)
                token = tf.argmax(probs, axis=-1, output_type=tf.int32)
                out = tf.where(tf.equal(columns, t)[None, :], token[:, None], out)
                return (t + 1, token, out, tf.logical_or(done, tf.equal(token, end)), *state)

            loop = tf.while_loop(more, body, (tf.constant(0), token, out, done, *state))
            out = loop[2]
            where_end = tf.where(tf.equal(out, end), columns[None, :], steps)
            return {"output_ids": out, "lengths": tf.reduce_min(where_end, axis=1)}

        return greedy
