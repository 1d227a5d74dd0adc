"""``python -m runtime DIR "text" ...``: decode texts with an exported artifact."""
from __future__ import annotations

import argparse
import json
import sys

from . import cli
from .backends import DEVICES
from .metadata import FILE_FORMATS, GREEDY_PATHS
from .errors import InputError, Seq2SeqError


def parser() -> argparse.ArgumentParser:
    """The command's argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m runtime",
        description="Decode texts with an artifact written by `python -m export`, without "
                    "TensorFlow. Texts come from the arguments or, when none are given, "
                    "one per line from standard input.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("artifact", metavar="DIR", help="artifact directory")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="inputs to decode")
    cli.add_version(p)
    cli.add_model_options(p)
    p.add_argument("--device", choices=DEVICES, default=DEVICES[0])
    p.add_argument("--file-format", choices=tuple(FILE_FORMATS), default=None,
                   help="which of the artifact's files to run (default: the backend's "
                        "own); ort: the ORT-format files, on the onnx backend")
    p.add_argument("--greedy", choices=("auto",) + GREEDY_PATHS, default="auto",
                   help="greedy decoding as a step loop or one call of the fused graph; "
                        "auto: the faster one, as export measured")
    cli.add_decode_options(p)
    p.add_argument("--temperature", type=float, default=0.0,
                   help="above 0: sample instead of taking the most likely token")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k most likely")
    p.add_argument("--seed", type=int, default=None, help="sampling seed (an integer >= 0)")
    p.add_argument("--stream", action="store_true",
                   help="print tokens as they are decoded (greedy)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per input: {input, output}")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the sha256 check of the model files at load")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command on ``argv`` (default: ``sys.argv``); returns the exit code (2 on a
    toolkit error, printed to standard error)."""
    # Intermixed, so texts may come after options: DIR --backend tflite "text".
    args = parser().parse_intermixed_args(argv)
    try:
        if not args.texts and (sys.stdin is None or sys.stdin.closed):
            raise InputError("no texts: give them as arguments or one per line on "
                             "standard input (which is closed)")
        texts = args.texts or [line.rstrip("\r\n") for line in sys.stdin]
        from .model import load

        model = load(args.artifact, backend=args.backend, device=args.device,
                     threads=args.threads, precision=args.precision, verify=not args.no_verify,
                     greedy=args.greedy, file_format=args.file_format)
        policy = cli.policies(args)
        if args.stream:
            for text in texts:
                for ch in model.stream(text, args.max_length, **policy):
                    sys.stdout.write(ch)
                    sys.stdout.flush()
                sys.stdout.write("\n")
            return 0
        outputs = model.translate(texts, beam_size=args.beam, max_length=args.max_length,
                                  length_penalty=args.length_penalty, temperature=args.temperature, top_k=args.top_k,
                                  seed=args.seed, **policy)
    except Seq2SeqError as e:
        hint = ""
        if isinstance(e, InputError) and str(e).startswith("input ") and not args.texts:
            hint = (f" (line {int(str(e).split()[1]) + 1} of standard input; "
                    "--skip-unknown/--unk/--truncate relax the rules, and python -m "
                    "runtime.corpus translates a file line by line, listing the lines "
                    "it cannot translate)")
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    for text, output in zip(texts, outputs):
        if args.json:
            print(json.dumps({"input": text, "output": output}, ensure_ascii=False))
        else:
            print(output)
    return 0


if __name__ == "__main__":
    from .console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
