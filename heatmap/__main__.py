"""``python -m heatmap DIR "text"``: the attention map of a greedy decode, as a PNG."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runtime.errors import Seq2SeqError
from runtime.backends import BACKENDS
from runtime.cli import add_version


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m heatmap",
        description="Decode texts greedily with an attention model's artifact and draw, "
                    "per text, which input tokens each output token attended to (input "
                    "along x, output along y) as a PNG.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_version(p)
    p.add_argument("artifact", metavar="DIR", help="artifact directory (an attention model)")
    p.add_argument("texts", nargs="+", metavar="TEXT", help="inputs to decode")
    p.add_argument("--out", default="attention.png", metavar="FILE",
                   help="PNG to write; with several texts, FILE's stem gets -1, -2, ...")
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0],
                   help="onnx: ONNX Runtime; tflite: LiteRT")
    p.add_argument("--force", action="store_true", help="replace existing PNG files")
    return p


def _targets(out: Path, count: int) -> list[Path]:
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, count + 1)]


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        parser().error(f"--out must name a .png file, got {args.out!r}")
    targets = _targets(out, len(args.texts))
    folders = [str(p) for p in targets if p.is_dir()]
    if folders:
        parser().error(f"{', '.join(folders)} is a directory; --out names a PNG file")
    existing = [str(p) for p in targets if p.exists()]
    if existing and not args.force:
        parser().error(f"{', '.join(existing)} exists; pass --force to replace")
    if not out.parent.is_dir():
        parser().error(f"{out.parent}: no such directory")
    try:
        import runtime

        from . import draw

        model = runtime.load(args.artifact, backend=args.backend)
        maps = model.translate(args.texts, return_attention=True)
        for amap, path in zip(maps, targets):
            draw(amap, path)
            print(f"{amap.text!r}: wrote {path}")
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an unwritable place: say which file and why
        print(f"error: cannot write {e.filename or args.out}: {e.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
