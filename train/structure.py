"""Find the parts of a seq2seq model by the graph's structure, never by position.

Works for any Keras 3 functional model of the seed's shape, whatever its
layers are called: walks back from the model's output to the Dense, from
there to the decoder LSTM, and from its ``initial_state`` to the encoder LSTM.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras

from runtime.errors import VocabularyError
from runtime.vocab import Vocabulary

from .errors import ModelShapeError

EXPECTED = ("a functional model with two one-hot inputs (encoder, decoder) -> "
            "LSTM(return_state=True) on the encoder input, whose [h, c] start an "
            "LSTM(return_sequences=True, return_state=True) on the decoder input -> "
            "Dense(softmax) as the only output")


@dataclass(frozen=True)
class Seq2SeqParts:
    encoder_lstm: keras.layers.LSTM
    decoder_lstm: keras.layers.LSTM
    dense: keras.layers.Dense
    encoder_input: object  # KerasTensor
    decoder_input: object
    encoder_states: tuple  # (h, c) KerasTensors

    @property
    def latent_dim(self) -> int:
        return int(self.encoder_lstm.units)

    @property
    def input_size(self) -> int:
        return int(self.encoder_input.shape[-1])

    @property
    def target_size(self) -> int:
        return int(self.dense.units)


def _producer(tensor):
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None, None
    op, node_index, tensor_index = history
    return op, op._inbound_nodes[node_index], tensor_index


def _fail(found: str) -> None:
    raise ModelShapeError(f"not a seq2seq model of the expected shape: expected {EXPECTED}; "
                          f"found {found}")


def locate(model) -> Seq2SeqParts:
    """The encoder LSTM, decoder LSTM and Dense of ``model``, found by structure."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or not model.inputs:
        _fail(f"a {type(model).__name__} that is not a functional Keras model")
    if len(model.inputs) != 2 or len(model.outputs) != 1:
        _fail(f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)")
    dense, dense_node, _ = _producer(model.outputs[0])
    if not isinstance(dense, keras.layers.Dense):
        _fail(f"the output is produced by {type(dense).__name__}, not Dense")
    if getattr(dense.activation, "__name__", "") != "softmax":
        _fail(f"the Dense activation is {getattr(dense.activation, '__name__', '?')}, "
              "not softmax")
    decoder, dec_node, dec_index = _producer(dense_node.input_tensors[0])
    if not isinstance(decoder, keras.layers.LSTM) or dec_index != 0:
        _fail(f"the Dense reads {type(decoder).__name__} output {dec_index}, "
              "not a decoder LSTM's sequence output")
    if not (decoder.return_sequences and decoder.return_state):
        _fail("a decoder LSTM without return_sequences=True and return_state=True")
    tensors = dec_node.input_tensors
    if len(tensors) != 3:
        _fail(f"a decoder LSTM called with {len(tensors)} tensors, not input + [h, c]")
    dec_input = tensors[0]
    states = tensors[1:]
    encoders = {id(_producer(s)[0]) for s in states}
    encoder, enc_node, _ = _producer(states[0])
    if (len(encoders) != 1 or not isinstance(encoder, keras.layers.LSTM)
            or [_producer(s)[2] for s in states] != [1, 2]):
        _fail("a decoder LSTM whose initial_state is not the [h, c] of one encoder LSTM")
    if encoder.return_sequences or not encoder.return_state:
        _fail("an encoder LSTM that is not LSTM(return_state=True, return_sequences=False)")
    enc_input = enc_node.input_tensors[0]
    model_inputs = {id(t) for t in model.inputs}
    if id(enc_input) not in model_inputs or id(dec_input) not in model_inputs:
        _fail("LSTMs that do not read the model's inputs directly")
    if encoder.units != decoder.units:
        _fail(f"encoder latent {encoder.units} != decoder latent {decoder.units}")
    if int(dec_input.shape[-1]) != int(dense.units):
        _fail(f"decoder input width {dec_input.shape[-1]} != Dense units {dense.units}")
    for layer in (encoder, decoder):
        if layer.go_backwards or layer.stateful:
            _fail(f"LSTM {layer.name!r} with go_backwards or stateful set")
    return Seq2SeqParts(encoder, decoder, dense, enc_input, dec_input, tuple(states))


def check_vocabulary(parts: Seq2SeqParts, vocab: Vocabulary) -> None:
    """Raise a VocabularyError when the vocabulary does not fit the model."""
    if vocab.input_size != parts.input_size:
        raise VocabularyError(f"the vocabulary has {vocab.input_size} input tokens but the "
                              f"model's encoder input is {parts.input_size} wide")
    if vocab.target_size != parts.target_size:
        raise VocabularyError(f"the vocabulary has {vocab.target_size} target tokens but the "
                              f"model's output is {parts.target_size} wide")
