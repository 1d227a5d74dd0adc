"""Command-line pieces the toolkit's commands share: ``--version``, and the model
and decoding options that ``python -m runtime`` and ``python -m runtime.corpus``
both take, declared once so that the two cannot drift apart."""
from __future__ import annotations

import argparse

from . import __version__
from .backends import BACKENDS


def add_version(p: argparse.ArgumentParser) -> None:
    """``--version``: the toolkit's version (every command reports the same one)."""
    p.add_argument("--version", action="version",
                   version=f"%(prog)s (seq2seq-edge {__version__})")


def add_model_options(p: argparse.ArgumentParser, threads_help: str = "backend threads"
                      ) -> None:
    """``--backend``, ``--precision`` and ``--threads``, the choices from the runtime's
    own tables."""
    from .model import PRECISIONS

    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                   help="onnx: ONNX Runtime; tflite: LiteRT")
    p.add_argument("--precision", choices=PRECISIONS, default=PRECISIONS[0],
                   help="a quantized variant, if the artifact has it")
    p.add_argument("--threads", type=int, default=1, help=threads_help)


def add_decode_options(p: argparse.ArgumentParser, instead: str = "failing") -> None:
    """Beam size, length penalty, maximum length and the unknown and too-long
    policies; ``instead`` is what happens to an input the policies do not relax."""
    p.add_argument("--beam", type=int, default=1, metavar="K", help="beam size (1: greedy)")
    p.add_argument("--length-penalty", type=float, default=1.0, metavar="A",
                   help="beam search ranks finished outputs by sum(log p) / length ** A "
                        "(0: the most probable output; larger favours longer ones)")
    p.add_argument("--max-length", type=int, default=None,
                   help="most output tokens (default: the model's maximum)")
    unknown = p.add_mutually_exclusive_group()
    unknown.add_argument("--skip-unknown", action="store_true",
                         help="drop characters (or words) outside the vocabulary instead "
                              f"of {instead}")
    unknown.add_argument("--unk", action="store_true",
                         help="map words outside the vocabulary to its unknown token "
                              f"(such as [UNK]) instead of {instead}")
    p.add_argument("--truncate", action="store_true",
                   help=f"cut inputs longer than the model's maximum instead of {instead}")


def policies(args: argparse.Namespace) -> dict:
    """The ``unknown=`` and ``too_long=`` arguments of ``translate`` the options ask for."""
    return dict(unknown="skip" if args.skip_unknown else "unk" if args.unk else "error",
                too_long="truncate" if args.truncate else "error")
