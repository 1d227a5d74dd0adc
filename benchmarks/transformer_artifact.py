"""``python -m benchmarks.transformer_artifact OUT``: keras.io's Transformer example
trained briefly (``benchmarks.keras_io_transformer``), exported from memory through
the prefix step to ``OUT/artifact``, with the held-out English sentences it was
checked on in ``OUT/texts.txt`` (the ARM64 check writes its golden cases from
them). ``--example keras-hub``: keras.io's KerasHub example instead
(``benchmarks.keras_hub_translation``), exported with the cached step. Exits 1 if
the artifact's decodes differ from the example's own decode loop."""
from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import argparse

    from runtime.cli import add_version

    p = argparse.ArgumentParser(prog="python -m benchmarks.transformer_artifact",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("out", metavar="OUT", help="directory for artifact/ and texts.txt")
    p.add_argument("--example", choices=("keras-io", "keras-hub"), default="keras-io",
                   help="keras-io: the Transformer of its own layers (prefix step); "
                        "keras-hub: the KerasHub translation example (cached step)")
    args = p.parse_args(argv)
    out = Path(args.out)
    import export
    import runtime
    from . import keras_io_transformer as kio

    texts = [e for e, _ in kio.make_pairs(24, seed=5)]
    if args.example == "keras-hub":
        from . import keras_hub_translation as kh

        model, eng, spa, _ = kh.train()
        want = [kh.decode_sequences(model, eng, spa, [t]) for t in texts]
        wrap = str
    else:
        model, eng, spa, _ = kio.train()
        want = [kio.decode_sequence(model, eng, spa, t) for t in texts]
        wrap = "[start] {} [end]".format
    vocab = export.from_text_vectorization(eng, spa)
    export.export_model(model, vocab, out / "artifact", texts=texts, force=True,
                        log=lambda *a, **k: None)
    got = [wrap(o) for o in runtime.load(out / "artifact").translate(texts)]
    if got != want:
        print("benchmarks.transformer_artifact: the artifact's decodes differ from "
              "the example's own loop's", file=sys.stderr)
        return 1
    (out / "texts.txt").write_text("\n".join(texts[:12]) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main())
