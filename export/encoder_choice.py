"""Which form of the encoder to ship. TFLite, per precision: measured, or as asked;
ONNX: by what tf2onnx makes of Keras's layers (``write_onnx_encoder``).

The unrolled cell wins where its weights fit the cache (XNNPACK packs a copy per
step); one cell in a ``WHILE`` wins where they do not (measured: latent 128, 16
steps, unrolled 102 against 114 µs; latent 256, 24 steps, fp32, loop 560 against
985 µs). Both give the same numbers, so export times both here and keeps the
faster; ``--tflite-encoder`` fixes the form for a device unlike this machine.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import convert, opguard
from .formats import STATIC
from .graphs import ENCODER_STYLES, GraphBuilder
from .parity import fastest

CHOICES = ("auto",) + ENCODER_STYLES


def bare_call_us(path: Path, steps: int, calls: int = 50) -> float:
    """Best of three rounds of the mean time per call (batch 1, one thread)."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path), num_threads=1).get_signature_runner()
    ids = np.zeros((1, steps), np.int32)
    runner(input_ids=ids)
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(calls):
            runner(input_ids=ids)
        best = min(best, (time.perf_counter() - started) / calls)
    return best * 1e6


def write_onnx_encoder(builder: GraphBuilder, path: Path, opset: int, props: dict) -> str:
    """The ONNX encoder: Keras's own layers with a dynamic time axis where tf2onnx
    fuses them into ``LSTM`` / ``GRU`` ops ("dynamic"); where it would run them in a
    ``Loop`` (GRU, masking), the cells unrolled over the fixed input length, about
    twice as fast there (measured at latent 128, 16 steps: GRU 96 against 186 µs,
    masked LSTM 139 against 232 µs; fused LSTM op 49 against 98 µs unrolled)."""
    import onnx

    convert.to_onnx(builder.encoder_dynamic(), path, opset, props)
    if not {n.op_type for n in onnx.load(str(path)).graph.node} & {"Loop", "Scan"}:
        return "dynamic"
    convert.to_onnx(builder.encoder_fixed("unrolled"), path, opset, props)
    return "unrolled"


def write_encoder(builder: GraphBuilder, directory: Path, file: str, precision: str,
                  style: str = "auto", metadata: dict[str, str] | None = None,
                  calibration: list[dict] | None = None, log=print) -> dict:
    """Convert the encoder to ``directory / file`` in the given form; "auto" converts
    both, times each and keeps the faster. ``calibration``: the inputs a full-integer
    encoder's ranges come from. Returns what the metadata records."""
    if style == "auto":
        # Full-integer: unrolled only. The converter's calibration crashes the process
        # (a segmentation fault, measured with TF 2.21) on the cell in a WHILE.
        loop_ok = builder.loopable and precision not in STATIC
        styles = ENCODER_STYLES if loop_ok else ("unrolled",)
    else:
        styles = (style,)
    timing = {}
    for form in styles:
        path = directory / f"{file}.{form}"
        opguard.convert_guarded(lambda: builder.encoder_fixed(form), path, precision,
                                metadata, calibration, form == "loop", log)
        if len(styles) > 1:
            timing[form] = bare_call_us(path, builder.vocab.max_input_length)
    chosen = fastest(timing) if timing else styles[0]
    for form in styles:
        if form == chosen:
            (directory / f"{file}.{form}").replace(directory / file)
        else:
            (directory / f"{file}.{form}").unlink()
    return {"style": chosen, "timing_us": timing}
