"""LiteRT adapter: the standalone interpreter (``ai_edge_litert``) that phones
and boards run, with XNNPACK on the CPU.

An interpreter is not thread-safe, but it releases the GIL while it runs. So
each graph is served by a small pool of interpreters: one at first, another
whenever a caller finds them all busy, up to one per core; concurrent callers
then run their calls in parallel. Whole decodes in one call (the fused graph)
scale with threads; the step loop returns to Python every token, and at small
sizes CPython's GIL, not the pool, serialises it (docs/runtime.md). The decode
state travels in and out explicitly, so any interpreter can serve any call. Graphs have a dynamic batch dimension; an interpreter is
resized when the shapes it is given change.
"""
from __future__ import annotations

import os
import queue
import threading

import numpy as np

from ..errors import ArtifactError, BackendError
from . import Backend, split_step

# The most interpreters per graph: more than one per core adds memory, not speed.
POOL_SIZE = max(1, os.cpu_count() or 1)


def _import_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BackendError("the tflite backend needs LiteRT (ai-edge-litert): install "
                           "the project with its [litert] extra") from None
    return Interpreter


class _Interpreter:
    """One interpreter of a graph, with its tensor indices and current batch."""

    def __init__(self, Interpreter, threads, data: bytes, filename: str, inputs, outputs,
                 builtin: bool = False, quantized=()):
        try:
            if builtin:  # LiteRT's own kernels: the artifact says XNNPACK cannot run it
                from ai_edge_litert.interpreter import OpResolverType

                self.interp = Interpreter(
                    model_content=data, num_threads=threads,
                    experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            else:
                self.interp = Interpreter(model_content=data, num_threads=threads)
            runner = self.interp.get_signature_runner()
            in_details = runner.get_input_details()
            out_details = runner.get_output_details()
            del runner  # it holds tensor references that would block resizing
            if sorted(in_details) != sorted(inputs) or not set(outputs) <= set(out_details):
                raise ArtifactError(
                    f"{filename}: has inputs {sorted(in_details)} and outputs "
                    f"{sorted(out_details)}; expected inputs {list(inputs)} and outputs "
                    f"{list(outputs)} (wrong file in this place?)")
            self.inputs = [in_details[n]["index"] for n in inputs]
            self.outputs = [out_details[n]["index"] for n in outputs]
            recorded = {n: (s, z) for n, s, z in quantized}
            self.quantize = [_boundary(filename, n, in_details[n], recorded) for n in inputs]
            self.dequantize = [_boundary(filename, n, out_details[n], recorded)
                               for n in outputs]
            # No int8 boundary (every file but int8-io): the per-token path skips the
            # conversions altogether.
            self.plain = not any(self.quantize) and not any(self.dequantize)
        except (ValueError, RuntimeError) as e:
            raise ArtifactError(f"{filename}: LiteRT cannot load it: "
                                f"{str(e).splitlines()[0][:300]}") from None
        self.shapes = None

    def __call__(self, *arrays):
        shapes = [a.shape for a in arrays]
        if shapes != self.shapes:
            for index, array in zip(self.inputs, arrays):
                self.interp.resize_tensor_input(index, array.shape, strict=True)
            self.interp.allocate_tensors()
            self.shapes = shapes
        interp = self.interp
        if self.plain:
            for index, array in zip(self.inputs, arrays):
                interp.set_tensor(index, array)
            self._invoke()
            return [interp.get_tensor(i) for i in self.outputs]
        for index, array, q in zip(self.inputs, arrays, self.quantize):
            if q is not None:  # real -> int8 by the file's own scale
                # times the reciprocal, as LiteRT's own QUANTIZE (ties round alike)
                array = np.clip(np.rint(array * np.float32(1 / np.float32(q[0]))) + q[1],
                                -128, 127).astype(np.int8)
            interp.set_tensor(index, array)
        self._invoke()
        out = [interp.get_tensor(i) for i in self.outputs]
        return [x if q is None else ((x.astype(np.float32) - q[1]) * np.float32(q[0]))
                for x, q in zip(out, self.dequantize)]

    def _invoke(self):
        try:
            self.interp.invoke()
        except RuntimeError as e:  # e.g. a delegate that cannot prepare the graph
            raise BackendError(f"LiteRT failed to run the graph: "
                               f"{str(e).splitlines()[0][:300]}") from None


def _boundary(filename: str, name: str, details: dict, recorded: dict):
    """``(scale, zero_point)`` of an int8 input or output, or None for any other;
    raises ArtifactError where the file and artifact.json disagree about it."""
    given = recorded.get(name)
    if details["dtype"] != np.int8:
        if given is not None:
            raise ArtifactError(f"{filename}: artifact.json gives {name!r} an int8 scale, "
                                f"but the file's {name!r} is {np.dtype(details['dtype'])}")
        return None
    scale, zero = details["quantization"]
    if given is None:
        raise ArtifactError(f"{filename}: {name!r} is int8 in the file, but artifact.json "
                            "records no scale for it (int8_io)")
    if not (abs(given[0] - scale) <= 1e-6 * scale and given[1] == zero):
        raise ArtifactError(f"{filename}: {name!r} has scale {scale:.6g} and zero point "
                            f"{zero} in the file, {given[0]:.6g} and {given[1]} in "
                            "artifact.json")
    return float(scale), int(zero)


class _Graph:
    """A graph served by a pool of interpreters that grows with concurrent callers."""

    def __init__(self, Interpreter, threads, *spec, pool_size: int = POOL_SIZE,
                 builtin: bool = False, quantized=()):
        self._new = lambda: _Interpreter(Interpreter, threads, *spec, builtin=builtin,
                                         quantized=quantized)
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        self._free.put(self._new())  # the first one also checks the file
        self.size = 1
        self._max = pool_size
        self._grow = threading.Lock()

    def _take(self) -> _Interpreter:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            with self._grow:
                grow = self.size < self._max
                self.size += grow
            return self._new() if grow else self._free.get()

    def __call__(self, *arrays):
        worker = self._take()
        try:
            return worker(*arrays)
        finally:
            self._free.put(worker)


class LiteRTBackend(Backend):
    """The artifact's ``.tflite`` graphs run by LiteRT on the CPU, each graph served by a
    pool of interpreters (see the module's docstring)."""

    name = "tflite"

    def __init__(self, graphs: dict, threads: int = 1, builtin: frozenset = frozenset(),
                 quantized: dict | None = None):
        Interpreter = _import_interpreter()
        quantized = quantized or {}

        def graph(name):
            return _Graph(Interpreter, threads, *graphs[name], builtin=name in builtin,
                          quantized=quantized.get(name, ()))

        self._encoder = graph("encoder")
        self._step = graph("decoder_step")
        self._step_out = graphs["decoder_step"][3]
        self._greedy = None
        if "greedy" in graphs:
            self._greedy = graph("greedy")
            self.has_fused = True

    def encode(self, input_ids):
        """``input_ids`` int32 ``[batch, steps]`` -> the decoder's initial state."""
        return tuple(self._encoder(input_ids))

    def step(self, token, state):
        """One decoder step: ``(probs, state, next_token, attention)``, as ``Backend.step``."""
        return split_step(self._step(token, *state), state, self._step_out)

    def greedy(self, input_ids):
        """The fused greedy graph: ``(output_ids, lengths)``; raises NotImplementedError when
        the artifact has none."""
        if self._greedy is None:
            return super().greedy(input_ids)
        ids, lengths = self._greedy(input_ids)
        return ids, lengths
