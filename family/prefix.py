"""The graph cut of any two-input functional encoder-decoder, and its prefix step.

Where no structured step is known (``structure.locate`` refuses the model, or the
user asks for it), a model ``model([source, decoder input]) -> [batch, T, vocab]``
whose output at position t reads only decoder positions up to t is split by its
own graph, found by structure:

* the encoder part: every layer call that depends on the source alone;
* the tensors that cross from it into the rest (the encoder outputs, and the
  padding mask Keras propagates with one);
* the rest: every other call the output needs, run on those tensors and a
  fixed-length prefix of decoder tokens.

One decoder step writes its token into the prefix at its position and reads the
output there: keras.io's ``decode_sequence`` loop, which runs the whole model on
the growing zero-padded prefix, with the encoder run once. The prefix and the
position are decoder state like any other (``prefix``, ``position``), so the
runtime's loop, beams, batching and streaming need nothing new.

The layers run exactly as Keras's functional model runs them (node by node, the
masks travelling with the tensors), inside the graphs export converts.
"""
from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

from runtime.vocab import Vocabulary

from .errors import ModelShapeError

PREFIX, POSITION = "prefix", "position"
# Crossing tensors travel between the graphs as float32 or int32 (what every runtime
# and format holds); these are turned into those and back.
WIRE = {"bool": "float32", "float16": "float32", "bfloat16": "float32", "float64": "float32",
        "int64": "int32", "int16": "int32", "int8": "int32", "uint8": "int32"}
# Changing decoder positions after t may move the output at t by at most this
# much (float noise of the same sums in another order; masked scores weigh 0).
CAUSAL_ATOL = 1e-6


def _dtype(tensor) -> str:
    return getattr(tensor.dtype, "name", str(tensor.dtype))


def _set_mask(tensor, mask) -> None:
    from keras.src.backend.common.masking import set_keras_mask

    set_keras_mask(tensor, mask)


def _get_mask(tensor):
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


@dataclass(frozen=True)
class Side:
    """How one model input reads token ids: as ids of its dtype, or one-hot rows."""
    tensor: object  # the model's KerasTensor
    one_hot: int  # the one-hot width, or 0 for ids
    dtype: str

    def feed(self, ids):
        """The model input for int32 ids (tf ops). One-hot: id ``one_hot`` (the padding
        of a vocabulary without a padding token) is an all-zero row, as in training."""
        import tensorflow as tf

        if self.one_hot:
            return tf.one_hot(ids, self.one_hot, dtype=self.dtype)
        return tf.cast(ids, self.dtype)


@dataclass(frozen=True)
class PrefixParts:
    """A functional encoder-decoder cut in two by its graph (``locate_prefix``)."""
    model: keras.Model
    source: Side
    target: Side
    encoder_nodes: tuple  # Keras nodes, in the order the model runs them
    decoder_nodes: tuple
    crossing: tuple  # KerasTensors the encoder part hands over, in order
    masked: tuple[bool, ...]  # per crossing tensor: Keras propagates a mask with it
    # Every tensor the encoder graph hands over, masks included: (name, shape of one
    # row, dtype), in order.
    memory: tuple[tuple[str, tuple[int, ...], str], ...]
    source_length: int  # encoder steps (the vocabulary's max_input_length)
    prefix_length: int  # decoder positions (the vocabulary's max_output_length)
    target_size: int
    logits: bool  # the output is linear logits (a softmax is added)
    # Unrolled copies of the recurrent layers, by the original layer's id (see _run).
    unrolled: dict | None = None
    crossing_dtypes: tuple[str, ...] = ()  # as Keras makes them (travelling as WIRE's)

    @property
    def memory_names(self) -> tuple[str, ...]:
        """The names the crossing tensors (and masks) travel under, in order."""
        names = []
        for i, masked in enumerate(self.masked):
            base = "memory" if len(self.crossing) == 1 else f"memory{i}"
            names += [base] + ([f"{base}_mask"] if masked else [])
        return tuple(names)

    def describe(self) -> dict:
        """What the model is, for artifact.json."""
        def names(nodes):
            return [f"{type(n.operation).__name__} {n.operation.name}" for n in nodes]

        return {"kind": "functional", "model": self.model.name,
                "encoder_layers": names(self.encoder_nodes),
                "decoder_layers": names(self.decoder_nodes),
                "crossing": [{"name": n, "shape": list(s), "dtype": d}
                             for n, s, d in self.memory],
                "encoder_input": "one-hot" if self.source.one_hot else "ids",
                "decoder_input": "one-hot" if self.target.one_hot else "ids",
                "output": "logits" if self.logits else "softmax",
                "prefix_length": self.prefix_length}

    # -- running the two parts (tf ops: eager, or inside a traced function) -----------
    def encode(self, ids) -> tuple:
        """Source ids int32 [batch, source_length] -> the crossing tensors, each
        followed by its mask as float32 (1.0 on real steps) where it has one."""
        import tensorflow as tf

        values = {id(self.source.tensor): self.source.feed(ids)}
        _run(self.encoder_nodes, values, self.unrolled)
        out = []
        for tensor, masked in zip(self.crossing, self.masked):
            value = values[id(tensor)]
            out.append(tf.cast(value, WIRE[_dtype(value)]) if _dtype(value) in WIRE else value)
            if masked:
                mask = _get_mask(value)
                out.append(tf.cast(mask, tf.float32))
        return tuple(out)

    def decode(self, memory, prefix):
        """The model's output [batch, prefix_length, targets] (probabilities) for the
        crossing tensors ``memory`` (as ``encode`` returns them) and prefix ids."""
        import tensorflow as tf

        values = {id(self.target.tensor): self.target.feed(prefix)}
        given = iter(memory)
        for tensor, masked, dtype in zip(self.crossing, self.masked, self.crossing_dtypes):
            value = next(given)
            # Back to the dtype Keras made (a tensor of its own, to carry the mask).
            value = tf.greater(value, 0.5) if dtype == "bool" else tf.identity(
                tf.cast(value, dtype))
            if masked:
                _set_mask(value, tf.greater(next(given), 0.5))
            values[id(tensor)] = value
        _run(self.decoder_nodes, values, self.unrolled)
        out = values[id(self.model.outputs[0])]
        return tf.nn.softmax(out) if self.logits else out

    def initial_prefix(self, batch):
        """The prefix buffer before the first step: the padding id (0), or for a one-hot
        decoder input the id of an all-zero row. Positions after a step's own are
        never read (causality, proven at export), so the fill changes no answer."""
        import tensorflow as tf

        fill = self.target.one_hot if self.target.one_hot else 0
        return tf.fill([batch, self.prefix_length], tf.constant(fill, tf.int32))


def _run(nodes, values: dict, unrolled: dict | None = None) -> None:
    """Run Keras nodes in order, as the functional model does: each call's arguments
    filled in from ``values`` (by KerasTensor id), outputs stored back; inference
    mode for layers that take ``training``. A recurrent layer runs as its unrolled
    copy in ``unrolled`` (by layer id), built and given the trained weights on its
    first call."""
    from keras.src import tree

    for node in nodes:
        args, kwargs = node.arguments.fill_in(values)
        op = node.operation
        if "training" in getattr(op, "_call_context_args", ()):
            kwargs["training"] = False
        if unrolled is not None and id(op) in unrolled:
            copy = unrolled[id(op)]
            if not copy.built or not getattr(copy, "_prefix_weights_set", False):
                copy(*args, **kwargs)  # builds it (eagerly, at locate time)
                copy.set_weights(op.get_weights())
                copy._prefix_weights_set = True
            op = copy
        outputs = op(*args, **kwargs)
        for tensor, value in zip(node.outputs, tree.flatten(outputs)):
            values[id(tensor)] = value


def _unrolled_copies(nodes) -> dict:
    """Per recurrent layer (an RNN, or Bidirectional around one), a copy with
    ``unroll=True`` (and cuDNN off): Keras's loop keeps its outputs in a TensorList,
    which builtin TFLite cannot hold; over the fixed lengths here the unrolled form
    computes the same."""
    def unroll(config):
        if isinstance(config, dict):
            for key in ("unroll", "use_cudnn"):
                if key in config:
                    config[key] = key == "unroll"
            for value in config.values():
                unroll(value)
        return config

    copies = {}
    for node in nodes:
        op = node.operation
        if isinstance(op, (keras.layers.RNN, keras.layers.Bidirectional)) and id(op) not in copies:
            copies[id(op)] = type(op).from_config(unroll(op.get_config()))
    return copies


def _fail(found: str) -> None:
    raise ModelShapeError(
        "not an encoder-decoder the prefix step can cut: expected a functional Keras "
        "model with two inputs, [source, decoder input] in that order (token ids, or "
        "one-hot rows as wide as the vocabulary), and one output [batch, positions, "
        f"target vocabulary] whose position t reads decoder positions up to t; found {found}")


def _side(tensor, width: int, what: str) -> Side:
    shape = tuple(tensor.shape)
    dtype = str(tensor.dtype)
    if len(shape) == 2 and ("int" in dtype or "float" in dtype):
        return Side(tensor, 0, dtype)
    if len(shape) == 3 and "float" in dtype and shape[-1] == width:
        return Side(tensor, width, dtype)
    _fail(f"the {what} input {tensor.name!r} of shape {shape} and dtype {dtype} (the "
          f"vocabulary has {width} tokens on that side)")


def _ordered_nodes(model) -> list:
    """The model's layer calls in the order its functional graph runs them."""
    by_depth = model._nodes_by_depth  # Keras's own schedule of the functional graph
    return [n for depth in sorted(by_depth, reverse=True) for n in by_depth[depth]
            if n.operation is not None and not n.is_input]


def _needed(nodes, outputs) -> list:
    """The nodes the outputs depend on, in run order."""
    producer = {id(t): n for n in nodes for t in n.outputs}
    need, stack = set(), [id(t) for t in outputs]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in need:
            continue
        need.add(id(node))
        stack += [id(t) for t in node.input_tensors]
    return [n for n in nodes if id(n) in need]


def locate_prefix(model, vocab: Vocabulary) -> PrefixParts:
    """Cut ``model`` into its encoder part and the rest, by its graph. Raises
    ModelShapeError naming what does not fit (causality is ``check_causal``'s)."""
    if not isinstance(model, keras.Model) or not getattr(model, "_nodes_by_depth", None):
        _fail(f"a {type(model).__name__} that is not a functional Keras model (a "
              "subclassed model has no graph to cut)")
    if len(model.inputs) != 2 or len(model.outputs) != 1:
        _fail(f"{len(model.inputs)} input(s) and {len(model.outputs)} output(s)")
    source = _side(model.inputs[0], vocab.input_size, "source")
    target = _side(model.inputs[1], vocab.target_size, "decoder")
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 3 or out_shape[-1] != vocab.target_size:
        _fail(f"an output of shape {out_shape}; the vocabulary has {vocab.target_size} "
              "target tokens (a TextVectorization whose max_tokens is more than the words "
              "it found makes a vocabulary narrower than the model's output)")
    fixed = [(what, t.shape[1], want) for what, t, want in (
        ("source", model.inputs[0], vocab.max_input_length),
        ("decoder", model.inputs[1], vocab.max_output_length))]
    for what, length, want in fixed:
        if length is not None and (length < want or (what == "source" and length != want)):
            _fail(f"a {what} input of fixed length {length}; the vocabulary's is {want} "
                  "(the runtime pads every input to it)")
    if not source.one_hot and vocab.padding.token is None:
        _fail("a source read as token ids while the vocabulary pads with all-zero rows "
              "(padding.token null): the padding must be a token id, such as \"\" (id 0)")
    nodes = _needed(_ordered_nodes(model), model.outputs)
    side = {id(source.tensor): {0}, id(target.tensor): {1}}
    encoder, decoder = [], []
    for node in nodes:
        reads = set().union(*(side.get(id(t), set()) for t in node.input_tensors))
        for t in node.outputs:
            side[id(t)] = reads
        (encoder if reads == {0} else decoder).append(node)
    if not any(1 in side.get(id(t), ()) for t in model.outputs):
        _fail("an output that does not read the decoder input")
    made = {id(t) for n in encoder for t in n.outputs} | {id(source.tensor)}
    crossing, seen = [], set()
    for node in decoder:
        for t in node.input_tensors:
            if id(t) in made and id(t) not in seen:
                seen.add(id(t))
                crossing.append(t)
    if not crossing:
        _fail("a decoder that reads nothing of the source")
    length = vocab.max_output_length if fixed[1][1] is None else int(fixed[1][1])
    last = model.outputs[0]._keras_history[0]  # the layer that makes the output
    logits = getattr(getattr(last, "activation", None), "__name__", "") == "linear"
    parts = PrefixParts(model, source, target, tuple(encoder), tuple(decoder), tuple(crossing),
                        (), (), vocab.max_input_length, length, vocab.target_size, logits,
                        _unrolled_copies(nodes))
    return _probed(parts, vocab)


def _probed(parts: PrefixParts, vocab: Vocabulary) -> PrefixParts:
    """Run the encoder part once to learn each crossing tensor's mask, shape and dtype."""
    import dataclasses

    ids = np.full((2, vocab.max_input_length), vocab.pad_id, np.int32)
    ids[:, 0] = 0 if vocab.pad_id != 0 else min(1, vocab.input_size - 1)
    values = {id(parts.source.tensor): parts.source.feed(ids)}
    _run(parts.encoder_nodes, values, parts.unrolled)
    got = [values[id(t)] for t in parts.crossing]
    masks = [_get_mask(v) for v in got]
    parts = dataclasses.replace(parts, masked=tuple(m is not None for m in masks),
                                crossing_dtypes=tuple(_dtype(v) for v in got))
    names, memory = iter(parts.memory_names), []
    for value, mask in zip(got, masks):
        dtype = WIRE.get(_dtype(value), _dtype(value))
        if dtype not in ("float32", "int32"):
            _fail(f"a tensor of dtype {_dtype(value)} crossing from the encoder part")
        memory.append((next(names), tuple(int(d) for d in value.shape[1:]), dtype))
        if mask is not None:
            memory.append((next(names), tuple(int(d) for d in mask.shape[1:]), "float32"))
    parts = dataclasses.replace(parts, memory=tuple(memory))
    # Once eagerly, so every unrolled copy is built and holds its weights before a
    # graph is traced; and to see whether the output is probabilities (a head that
    # is not a linear Dense may still give logits: then a softmax is added).
    out = np.asarray(parts.decode(parts.encode(ids), parts.initial_prefix(len(ids))))
    if not parts.logits and not (np.all(out >= 0) and np.allclose(out.sum(-1), 1, atol=1e-3)):
        parts = dataclasses.replace(parts, logits=True)
    return parts


def full_output(parts: PrefixParts, source_ids: np.ndarray, prefix: np.ndarray) -> np.ndarray:
    """The whole Keras model on source ids and decoder prefix ids: [batch, T, targets]
    probabilities, as keras.io's loop reads them."""
    import tensorflow as tf

    out = parts.model([parts.source.feed(source_ids), parts.target.feed(prefix)],
                      training=False)
    out = tf.nn.softmax(out) if parts.logits else out
    return np.asarray(out)


def check_causal(parts: PrefixParts, vocab: Vocabulary, seed: int = 0) -> float:
    """Prove on the Keras model that its output at position t does not move when the
    decoder positions after t change (random sources, prefixes and t); raise
    ModelShapeError when it does. Returns the largest change seen."""
    rng = np.random.default_rng(seed)
    batch, length = 8, parts.prefix_length
    ids = rng.integers(0, vocab.input_size, (batch, vocab.max_input_length), dtype=np.int32)
    # Positions up to t hold tokens (a decode writes no padding there: a query whose
    # every key is masked out would attend uniformly, over the future too); the
    # positions after t anything, padding included.
    fill = parts.target.one_hot if parts.target.one_hot else 0
    real = np.array([i for i in range(vocab.target_size) if i != fill], np.int32)
    prefix = rng.choice(real, (batch, length)).astype(np.int32)
    base = full_output(parts, ids, prefix)
    worst = 0.0
    for t in range(length - 1):
        changed = prefix.copy()
        changed[:, t + 1:] = rng.integers(0, vocab.target_size + 1, (batch, length - t - 1))
        if not parts.target.one_hot:
            changed[changed == vocab.target_size] = 0
        moved = float(np.max(np.abs(full_output(parts, ids, changed)[:, t] - base[:, t])))
        worst = max(worst, moved)
        if moved > CAUSAL_ATOL:
            raise ModelShapeError(
                f"the model's output at decoder position {t} changes by {moved:.3g} when "
                f"only positions after {t} change: it reads the future, so it cannot "
                "decode one token at a time (a causal mask missing in self-attention?)")
    return worst


class PrefixReference:
    """Keras's own answers for a prefix-step model, the keras.io way: the whole model
    run on the growing zero-padded prefix, position i read at step i
    (``decode_sequence``); and the runtime's state (prefix, position, memory) for the
    graph checks."""

    def __init__(self, parts: PrefixParts, vocab: Vocabulary):
        self.parts, self.vocab = parts, vocab

    def greedy_ids(self, texts, max_length: int | None = None) -> list[list[int]]:
        vocab, parts = self.vocab, self.parts
        steps = max_length or vocab.max_output_length
        ids = vocab.encode_inputs(texts)
        fill = parts.target.one_hot if parts.target.one_hot else 0
        prefix = np.full((len(texts), parts.prefix_length), fill, np.int32)
        prefix[:, 0] = vocab.start_id
        out = [[] for _ in texts]
        done = np.zeros(len(texts), bool)
        for i in range(steps):
            tokens = full_output(parts, ids, prefix)[:, i].argmax(axis=-1)
            for row in np.flatnonzero(~done):
                if tokens[row] == vocab.end_id:
                    done[row] = True
                else:
                    out[row].append(int(tokens[row]))
            if done.all() or i + 1 == parts.prefix_length:
                break
            prefix[:, i + 1] = tokens
        return out

    def greedy(self, texts, batch_size: int = 256, max_length: int | None = None
               ) -> list[str]:
        """Greedy strings per text, in batches of ``batch_size``."""
        results = []
        for lo in range(0, len(texts), batch_size):
            results += [self.vocab.decode_target(ids) for ids in
                        self.greedy_ids(list(texts[lo:lo + batch_size]), max_length)]
        return results
