"""Quality per path and decoding mode against the held-out truth, in the same run as
the timings: greedy on every path (Keras's reference decoder included), beam-4 on
every step loop. A faster path is only worth having if it keeps the answers."""
from __future__ import annotations

from family.quality import measure

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
