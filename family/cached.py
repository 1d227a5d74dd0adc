"""The cached step: a Transformer decoder decoded one token at a time with its
attention keys and values as state, O(t) per token where the prefix step is O(t²).

``locate_cached`` recognises, in the decoder part of a model cut by ``family.prefix``
(nested functional models followed through), a decoder made of:

* the decoder input embedded with its position: ``keras_hub.layers.
  TokenAndPositionEmbedding``, or a ``keras.layers.Embedding`` and a
  ``keras_hub.layers.PositionEmbedding`` of it, added;
* ``keras_hub.layers.TransformerDecoder`` calls, each reading an encoder tensor
  (keras.io's KerasHub translation example);
* and/or ``keras.layers.MultiHeadAttention`` calls: causal self-attention (query and
  value the same tensor, ``use_causal_mask=True``) or cross-attention (the value an
  encoder tensor);
* position-wise layers and ops between them (Dense, LayerNormalization, Dropout,
  Activation, residual Add and the like), to the output.

Anything else is a ModelShapeError (export then uses the prefix step).

The step runs the layers themselves on the one position it computes. A KerasHub
layer's cache is an argument and a return value of its own ``call`` (KerasHub's
design); a Keras MultiHeadAttention runs its own projections and its own
``_compute_attention`` over the cached keys and values. Only the write of the new
token's key and value goes through a one-hot select here, because KerasHub's write
(``ops.slice_update``, an XLA op) converts to neither ONNX nor builtin TFLite, and
because each row carries its own position. Cross-attention keys and values are
computed once, from the encoder's outputs, in the encoder graph.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import keras
from keras.src import tree

from .errors import ModelShapeError
from .prefix import PrefixParts

# Layers and ops that work on each position alone: they may stand anywhere between the
# embedding and the output, and run on the one position a step computes.
POSITION_WISE = (keras.layers.Dropout, keras.layers.Dense, keras.layers.LayerNormalization,
                 keras.layers.Activation, keras.layers.ReLU, keras.layers.Add,
                 keras.layers.Subtract, keras.layers.Multiply, keras.layers.Average,
                 keras.layers.Maximum, keras.layers.Minimum)
# keras.ops called on KerasTensors (``x + y`` is an ops.add node), by operation name.
POSITION_WISE_OPS = ("Add", "Subtract", "Multiply", "Divide", "Relu", "Gelu", "Tanh",
                     "Sigmoid", "Silu")
CACHE = "cache"  # state names: cache0, cache1, ... (one per cached self-attention)
CROSS = "cross"  # memory names: cross0, cross1, ... (one per cross-attention)


@dataclass(frozen=True)
class Attention:
    """One cached attention: a self-attention cache slot or a cross-attention one."""
    heads: int
    head_dim: int
    layer: object  # the MultiHeadAttention whose key and value projections fill it
    reads: int = -1  # cross-attention: which crossing tensor (parts.crossing) it attends

    def cache_units(self, length: int) -> int:
        """The width of a flattened self-attention cache [2, length, heads, head_dim]."""
        return 2 * length * self.heads * self.head_dim


@dataclass(frozen=True)
class Call:
    """One layer call of the decoder, in run order."""
    kind: str  # "embedding" (token and position), "token", "position", "decoder"
    # (KerasHub TransformerDecoder), "self-attention", "cross-attention", "position-wise"
    op: object
    # argument -> ("call", j), ("target",), ("crossing", i) or ("const", value); a list
    # of them for a merge layer's list of tensors
    sources: dict
    cache: int = -1  # its self-attention cache slot
    cross: int = -1  # its cross-attention slot
    # Attention: whether Keras hands it a padding mask with its query (a
    # TransformerDecoder: its decoder_sequence) and with its value (encoder_sequence),
    # as seen by running the model once (``_with_masks``).
    query_masked: bool = False
    value_masked: bool = False


@dataclass(frozen=True)
class CachedParts:
    """A prefix-cut model whose decoder part is a recognised Transformer decoder."""
    prefix: PrefixParts  # the cut, the encoder part and the whole model's answers
    calls: tuple[Call, ...]
    caches: tuple[Attention, ...]  # self-attention cache slots, in run order
    crosses: tuple[Attention, ...]  # cross-attention slots, in run order
    mask_zero: bool  # the decoder embedding masks padding (id 0)

    @property
    def length(self) -> int:
        return self.prefix.prefix_length

    prefix_length = length

    def describe(self) -> dict:
        """The cut (``PrefixParts.describe``) and what is cached, for artifact.json."""
        return {**self.prefix.describe(), "cached": self._cached()}

    def _cached(self) -> dict:
        named = {kind: [c.op.name for c in self.calls if c.kind == kind]
                 for kind in ("decoder", "self-attention", "cross-attention")}
        return {"embedding": [c.op.name for c in self.calls
                              if c.kind in ("embedding", "token", "position")],
                "decoder_layers": named["decoder"],
                "self_attention_layers": named["self-attention"],
                "cross_attention_layers": named["cross-attention"],
                "position_wise": [c.op.name for c in self.calls if c.kind == "position-wise"],
                "self_attention_cache": [[2, self.length, a.heads, a.head_dim]
                                         for a in self.caches],
                "cross_attention": "keys and values computed once by the encoder graph"}


def _fail(found: str) -> None:
    raise ModelShapeError(
        "not a decoder the cached step recognises: expected the decoder input embedded "
        "with its position (keras_hub.layers.TokenAndPositionEmbedding, or an Embedding "
        "and a keras_hub.layers.PositionEmbedding), then keras_hub.layers."
        "TransformerDecoder calls or keras.layers.MultiHeadAttention calls (causal "
        "self-attention, or cross-attention over an encoder output), with position-wise "
        "layers (Dense, LayerNormalization, Dropout, Activation, Add...) between them and "
        f"to the model's output; found {found}")


def _named(op) -> str:
    """A layer as ``package.Class 'name'``: keras.io's own TransformerDecoder is not
    KerasHub's."""
    return f"{type(op).__module__.split('.')[0]}.{type(op).__name__} {op.name!r}"


def _source(tensor, where: dict):
    got = where.get(id(tensor))
    if got is None:
        _fail(f"a layer reading {getattr(tensor, 'name', tensor)!r}, made outside that chain")
    return got


def _is_tensor(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "_keras_history")


def _calls(nodes, where: dict) -> list:
    """(layer, {argument: source}) per layer call in run order, nested functional
    models opened; ``where`` maps KerasTensor ids to sources: ("target",),
    ("crossing", i) or ("call", j); a constant argument is ("const", value), a list
    of tensors (a merge layer's) a list of sources."""
    from .prefix import _needed, _ordered_nodes

    calls = []
    for node in nodes:
        op = node.operation
        args = node.arguments.args if node.arguments else ()
        kwargs = dict(node.arguments.kwargs) if node.arguments else {}
        if isinstance(op, keras.Model) and getattr(op, "_nodes_by_depth", None):
            given = [t for t in tree.flatten(args) if hasattr(t, "shape")]
            if len(given) != len(op.inputs):
                _fail(f"the nested model {op.name!r} called on {len(given)} tensors")
            inner = dict(where)
            for mine, outer in zip(op.inputs, given):
                inner[id(mine)] = _source(outer, where)
            calls += _calls(_needed(_ordered_nodes(op), op.outputs), inner)
            inner_out = tree.flatten(op.outputs)
            for mine, out in zip(node.outputs, inner_out):
                where[id(mine)] = inner[id(out)]
            continue
        kwargs.pop("training", None)
        kwargs.pop("mask", None)  # Keras's propagated masks, re-made by the step
        try:
            bound = inspect.signature(op.call).bind(*args, **kwargs).arguments
        except TypeError as e:
            _fail(f"{_named(op)} called as {e}")
        sources = {}
        for name, value in bound.items():
            if _is_tensor(value):
                sources[name] = _source(value, where)
            elif isinstance(value, (list, tuple)) and value and all(map(_is_tensor, value)):
                sources[name] = [_source(v, where) for v in value]
            elif value is None or isinstance(value, (bool, int, float, str)):
                sources[name] = ("const", value)
            else:
                _fail(f"{_named(op)} given {name} as a {type(value).__name__}")
        for t in node.outputs:
            where[id(t)] = ("call", len(calls))
        calls.append((op, sources))
    return calls


def locate_cached(parts: PrefixParts) -> CachedParts:
    """Recognise the decoder part of ``parts`` (see the module); ModelShapeError if it
    is not that shape."""
    import sys

    if "keras_hub" not in sys.modules:  # a model with its layers imported it already
        _fail("no keras_hub layers (keras_hub is not even imported)")
    if parts.target.one_hot:
        _fail("a one-hot decoder input")
    where = {id(parts.target.tensor): ("target",)}
    for i, t in enumerate(parts.crossing):
        where[id(t)] = ("crossing", i)
    found = _Recognised(parts)
    for op, sources in _calls(parts.decoder_nodes, where):
        found.add(op, sources)
    return _with_masks(found.finish(where.get(id(parts.model.outputs[0]))))


ATTENDING = ("decoder", "self-attention", "cross-attention")
# The arguments whose Keras masks each attention reads: (query's, value's).
MASKED_ARGUMENTS = {"decoder": ("decoder_sequence", "encoder_sequence"),
                    "self-attention": ("query", "value"),
                    "cross-attention": ("query", "value")}


def _with_masks(cached: CachedParts) -> CachedParts:
    """Which attention gets padding masks, learned from Keras itself: the model's
    decoder is run once eagerly with each attention layer's ``call`` wrapped to note
    the masks on its arguments (Keras attaches them to the tensors; a
    MultiHeadAttention reads and clears them)."""
    import dataclasses

    import numpy as np
    import tensorflow as tf
    from keras.src.backend.common.masking import get_keras_mask

    seen: dict = {}
    attending = list({id(c.op): c for c in cached.calls if c.kind in ATTENDING}.values())
    own = {id(c.op): c.op.__dict__.get("call") for c in attending}
    for c in attending:
        original = c.op.call
        names = MASKED_ARGUMENTS[c.kind]

        def noting(*args, _call=original, _names=names, _id=id(c.op), **kwargs):
            bound = inspect.signature(_call).bind(*args, **kwargs).arguments
            seen.setdefault(_id, set()).add(tuple(
                bound.get(n) is not None and get_keras_mask(bound[n]) is not None
                for n in _names))
            return _call(*args, **kwargs)

        c.op.call = noting
    parts = cached.prefix
    try:
        ids = np.ones((2, parts.source_length), np.int32)
        prefix = np.ones((2, parts.prefix_length), np.int32)
        parts.decode(parts.encode(tf.constant(ids)), tf.constant(prefix))
    finally:
        for c in attending:  # the layer's own call again
            if own[id(c.op)] is None:
                del c.op.call
            else:
                c.op.call = own[id(c.op)]
    calls = []
    for c in cached.calls:
        if c.kind in ATTENDING:
            got = seen.get(id(c.op), set())
            if len(got) != 1:
                _fail(f"{_named(c.op)} called with padding masks in {len(got)} ways")
            (query, value), = got
            c = dataclasses.replace(c, query_masked=query, value_masked=value)
            pads = query or (value and c.kind == "self-attention")
            if pads and not cached.mask_zero:  # the step knows padding as id 0
                _fail(f"{_named(c.op)} given a decoder-side mask that is not an Embedding's "
                      "mask_zero")
            # An attention that gets no encoder mask (a MultiHeadAttention before it
            # cleared it) simply applies none; one that gets a mask the encoder part
            # does not hand over cannot be stepped.
            if c.cross >= 0 and value and not parts.masked[cached.crosses[c.cross].reads]:
                _fail(f"{_named(c.op)} given an encoder mask that does not cross from the "
                      "encoder part")
        calls.append(c)
    return dataclasses.replace(cached, calls=tuple(calls))


class _Recognised:
    """The calls seen so far, each given its kind; ``finish`` checks the whole."""

    def __init__(self, parts: PrefixParts):
        from keras_hub.layers import (PositionEmbedding, TokenAndPositionEmbedding,
                                      TransformerDecoder)

        self.parts = parts
        self.hub = (TokenAndPositionEmbedding, PositionEmbedding, TransformerDecoder)
        self.calls: list[Call] = []
        self.caches: list[Attention] = []
        self.crosses: list[Attention] = []
        self.mask_zero = False

    def add(self, op, sources: dict) -> None:
        token_and_position, position, decoder = self.hub
        name = _named(op)
        reads = [s for v in sources.values() for s in (v if isinstance(v, list) else [v])
                 if s[0] != "const"]
        if any(r[0] == "target" for r in reads):
            if not isinstance(op, (token_and_position, keras.layers.Embedding)) or \
                    len(reads) != 1:
                _fail(f"{name} reading the decoder input")
            if _const(sources, "start_index", 0) != 0:
                _fail(f"{name} called with start_index {_const(sources, 'start_index', 0)}")
            self.mask_zero = bool(getattr(getattr(op, "token_embedding", op), "mask_zero",
                                          False))
            kind = "embedding" if isinstance(op, token_and_position) else "token"
            return self._keep(Call(kind, op, sources))
        if isinstance(op, position):
            if _const(sources, "start_index", 0) != 0 or len(reads) != 1:
                _fail(f"{name} called with {sources}")
            return self._keep(Call("position", op, sources))
        if isinstance(op, decoder):
            return self._decoder(op, sources, name)
        if isinstance(op, keras.layers.MultiHeadAttention):
            return self._attention(op, sources, name)
        if any(r[0] == "crossing" for r in reads):
            _fail(f"{name} reading an encoder output (only attention may)")
        # Exact types (a subclass may do anything in its call), and activations of
        # keras.activations only (a callable of one's own may mix positions).
        if not (type(op) in POSITION_WISE or (not isinstance(op, keras.layers.Layer)
                                              and type(op).__name__ in POSITION_WISE_OPS)):
            _fail(name)
        activation = getattr(op, "activation", None)
        if activation is not None and not getattr(activation, "__module__", "").startswith(
                "keras.src.activations"):
            _fail(f"{name} with the activation {getattr(activation, '__name__', activation)!r}"
                  " (not one of keras.activations)")
        # The decoder's tensors are [batch, positions, features]: -1 and 2 are the same.
        if isinstance(op, keras.layers.LayerNormalization) and list(
                tree.flatten(op.axis)) not in ([-1], [2]):
            _fail(f"{name} normalising over axis {op.axis} (not each position's features)")
        self._keep(Call("position-wise", op, sources))

    def _keep(self, call: Call) -> None:
        self.calls.append(call)

    def _decoder(self, op, sources, name) -> None:
        encoder = sources.get("encoder_sequence", ("none",))
        if encoder[0] != "crossing" or set(sources) - {"use_causal_mask"} != {
                "decoder_sequence", "encoder_sequence"} or _const(
                sources, "use_causal_mask", True) is not True:
            _fail(f"{name} reading {sources}")
        attention = op._self_attention_layer
        heads, dim = int(attention._num_heads), int(attention._key_dim)
        self.caches.append(Attention(heads, dim, attention))
        self.crosses.append(Attention(heads, dim, op._cross_attention_layer, encoder[1]))
        self._keep(Call("decoder", op, sources, len(self.caches) - 1, len(self.crosses) - 1))

    def _attention(self, op, sources, name) -> None:
        causal = _const(sources, "use_causal_mask", False)
        tensors = {k: v for k, v in sources.items() if v[0] != "const" or v[1] is not None}
        query, value = tensors.get("query"), tensors.get("value")
        key = tensors.get("key", value)
        extra = set(tensors) - {"query", "value", "key", "use_causal_mask"}
        if extra or key != value or int(op._key_dim) != int(op._value_dim or op._key_dim) \
                or getattr(op, "_sliding_window", None) is not None:
            _fail(f"{name} called with {sorted(extra) or sources} (cached: query, value "
                  "and the key the value, equal key and value widths, no sliding window)")
        if query is None or query[0] != "call":
            _fail(f"{name} with a query from {query}")
        heads, dim = int(op._num_heads), int(op._key_dim)
        if value == query:
            if causal is not True:
                _fail(f"{name}: self-attention without use_causal_mask=True (each position "
                      "sees later ones: nothing to cache)")
            self.caches.append(Attention(heads, dim, op))
            return self._keep(Call("self-attention", op, sources, cache=len(self.caches) - 1))
        if value is None or value[0] != "crossing" or causal:
            _fail(f"{name} attending {value} (not the query, not an encoder output)")
        self.crosses.append(Attention(heads, dim, op, value[1]))
        self._keep(Call("cross-attention", op, sources, cross=len(self.crosses) - 1))

    def finish(self, out) -> CachedParts:
        if not self.caches:
            _fail("no causal self-attention (no TransformerDecoder or MultiHeadAttention "
                  "with use_causal_mask=True)")
        if out != ("call", len(self.calls) - 1):
            _fail("an output that is not the last layer's")
        for c in self.calls:
            table = _position_table(c)
            if table is not None and self.parts.prefix_length > int(table.shape[0]):
                _fail(f"position embeddings for {table.shape[0]} positions and a "
                      f"{self.parts.prefix_length}-token output")
        return CachedParts(self.parts, tuple(self.calls), tuple(self.caches),
                           tuple(self.crosses), self.mask_zero)


def _const(sources: dict, name: str, default):
    got = sources.get(name)
    return default if got is None or got[0] != "const" or got[1] is None else got[1]


def _position_table(call: Call):
    if call.kind == "embedding":
        return call.op.position_embedding.position_embeddings
    if call.kind == "position":
        return call.op.position_embeddings
    return None


# -- the step (tf ops, inside a traced function) ---------------------------------------
def cross_caches(cached: CachedParts, memory) -> list:
    """Per cross-attention, its keys and values [batch, 2, S, heads, head_dim] from the
    crossing tensors (``PrefixParts.encode``'s order, masks included)."""
    import tensorflow as tf

    crossing = _crossing_values(cached, memory)
    out = []
    for a in cached.crosses:
        value = crossing[a.reads][0]
        out.append(tf.stack([a.layer._key_dense(value), a.layer._value_dense(value)], axis=1))
    return out


def _crossing_values(cached: CachedParts, memory) -> list:
    """(tensor, mask or None) per crossing tensor, from the flat memory list."""
    given, out = iter(memory), []
    for masked in cached.prefix.masked:
        value = next(given)
        out.append((value, next(given) if masked else None))
    return out


class _Position:
    """What every call at one step shares: each row's position, the one-hot of it,
    which cached keys a row may attend."""

    def __init__(self, cached: CachedParts, token, prefix, position):
        import tensorflow as tf

        length = cached.length
        self.batch = tf.shape(token)[0]
        self.at = tf.minimum(position[:, 0], length - 1)
        self.here = tf.equal(tf.range(length)[None, :], self.at[:, None])  # [batch, T]
        self.prefix = tf.where(self.here, token[:, None], prefix)
        self.causal = tf.range(length)[None, :] <= self.at[:, None]  # [batch, T]
        # Keras's padding masks (an Embedding's mask_zero): the cached keys that are
        # padding, and a padding query row.
        self.real_keys = tf.not_equal(self.prefix, 0)
        self.real_query = tf.not_equal(token, 0)[:, None, None]  # [batch, 1, 1]

    def self_keys(self, masked: bool):
        """The keys a position attends: up to its own, padding left out if masked."""
        import tensorflow as tf

        return tf.logical_and(self.causal, self.real_keys) if masked else self.causal


def step(cached: CachedParts, token, prefix, position, caches, crosses, masks):
    """One token per row at its own position: -> probabilities [batch, targets], the
    prefix with the token written in, and the updated caches (flattened)."""
    import tensorflow as tf

    here = _Position(cached, token, prefix, position)
    values, caches = {}, list(caches)
    for j, c in enumerate(cached.calls):
        if c.kind in ("decoder", "self-attention"):
            values[j], caches[c.cache] = _self_attend(cached, c, here, values, caches[c.cache],
                                                      crosses, masks)
        elif c.kind == "cross-attention":
            values[j] = _cross_attend(cached, c, here, values, crosses[c.cross], masks)
        else:
            values[j] = _position_wise(c, here, token, values)
    x = values[len(cached.calls) - 1]
    probs = x[:, 0, :]
    return ((tf.nn.softmax(probs) if cached.prefix.logits else probs), here.prefix, caches)


def _arguments(c: Call, values: dict) -> dict:
    def value(source):
        if isinstance(source, list):
            return [value(s) for s in source]
        if source[0] == "const":
            return source[1]
        # The decoder input and encoder tensors are read by the calls that use them
        # (embedding, cached cross-attention), never as a value here.
        return values[source[1]] if source[0] == "call" else None

    return {k: value(v) for k, v in c.sources.items() if k != "use_causal_mask"}


def _position_wise(c: Call, here: _Position, token, values: dict):
    import tensorflow as tf

    if c.kind == "embedding":
        emb = c.op
        x = emb.token_embedding(token[:, None])
        table = tf.convert_to_tensor(emb.position_embedding.position_embeddings)
        return x + tf.gather(table, here.at)[:, None, :]
    if c.kind == "token":
        return c.op(token[:, None])
    if c.kind == "position":  # the table's row at each row's position
        table = tf.convert_to_tensor(c.op.position_embeddings)
        return tf.gather(table, here.at)[:, None, :]
    if isinstance(c.op, keras.layers.Dropout):
        return next(iter(_arguments(c, values).values()))
    return c.op(**_arguments(c, values))


def _write(cache_flat, a: Attention, here: _Position, length: int, seen):
    """The cache [batch, 2, T, heads, head_dim] with this position's key and value."""
    import tensorflow as tf

    cache = tf.reshape(cache_flat, [here.batch, 2, length, a.heads, a.head_dim])
    new = tf.stack([a.layer._key_dense(seen), a.layer._value_dense(seen)], axis=1)
    return tf.where(tf.reshape(here.here, [here.batch, 1, length, 1, 1]), new, cache)


def _self_attend(cached, c: Call, here: _Position, values, flat, crosses, masks):
    import tensorflow as tf

    length, a = cached.length, cached.caches[c.cache]
    args = _arguments(c, values)
    if c.kind == "decoder":
        layer, x = c.op, args["decoder_sequence"]
        seen = layer._self_attention_layer_norm(x) if layer.normalize_first else x
        cache = _write(flat, a, here, length, seen)
        cross, mask = crosses[c.cross], masks[cached.crosses[c.cross].reads]
        # The encoder tensor itself is not read once its keys and values are cached;
        # the layer still wants one, for the shape of the padding mask.
        stand_in = tf.zeros([here.batch, tf.shape(cross)[2], 1])
        keys = here.self_keys(c.query_masked)  # KerasHub masks padding keys only
        x, cache, _ = layer(
            x, encoder_sequence=stand_in,
            decoder_attention_mask=tf.cast(keys[:, None, :], tf.int32),
            encoder_padding_mask=None if mask is None else tf.greater(mask, 0.5),
            self_attention_cache=cache, cross_attention_cache=cross,
            use_causal_mask=False, training=False)
    else:
        x = args["query"]
        cache = _write(flat, a, here, length, x)
        mask = here.self_keys(c.value_masked)[:, None, :]  # [batch, 1, T]
        if c.query_masked:
            mask = tf.logical_and(mask, here.real_query)
        x = _attend(c.op, x, cache[:, 0], cache[:, 1], mask)
    return x, tf.reshape(cache, [here.batch, a.cache_units(length)])


def _cross_attend(cached, c: Call, here: _Position, values, cross, masks):
    import tensorflow as tf

    query = _arguments(c, values)["query"]
    mask = masks[cached.crosses[c.cross].reads]
    keys = tf.greater(mask, 0.5)[:, None, :] if c.value_masked else None  # [batch, 1, S]
    if c.query_masked:
        width = tf.shape(cross)[2]
        rows = tf.broadcast_to(here.real_query, [here.batch, 1, width])
        keys = rows if keys is None else tf.logical_and(keys, rows)
    return _attend(c.op, query, cross[:, 0], cross[:, 1], keys)


def _attend(layer, query, key, value, mask):
    """Keras MultiHeadAttention's own call from its projected query on, with the
    cached (already projected) keys and values."""
    from keras import ops

    gate = layer._gate_dense(query) if getattr(layer, "_use_gate", False) else None
    out, _ = layer._compute_attention(layer._query_dense(query), key, value, mask,
                                      training=False)
    return layer._output_dense(out if gate is None else ops.multiply(out, gate))
