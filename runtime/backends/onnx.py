"""ONNX Runtime adapter (CPU, or CUDA with onnxruntime-gpu).

The int8 graphs (ONNX Runtime's dynamic quantization) quantize each activation
tensor with one scale for the whole batch, so a row's numbers would depend on
the rows beside it; those graphs run one row per call (``per_row``), so every
text gets the same answer whatever shares its batch.
"""
from __future__ import annotations

import numpy as np

from ..errors import ArtifactError, BackendError
from . import Backend, split_step

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError("the onnx backend needs onnxruntime: install the project "
                           "with its [runtime] extra ([gpu] for CUDA)") from None
    return onnxruntime


class OnnxBackend(Backend):
    """The artifact's ONNX (or ORT-format) graphs run by ONNX Runtime on ``device``; raises
    BackendError when the device's provider is missing rather than fall back to the CPU."""

    name = "onnx"

    def __init__(self, graphs: dict, device: str = "cpu", threads: int = 1,
                 per_row: bool = False):
        ort = _import_ort()
        if device not in PROVIDERS:
            raise BackendError(f"unknown device {device!r}; choose cpu or cuda")
        provider = PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise BackendError(
                f"device {device!r} asked for, but this onnxruntime offers only "
                f"{', '.join(ort.get_available_providers())}; for CUDA install "
                "onnxruntime-gpu in place of onnxruntime, on a machine with an NVIDIA GPU")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # An embedded app shares its cores: idle threads must not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.device = device
        self.per_row = per_row
        self._encoder = self._session(ort, *graphs["encoder"], options, provider)
        self._step = self._session(ort, *graphs["decoder_step"], options, provider)
        self._enc_out = graphs["encoder"][3]
        self._step_in, self._step_out = graphs["decoder_step"][2:]
        self._greedy = None
        if "greedy" in graphs:
            self._greedy = self._session(ort, *graphs["greedy"], options, provider)
            self._greedy_out = graphs["greedy"][3]
            self.has_fused = True

    @staticmethod
    def _session(ort, data: bytes, filename: str, inputs, outputs, options, provider):
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=[provider])
        except Exception as e:  # onnxruntime raises its own untyped errors
            reason = str(e).splitlines()[0][:300]
            if "external data" in reason.lower():
                raise ArtifactError(f"{filename}: refers to external data, which artifacts "
                                    f"may not ({reason})") from None
            raise ArtifactError(f"{filename}: onnxruntime cannot load it: {reason}") from None
        names = ([i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()])
        if sorted(names[0]) != sorted(inputs) or not set(outputs) <= set(names[1]):
            raise ArtifactError(f"{filename}: has inputs {names[0]} and outputs {names[1]}; "
                                f"expected inputs {list(inputs)} and outputs {list(outputs)} "
                                "(wrong file in this place?)")
        got = session.get_providers()
        # ONNX Runtime silently falls back to the CPU; refuse that.
        if got[0] != provider:
            raise BackendError(f"{filename}: asked for {provider} but the session got "
                               f"{', '.join(got)}")
        return session

    def _run(self, session, outputs, feeds: dict) -> list:
        batch = len(next(iter(feeds.values())))
        if not self.per_row or batch == 1:
            return session.run(outputs, feeds)
        rows = [session.run(outputs, {k: v[i:i + 1] for k, v in feeds.items()})
                for i in range(batch)]
        return [np.concatenate(column) for column in zip(*rows)]

    def encode(self, input_ids):
        """``input_ids`` int32 ``[batch, steps]`` -> the decoder's initial state."""
        return tuple(self._run(self._encoder, self._enc_out, {"input_ids": input_ids}))

    def step(self, token, state):
        """One decoder step: ``(probs, state, next_token, attention)``, as ``Backend.step``."""
        out = self._run(self._step, self._step_out, dict(zip(self._step_in, (token, *state))))
        return split_step(out, state, self._step_out)

    def greedy(self, input_ids):
        """The fused greedy graph: ``(output_ids, lengths)``; raises NotImplementedError when
        the artifact has none."""
        if self._greedy is None:
            return super().greedy(input_ids)
        ids, lengths = self._run(self._greedy, self._greedy_out, {"input_ids": input_ids})
        return ids, lengths
