"""The decoder state's layout, written once for the graph builder (TF ops), the
Keras reference (numpy) and the metadata: per decoder layer, its cell's state
tensors in order (``h0``, ``c0``, ``h1``, ...), each either the final state of the
encoder layer that starts it or zeros; then, with attention, the memory."""
from __future__ import annotations


def names(parts) -> tuple[str, ...]:
    """The state tensors' names, as artifact.json's ``state`` lists them."""
    return tuple(f"{kind}{i}" for i in range(len(parts.decoder)) for kind in parts.state_kinds)


def units(parts) -> tuple[int, ...]:
    """Each state tensor's width, in the order of ``names``."""
    return tuple(rec.units for rec in parts.decoder for _ in parts.state_kinds)


def decoder_start(parts, encoder_final, zeros) -> list:
    """The decoder's initial state in that order. ``encoder_final(i)``: the final
    state tensors of encoder layer ``i``; ``zeros(units)``: a zero tensor, for
    decoder layers that start from zeros."""
    state = []
    for rec in parts.decoder:
        if rec.state_from is None:
            state += [zeros(rec.units) for _ in parts.state_kinds]
        else:
            state += list(encoder_final(rec.state_from))
    return state
