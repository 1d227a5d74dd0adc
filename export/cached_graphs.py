"""The graphs export converts for a Transformer decoder with a cached step
(``family.cached``).

* encoder: ``input_ids`` -> ``prefix`` (the empty buffer), ``position`` (zeros),
  ``cache0``... (zeros, one flattened [2, T, heads, head_dim] key/value cache per
  causal self-attention), then the memory: ``cross0``... (each cross-attention's
  keys and values [2, S, heads, head_dim]) and the masks of the
  encoder tensors that carry one (``memory_mask``...)
* decoder_step: ``token``, the state and the memory -> ``probs``, ``NAME_out`` per
  state tensor, ``next_token``
* greedy: as for every model
"""
from __future__ import annotations

import tensorflow as tf

from family.cached import CACHE, CROSS, CachedParts, cross_caches, step
from family.prefix import POSITION, PREFIX
from runtime.vocab import Vocabulary

from .prefix_graphs import PrefixGraphBuilder


class CachedGraphBuilder(PrefixGraphBuilder):
    """``PrefixGraphBuilder``'s graphs with the cached step's state and memory."""

    def __init__(self, cached: CachedParts, vocab: Vocabulary):
        super().__init__(cached.prefix, vocab)
        self.cached = cached
        length, parts = cached.length, cached.prefix
        n = len(cached.caches)
        self.state_names = (PREFIX, POSITION) + tuple(f"{CACHE}{i}" for i in range(n))
        self.state_units = (length, 1) + tuple(a.cache_units(length) for a in cached.caches)
        self.state_dtypes = ("int32", "int32") + ("float32",) * n
        source = parts.source_length
        # Each crossing tensor's mask, as the prefix step names it.
        self._masks = [(name, shape, dtype) for name, shape, dtype in parts.memory
                       if name.endswith("_mask")]
        self.memory = tuple((f"{CROSS}{i}", (2, source, a.heads, a.head_dim), "float32")
                            for i, a in enumerate(cached.crosses)) + tuple(self._masks)
        self.memory_names = tuple(name for name, _, _ in self.memory)

    def _memory_specs(self):
        return [tf.TensorSpec([None, *shape], tf.dtypes.as_dtype(dtype), name)
                for name, shape, dtype in self.memory]

    def _start(self, input_ids):
        parts = self.parts
        batch = tf.shape(input_ids)[0]
        encoded = parts.encode(input_ids)
        masks = tuple(m for name, m in zip(parts.memory_names, encoded)
                      if name.endswith("_mask"))
        caches = tuple(tf.zeros([batch, units], tf.float32) for units in self.state_units[2:])
        state = (parts.initial_prefix(batch), tf.zeros([batch, 1], tf.int32), *caches)
        return state, tuple(cross_caches(self.cached, encoded)) + masks

    def _crossing_masks(self, masks):
        """Per crossing tensor its mask, or None (``family.cached.step``'s ``masks``)."""
        given, out = iter(masks), []
        for masked in self.parts.masked:
            out.append(next(given) if masked else None)
        return out

    def _step(self, token, state, memory):
        prefix, position, *caches = state
        n = len(self.cached.crosses)
        crosses, masks = memory[:n], self._crossing_masks(memory[n:])
        probs, prefix, caches = step(self.cached, token, prefix, position, caches, crosses,
                                     masks)
        return probs, (prefix, position + 1, *caches)
