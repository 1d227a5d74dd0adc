"""ONNX Runtime adapter (CPU, or CUDA with onnxruntime-gpu)."""
from __future__ import annotations

import numpy as np

from ..errors import ArtifactError, BackendError
from ..metadata import ENCODER_OUTPUTS, STEP_OUTPUTS
from . import Backend

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def _import_ort():
    try:
        import onnxruntime
    except ImportError:
        raise BackendError("the onnx backend needs onnxruntime: pip install "
                           "'seq2seq-edge[runtime]' (or [gpu] for CUDA)") from None
    return onnxruntime


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, encoder: bytes, step: bytes, encoder_file: str, step_file: str,
                 device: str = "cpu", threads: int = 1):
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
        self._encoder = self._session(ort, encoder, encoder_file, options, provider)
        self._step = self._session(ort, step, step_file, options, provider)

    @staticmethod
    def _session(ort, data: bytes, filename: str, options, provider):
        try:
            session = ort.InferenceSession(data, sess_options=options, providers=[provider])
        except Exception as e:  # onnxruntime raises its own untyped errors
            raise ArtifactError(f"{filename}: onnxruntime cannot load it: "
                                f"{str(e).splitlines()[0][:300]}") from None
        got = session.get_providers()
        # ONNX Runtime silently falls back to the CPU; refuse that.
        if got[0] != provider:
            raise BackendError(f"{filename}: asked for {provider} but the session got "
                               f"{', '.join(got)}")
        return session

    def encode(self, input_ids):
        h, c = self._encoder.run(ENCODER_OUTPUTS, {"input_ids": input_ids})
        return h, c

    def step(self, token, h, c):
        probs, h, c, nxt = self._step.run(STEP_OUTPUTS, {"token": token, "h": h, "c": c})
        return probs, h, c, nxt
