"""Find the parts of a seq2seq model by the graph's structure, never by position.

Works for any Keras 3 functional model of the supported family, whatever its
layers are called: walks back from the model's output to the Dense, down the
decoder's recurrent layers to its input, and from each decoder layer's
``initial_state`` to the encoder layer that made it, then down the encoder.

The family: one-hot inputs or ``Embedding`` (with or without ``mask_zero``) on
either side; LSTM or GRU; a unidirectional or ``Bidirectional`` (concat) encoder
whose directions' states are joined by ``Concatenate``; stacked layers, each
decoder layer starting from the final state of an encoder layer (N to N), or
only some of them (a deep encoder handing over its last state), the others from
zeros; optionally attention over the top encoder layer's outputs (Luong's
``Attention`` or Bahdanau's ``AdditiveAttention``, called as ``[query=decoder
outputs, value=encoder outputs]``), joined to the decoder's outputs by
``Concatenate`` and optionally through a ``Dense(tanh)``; a ``Dense`` with
softmax or linear logits.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras

from runtime.errors import VocabularyError
from runtime.vocab import Vocabulary

from .errors import ModelShapeError
from .kinds import ATTENTION, CELLS

EXPECTED = (
    "a functional model with two inputs (encoder, decoder), each one-hot or through an "
    "Embedding; an encoder of stacked LSTM or GRU layers (optionally Bidirectional with "
    "merge_mode='concat', their states joined by Concatenate) whose final states start "
    "the decoder's layers of the same kind (initial_state); the top decoder layer's "
    "sequence output -> Dense (softmax or linear logits) as the only output; or, with "
    "attention, Attention() or AdditiveAttention() called as [decoder outputs, top "
    "encoder layer's outputs] -> Concatenate with the decoder outputs -> optional "
    "Dense(tanh) -> that Dense. Not supported: Lambda or custom layers, subclassed "
    "models, stateful RNNs, causal or explicit attention masks, a separate attention key")


@dataclass(frozen=True)
class Recurrent:
    """One recurrent layer of the model, and where its initial state comes from."""
    layer: keras.layers.Layer  # LSTM / GRU, or Bidirectional around one
    bidirectional: bool
    # Decoder layers: index of the encoder layer whose final state starts it, or
    # None for a zero start. Encoder layers: None.
    state_from: int | None = None

    @property
    def rnns(self) -> tuple:
        """The direction layers: (forward,) or (forward, backward)."""
        if self.bidirectional:
            return (self.layer.forward_layer, self.layer.backward_layer)
        return (self.layer,)

    @property
    def units(self) -> int:
        """Width of the final state (both directions' for a bidirectional layer)."""
        return sum(int(r.units) for r in self.rnns)


@dataclass(frozen=True)
class AttentionParts:
    """Attention over the encoder's outputs (the "memory"), found by structure."""
    layer: keras.layers.Layer  # keras.layers.Attention or AdditiveAttention
    kind: str  # "luong" or "bahdanau"
    # Concatenate([context, decoder output]) (True) or the other way round.
    context_first: bool
    # Dense(tanh) between Concatenate and the output Dense (Luong's attentional
    # hidden state), or None.
    hidden: keras.layers.Dense | None
    memory: object  # KerasTensor: the top encoder layer's sequence output

    @property
    def scale(self):
        """The learned score scale (Luong: a scalar; Bahdanau: a vector), or None."""
        return None if self.layer.scale is None else self.layer.scale.numpy()


@dataclass(frozen=True)
class Seq2SeqParts:
    cell: str  # "lstm" or "gru"
    encoder: tuple[Recurrent, ...]  # bottom to top
    decoder: tuple[Recurrent, ...]  # bottom to top
    dense: keras.layers.Dense
    encoder_input: object  # KerasTensor
    decoder_input: object
    encoder_embedding: keras.layers.Embedding | None
    decoder_embedding: keras.layers.Embedding | None
    # The tensors the decoder's layers start from, in decoder-layer order (each
    # layer's [h, c] or [h]); the Keras reference encoder outputs these.
    initial_states: tuple
    attention: AttentionParts | None = None

    @property
    def state_kinds(self) -> tuple[str, ...]:
        return CELLS[self.cell].state

    @property
    def latent_dim(self) -> int:
        return self.decoder[-1].units

    @property
    def input_size(self) -> int:
        if self.encoder_embedding is not None:
            return int(self.encoder_embedding.input_dim)
        return int(self.encoder_input.shape[-1])

    @property
    def target_size(self) -> int:
        return int(self.dense.units)

    @property
    def logits(self) -> bool:
        """The Dense gives logits (linear), not probabilities (softmax)."""
        return getattr(self.dense.activation, "__name__", "") == "linear"

    @property
    def masked(self) -> bool:
        """The encoder skips padding (Embedding with mask_zero=True)."""
        return bool(self.encoder_embedding is not None and self.encoder_embedding.mask_zero)

    def describe(self) -> dict:
        """What the model is, for artifact.json."""
        def side(emb):
            if emb is None:
                return "one-hot"
            return f"embedding {emb.output_dim}" + (" mask_zero" if emb.mask_zero else "")

        described = {"cell": self.cell, "encoder_layers": len(self.encoder),
                "bidirectional": self.encoder[0].bidirectional,
                "decoder_layers": len(self.decoder),
                "state_from": [r.state_from for r in self.decoder],
                "units": [r.units for r in self.decoder],
                "encoder_input": side(self.encoder_embedding),
                "decoder_input": side(self.decoder_embedding),
                "output": "logits" if self.logits else "softmax"}
        if self.attention is not None:
            described["attention"] = self.attention.kind
            described["attention_scale"] = self.attention.layer.use_scale
            described["attentional_hidden"] = self.attention.hidden is not None
        if self.cell == "gru":
            described["reset_after"] = bool(self.decoder[0].layer.cell.reset_after)
        return described


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
    for name, kind in CELLS.items():
        cls = kind.keras_class
        if (isinstance(layer, cls) and type(layer).call is cls.call
                and type(layer.cell) is type(cls(1).cell)):
            return name
    return None


def _recurrent(layer) -> tuple[str, bool] | None:
    """(cell, bidirectional) of a supported recurrent layer, else None."""
    if isinstance(layer, keras.layers.Bidirectional):
        cell = cell_of(layer.forward_layer)
        if cell and cell_of(layer.backward_layer) == cell and layer.merge_mode == "concat":
            return cell, True
        return None
    cell = cell_of(layer)
    return (cell, False) if cell else None


def _name(layer) -> str:
    return f"{type(layer).__name__} {getattr(layer, 'name', '?')!r}"


def _check_rnn(layer, bidirectional: bool) -> None:
    rnns = (layer.forward_layer, layer.backward_layer) if bidirectional else (layer,)
    for direction, rnn in enumerate(rnns):
        if rnn.stateful:
            _fail(f"{_name(rnn)} with stateful=True")
        if rnn.go_backwards != (direction == 1):  # only a backward layer runs backwards
            _fail(f"{_name(rnn)} with go_backwards={rnn.go_backwards}")
        acts = (getattr(rnn.cell.activation, "__name__", ""),
                getattr(rnn.cell.recurrent_activation, "__name__", ""))
        if acts != ("tanh", "sigmoid"):
            _fail(f"{_name(rnn)} with activations {acts}, not the default (tanh, sigmoid)")


def _input_side(tensor, model_inputs: dict, what: str):
    """The model input a stack reads, directly (one-hot) or through an Embedding."""
    if id(tensor) in model_inputs:
        return tensor, None
    layer, node, _ = _producer(tensor)
    if isinstance(layer, keras.layers.Embedding):
        source = node.input_tensors[0]
        if id(source) in model_inputs:
            return source, layer
    _fail(f"the {what} reads {_name(layer)}, not a model input (one-hot or through an "
          "Embedding)")


def _state_source(tensors, kinds) -> tuple[object, object]:
    """The encoder layer whose final state ``tensors`` are ([h, c] or [h]), and
    the node of the call that made them (a Bidirectional layer's states are joined
    by Concatenate)."""
    n = len(kinds)
    first, _, _ = _producer(tensors[0])
    if isinstance(first, keras.layers.Concatenate):
        pairs = [_producer(t)[1].input_tensors for t in tensors]
        owners = {id(_producer(t)[0]) for pair in pairs for t in pair}
        layer = _producer(pairs[0][0])[0]
        want = [[1 + k, 1 + n + k] for k in range(n)]
        got = [[_producer(t)[2] for t in pair] for pair in pairs]
        if (not all(isinstance(_producer(t)[0], keras.layers.Concatenate) for t in tensors)
                or len(owners) != 1 or _recurrent(layer) is None or got != want
                or not _recurrent(layer)[1]):
            _fail("a decoder initial_state made by Concatenate of something other than "
                  "one Bidirectional encoder layer's forward and backward states, in order")
        return layer, _producer(pairs[0][0])[1]
    owners = {id(_producer(t)[0]) for t in tensors}
    indices = [_producer(t)[2] for t in tensors]
    if len(owners) != 1 or _recurrent(first) is None or indices != list(range(1, n + 1)):
        _fail(f"a decoder layer whose initial_state comes from {_name(first)}, not the "
              f"final [{', '.join(kinds)}] of one encoder layer")
    if _recurrent(first)[1]:
        _fail("a Bidirectional encoder's states passed on without Concatenate")
    return first, _producer(tensors[0])[1]


def locate(model) -> Seq2SeqParts:
    """The layers of ``model``, found by structure."""
    if not isinstance(model, keras.Model) or not hasattr(model, "inputs") or not model.inputs:
        _fail(f"a {type(model).__name__} that is not a functional Keras model")
    if len(model.inputs) != 2 or len(model.outputs) != 1:
        _fail(f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)")
    model_inputs = {id(t): t for t in model.inputs}
    dense, dense_node, _ = _producer(model.outputs[0])
    if not isinstance(dense, keras.layers.Dense):
        _fail(f"the output is produced by {_name(dense)}, not Dense")
    activation = getattr(dense.activation, "__name__", "?")
    if activation not in ("softmax", "linear"):
        _fail(f"the Dense activation is {activation}, not softmax or linear")

    tensor, attention = _attention_head(dense_node.input_tensors[0])
    # Down the decoder: each layer's sequence output feeds the next.
    decoder_nodes = []
    while True:
        layer, node, index = _producer(tensor)
        kind = _recurrent(layer)
        if kind is None or index != 0:
            if not decoder_nodes:
                _fail(f"the Dense reads {_name(layer)} output {index}, not the sequence "
                      "output of a decoder LSTM or GRU")
            break
        if kind[1]:
            _fail(f"a Bidirectional decoder layer ({_name(layer)}): a decoder runs forward")
        if not layer.return_sequences:
            _fail(f"a decoder {_name(layer)} without return_sequences=True")
        decoder_nodes.insert(0, (layer, node))
        tensor = node.input_tensors[0]
    cell = cell_of(decoder_nodes[0][0])
    kinds = CELLS[cell].state
    dec_input, dec_embedding = _input_side(tensor, model_inputs, "bottom decoder layer")

    # Each decoder layer's initial state, traced to the encoder layer that made it.
    sources = []
    for layer, node in decoder_nodes:
        if cell_of(layer) != cell:
            _fail(f"decoder layers of different kinds ({cell} and {_name(layer)})")
        states = node.input_tensors[1:]
        if not states:
            sources.append(None)
            continue
        if len(states) != len(kinds):
            _fail(f"a decoder {_name(layer)} called with {len(states)} initial state "
                  f"tensor(s), not [{', '.join(kinds)}]")
        sources.append((_state_source(states, kinds), tuple(states)))
    if all(s is None for s in sources):
        _fail("a decoder that does not start from any encoder state")

    # Down the encoder from its highest layer that hands over a state.
    handing = {id(s[0][0]) for s in sources if s}
    layer, node = next(s[0] for s in reversed(sources) if s)
    encoder_layers = []
    while True:
        kind = _recurrent(layer)
        if kind[0] != cell:
            _fail(f"an encoder {_name(layer)} of another kind than the decoder's {cell}")
        inner = layer.forward_layer if kind[1] else layer
        if encoder_layers and not inner.return_sequences:
            _fail(f"an encoder {_name(layer)} below another without return_sequences=True")
        if id(layer) in handing and not inner.return_state:
            _fail(f"an encoder {_name(layer)} without return_state=True")
        encoder_layers.insert(0, (layer, kind[1]))
        tensor = node.input_tensors[0]
        below, below_node, index = _producer(tensor)
        if _recurrent(below) is None or index != 0:
            break
        layer, node = below, below_node
    enc_input, enc_embedding = _input_side(tensor, model_inputs, "bottom encoder layer")
    if id(enc_input) == id(dec_input):
        _fail("encoder and decoder reading the same model input")
    position = {id(layer): i for i, (layer, _) in enumerate(encoder_layers)}
    if not handing <= set(position):
        _fail("a decoder initial_state from a layer outside the encoder stack")
    bidirectional = {b for _, b in encoder_layers}
    if len(bidirectional) != 1:
        _fail("an encoder mixing Bidirectional and unidirectional layers")
    for layer, bi in encoder_layers:
        _check_rnn(layer, bi)
    for layer, _ in decoder_nodes:
        _check_rnn(layer, False)
    if dec_embedding is None and int(dec_input.shape[-1]) != int(dense.units):
        _fail(f"decoder input width {dec_input.shape[-1]} != Dense units {dense.units}")
    if dec_embedding is not None and int(dec_embedding.input_dim) != int(dense.units):
        _fail(f"decoder Embedding input_dim {dec_embedding.input_dim} != Dense units "
              f"{dense.units}")
    if attention is not None:
        _check_memory(attention, encoder_layers[-1][0])
    encoder = tuple(Recurrent(layer, bi) for layer, bi in encoder_layers)
    decoder = tuple(Recurrent(layer, False, position[id(s[0][0])] if s else None)
                    for (layer, _), s in zip(decoder_nodes, sources))
    initial = tuple(s[1] for s in sources if s)
    return Seq2SeqParts(cell, encoder, decoder, dense, enc_input, dec_input, enc_embedding,
                        dec_embedding, initial, attention)


def _attention_head(tensor):
    """What the output Dense reads: the decoder's top sequence output (no attention),
    or [Dense(tanh) <-] Concatenate <- (attention context, decoder output). Returns
    the decoder output tensor and the AttentionParts (or None)."""
    layer, node, _ = _producer(tensor)
    hidden = None
    if isinstance(layer, keras.layers.Dense):
        activation = getattr(layer.activation, "__name__", "?")
        if activation != "tanh":
            _fail(f"{_name(layer)} with activation {activation} before the output Dense "
                  "(only Dense(tanh) after attention's Concatenate is supported)")
        hidden = layer
        layer, node, _ = _producer(node.input_tensors[0])
        if not isinstance(layer, keras.layers.Concatenate):
            _fail(f"a Dense(tanh) reading {_name(layer)}, not attention's Concatenate")
    if not isinstance(layer, keras.layers.Concatenate):
        return tensor, None
    pieces = node.input_tensors
    kinds = [_attention_kind(_producer(t)[0]) for t in pieces]
    if len(pieces) != 2 or sorted(k is None for k in kinds) != [False, True]:
        _fail(f"{_name(layer)} joining {len(pieces)} tensor(s); expected an attention "
              "layer's context and the decoder outputs")
    if layer.axis not in (-1, 2):
        _fail(f"{_name(layer)} on axis {layer.axis}, not the last axis")
    context_first = kinds[0] is not None
    context, decoder_out = pieces if context_first else pieces[::-1]
    att, att_node, _ = _producer(context)
    kind = kinds[0] or kinds[1]
    args = att_node.arguments.kwargs
    if args.get("use_causal_mask") or args.get("mask") is not None:
        _fail(f"{_name(att)} called with use_causal_mask or an explicit mask (the mask "
              "of the encoder's Embedding, passed on by Keras, is supported)")
    if kind == "luong" and att.score_mode != "dot":
        _fail(f"{_name(att)} with score_mode={att.score_mode!r}, not 'dot'")
    call = att_node.input_tensors
    if len(call) != 2 or id(call[0]) != id(decoder_out):
        _fail(f"{_name(att)} called on {len(call)} tensor(s); expected [query=the decoder "
              "outputs that Concatenate also joins, value=the encoder outputs] (no key)")
    return decoder_out, AttentionParts(att, kind, context_first, hidden, call[1])


def _attention_kind(layer) -> str | None:
    for kind, cls in ATTENTION.items():
        if type(layer) is cls:
            return kind
    return None


def _check_memory(attention: AttentionParts, top) -> None:
    """Attention's value must be the top encoder layer's sequence output."""
    layer, _, index = _producer(attention.memory)
    inner = top.forward_layer if isinstance(top, keras.layers.Bidirectional) else top
    if layer is not top or index != 0 or not inner.return_sequences:
        _fail(f"{_name(attention.layer)} attending over {_name(layer)} output {index}; "
              "expected the top encoder layer's sequence output (return_sequences=True)")


def check_vocabulary(parts: Seq2SeqParts, vocab: Vocabulary) -> None:
    """Raise a VocabularyError when the vocabulary does not fit the model."""
    if vocab.input_size != parts.input_size:
        raise VocabularyError(f"the vocabulary has {vocab.input_size} input tokens but the "
                              f"model's encoder input is {parts.input_size} wide")
    if vocab.target_size != parts.target_size:
        raise VocabularyError(f"the vocabulary has {vocab.target_size} target tokens but the "
                              f"model's output is {parts.target_size} wide")
    if parts.encoder_embedding is not None and vocab.padding.token is None:
        raise VocabularyError("the encoder reads an Embedding, so padding must be a token "
                              "(an id the Embedding has), not null (all-zero one-hot rows)")
    if parts.masked and vocab.pad_id != 0:
        raise VocabularyError(f"the encoder's Embedding has mask_zero=True, so padding must "
                              f"be id 0; the vocabulary pads with id {vocab.pad_id}")
    emb = parts.decoder_embedding
    if emb is not None and emb.mask_zero and 0 in (vocab.start_id, vocab.end_id):
        raise VocabularyError("the decoder's Embedding has mask_zero=True, so id 0 is "
                              "padding and cannot be the start or end token")
