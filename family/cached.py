"""The cached step: a KerasHub ``TransformerDecoder`` stack decoded one token at a time
with its key/value cache as state, O(t) per token where the prefix step is O(t²).

``locate_cached`` recognises, in the decoder part of a model cut by ``family.prefix``
(nested functional models followed through), the shape of keras.io's KerasHub
translation example: the decoder input through ``TokenAndPositionEmbedding``, then
position-wise layers, one or more ``keras_hub.layers.TransformerDecoder`` calls each
reading the one before and an encoder tensor, then position-wise layers to the
output. Anything else is a ModelShapeError (export then uses the prefix step).

The step runs the layers themselves. Each decoder layer's cache is an argument and a
return value of its own ``call`` (KerasHub's design); only the write of the new
token's key and value goes through a one-hot select here, because the layer's own
write (``ops.slice_update``, an XLA op) converts to neither ONNX nor builtin TFLite,
and because each row carries its own position. The cross-attention keys and values
are computed once, from the encoder's outputs, in the encoder graph.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import keras
from keras.src import tree

from .errors import ModelShapeError
from .prefix import PrefixParts

# Layers that work on each position alone: they may stand between the embedding, the
# decoder layers and the output, and run on the one position a step computes.
POSITION_WISE = (keras.layers.Dropout, keras.layers.Dense, keras.layers.LayerNormalization,
                 keras.layers.Activation)
CACHE = "cache"  # state names: cache0, cache1, ... (one per decoder layer)
CROSS = "cross"  # memory names: cross0, cross1, ...


@dataclass(frozen=True)
class DecoderLayer:
    layer: object  # keras_hub.layers.TransformerDecoder
    reads: int  # which crossing tensor (parts.crossing) is its encoder_sequence
    heads: int
    head_dim: int

    def cache_units(self, length: int) -> int:
        """The width of its flattened cache [2, length, heads, head_dim]."""
        return 2 * length * self.heads * self.head_dim


@dataclass(frozen=True)
class CachedParts:
    """A prefix-cut model whose decoder part is a recognised TransformerDecoder stack."""
    prefix: PrefixParts  # the cut, the encoder part and the whole model's answers
    embedding: object  # keras_hub.layers.TokenAndPositionEmbedding
    before: tuple  # position-wise layers between the embedding and the first decoder
    decoders: tuple[DecoderLayer, ...]
    after: tuple  # position-wise layers from the last decoder to the output

    @property
    def length(self) -> int:
        return self.prefix.prefix_length

    prefix_length = length

    def describe(self) -> dict:
        """The cut (``PrefixParts.describe``) and what is cached, for artifact.json."""
        return {**self.prefix.describe(), "cached": self._cached()}

    def _cached(self) -> dict:
        return {"embedding": self.embedding.name,
                "decoder_layers": [d.layer.name for d in self.decoders],
                "position_wise": [layer.name for layer in self.before + self.after],
                "self_attention_cache": [2, self.length, self.decoders[0].heads,
                                         self.decoders[0].head_dim],
                "cross_attention": "keys and values computed once by the encoder graph"}


def _fail(found: str) -> None:
    raise ModelShapeError(
        "not a decoder the cached step recognises: expected the decoder input through "
        "keras_hub.layers.TokenAndPositionEmbedding, position-wise layers (Dropout, Dense, "
        "LayerNormalization, Activation), keras_hub.layers.TransformerDecoder calls each "
        "reading the one before and an encoder output, and position-wise layers to the "
        f"model's output; found {found}")


def _named(op) -> str:
    """A layer as ``package.Class 'name'``: keras.io's own TransformerDecoder is not
    KerasHub's."""
    return f"{type(op).__module__.split('.')[0]}.{type(op).__name__} {op.name!r}"


def _source(tensor, where: dict):
    got = where.get(id(tensor))
    if got is None:
        _fail(f"a layer reading {getattr(tensor, 'name', tensor)!r}, made outside that chain")
    return got


def _calls(nodes, where: dict) -> list:
    """(layer, {argument: source}) per layer call in run order, nested functional
    models opened; ``where`` maps KerasTensor ids to sources: ("target",),
    ("crossing", i) or ("call", j)."""
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
            if hasattr(value, "shape") and hasattr(value, "_keras_history"):
                sources[name] = _source(value, where)
            elif value is not None and not isinstance(value, (bool, int, float, str)):
                _fail(f"{_named(op)} given {name} as a {type(value).__name__}")
        if bound.get("use_causal_mask", True) is not True:
            _fail(f"{_named(op)} called with use_causal_mask={bound['use_causal_mask']}")
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
    from keras_hub.layers import TokenAndPositionEmbedding, TransformerDecoder
    where = {id(parts.target.tensor): ("target",)}
    for i, t in enumerate(parts.crossing):
        where[id(t)] = ("crossing", i)
    calls = _calls(parts.decoder_nodes, where)
    if parts.target.one_hot:
        _fail("a one-hot decoder input")
    if not calls or not isinstance(calls[0][0], TokenAndPositionEmbedding) or \
            list(calls[0][1].values()) != [("target",)]:
        _fail(f"a first decoder layer {_named(calls[0][0]) if calls else None}")
    before, decoders, after = [], [], []
    for j, (op, sources) in enumerate(calls[1:], start=1):
        name = _named(op)
        if isinstance(op, TransformerDecoder):
            if after:
                _fail(f"{name} after position-wise layers that follow a decoder layer")
            reads = sources.get("encoder_sequence", ("none",))
            if sources.get("decoder_sequence") != ("call", j - 1) or reads[0] != "crossing" \
                    or set(sources) != {"decoder_sequence", "encoder_sequence"}:
                _fail(f"{name} reading {sources}")
            attention = op._self_attention_layer
            decoders.append(DecoderLayer(op, reads[1], int(attention._num_heads),
                                         int(attention._key_dim)))
        elif isinstance(op, POSITION_WISE):
            if list(sources.values()) != [("call", j - 1)]:
                _fail(f"{name} reading {sources}")
            (after if decoders else before).append(op)
        else:
            _fail(name)
    if not decoders:
        _fail("no TransformerDecoder")
    out = where.get(id(parts.model.outputs[0]))
    if out != ("call", len(calls) - 1):
        _fail("an output that is not the last layer's")
    if parts.prefix_length > int(calls[0][0].position_embedding.sequence_length):
        _fail(f"position embeddings for {calls[0][0].position_embedding.sequence_length} "
              f"positions and a {parts.prefix_length}-token output")
    return CachedParts(parts, calls[0][0], tuple(before), tuple(decoders), tuple(after))


# -- the step (tf ops, inside a traced function) ---------------------------------------
def cross_caches(cached: CachedParts, memory) -> list:
    """Per decoder layer, its cross-attention keys and values [batch, 2, S, heads,
    head_dim] from the crossing tensors (``PrefixParts.encode``'s order, masks
    included)."""
    import tensorflow as tf

    crossing = _crossing_values(cached, memory)
    out = []
    for d in cached.decoders:
        attention = d.layer._cross_attention_layer
        value = crossing[d.reads][0]
        out.append(tf.stack([attention._key_dense(value), attention._value_dense(value)],
                            axis=1))
    return out


def _crossing_values(cached: CachedParts, memory) -> list:
    """(tensor, mask or None) per crossing tensor, from the flat memory list."""
    given, out = iter(memory), []
    for masked in cached.prefix.masked:
        value = next(given)
        out.append((value, next(given) if masked else None))
    return out


def step(cached: CachedParts, token, prefix, position, caches, crosses, masks):
    """One token per row at its own position: -> probabilities [batch, targets], the
    prefix with the token written in, and the updated caches (flattened)."""
    import tensorflow as tf

    length = cached.length
    batch = tf.shape(token)[0]
    at = tf.minimum(position[:, 0], length - 1)
    here = tf.equal(tf.range(length)[None, :], at[:, None])  # [batch, T]
    prefix = tf.where(here, token[:, None], prefix)
    emb = cached.embedding
    x = emb.token_embedding(token[:, None])
    table = tf.convert_to_tensor(emb.position_embedding.position_embeddings)
    x = x + tf.gather(table, at)[:, None, :]
    for layer in cached.before:
        x = _inference(layer, x)
    keys = tf.range(length)[None, :] <= at[:, None]
    if getattr(emb.token_embedding, "mask_zero", False):
        keys = tf.logical_and(keys, tf.not_equal(prefix, 0))  # as Keras's padding mask
    attention_mask = tf.cast(keys[:, None, :], tf.int32)  # [batch, 1, T]
    out_caches = []
    for d, flat, cross in zip(cached.decoders, caches, crosses):
        layer = d.layer
        cache = tf.reshape(flat, [batch, 2, length, d.heads, d.head_dim])
        attention = layer._self_attention_layer
        seen = layer._self_attention_layer_norm(x) if layer.normalize_first else x
        new = tf.stack([attention._key_dense(seen), attention._value_dense(seen)], axis=1)
        cache = tf.where(tf.reshape(here, [batch, 1, length, 1, 1]), new, cache)
        mask = masks[d.reads]
        # The encoder tensor itself is not read once its keys and values are cached;
        # the layer still wants one, for the shape of the padding mask.
        stand_in = tf.zeros([batch, tf.shape(cross)[2], 1])
        x, cache, _ = layer(
            x, encoder_sequence=stand_in, decoder_attention_mask=attention_mask,
            encoder_padding_mask=None if mask is None else tf.greater(mask, 0.5),
            self_attention_cache=cache, cross_attention_cache=cross,
            use_causal_mask=False, training=False)
        out_caches.append(tf.reshape(cache, [batch, d.cache_units(length)]))
    for layer in cached.after:
        x = _inference(layer, x)
    probs = x[:, 0, :]
    return (tf.nn.softmax(probs) if cached.prefix.logits else probs), prefix, out_caches


def _inference(layer, x):
    if isinstance(layer, keras.layers.Dropout):
        return x
    return layer(x)
