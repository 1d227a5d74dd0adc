"""Write the graphs of a prefix-step model (``family.prefix``) in every format asked for:
ONNX (tf2onnx freezes the layers' variables itself) and builtin-only TFLite (the
variables frozen first, ``convert.frozen``), each quantized variant, and the fused
greedy graph where it converts."""
from __future__ import annotations

from runtime.errors import InputError

from . import convert, opguard
from .errors import ConversionError, OpGuardError

# int8-full calibrates the RNN cells' inputs (export/calibration.py); a prefix step's
# calibration is not built yet.
UNSUPPORTED = ("int8-full", "int8-io", "int16x8")


def check_options(options) -> None:
    """Refuse what the prefix path cannot write, before anything is converted."""
    bad = [q for q in options.quantize if q in UNSUPPORTED]
    if bad:
        raise InputError(f"--quantize {','.join(bad)} is not available for a model exported "
                         "through the prefix step (its calibration covers the recurrent "
                         "cells only); use int8 or fp16")
    if options.tflite_encoder != "auto":
        raise InputError("--tflite-encoder applies to recurrent encoders; a prefix-step "
                         "model's encoder is its own layers (leave it at auto)")


def _tflite_file(name: str, precision: str) -> str:
    return f"{name}.tflite" if precision == "fp32" else f"{name}.{precision}.tflite"


def _fused(g, options):
    return g.builder.greedy_fused() if options.fused else None


def write_onnx(g, options, log) -> tuple[list, None]:
    """The ONNX files of ``g`` (the pipeline's ``_Graphs`` of a prefix model): fp32, int8
    if asked, and the fused greedy graph, left out (``g.skipped``) if it does not
    convert, as the step loop serves greedy decoding too. Returns the entries."""
    entries = []
    for name, fn in (("encoder", g.builder.encoder()),
                     ("decoder_step", g.builder.decoder_step())):
        log(f"converting {name} to ONNX (opset {options.opset})", flush=True)
        convert.to_onnx(fn, g.staging / f"{name}.onnx", options.opset, g.onnx_props(name))
        entries.append(g.entry(name, "onnx", "fp32", f"{name}.onnx"))
        if "int8" in options.quantize:
            convert.quantize_onnx(g.staging / f"{name}.onnx", g.staging / f"{name}.int8.onnx")
            entries.append(g.entry(name, "onnx", "int8", f"{name}.int8.onnx"))
    fused = _fused(g, options)
    if fused is not None:
        log("converting the fused greedy decode to ONNX", flush=True)
        try:
            convert.to_onnx(fused, g.staging / "greedy.onnx", options.opset,
                            g.onnx_props("greedy"))
            entries.append(g.entry("greedy", "onnx", "fp32", "greedy.onnx"))
        except ConversionError as e:
            g.skipped["onnx/fp32 greedy"] = str(e)[:300]
            log(f"  not written: {str(e)[:200]}; the step loop serves greedy", flush=True)
    return entries, None


def write_tflite(g, options, log) -> tuple[list, None]:
    """The TFLite files of every precision, from the frozen graphs, each checked by the
    op guard; a fused graph that does not convert is left out as on ONNX."""
    frozen = {"encoder": convert.frozen(g.builder.encoder()),
              "decoder_step": convert.frozen(g.builder.decoder_step())}
    fused = _fused(g, options)
    if fused is not None:
        try:
            frozen["greedy"] = convert.frozen(fused)
        except Exception as e:  # tracing the whole loop runs the model's own layers
            for precision in options.tflite_precisions:
                g.skipped[f"tflite/{precision} greedy"] = f"could not be frozen: {e}"[:300]
            log(f"  the fused graph could not be frozen ({str(e)[:200]}); the step loop "
                "serves greedy", flush=True)
    entries = []
    for precision in options.tflite_precisions:
        for name, fn in frozen.items():
            file = _tflite_file(name, precision)
            log(f"converting {name} to TFLite ({precision})", flush=True)
            try:
                opguard.convert_guarded(lambda fn=fn: fn, g.staging / file, precision,
                                        g.tflite_props(name), None, True, log)
            except (ConversionError, OpGuardError) as e:
                if name != "greedy":
                    raise
                (g.staging / file).unlink(missing_ok=True)
                g.skipped[f"tflite/{precision} greedy"] = str(e)[:300]
                log(f"  not written: {str(e)[:200]}; the step loop serves greedy", flush=True)
                continue
            entries.append(g.entry(name, "tflite", precision, file, log))
    return entries, None
