"""The graphs export converts, built from the trained layers' weights.

* encoder: ``input_ids`` int32 [batch, steps] -> the decoder's initial state,
  one tensor per name in ``state_names`` ([batch, units] each); with attention
  also ``memory`` [batch, steps, units] (the top encoder layer's outputs) and,
  for a masked encoder, ``memory_mask`` [batch, steps] (1.0 on real steps)
* decoder_step: ``token`` int32 [batch], the state (and memory) -> ``probs``
  [batch, vocab], the state as ``NAME_out``, ``next_token`` int32 (the argmax,
  so the runtime's loop does no work of its own per step) and, with attention,
  ``attention`` [batch, steps] (the weights over the input steps)
* greedy: ``input_ids`` -> ``output_ids`` [batch, max_output_length], ``lengths``

The state is per decoder layer ``i``: ``h{i}`` (and ``c{i}`` for an LSTM), in
layer order; layers the model starts from zeros get zeros from the encoder.

The ONNX encoder runs a fresh Keras copy of the model's encoder (no cuDNN, so a
GPU machine exports too), which tf2onnx converts with a dynamic time axis. TFLite
cannot take Keras's loops with builtin ops, so its encoder runs the cells
(``cells.CellOps``) over the fixed ``max_input_length`` steps, unrolled or, for a
single unidirectional layer, in a ``WHILE`` (``encoder_choice`` picks): the
runtime always pads inputs to that length, as training did, so every input
length gives Keras's answer. With ``mask_zero`` the padding steps leave the
state unchanged, as in Keras.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from runtime.metadata import MEMORY, MEMORY_MASK, AttentionSpec
from runtime.vocab import Vocabulary
from family import state as layout
from family.structure import Seq2SeqParts

from .cells import CellOps, cell_weights, keras_encoder

# How the TFLite encoder runs its fixed number of steps (export measures both).
ENCODER_STYLES = ("unrolled", "loop")
# How far below a row's lowest attention score its padding steps go (see _attend).
MASK_MARGIN = 24.0


def _embedding(layer) -> np.ndarray | None:
    return None if layer is None else np.asarray(layer.embeddings.numpy(), np.float32)


def _where(mask, new, old) -> tuple:
    """Per row: the new state where the step is real, the old one over padding."""
    return tuple(tf.where(mask, n, o) for n, o in zip(new, old))


class GraphBuilder:
    """Builds the graphs export converts, as ``tf.function`` objects, from the trained weights
    of a located model (``parts``) and its vocabulary: ``encoder_fixed``,
    ``encoder_dynamic``, ``decoder_step`` and ``greedy_fused``."""

    def __init__(self, parts: Seq2SeqParts, vocab: Vocabulary):
        self.parts = parts
        self.vocab = vocab
        # The unrolled encoder's first step from zeros skips the recurrent product.
        # Full-integer conversion turns it off: TF's quantizer then leaves that step's
        # gate SPLIT in float (read straight off the unstacked inputs), in some runs.
        self.first_step_shortcut = True
        # Per encoder layer, its directions' weights; per decoder layer, its weights.
        self.enc = [[cell_weights(r, parts.cell) for r in rec.rnns] for rec in parts.encoder]
        self.dec = [cell_weights(rec.layer, parts.cell) for rec in parts.decoder]
        self.enc_embedding = _embedding(parts.encoder_embedding)
        self.dec_embedding = _embedding(parts.decoder_embedding)
        dense = {w.path.rsplit("/", 1)[-1]: np.asarray(w.numpy(), np.float32)
                 for w in parts.dense.weights}
        self.dense_kernel = dense["kernel"]
        self.dense_bias = dense.get("bias", np.zeros(parts.target_size, np.float32))
        self.state_names = layout.names(parts)
        self.state_units = layout.units(parts)
        # Keras zeroes a masked step's output where this is set (Bidirectional sets it).
        self.zero_masked = [[bool(getattr(r, "zero_output_for_mask", False)) for r in rec.rnns]
                            for rec in parts.encoder]
        self.attention = None
        self.memory_names: tuple[str, ...] = ()
        if parts.attention is not None:
            att = parts.attention
            self.attention = AttentionSpec(att.kind, int(att.memory.shape[-1]), parts.masked)
            self.memory_names = self.attention.memory_names
            self.score_scale = att.scale
            self.hidden = None
            if att.hidden is not None:
                w = {v.path.rsplit("/", 1)[-1]: np.asarray(v.numpy(), np.float32)
                     for v in att.hidden.weights}
                self.hidden = (w["kernel"], w.get("bias", np.zeros(w["kernel"].shape[1],
                                                                   np.float32)))

    @property
    def loopable(self) -> bool:
        """The looped encoder form exists for one unidirectional layer whose outputs
        nothing reads (attention reads every step's)."""
        return (len(self.parts.encoder) == 1 and not self.parts.encoder[0].bidirectional
                and self.attention is None)

    # -- encoder pieces (tf ops, made inside the traced functions) -------------------
    def _mask(self, input_ids):
        return tf.not_equal(input_ids, 0)[:, :, None] if self.parts.masked else None

    def _decoder_start(self, finals: list[tuple], batch, memory=None, input_ids=None
                       ) -> tuple:
        """The decoder's initial state from the encoder layers' final states; with
        attention then the memory (and its mask, 1.0 where ``input_ids`` is not 0)."""
        state = layout.decoder_start(self.parts, finals.__getitem__,
                                     lambda units: tf.zeros([batch, units], tf.float32))
        if self.attention is not None:
            state.append(memory)
            if self.attention.masked:
                state.append(tf.cast(tf.not_equal(input_ids, 0), tf.float32))
        return tuple(state)

    def _run_direction(self, cell: CellOps, xwb: list, mask, backward: bool,
                       zero_masked: bool = False):
        """One direction of one layer over the fixed steps: (final state, outputs).
        A masked step's output repeats the last one, or is zeros (``zero_masked``)."""
        steps = range(len(xwb) - 1, -1, -1) if backward else range(len(xwb))
        outputs = [None] * len(xwb)
        state = None
        for t in steps:
            if state is None and mask is None and self.first_step_shortcut:
                state = cell.first_step(xwb[t])
            else:
                if state is None:
                    zero = tf.zeros([tf.shape(xwb[t])[0], cell.w.units], tf.float32)
                    state = (zero,) * len(cell.w.state_kinds)
                new = cell.step(xwb[t], state)
                state = new if mask is None else _where(mask[:, t], new, state)
            outputs[t] = state[0]
            if zero_masked and mask is not None:
                outputs[t] = tf.where(mask[:, t], state[0], tf.zeros_like(state[0]))
        return state, outputs

    def _encode_unrolled(self, input_ids):
        # One gather for all steps, then unstacked: about half the time of slicing
        # per step on LiteRT (measured: 101 against 201 µs, 16 steps, latent 128).
        mask = self._mask(input_ids)
        finals, below = [], None
        for li, weights in enumerate(self.enc):
            states, outputs = [], []
            for d, w in enumerate(weights):
                if li == 0:
                    cell = CellOps(w, w.table(self.enc_embedding))
                    xwb = tf.unstack(cell.rows(input_ids), axis=1)
                else:
                    cell = CellOps(w)
                    xwb = cell.project_all(below)
                state, out = self._run_direction(cell, xwb, mask, backward=d == 1,
                                                 zero_masked=self.zero_masked[li][d])
                states.append(state)
                outputs.append(out)
            if len(weights) == 2:  # Bidirectional, merge_mode="concat"
                finals.append(tuple(tf.concat(pair, -1) for pair in zip(*states)))
                below = [tf.concat(pair, -1) for pair in zip(*outputs)]
            else:
                finals.append(states[0])
                below = outputs[0]
        memory = tf.stack(below, axis=1) if self.attention is not None else None
        return self._decoder_start(finals, tf.shape(input_ids)[0], memory, input_ids)

    def _encode_looped(self, input_ids):
        # One cell in a WHILE: its weights are packed once and stay in cache, where
        # the unrolled form packs a copy per step (measured at latent 256, 24 steps:
        # 560 against 985 µs; at latent 128 and 16 steps the unrolled one is faster).
        (w,) = self.enc[0]
        cell = CellOps(w, w.table(self.enc_embedding))
        rows = cell.rows(input_ids)
        mask = self._mask(input_ids)
        zero = tf.zeros([tf.shape(input_ids)[0], w.units], tf.float32)
        state = (zero,) * len(w.state_kinds)

        def body(t, *state):
            new = cell.step(tf.gather(rows, t, axis=1), state)
            if mask is not None:
                new = _where(tf.gather(mask, t, axis=1), new, state)
            return (t + 1, *new)

        start = tf.constant(0)
        if mask is None:  # the first step from zeros, outside the loop
            state, start = cell.first_step(rows[:, 0]), tf.constant(1)
        steps = self.vocab.max_input_length
        _, *state = tf.while_loop(lambda t, *_: t < steps, body, (start, *state))
        return self._decoder_start([tuple(state)], tf.shape(input_ids)[0])

    def _keras_encoder(self):
        """The ONNX encoder: ids -> state through a fresh Keras copy of the encoder."""
        parts = self.parts
        memory = [parts.attention.memory] if parts.attention is not None else []
        model = keras_encoder(keras.Model(parts.encoder_input,
                                          [t for s in parts.initial_states for t in s]
                                          + memory))
        width = parts.input_size
        kinds = len(parts.state_kinds)

        def encode(ids):
            # one_hot of the padding id (== width) is an all-zero row, as in training.
            inputs = ids if parts.encoder_embedding is not None else tf.one_hot(ids, width)
            given = model(inputs, training=False)
            given = list(given) if isinstance(given, (list, tuple)) else [given]
            finals = {}
            for rec in parts.decoder:  # the model's outputs: per decoder layer started
                if rec.state_from is not None:
                    finals[rec.state_from] = tuple(given[:kinds])
                    given = given[kinds:]
            return self._decoder_start(finals, tf.shape(ids)[0], given[-1] if memory else None,
                                       ids)

        return encode, model

    # -- decoder pieces --------------------------------------------------------------
    def _step_constants(self):
        cells = [CellOps(w, w.table(self.dec_embedding) if i == 0 else None)
                 for i, w in enumerate(self.dec)]
        consts = {"cells": cells, "dense": (tf.constant(self.dense_kernel),
                                            tf.constant(self.dense_bias))}
        if self.attention is not None:
            if self.score_scale is not None:
                consts["scale"] = tf.constant(self.score_scale)
            if self.hidden is not None:
                consts["hidden"] = tuple(tf.constant(w) for w in self.hidden)
        return consts

    def _attend(self, consts, query, memory, mask):
        """Keras's Attention / AdditiveAttention for one query row per batch row:
        (context [batch, units], weights [batch, steps])."""
        if self.attention.kind == "luong":
            scores = tf.matmul(query[:, None, :], memory, transpose_b=True)[:, 0, :]
            if "scale" in consts:
                scores = scores * consts["scale"]
        else:
            tanh = tf.tanh(query[:, None, :] + memory)
            scores = tf.reduce_sum(tanh * consts["scale"] if "scale" in consts else tanh, -1)
        if mask is None:
            weights = tf.nn.softmax(scores)
        else:
            # Keras lowers padding scores by 1e9: weight exactly 0. Here they go
            # MASK_MARGIN below the row's lowest score (weight under e^-24 of any
            # real step's, below float32's resolution of the sum), and are then set
            # to 0. The same numbers in float; and the scores keep a range that int8
            # can hold (1e9 took all of it: a full-integer step decoded 4 of 120
            # inputs right).
            valid = mask > 0.5
            floor = tf.reduce_min(scores, axis=-1, keepdims=True) - MASK_MARGIN
            weights = tf.nn.softmax(tf.where(valid, scores, floor))
            weights = weights * mask  # 0 or 1: exact (a MUL has int8 kernels)
        return tf.matmul(weights[:, None, :], memory)[:, 0, :], weights

    def _step(self, consts, token, state):
        """One step: (carried state, logits, attention weights or None). ``state``
        holds the carried state, then the memory (and mask) with attention."""
        n = len(self.parts.state_kinds)
        new, x = [], None
        for i, cell in enumerate(consts["cells"]):
            xwb = cell.rows(token) if i == 0 else cell.project(x)
            layer_state = cell.step(xwb, tuple(state[i * n:(i + 1) * n]))
            new += layer_state
            x = layer_state[0]
        weights = None
        if self.attention is not None:
            memory = state[len(self.state_names)]
            mask = state[len(self.state_names) + 1] if self.attention.masked else None
            context, weights = self._attend(consts, x, memory, mask)
            x = tf.concat([context, x] if self.parts.attention.context_first
                          else [x, context], axis=-1)
            if "hidden" in consts:
                kernel, bias = consts["hidden"]
                x = tf.tanh(tf.matmul(x, kernel) + bias)
        kernel, bias = consts["dense"]
        return tuple(new), tf.matmul(x, kernel) + bias, weights

    def _state_specs(self, steps=None):
        """Inputs of the step: the carried state, then the memory (and its mask) over
        ``steps`` input steps (None: any number)."""
        specs = [tf.TensorSpec([None, units], tf.float32, name)
                 for name, units in zip(self.state_names, self.state_units)]
        if self.attention is not None:
            specs.append(tf.TensorSpec([None, steps, self.attention.memory_units],
                                       tf.float32, MEMORY))
            if self.attention.masked:
                specs.append(tf.TensorSpec([None, steps], tf.float32, MEMORY_MASK))
        return specs

    def _named_state(self, state, suffix: str = "") -> dict:
        """The carried state by name (``suffix`` "_out" for the step's outputs); the
        encoder's (no suffix) also names the memory."""
        names = self.state_names + (self.memory_names if not suffix else ())
        return {f"{name}{suffix}": t for name, t in zip(names, state)}

    # -- the graphs export converts -------------------------------------------------
    def encoder_fixed(self, style: str = "unrolled"):
        """Encoder over exactly ``max_input_length`` steps, builtin ops only: the
        cells unrolled, or (``style="loop"``) one cell in a ``WHILE``."""
        encode = self._fixed_encoder(style)
        spec = tf.TensorSpec([None, self.vocab.max_input_length], tf.int32, "input_ids")

        @tf.function(input_signature=[spec])
        def encoder(input_ids):
            return self._named_state(encode(input_ids))

        return encoder

    def _fixed_encoder(self, style: str):
        if style not in ENCODER_STYLES:
            raise ValueError(f"encoder style must be one of {ENCODER_STYLES}, got {style!r}")
        if style == "loop" and not self.loopable:
            raise ValueError("the looped encoder form needs one unidirectional layer")
        return self._encode_unrolled if style == "unrolled" else self._encode_looped

    def encoder_dynamic(self):
        """Encoder with a dynamic time axis, from Keras's own layers (for tf2onnx)."""
        encode, model = self._keras_encoder()

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32, "input_ids")])
        def encoder(input_ids):
            return self._named_state(encode(input_ids))

        encoder.keras_model = model  # keep the model alive with the function
        return encoder

    def decoder_step(self, steps: int | None = None):
        """The single step; with attention, its memory spans ``steps`` input steps
        (None: any number, for ONNX; TFLite takes the fixed ``max_input_length``)."""
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, "token"),
                                      *self._state_specs(steps)])
        def decoder_step(token, *state):
            new, logits, weights = self._step(self._step_constants(), token, state)
            probs = tf.nn.softmax(logits)
            out = {"probs": probs, **self._named_state(new, "_out"),
                   "next_token": tf.argmax(probs, axis=-1, output_type=tf.int32)}
            if weights is not None:
                out["attention"] = weights
            return out

        return decoder_step

    def greedy_fused(self, encoder_style: str = "unrolled"):
        """The whole greedy decode as one graph: ``input_ids`` -> ``output_ids``
        [batch, max_output_length] and ``lengths`` [batch] (end token excluded).

        A ``tf.while_loop`` that stops once every row has emitted the end token;
        tf2onnx makes it an ONNX ``Loop``, the TFLite converter a builtin
        ``WHILE``. Each step writes its column of a preallocated tensor through a
        select (no TensorList, which TFLite cannot run without Flex). The encoder
        comes in ``encoder_style``: "dynamic" (Keras's layers, any input length) or
        a fixed-length form (``ENCODER_STYLES``).
        """
        vocab = self.vocab
        steps, start, end = vocab.max_output_length, vocab.start_id, vocab.end_id
        model = None
        if encoder_style == "dynamic":
            encode, model = self._keras_encoder()
            time_axis = None
        else:
            time_axis = vocab.max_input_length
            encode = self._fixed_encoder(encoder_style)

        @tf.function(input_signature=[tf.TensorSpec([None, time_axis], tf.int32, "input_ids")])
        def greedy(input_ids):
            consts = self._step_constants()
            batch = tf.shape(input_ids)[0]
            state = encode(input_ids)
            carried = len(self.state_names)
            state, memory = state[:carried], tuple(state[carried:])  # memory: read-only
            token = tf.fill([batch], start)
            out = tf.zeros([batch, steps], tf.int32)
            done = tf.zeros([batch], tf.bool)
            columns = tf.range(steps)

            def more(t, token, out, done, *state):
                return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(done)))

            def body(t, token, out, done, *state):
                state, logits, _ = self._step(consts, token, tuple(state) + memory)
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

        greedy.keras_model = model  # keep the dynamic encoder's model alive
        return greedy
