"""The native Keras reference decoder, the keras.io way: an encoder model,
a single-step decoder model, and a greedy loop in Python.

Export's parity checks and the benchmarks compare everything against it.
"""
from __future__ import annotations

import copy
from typing import Sequence

import keras
import numpy as np

from runtime.vocab import Vocabulary

from . import state as layout
from .kinds import CELLS
from .structure import cell_of, check_vocabulary, locate


def _stepping_layer(rnn):
    """The decoder RNN returning its state. keras.io's GRU decoder has no
    ``return_state``: then a Keras copy with it, holding the trained weights."""
    if rnn.return_state:
        return rnn
    config = {**rnn.get_config(), "return_state": True, "name": f"{rnn.name}_stepping"}
    clone = CELLS[cell_of(rnn)].keras_class.from_config(config)
    clone.build((None, None, int(rnn.cell.kernel.shape[0])))
    clone.set_weights(rnn.get_weights())
    return clone


def _attention_with_scores(layer, inputs, mask):
    """``(context, weights)`` of a Keras copy of the trained attention layer, holding
    its weights: the layer itself, called before, cannot return a second output in
    a new graph (Keras 3 reports it "not connected")."""
    clone = type(layer).from_config(layer.get_config())
    out = clone(inputs, mask=mask, return_attention_scores=True)
    clone.set_weights(layer.get_weights())
    return out


def _in_float64(config):
    """A Keras model config with every float32 (layer policies, inputs) made float64."""
    if isinstance(config, dict):
        return {k: _in_float64(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_in_float64(v) for v in config]
    return "float64" if config == "float32" else config


def float64_twin(model: keras.Model) -> keras.Model:
    """A copy of the functional ``model`` that computes in float64 with the same
    weights: Keras's answers without float32's rounding. How far Keras's own
    float32 answers lie from it measures how much rounding this model's recurrence
    amplifies, which export's parity bound allows the exported graphs as well."""
    # The model's own classes by name: a Keras 2 file's layers are adapted ones
    # (export.legacy) that a bare from_config cannot find.
    classes = {type(layer).__name__: type(layer)
               for layer in model._flatten_layers(include_self=False, recursive=True)}
    twin = keras.Model.from_config(_in_float64(model.get_config()), custom_objects=classes)
    weights = model.get_weights()
    if len(twin.weights) != len(weights):
        raise RuntimeError(f"the float64 copy of {model.name} has {len(twin.weights)} "
                           f"weights, the model {len(weights)}")
    twin.set_weights([np.asarray(w, np.float64) if np.issubdtype(np.asarray(w).dtype,
                                                                 np.floating) else w
                      for w in weights])
    return twin


class ReferenceDecoder:
    """Keras's own answers: an encoder model up to the decoder's initial states, and
    a step model of the decoder's layers on one token, called from a Python loop.
    The state is the runtime's: per decoder layer ``h`` (and ``c``), in order; with
    attention then ``memory`` (the encoder's outputs) and, for a masked encoder,
    ``memory_mask`` (1.0 on real steps), which every step reads unchanged."""

    def __init__(self, model: keras.Model, vocab: Vocabulary):
        parts = locate(model)
        check_vocabulary(parts, vocab)
        self.vocab = vocab
        self.parts = parts
        attention = parts.attention
        memory = [attention.memory] if attention else []
        self.encoder = keras.Model(parts.encoder_input,
                                   [t for states in parts.initial_states for t in states]
                                   + memory, name="reference_encoder")
        if parts.decoder_embedding is None:
            token = keras.Input(shape=(None, vocab.target_size), name="token")
            x = token
        else:
            token = keras.Input(shape=(None,), dtype="int32", name="token")
            x = parts.decoder_embedding(token)
        state_in, state_out = [], []
        names = iter(layout.names(parts))
        for rec in parts.decoder:
            inputs = [keras.Input(shape=(rec.units,), name=next(names))
                      for _ in parts.state_kinds]
            x, *states = _stepping_layer(rec.layer)(x, initial_state=inputs)
            state_in += inputs
            state_out += states
        self.carried = len(state_in)
        weights = []
        if attention:
            memory_in = keras.Input(shape=(None, int(attention.memory.shape[-1])),
                                    name="memory")
            state_in.append(memory_in)
            mask = None
            if parts.masked:  # Keras passes the Embedding's mask to the attention layer
                mask_in = keras.Input(shape=(None,), name="memory_mask")
                state_in.append(mask_in)
                mask = [None, keras.ops.cast(mask_in, "bool")]
            context, scores = _attention_with_scores(attention.layer, [x, memory_in], mask)
            x = keras.layers.Concatenate()([context, x] if attention.context_first
                                           else [x, context])
            if attention.hidden is not None:
                x = attention.hidden(x)
            weights = [scores]
        out = parts.dense(x)
        if parts.logits:  # the runtime's probs are always probabilities
            out = keras.layers.Softmax()(out)
        self.decoder = keras.Model([token, *state_in], [out, *state_out, *weights],
                                   name="reference_decoder_step")

    def float64(self) -> "ReferenceDecoder":
        """This reference computing in float64 (``float64_twin`` of its encoder and step
        models); made once. Its ``encode`` and ``step`` return float64 arrays."""
        if getattr(self, "_float64", None) is None:
            twin = copy.copy(self)
            twin.encoder = float64_twin(self.encoder)
            twin.decoder = float64_twin(self.decoder)
            twin._float64 = twin
            self._float64 = twin
        return self._float64

    # Two ways of calling a Keras model, kept so the benchmarks can compare them.
    def _run(self, model, inputs, mode: str) -> list[np.ndarray]:
        out = model.predict(inputs, verbose=0) if mode == "predict" else model(
            inputs, training=False)
        return [np.asarray(x) for x in (out if isinstance(out, (list, tuple)) else [out])]

    def encoder_inputs(self, ids: np.ndarray) -> np.ndarray:
        """What the Keras encoder reads for token ids: one-hot rows, or the ids."""
        if self.parts.encoder_embedding is None:
            return self.vocab.one_hot_inputs(ids)
        return np.asarray(ids, dtype=np.int32)

    def encode(self, ids: np.ndarray, mode: str = "call") -> tuple:
        """The decoder's initial state for input ids ``[batch, steps]``: a tuple of
        ``[batch, units]`` arrays, zeros for decoder layers started from zeros, then
        the attention memory (and mask) where the model has attention."""
        return self.initial_state(ids, self._run(self.encoder, self.encoder_inputs(ids), mode))

    def initial_state(self, ids: np.ndarray, outputs: list) -> tuple:
        """The runtime's state from the Keras encoder model's outputs for ``ids``."""
        given = iter(np.asarray(x) for x in outputs)
        kinds = self.parts.state_kinds
        state = layout.decoder_start(
            self.parts, lambda _: [next(given) for _ in kinds],
            lambda units: np.zeros((len(ids), units), np.float32))
        if self.parts.attention:
            state.append(next(given))
            if self.parts.masked:
                state.append((np.asarray(ids) != 0).astype(np.float32))
        return tuple(state)

    def step(self, token_ids: np.ndarray, state: tuple, mode: str = "call"):
        """``(probs [batch, targets], state, attention)`` after one decoder step;
        ``attention`` is the weights over the input steps ``[batch, steps]``, or
        None for a model without attention."""
        ids = np.asarray(token_ids).reshape(-1, 1)
        x = (self.vocab.one_hot_targets(ids) if self.parts.decoder_embedding is None
             else ids.astype(np.int32))
        return self.after_step(state, self._run(self.decoder, [x, *state], mode))

    def after_step(self, state: tuple, outputs: list):
        """``(probs, state, attention)`` from the Keras step model's outputs."""
        probs, *out = (np.asarray(x) for x in outputs)
        carried = tuple(out[:self.carried]) + tuple(state[self.carried:])
        weights = out[self.carried][:, 0, :] if self.parts.attention else None
        return probs[:, 0, :], carried, weights

    def greedy_ids(self, texts: Sequence[str], mode: str = "call",
                   max_length: int | None = None) -> list[list[int]]:
        """Greedy token ids per text (end token excluded)."""
        vocab = self.vocab
        steps = max_length or vocab.max_output_length
        state = self.encode(vocab.encode_inputs(texts), mode)
        tokens = np.full(len(texts), vocab.start_id, dtype=np.int64)
        out = [[] for _ in texts]
        done = np.zeros(len(texts), dtype=bool)
        for _ in range(steps):
            probs, state, _ = self.step(tokens, state, mode)
            tokens = probs.argmax(axis=-1)
            for i in np.flatnonzero(~done):
                if tokens[i] == vocab.end_id:
                    done[i] = True
                else:
                    out[i].append(int(tokens[i]))
            if done.all():
                break
        return out

    def greedy(self, texts: Sequence[str], mode: str = "call", batch_size: int = 512,
               max_length: int | None = None) -> list[str]:
        """Greedy decodes of ``texts``, in batches of ``batch_size``."""
        results: list[str] = []
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            for ids in self.greedy_ids(chunk, mode, max_length):
                results.append(self.vocab.decode_target(ids))
        return results


def reference_for(model: keras.Model, vocab: Vocabulary):
    """Keras's greedy answers for any model export takes: the ``ReferenceDecoder`` for
    the RNN family, else keras.io's loop over the whole model on the growing prefix
    (``family.prefix.PrefixReference``). Both have ``greedy(texts)``."""
    from .errors import ModelShapeError
    from .prefix import PrefixReference, locate_prefix

    try:
        return ReferenceDecoder(model, vocab)
    except ModelShapeError:
        return PrefixReference(locate_prefix(model, vocab), vocab)
