"""LiteRT adapter: the standalone interpreter (``ai_edge_litert``) that phones
and boards run, with XNNPACK on the CPU.

An interpreter is not thread-safe, so each call holds a lock; the decode
state travels in and out explicitly, so interleaved callers stay correct.
Graphs have a dynamic batch dimension; the interpreter is resized when the
batch changes.
"""
from __future__ import annotations

import threading


from ..errors import ArtifactError, BackendError
from . import Backend


def _import_interpreter():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise BackendError("the tflite backend needs LiteRT (ai-edge-litert): install "
                           "the project with its [litert] extra") from None
    return Interpreter


class _Graph:
    def __init__(self, Interpreter, threads, data: bytes, filename: str, inputs, outputs):
        try:
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
        except (ValueError, RuntimeError) as e:
            raise ArtifactError(f"{filename}: LiteRT cannot load it: "
                                f"{str(e).splitlines()[0][:300]}") from None
        self.filename = filename
        self.batch = None
        self.lock = threading.Lock()

    def __call__(self, *arrays):
        with self.lock:
            batch = arrays[0].shape[0]
            if batch != self.batch:
                for index, array in zip(self.inputs, arrays):
                    self.interp.resize_tensor_input(index, array.shape, strict=True)
                self.interp.allocate_tensors()
                self.batch = batch
            for index, array in zip(self.inputs, arrays):
                self.interp.set_tensor(index, array)
            self.interp.invoke()
            return [self.interp.get_tensor(i) for i in self.outputs]


class LiteRTBackend(Backend):
    name = "tflite"

    def __init__(self, graphs: dict, threads: int = 1):
        Interpreter = _import_interpreter()
        self._encoder = _Graph(Interpreter, threads, *graphs["encoder"])
        self._step = _Graph(Interpreter, threads, *graphs["decoder_step"])
        self._greedy = None
        if "greedy" in graphs:
            self._greedy = _Graph(Interpreter, threads, *graphs["greedy"])
            self.has_fused = True

    def encode(self, input_ids):
        return tuple(self._encoder(input_ids))

    def step(self, token, state):
        out = self._step(token, *state)
        return out[0], tuple(out[1:-1]), out[-1]

    def greedy(self, input_ids):
        if self._greedy is None:
            return super().greedy(input_ids)
        ids, lengths = self._greedy(input_ids)
        return ids, lengths
