"""``python -m checks.transformer OUT``: keras.io's Transformer example trained briefly
(``benchmarks.keras_io_transformer``), exported from memory through the prefix step
to ``OUT/artifact``, and its golden cases written to ``OUT/golden.json``, for the
ARM64 check to replay. Exits 1 if the export's decodes differ from the example's
own ``decode_sequence``."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(args[0])
    import export
    import runtime
    from benchmarks import keras_io_transformer as kio

    from .golden import write_cases

    model, eng, spa, _ = kio.train()
    texts = [e for e, _ in kio.make_pairs(24, seed=5)]
    vocab = export.from_text_vectorization(eng, spa)
    export.export_model(model, vocab, out / "artifact", texts=texts, force=True,
                        log=lambda *a, **k: None)
    want = [kio.decode_sequence(model, eng, spa, t) for t in texts]
    got = [f"[start] {o} [end]" for o in runtime.load(out / "artifact").translate(texts)]
    if got != want:
        print("checks.transformer: the artifact's decodes differ from decode_sequence's",
              file=sys.stderr)
        return 1
    write_cases(out / "artifact", texts[:12], out / "golden.json")
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
