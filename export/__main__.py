"""``python -m export``: a trained Keras seq2seq model -> a verified artifact directory."""
from __future__ import annotations

import argparse
import sys

from runtime.cli import add_version
from runtime.errors import Seq2SeqError

from .formats import FORMATS, QUANTIZE


def comma_list(choices):
    """An argparse ``type`` for a comma-separated list of ``choices``: the items in order,
    duplicates dropped; an empty list or an unknown item raises ArgumentTypeError."""
    def parse(text):
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {', '.join(choices)}; got {text!r}")
        return list(dict.fromkeys(items))
    return parse


def parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Split a trained seq2seq model into an encoder graph and a single-step "
                    "decoder graph, convert both to ONNX and TFLite (builtin ops only), "
                    "prove they give Keras's answers, and write a self-describing artifact "
                    "directory for the runtime.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_version(p)
    p.add_argument("model", metavar="MODEL.keras",
                   help="trained model: a .keras file (Keras 3, or Keras 2 as tf.keras "
                   "2.13+ wrote it) or a .h5 file")
    p.add_argument("--vocab", metavar="FILE",
                   help="vocabulary JSON (format: docs/training.md); default: vocab.json beside "
                        "the model")
    p.add_argument("--out", metavar="DIR", help="artifact directory; default: "
                   "'artifact' beside the model")
    p.add_argument("--formats", type=comma_list(FORMATS), default=list(FORMATS),
                   help="comma-separated formats to write")
    p.add_argument("--quantize", type=comma_list(QUANTIZE), default=[],
                   help="also write smaller variants: int8 (ONNX dynamic, TFLite "
                        "dynamic-range), fp16 (TFLite), int8-full (full-integer, "
                        "calibrated, for NPU and DSP delegates; ONNX static int8), "
                        "int8-io (TFLite int8-full with int8 inputs and outputs too), "
                        "int16x8 (TFLite int16 activations, int8 weights)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset")
    p.add_argument("--check-texts", metavar="FILE",
                   help="inputs for the greedy parity check, one per line (text before a "
                        "tab is used); default: heldout.tsv beside the model, else random "
                        "strings over the input vocabulary")
    p.add_argument("--check-samples", type=int, default=200,
                   help="most inputs used by the greedy parity check")
    p.add_argument("--calibration-inputs", type=int, default=100, metavar="N",
                   help="int8-full, int8-io and int16x8: inputs their ranges are measured on, taken from the "
                        "check-texts file after the checked ones (so the checks judge "
                        "inputs the calibration did not see)")
    p.add_argument("--no-fused", action="store_true",
                   help="skip the fused greedy-decode graph (one call per batch)")
    p.add_argument("--tflite-encoder", choices=("auto", "unrolled", "loop"), default="auto",
                   help="form of the TFLite encoder: the cell unrolled over every step, "
                   "or one cell in a WHILE loop; auto times both here and keeps the faster")
    p.add_argument("--step", choices=("auto", "structured", "prefix", "cached"),
                   default="auto",
                   help="the decoder step graph: structured (the RNN family's cells rebuilt "
                        "as one step, fastest), prefix (the model's own graph cut after its "
                        "encoder, the decoder run on a fixed-length prefix: any causal "
                        "two-input functional model, custom layers included), cached (a "
                        "Transformer decoder of keras_hub TransformerDecoder layers or "
                        "keras MultiHeadAttention calls, its attention keys and values as "
                        "state: O(t) a token where prefix is O(t^2)), or auto (structured "
                        "for the RNN family, else cached where it applies, else prefix)")
    p.add_argument("--ort", action="store_true",
                   help="also write ORT-format files (ONNX Runtime Mobile and reduced "
                        "builds) and required_operators.config, with the same parity proof")
    p.add_argument("--strict", action="store_true",
                   help="refuse to write the artifact when a quantized variant is flagged "
                        "(it disagrees with fp32, or loses quality against the truth, past "
                        "its bound); without it the variant is written with a warning")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this Python module first (repeatable): the one that "
                        "registers a model's custom layers "
                        "(@keras.saving.register_keras_serializable), so the .keras file "
                        "loads; looked up from the current directory and PYTHONPATH")
    p.add_argument("--force", action="store_true", help="replace an existing artifact")
    return p


def _import(modules: list[str]) -> None:
    """Import the modules ``--import`` names; raises InputError naming one that fails."""
    import importlib
    import os

    from runtime.errors import InputError

    if modules and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # the user's module may raise anything on import
            raise InputError(f"--import {name}: {type(e).__name__}: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv``); returns the exit code (2 on a
    toolkit error, printed to standard error)."""
    args = parser().parse_args(argv)
    if not 7 <= args.opset <= 21:
        parser().error(f"--opset must be between 7 and 21, got {args.opset}")
    if args.check_samples < 1:
        parser().error("--check-samples must be positive")
    if args.calibration_inputs < 1:
        parser().error("--calibration-inputs must be positive")
    try:
        _import(args.imports)
        from .pipeline import run

        return run(args)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
