"""Find the parts of a seq2seq model by the graph's structure, never by position.

Works for any Keras 3 functional model of the supported shape, whatever its
layers are called: walks back from the model's output to the Dense, from
there to the decoder RNN, and from its ``initial_state`` to the encoder RNN.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras

from runtime.errors import VocabularyError
from runtime.vocab import Vocabulary

from .errors import ModelShapeError

# The recurrent layers export can rebuild, and the state each one carries.
CELLS = {"lstm": (keras.layers.LSTM, ("h", "c")), "gru": (keras.layers.GRU, ("h",))}
EXPECTED = ("a functional model with two one-hot inputs (encoder, decoder) -> "
            "LSTM or GRU (return_state=True) on the encoder input, whose final state "
            "([h, c] for LSTM, h for GRU) starts a layer of the same kind "
            "(return_sequences=True) on the decoder input -> Dense (softmax or linear "
            "logits) as the only output")


@dataclass(frozen=True)
class Seq2SeqParts:
    cell: str  # "lstm" or "gru"
    encoder_rnn: keras.layers.RNN
    decoder_rnn: keras.layers.RNN
    dense: keras.layers.Dense
    encoder_input: object  # KerasTensor
    decoder_input: object
    encoder_states: tuple  # the encoder's final state, KerasTensors

    @property
    def latent_dim(self) -> int:
        return int(self.decoder_rnn.units)

    @property
    def state_kinds(self) -> tuple[str, ...]:
        return CELLS[self.cell][1]

    @property
    def input_size(self) -> int:
        return int(self.encoder_input.shape[-1])

    @property
    def target_size(self) -> int:
        return int(self.dense.units)

    @property
    def logits(self) -> bool:
        """The Dense gives logits (linear), not probabilities (softmax)."""
        return getattr(self.dense.activation, "__name__", "") == "linear"


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None, None
    op, node_index, tensor_index = history
    return op, op._inbound_nodes[node_index], tensor_index


def _fail(found: str) -> None:
    raise ModelShapeError(f"not a seq2seq model of the expected shape: expected {EXPECTED}; "
                          f"found {found}")


def cell_of(layer) -> str | None:
    """"lstm" or "gru" for a layer that computes what Keras's LSTM or GRU does: the
    class itself, or a subclass that changes neither ``call`` nor the cell (such as
    the Keras 2 loading adapter); else None."""
    for name, (cls, _) in CELLS.items():
        if (isinstance(layer, cls) and type(layer).call is cls.call
                and type(layer.cell) is type(cls(1).cell)):
            return name
    return None


def locate(model) -> Seq2SeqParts:
    """The encoder RNN, decoder RNN and Dense of ``model``, found by structure."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or not model.inputs:
        _fail(f"a {type(model).__name__} that is not a functional Keras model")
    if len(model.inputs) != 2 or len(model.outputs) != 1:
        _fail(f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)")
    dense, dense_node, _ = _producer(model.outputs[0])
    if not isinstance(dense, keras.layers.Dense):
        _fail(f"the output is produced by {type(dense).__name__}, not Dense")
    activation = getattr(dense.activation, "__name__", "?")
    if activation not in ("softmax", "linear"):
        _fail(f"the Dense activation is {activation}, not softmax or linear")
    decoder, dec_node, dec_index = _producer(dense_node.input_tensors[0])
    cell = cell_of(decoder)
    if cell is None or dec_index != 0:
        _fail(f"the Dense reads {type(decoder).__name__} output {dec_index}, "
              "not a decoder LSTM's or GRU's sequence output")
    if not decoder.return_sequences:
        _fail(f"a decoder {type(decoder).__name__} without return_sequences=True")
    kinds = CELLS[cell][1]
    tensors = dec_node.input_tensors
    if len(tensors) != 1 + len(kinds):
        _fail(f"a decoder {type(decoder).__name__} called with {len(tensors)} tensors, not "
              f"its input + initial_state [{', '.join(kinds)}]")
    dec_input = tensors[0]
    states = tensors[1:]
    encoders = {id(_producer(s)[0]) for s in states}
    encoder, enc_node, _ = _producer(states[0])
    if (len(encoders) != 1 or cell_of(encoder) != cell
            or [_producer(s)[2] for s in states] != list(range(1, len(kinds) + 1))):
        _fail(f"a decoder {type(decoder).__name__} whose initial_state is not the final "
              f"[{', '.join(kinds)}] of one encoder {type(decoder).__name__}")
    if encoder.return_sequences or not encoder.return_state:
        _fail("an encoder RNN that is not (return_state=True, return_sequences=False)")
    enc_input = enc_node.input_tensors[0]
    model_inputs = {id(t) for t in model.inputs}
    if id(enc_input) not in model_inputs or id(dec_input) not in model_inputs:
        _fail("RNNs that do not read the model's inputs directly")
    if encoder.units != decoder.units:
        _fail(f"encoder latent {encoder.units} != decoder latent {decoder.units}")
    if int(dec_input.shape[-1]) != int(dense.units):
        _fail(f"decoder input width {dec_input.shape[-1]} != Dense units {dense.units}")
    for layer in (encoder, decoder):
        if layer.go_backwards or layer.stateful:
            _fail(f"{type(layer).__name__} {layer.name!r} with go_backwards or stateful set")
        names = (getattr(layer.cell.activation, "__name__", ""),
                 getattr(layer.cell.recurrent_activation, "__name__", ""))
        if names != ("tanh", "sigmoid"):
            _fail(f"{type(layer).__name__} {layer.name!r} with activations {names}, not "
                  "the default (tanh, sigmoid)")
    return Seq2SeqParts(cell, encoder, decoder, dense, enc_input, dec_input, tuple(states))


def check_vocabulary(parts: Seq2SeqParts, vocab: Vocabulary) -> None:
    """Raise a VocabularyError when the vocabulary does not fit the model."""
    if vocab.input_size != parts.input_size:
        raise VocabularyError(f"the vocabulary has {vocab.input_size} input tokens but the "
                              f"model's encoder input is {parts.input_size} wide")
    if vocab.target_size != parts.target_size:
        raise VocabularyError(f"the vocabulary has {vocab.target_size} target tokens but the "
                              f"model's output is {parts.target_size} wide")
