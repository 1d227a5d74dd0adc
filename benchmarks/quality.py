"""Quality per path and decoding mode against the held-out truth, in the same run as
the timings: greedy on every path (Keras's reference decoder included), beam-4 on
every step loop. A faster path is only worth having if it keeps the answers.

``python -m benchmarks.quality ARTIFACT`` measures one exported artifact on a whole
pair file (by default the held-out pairs of the run it came from): exact match,
chrF, CER, and for a pronunciation lexicon WER and PER, greedy and beam-K."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from family.quality import is_lexicon, lexicon_rates, measure

BEAM = 4


def measure_modes(models: dict, texts: list[str], targets: list[list[str]],
                  greedy: dict[str, list[str]], char_level: bool) -> list[dict]:
    """One row per path and mode: the quality metrics, and for beam how many outputs
    differ from the same path's greedy ones and how many are shorter than the
    shortest right answer (a search cutting answers short shows there)."""
    rows = []
    shortest = [min(map(len, refs)) for refs in targets]
    for name, model in models.items():
        rows.append({"path": name, "mode": "greedy",
                     **measure(greedy[name], targets, char_level).as_dict()})
        if name.startswith("keras") or model.fused:
            continue  # beam runs the step loop: once per step graph is enough
        beam = model.translate(texts, beam_size=BEAM, batch_size=len(texts))
        rows.append({"path": name, "mode": f"beam-{BEAM}",
                     **measure(beam, targets, char_level).as_dict(),
                     "differ_from_greedy": sum(b != g for b, g in zip(beam, greedy[name])),
                     "shorter_than_truth": sum(len(b) < n for b, n in zip(beam, shortest))})
    return rows


def lines(rows: list[dict]) -> list[str]:
    out = []
    for r in rows:
        extra = (f"; {r['differ_from_greedy']} differ from greedy, "
                 f"{r['shorter_than_truth']} shorter than the truth"
                 if "differ_from_greedy" in r else "")
        out.append(f"{r['path']} {r['mode']}: exact match {r['exact_match']:.1%}, chrF "
                   f"{r['chrf']:.1f}, BLEU {r['bleu']:.1f}, CER {r['cer']:.2%}{extra}")
    return out


def table(rows: list[dict]) -> list[str]:
    md = ["| path | mode | exact match | chrF | BLEU | CER | differ from greedy | "
          "shorter than truth |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['path']} | {r['mode']} | {r['exact_match']:.1%} | {r['chrf']:.1f} | "
                  f"{r['bleu']:.1f} | {r['cer']:.2%} | {r.get('differ_from_greedy', '')} | "
                  f"{r.get('shorter_than_truth', '')} |")
    return md


def parser() -> argparse.ArgumentParser:
    from runtime.cli import add_model_options, add_version

    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="Decode every input of a pair file with an exported artifact, greedy "
                    "and with beam search, and report the quality against the file's "
                    "targets (an input's lines all count as right answers): exact match, "
                    "chrF, CER, and for characters-in, tokens-out models (a pronunciation "
                    "lexicon) the field's WER (words with any token wrong) and PER "
                    "(token edit rate).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_version(p)
    p.add_argument("artifact", help="the artifact directory (python -m export's --out)")
    p.add_argument("--pairs", metavar="FILE", default=None,
                   help="input<TAB>target file (default: heldout.tsv beside the artifact, "
                        "the held-out pairs of the training run it came from)")
    p.add_argument("--beam", type=int, nargs="+", default=[1, BEAM], metavar="K",
                   help="beam sizes to measure (1: greedy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", metavar="FILE", default=None, help="also write the rows as JSON")
    add_model_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    from family.pairs import read_pairs
    from runtime import load
    from runtime.errors import DataError, InputError, Seq2SeqError

    args = parser().parse_args(argv)
    if min(args.beam) < 1 or args.batch_size < 1:
        parser().error("--beam sizes and --batch-size must be positive")
    try:
        if args.json and not Path(args.json).resolve().parent.is_dir():
            raise DataError(f"--json {args.json}: its folder does not exist")
        model = load(args.artifact, backend=args.backend, precision=args.precision,
                     threads=args.threads)
        path = Path(args.pairs) if args.pairs else Path(args.artifact).resolve().parent / "heldout.tsv"
        if not args.pairs and not path.exists():
            raise DataError(f"{path} does not exist: pass --pairs FILE")
        vocab = model.config.vocabulary
        cases: dict[str, list[str]] = {}
        for lineno, (source, target) in enumerate(read_pairs(path).pairs, start=1):
            try:  # each line checked on its own, so an error names it
                vocab.encode_inputs([source])
                written = vocab.decode_target(vocab.encode_target(target))
            except InputError as e:
                raise DataError(f"{path}: pair {lineno}: {str(e).replace('input 0 ', 'input ')}"
                                ) from None
            cases.setdefault(source, []).append(written)  # an input's lines: one case
        texts, targets = list(cases), list(cases.values())
        lexicon = is_lexicon(vocab.unit, vocab.target_unit)
        rows = []
        for k in args.beam:
            started = time.monotonic()
            out = model.translate(texts, beam_size=k, batch_size=args.batch_size)
            q = measure(out, targets, char_level=vocab.target_unit == "char")
            rows.append({"mode": "greedy" if k == 1 else f"beam-{k}", **q.as_dict(),
                         **({"lexicon": lexicon_rates(q)} if lexicon else {}),
                         "seconds": round(time.monotonic() - started, 1)})
            rates = rows[-1].get("lexicon")
            shown = (f"WER {rates['word_error_rate']:.2%}, PER "
                     f"{rates['phone_error_rate']:.2%}, " if rates else "")
            print(f"{rows[-1]['mode']}: {len(texts)} inputs, {shown}exact match "
                  f"{q.exact_match:.2%}, chrF {q.chrf:.1f}, CER {q.cer:.2%} "
                  f"({rows[-1]['seconds']} s)", flush=True)
    except Seq2SeqError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps({"artifact": args.artifact, "pairs": str(path),
                                               "backend": args.backend,
                                               "precision": args.precision, "rows": rows},
                                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
