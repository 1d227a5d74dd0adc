"""``python -m benchmarks``: the runtime against native Keras, side by side, in one run."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from runtime.cli import add_version
from runtime.errors import Seq2SeqError


def _ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure per-token and per-sentence latency, beam-4 latency, "
                    "throughput by batch size, cold start and peak memory of the runtime "
                    "(ONNX Runtime, LiteRT, quantized variants, CUDA if present) against "
                    "native Keras (predict, direct call, tf.function), on the same model "
                    "and inputs. Writes results.json, report.md and chart.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_version(p)
    p.add_argument("artifact", nargs="?", default="runs/demo/artifact", metavar="DIR",
                   help="artifact directory from `python -m export`")
    p.add_argument("--model", metavar="MODEL.keras",
                   help="the Keras model it came from; default: model.keras beside DIR")
    p.add_argument("--inputs", metavar="FILE", help="inputs, one per line (text before a "
                   "tab); default: heldout.tsv beside the model")
    p.add_argument("--backends", help="comma-separated paths to measure, e.g. "
                   "onnx,tflite,keras-tf.function (default: all available)")
    p.add_argument("--batch-sizes", type=_ints, default=[1, 8, 64, 256])
    p.add_argument("--repeats", type=int, default=5, metavar="N",
                   help="fewest timed repetitions of each figure (the slow Keras predict "
                        "path: at most 2)")
    p.add_argument("--budget", type=float, default=2.0, metavar="SECONDS",
                   help="timing budget per figure and path; fast paths repeat until it "
                        "is spent")
    p.add_argument("--threads", type=int, default=1, help="threads for every backend")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run of seconds: small budget, batch sizes 1 and 4")
    p.add_argument("--out", default="runs/bench", metavar="DIR", help="output directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.repeats < 1 or args.budget <= 0:
        parser().error("--repeats and --budget must be positive")
    if args.quick:
        args.budget, args.repeats = min(args.budget, 0.05), min(args.repeats, 3)
        args.batch_sizes = [1, 4]
    # Thread counts are fixed before TensorFlow starts, and stated in the report.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(args.threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    try:
        return _run(args)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from export.pipeline import check_pairs
    from runtime.metadata import load_config

    from . import report
    from .run import Settings, run

    artifact = Path(args.artifact)
    config = load_config(artifact)
    model = Path(args.model) if args.model else artifact.parent / "model.keras"
    if not model.is_file():
        raise Seq2SeqError(f"{model}: Keras model not found; pass --model")
    inputs = Path(args.inputs) if args.inputs else model.parent / "heldout.tsv"
    texts, targets = check_pairs(config.vocabulary, inputs if inputs.exists() else None,
                                 20 if args.quick else 200)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    settings = Settings(artifact=artifact, model=model, texts=texts,
                        paths=args.backends.split(",") if args.backends else None,
                        batch_sizes=args.batch_sizes, budget=args.budget,
                        min_repeats=args.repeats,
                        threads=args.threads, cold_runs=1 if args.quick else 3,
                        progress=lambda msg: print(msg, file=sys.stderr, flush=True),
                        targets=targets)
    result = run(settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(report.markdown(result), encoding="utf-8")
    report.chart(result, out / "chart.png")
    print(report.console(result))
    print(f"\nwrote {out}/results.json, report.md, chart.png")
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
