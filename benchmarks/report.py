"""Console table, Markdown report and PNG chart from one benchmark result."""
from __future__ import annotations

from pathlib import Path


def save(out: Path, result: dict, text: str) -> None:
    """results.json and report.md in ``out``; the report is printed too."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "report.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"wrote {out}/results.json and {out}/report.md")


def _us(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} s"
    if v >= 1e3:
        return f"{v / 1e3:.2f} ms"
    return f"{v:.1f} µs"


def _times(value, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)  # that Keras path was not run


def rows(result: dict) -> list[list[str]]:
    head = ["path", "encoder", "step p50", "step p99", "per token", "loop/step", "sentence p50",
            "sentence p99", "beam-4 p50", "x predict", "x tf.function", "agree"]
    out = [head]
    for name, r in result["paths"].items():
        ratio = result["ratios"].get(name, {})
        out.append([
            name, _us(r["encoder"]["p50_us"]), _us(r["step"]["p50_us"]), _us(r["step"]["p99_us"]), _us(r["per_token_us"]),
            f"{r['loop_overhead']:.2f}", _us(r["sentence"]["p50_us"]),
            _us(r["sentence"]["p99_us"]), _us(r["beam4"]["p50_us"]),
            _times(ratio.get("per_token_vs_keras-predict"), "{:.0f}x"),
            _times(ratio.get("per_token_vs_keras-tf.function"), "{:.1f}x"),
            f"{r['agreement_with_keras']:.0%}"])
    return out


def fused_lines(result: dict) -> list[str]:
    out = []
    for name, ratio in result["ratios"].items():
        if "sentence_vs_step_loop" in ratio:
            duel = result["paths"][name]["against_step_loop"]
            out.append(f"{name}: {_us(duel['fused_p50_us'])} against "
                       f"{_us(duel['step_p50_us'])} ({name.removesuffix('-fused')}), "
                       f"{ratio['sentence_vs_step_loop']:.2f}x")
    return out


def quantized_lines(result: dict) -> list[str]:
    """Each quantized path against its format's fp32 path at the largest batch."""
    out = []
    for name, ratio in result["ratios"].items():
        if "batched_tokens_vs_fp32" in ratio:
            duel = result["paths"][name]["against_fp32_batched"]
            out.append(f"{name}: {duel['tokens_per_s']:,.0f} tokens/s at batch "
                       f"{duel['batch']} against {duel['fp32_tokens_per_s']:,.0f} "
                       f"({duel['fp32_path']}), "
                       f"{ratio['batched_tokens_vs_fp32']:.2f}x")
    return out


def browser_line(result: dict) -> str | None:
    web = result.get("browser")
    if not web:
        return None
    versus = (f" ({web['vs_onnx']:.1f}x ONNX Runtime's in Python)"
              if web.get("vs_onnx") else "")
    return (f"{web['browser']}: greedy, batch 1: {_us(web['per_token_us'])} per token"
            f"{versus}, sentence p50 {_us(web['sentence_p50_us'])} ({web['n']} decodes)")


def serving_lines(result: dict) -> list[str]:
    """The serving figures: call overhead (fused paths), batched beam search (step
    loops) and concurrent callers (every runtime path)."""
    serve = result.get("serving", {})
    out = []
    for name, e in serve.items():
        if "call_overhead" in e:
            c = e["call_overhead"]
            out.append(f"{name}: translate([text]) {_us(c['translate_p50_us'])} against the "
                       f"bare fused call {_us(c['bare_fused_p50_us'])}: "
                       f"{c['overhead_us']:+.1f} µs per call (target: at most 10 µs)")
    for name, e in serve.items():
        if "beam" in e:
            b = e["beam"]
            out.append(f"{name}: beam-4 at batch {b['batch']}: "
                       f"{b['batched_sentences_per_s']:,.0f} sentences/s batched against "
                       f"{b['one_at_a_time_sentences_per_s']:,.0f}/s one input at a time "
                       f"({b['batched_speedup']:.2f}x; target at least 3x); at batch 1 "
                       f"{_us(b['batch1_p50_us'])} against greedy's {_us(b['greedy_step_p50_us'])}"
                       f" ({b['batch1_vs_greedy']:.2f}x; target at most 2x)")
    for name, e in serve.items():
        c = e["concurrency"]
        out.append(f"{name}: greedy sentences/s with " + ", ".join(
            f"{n} thread{'s' if n != '1' else ''} {v:,.0f} ({c['speedup'][n]:.2f}x)"
            for n, v in c["sentences_per_s"].items()))
    return out


def console(result: dict) -> str:
    table = rows(result)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                       enumerate(zip(r, widths))) for r in table]
    lines.insert(1, "-" * len(lines[0]))
    batch = result["settings"]["batch_sizes"]
    lines.append("")
    lines.append("throughput, tokens/s, by batch size: " + ", ".join(map(str, batch)))
    for name, r in result["paths"].items():
        tp = r["throughput_tokens_per_s"]
        lines.append(f"  {name:18} " + "  ".join(f"{tp[str(b)]:>10,.0f}" for b in batch))
    fused = fused_lines(result)
    if fused:
        lines += ["", "fused graph against the step loop (batch 1, sentence p50):"]
        lines += [f"  {x}" for x in fused]
    quantized = quantized_lines(result)
    if quantized:
        lines += ["", "quantized against fp32, greedy, batched (in alternation):"]
        lines += [f"  {x}" for x in quantized]
    if result.get("quality"):
        from .quality import lines as quality_lines

        lines += ["", f"quality against the truth ({result['settings']['inputs']} held-out "
                  "inputs):"] + [f"  {x}" for x in quality_lines(result["quality"])]
    serve = serving_lines(result)
    if serve:
        lines += ["", "serving (batch 1 unless stated; the two sides of each comparison "
                  "alternate):"] + [f"  {x}" for x in serve]
    if browser_line(result):
        lines += ["", "browser (the JavaScript runtime, web/seq2seq.mjs):",
                  f"  {browser_line(result)}"]
    lines.append("")
    lines.append("cold start (fresh process: import, load, first string) and peak RSS:")
    for name, c in result["cold_start"].items():
        lines.append(f"  {name:18} {c['seconds']:.2f} s  {c['peak_rss_mb']:.0f} MB")
    for name, why in result["skipped"].items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)


def markdown(result: dict) -> str:
    env, st = result["environment"], result["settings"]
    table = rows(result)
    md = ["# Benchmark report", "",
          f"Model: latent {st['latent_dim']}, {st['input_tokens']} input and "
          f"{st['target_tokens']} target tokens; {st['inputs']} held-out inputs; batch 1 "
          f"unless stated; {env['threads']} thread(s).",
          f"Machine: {env['cpu']}, {env['cores']} cores, Python {env['python']}; "
          + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".", "",
          "All figures come from one run, so the ratios between paths hold even on a noisy "
          "machine. *step*: one bare decoder-step call; *per token*: a whole greedy decode "
          "(encoder included) divided by the tokens it emitted; *loop/step*: the decode's time "
          "less one encoder call, per token, over the bare step p50 (1.0 means the loop adds "
          "nothing to the backend's own call); *x predict* / *x tf.function*: "
          "how many times faster per token than those Keras paths. Paths named *-fused* run "
          "greedy decoding as one call of the fused graph; the others loop over the step "
          "graph in Python (their encoder and step columns are the graphs the loop calls).",
          "",
          "| " + " | ".join(table[0]) + " |", "|" + "---|" * len(table[0])]
    md += ["| " + " | ".join(r) + " |" for r in table[1:]]
    fused = fused_lines(result)
    if fused:
        md += ["", "## Fused graph against the step loop", "",
               "A whole greedy decode in one call, against the Python loop over the same "
               "format's step graph: both decode the same sentences in alternation (batch 1, "
               "sentence p50), so this ratio holds even when the machine's speed drifts "
               "between the rows of the table above.", ""] + [f"- {x}" for x in fused]
    quantized = quantized_lines(result)
    if quantized:
        md += ["", "## Quantized against fp32, batched", "",
               "Greedy tokens per second of each quantized path at the largest batch size, "
               "against the same format's fp32 path of the same kind (step loop or fused), "
               "the two decoding the same batch in alternation.", ""]
        md += [f"- {x}" for x in quantized]
    batch = st["batch_sizes"]
    md += ["", "## Throughput (tokens/s)", "",
           "| path | " + " | ".join(f"batch {b}" for b in batch) + " |",
           "|---|" + "---|" * len(batch)]
    for name, r in result["paths"].items():
        tp = r["throughput_tokens_per_s"]
        md.append(f"| {name} | " + " | ".join(f"{tp[str(b)]:,.0f}" for b in batch) + " |")
    if result.get("quality"):
        from .quality import table as quality_table

        md += ["", "## Quality against the truth", "",
               f"The {st['inputs']} held-out inputs, every path's greedy decodes (Keras's "
               "reference decoder too) and beam-4 on each step loop, against the right "
               "answers (any reference counts): exact match, chrF and BLEU (sacrebleu; BLEU "
               "on characters for character targets), character error rate. *shorter than "
               "truth*: beam outputs shorter than the shortest right answer.", ""]
        md += quality_table(result["quality"])
    serve = serving_lines(result)
    if serve:
        md += ["", "## Serving", "",
               "What an app server asks of the runtime. *translate against the bare fused "
               "call*: the time the API adds around one call of the fused graph (encoding "
               "the text, the options, the string out). *beam-4*: 64 inputs in one batched "
               "search against the same inputs one at a time, and one input against a greedy "
               "decode on the same step loop. *threads*: greedy sentences per second with 1, "
               "2 and 4 threads calling one loaded model. The two sides of each comparison "
               "alternate.", ""] + [f"- {x}" for x in serve]
    if browser_line(result):
        md += ["", "## Browser", "", "The JavaScript runtime (`web/seq2seq.mjs`) on the "
               "demo page in headless Chromium, each text decoded alone and timed in the "
               "page.", "", f"- {browser_line(result)}"]
    md += ["", "## Cold start and memory", "",
           "| process | import + load + first string | peak RSS |", "|---|---|---|"]
    for name, c in result["cold_start"].items():
        md.append(f"| {name} | {c['seconds']:.2f} s | {c['peak_rss_mb']:.0f} MB |")
    md += ["", "## File sizes", "", "| file | size |", "|---|---|"]
    for name, size in result["file_sizes"].items():
        md.append(f"| {name} | {size / 1024:,.0f} KiB |")
    if result["skipped"]:
        md += ["", "## Skipped", ""] + [f"- {k}: {v}" for k, v in result["skipped"].items()]
    return "\n".join(md) + "\n"


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["paths"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    per_token = [result["paths"][n]["per_token_us"] for n in names]
    left.barh(names, per_token, color=["#999" if n.startswith("keras") else "#2a7"
                                       for n in names])
    left.set_xscale("log")
    left.set_xlabel("µs per decoded token (batch 1, log scale)")
    left.invert_yaxis()
    left.grid(axis="x", alpha=0.3)
    batch = result["settings"]["batch_sizes"]
    for n in names:
        tp = result["paths"][n]["throughput_tokens_per_s"]
        right.plot(batch, [tp[str(b)] for b in batch], marker="o", label=n)
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xlabel("batch size")
    right.set_ylabel("tokens/s (log scale)")
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    fig.suptitle("seq2seq decode: runtime vs native Keras")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
