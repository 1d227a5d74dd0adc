"""Backends: small adapters that run the two exported graphs.

Every backend offers the same two calls; the decode loop is written once
over them (``runtime.decoding``). Backend packages are imported lazily, so
an app needs only the one it uses.
"""
from __future__ import annotations

import functools
from abc import ABC, abstractmethod

import numpy as np

BACKENDS = ("onnx", "tflite")
DEVICES = ("cpu", "cuda")


# The decoder state: one float32 [batch, units] array per state tensor, in the order
# the artifact's metadata lists (``state``); for an attention model then the memory
# (and its mask), which every step reads and passes on unchanged.
State = tuple


class Backend(ABC):
    """Runs the encoder and the single-step decoder of one artifact."""

    name: str = "?"

    @abstractmethod
    def encode(self, input_ids: np.ndarray) -> State:
        """``input_ids`` int32 ``[batch, steps]`` -> the decoder's initial state."""

    @abstractmethod
    def step(self, token: np.ndarray, state: State) -> Step:
        """``token`` int32 ``[batch]`` and the state -> ``(probs, state, next_token,
        attention)``; ``next_token`` is the argmax of ``probs``, computed inside the
        graph; ``attention`` the weights over the input steps, or None."""

    def greedy(self, input_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The fused greedy graph, when loaded: ``(output_ids, lengths)``."""
        raise NotImplementedError(f"the {self.name} backend has no fused greedy graph loaded")

    has_fused = False


Step = tuple  # (probs, state, next_token, attention or None)


def split_step(outputs: list, state: State, step_outputs: tuple[str, ...]) -> Step:
    """A step graph's outputs (``probs``, each ``NAME_out``, ``next_token``, and
    ``attention`` where the model has it) as ``(probs, state, next_token,
    attention)``. State the graph does not return (the memory) is passed on."""
    carried = _carried(tuple(step_outputs))
    new = tuple(outputs[1:1 + carried]) + tuple(state[carried:])
    weights = outputs[2 + carried] if len(outputs) > 2 + carried else None
    return outputs[0], new, outputs[1 + carried], weights


@functools.lru_cache(maxsize=64)
def _carried(step_outputs: tuple[str, ...]) -> int:
    """How many state tensors a step graph returns (counted once, not every token)."""
    return sum(name.endswith("_out") for name in step_outputs)


# Per graph name, (bytes, file name, input names, output names).
Graphs = dict[str, tuple[bytes, str, tuple[str, ...], tuple[str, ...]]]


def create(name: str, graphs: Graphs, device: str = "cpu", threads: int = 1,
           per_row: bool = False, builtin: frozenset = frozenset(),
           quantized: dict | None = None) -> Backend:
    """``graphs`` maps "encoder", "decoder_step" and optionally "greedy" to
    ``(file bytes, file name, input names, output names)``. ``per_row`` runs each
    batch row in a call of its own (onnx): for graphs whose answer for a row
    would otherwise depend on the other rows of its batch. ``builtin``: the graphs
    (tflite) that run on LiteRT's own kernels, as the artifact records.
    ``quantized``: per graph name, its int8 inputs and outputs as ``(name, scale,
    zero_point)`` (an int8-io TFLite file), which the backend converts at the call."""
    from ..errors import BackendError

    if name == "onnx":
        from .onnx import OnnxBackend

        if builtin or quantized:
            raise BackendError("builtin kernels and int8 inputs and outputs are LiteRT "
                               f"choices, not onnx's: {builtin or quantized}")
        return OnnxBackend(graphs, device, threads, per_row)
    if name == "tflite":
        if device != "cpu":
            raise BackendError(f"the tflite backend runs on the CPU only, not {device!r}")
        from .litert import LiteRTBackend

        return LiteRTBackend(graphs, threads, builtin, quantized or {})
    raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
