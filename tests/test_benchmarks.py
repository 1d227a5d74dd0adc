"""`python -m benchmarks --quick` on the tiny model: every output, every figure plausible."""
from __future__ import annotations

import json

import pytest

from conftest import run_module


def test_quick_run_writes_all_outputs_with_plausible_figures(tiny_run, tiny_artifact, tmp_path):
    out = tmp_path / "bench"
    done = run_module("benchmarks", str(tiny_artifact), "--quick", "--out", str(out),
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "x tf.function" in done.stdout and "cold start" in done.stdout
    result = json.loads((out / "results.json").read_text())
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
    report = (out / "report.md").read_text()
    paths = result["paths"]
    assert {"keras-predict", "keras-call", "keras-tf.function", "onnx", "tflite",
            "onnx-fused", "tflite-fused"} <= set(paths)
    for name, r in paths.items():
        assert name in report
        for key in ("step", "encoder", "sentence", "beam4"):
            assert 0 < r[key]["p50_us"] <= r[key]["p99_us"], (name, key)
        assert r["per_token_us"] > 0
        assert set(r["throughput_tokens_per_s"]) == {"1", "4"}
        assert all(v > 0 for v in r["throughput_tokens_per_s"].values())
        assert r["agreement_with_keras"] == 1.0  # fp32 paths decode exactly as Keras
        ratios = result["ratios"][name]
        assert all(ratios[f"per_token_vs_{base}"] > 0
                   for base in ("keras-predict", "keras-tf.function"))
    for fmt in ("onnx", "tflite"):
        # Fused and step loop timed head to head on the same sentences; the report
        # prints the ratio results.json holds.
        duel = paths[f"{fmt}-fused"]["against_step_loop"]
        assert duel["n"] >= 20 and duel["fused_p50_us"] > 0 and duel["step_p50_us"] > 0
        ratio = result["ratios"][f"{fmt}-fused"]["sentence_vs_step_loop"]
        assert f"{fmt}-fused: " in report and f"{ratio:.2f}x" in report
    assert "sentence_vs_step_loop" not in result["ratios"]["tflite"]
    # Serving: call overhead on the fused paths, batched beam on the step loops, and
    # concurrent callers on every runtime path, each printed in the report.
    serve = result["serving"]
    assert set(serve) == {"onnx", "onnx-fused", "tflite", "tflite-fused"}
    for name, e in serve.items():
        assert set(e["concurrency"]["sentences_per_s"]) == {"1", "2", "4"}
        assert e["concurrency"]["speedup"]["1"] == 1.0
        assert f"{name}: greedy sentences/s with 1 thread" in report
    for fmt in ("onnx", "tflite"):
        over = serve[f"{fmt}-fused"]["call_overhead"]
        assert over["overhead_us"] == over["translate_p50_us"] - over["bare_fused_p50_us"]
        assert f"{fmt}-fused: translate([text])" in report
        beam = serve[fmt]["beam"]
        assert beam["batch"] == 64 and beam["batched_sentences_per_s"] > 0
        assert f"{beam['batched_speedup']:.2f}x; target at least 3x" in report
    # Quality against the held-out truth: greedy on every path, beam-4 on step loops;
    # each row's figures are sacrebleu's on the same decodes.
    import sacrebleu

    import runtime
    from export.pipeline import check_pairs

    texts, targets = check_pairs(runtime.load_config(tiny_artifact).vocabulary,
                                 tiny_run / "heldout.tsv", 20)
    rows = {(r["path"], r["mode"]): r for r in result["quality"]}
    assert {(p, "greedy") for p in paths} | {("onnx", "beam-4"), ("tflite", "beam-4")} == set(rows)
    beam = runtime.load(tiny_artifact, greedy="step").translate(texts, beam_size=4)
    want = sacrebleu.corpus_chrf(beam, [[t[0] for t in targets]]).score
    assert rows[("onnx", "beam-4")]["chrf"] == round(want, 6) or abs(
        rows[("onnx", "beam-4")]["chrf"] - want) < 1e-5
    assert rows[("onnx", "beam-4")]["differ_from_greedy"] == sum(
        b != g for b, g in zip(beam, runtime.load(tiny_artifact, greedy="step").translate(texts)))
    assert "## Quality against the truth" in report and "onnx beam-4: exact match" in done.stdout
    for name in ("runtime-onnx", "runtime-tflite", "keras"):
        cold = result["cold_start"][name]
        assert cold["seconds"] > 0 and cold["peak_rss_mb"] > 0
    # The runtime processes never load TensorFlow, so they stay far smaller.
    assert result["cold_start"]["runtime-onnx"]["peak_rss_mb"] < (
        result["cold_start"]["keras"]["peak_rss_mb"])
    assert result["file_sizes"]["encoder.onnx"] > 0
    assert result["environment"]["threads"] == 1 and result["environment"]["cores"]
    assert "onnx-cuda" in result["skipped"] or "onnx-cuda" in paths
    # The JavaScript runtime in Chromium gets a row where Chromium is present.
    if result["browser"]:
        assert result["browser"]["per_token_us"] > 0 and "Chromium" in report
    else:
        assert "Chromium" in result["skipped"]["browser"] or "web" in result["skipped"]["browser"]


def test_bad_options_are_clear(tiny_artifact, tmp_path):
    done = run_module("benchmarks", str(tiny_artifact), "--backends", "nope", "--quick",
                      "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown --backends nope" in done.stderr
    done = run_module("benchmarks", str(tmp_path / "missing"))
    assert done.returncode == 2 and "not an artifact directory" in done.stderr
    done = run_module("benchmarks", "--batch-sizes", "0")
    assert done.returncode == 2 and "positive" in done.stderr


def test_synthetic_model_of_a_chosen_size_exports_with_quantized_variants(tmp_path):
    out = tmp_path / "synthetic"
    done = run_module("benchmarks.synthetic", "--latent-dim", "8", "--input-tokens", "6",
                      "--target-tokens", "7", "--max-input-length", "5",
                      "--max-output-length", "6", "--quantize", "int8", "--out", str(out),
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "artifact" / "artifact.json").read_text())
    graphs = {(g["name"], g["format"], g["precision"]) for g in meta["graphs"]}
    assert {("greedy", "tflite", "int8"), ("decoder_step", "onnx", "int8"),
            ("encoder", "tflite", "fp32")} <= graphs
    vocab = json.loads((out / "vocab.json").read_text())
    assert (vocab["max_input_length"], vocab["max_output_length"]) == (5, 6)
    assert len(vocab["input_tokens"]) == 6 and len(vocab["target_tokens"]) == 7
    # Each quantized path against its format's fp32 path of the same kind, batched, in
    # alternation: the ratio the quantization targets name, in results.json and the report.
    bench = tmp_path / "bench"
    done = run_module("benchmarks", str(out / "artifact"), "--quick", "--backends",
                      "onnx,onnx-int8,tflite-fused,tflite-int8-fused", "--out", str(bench),
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((bench / "results.json").read_text())
    report = (bench / "report.md").read_text()
    for name, twin in (("onnx-int8", "onnx"), ("tflite-int8-fused", "tflite-fused")):
        duel = result["paths"][name]["against_fp32_batched"]
        ratio = result["ratios"][name]["batched_tokens_vs_fp32"]
        assert duel["batch"] == 4 and duel["n"] >= 5
        assert ratio == duel["tokens_per_s"] / duel["fp32_tokens_per_s"] > 0
        line = f"{name}: {duel['tokens_per_s']:,.0f} tokens/s at batch 4 against"
        assert line in report and f"({twin}), {ratio:.2f}x" in report and line in done.stdout
    for fp32 in ("onnx", "tflite-fused"):
        assert "against_fp32_batched" not in result["paths"][fp32]
    # Without its fp32 twin the comparison is not silently dropped: skipped says why.
    done = run_module("benchmarks", str(out / "artifact"), "--quick", "--backends",
                      "onnx-int8", "--out", str(tmp_path / "alone"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    skipped = json.loads((tmp_path / "alone" / "results.json").read_text())["skipped"]
    assert skipped["onnx-int8 against fp32, batched"] == "onnx not measured (--backends)"
    done = run_module("benchmarks.synthetic", "--quantize", "int4", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "expected a comma-separated list of int8, fp16" in done.stderr


def test_synthetic_model_of_each_architecture_exports(tmp_path):
    out = tmp_path / "synthetic"
    done = run_module("benchmarks.synthetic", "--latent-dim", "8", "--input-tokens", "6",
                      "--target-tokens", "7", "--max-input-length", "5",
                      "--max-output-length", "6", "--cell", "gru", "--bidirectional",
                      "--layers", "2", "--embedding-dim", "4", "--mask", "--out", str(out),
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "artifact" / "artifact.json").read_text())
    arch = meta["architecture"]
    assert (arch["cell"], arch["encoder_layers"], arch["bidirectional"]) == ("gru", 2, True)
    assert arch["encoder_input"] == "embedding 4 mask_zero"
    assert [s["name"] for s in meta["state"]] == ["h0", "h1"]
    done = run_module("benchmarks.synthetic", "--mask", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "mask needs an Embedding" in done.stderr


def test_variants_benchmark_compares_each_architecture_with_the_lstm(tmp_path):
    out = tmp_path / "variants"
    done = run_module("benchmarks.variants", "--latent-dim", "8", "--rounds", "1",
                      "--sentences", "2", "--variants", "gru,lstm-luong,transformer",
                      "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    assert set(result["per_token_us"]) == {"lstm", "gru", "lstm-luong", "transformer"}
    for path in ("onnx", "onnx-fused", "tflite", "tflite-fused", "keras-tf.function"):
        assert result["per_token_us"]["gru"][path] > 0
        assert result["per_token_us"]["transformer"][path] > 0
        assert result["vs_lstm"]["lstm"][path] == 1.0
    # Every decode runs to its longest (the end token suppressed): the 20 steps of
    # benchmarks.synthetic's --max-output-length and of the Transformer's 20 positions.
    assert result["tokens"] == {"lstm": 20, "gru": 20, "lstm-luong": 20, "transformer": 20}
    meta = json.loads((out / "transformer" / "artifact" / "artifact.json").read_text())
    assert meta["step"]["kind"] == "cached"
    paths = ("onnx", "onnx-fused", "tflite", "tflite-fused")
    bounds = {(t["variant"], t["baseline"], t["path"]): t["bound"] for t in result["targets"]}
    assert set(bounds) == {
        *((v, "lstm", p) for v in ("gru", "lstm-luong") for p in paths),
        *((v, "lstm", "best") for v in ("lstm-luong", "transformer")),
        *((v, "keras-predict", "best") for v in ("lstm-luong", "transformer"))}
    # The Transformer's bounds are the issue's: the multiply-add ratio and 300x its loop.
    assert bounds[("transformer", "lstm", "best")] == 5.8
    assert bounds[("transformer", "keras-predict", "best")] == 300
    # Attention is timed against the keras.io loop (predict per step) as well, and the
    # Transformer against the example's own loop.
    assert set(result["keras_predict_per_token_us"]) == {"lstm-luong", "transformer", "lstm"}
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "gru / lstm on tflite" in report and "against keras-predict" in report
    done = run_module("benchmarks.variants", "--variants", "nope")
    assert done.returncode == 2 and "unknown variant" in done.stderr


def test_scaling_benchmark_measures_each_path_in_its_own_process(tmp_path):
    """Sizes come from the files on disk, the floor from their bytes over the measured
    bandwidth, and the Keras process holds TensorFlow while the runtime's does not."""
    out = tmp_path / "scaling"
    done = run_module("benchmarks.scaling", "--latent", "8", "--vocabulary", "", "--input",
                      "", "--paths", "tflite-int8-full,onnx,keras-tf.function", "--sentences",
                      "2", "--rounds", "1", "--out", str(out), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    points = {p["path"]: p for p in result["points"]}
    assert set(points) == {"tflite-int8-full", "onnx", "keras-tf.function"}
    art = out / "latent8-in16" / "artifact"
    meta = json.loads((art / "artifact.json").read_text())
    for path, fmt, precision in (("tflite-int8-full", "tflite", "int8-full"),
                                 ("onnx", "onnx", "fp32")):
        files = [g for g in meta["graphs"] if (g["format"], g["precision"]) == (fmt, precision)]
        assert points[path]["model_bytes"] == sum((art / g["file"]).stat().st_size
                                                  for g in files)
        step = (art / next(g["file"] for g in files if g["name"] == "decoder_step"))
        assert points[path]["floor_us"] == pytest.approx(
            step.stat().st_size / result["read_bandwidth_bytes_per_s"] * 1e6)
    for p in points.values():
        assert p["tokens"] == 20 and p["per_token_us"] > 0  # the end suppressed: 20 steps
    assert points["onnx"]["agrees_with_fp32"] == 1.0  # the fp32 decodes themselves
    assert points["keras-tf.function"]["agrees_with_fp32"] == 1.0  # Keras: fp32 parity
    rss = {k: p["peak_rss_bytes"] for k, p in points.items()}
    assert rss["keras-tf.function"] > 2 * max(rss["onnx"], rss["tflite-int8-full"])
    assert (out / "scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "### By latent size" in (out / "report.md").read_text(encoding="utf-8")
    done = run_module("benchmarks.scaling", "--paths", "onnx,cuda", "--out", str(tmp_path))
    assert done.returncode == 2 and "unknown path(s) cuda" in done.stderr
    done = run_module("benchmarks.scaling", "--latent", "", "--vocabulary", "", "--input", "",
                      "--out", str(tmp_path))
    assert done.returncode == 2 and "every sweep is empty" in done.stderr


def test_corpus_benchmark_reports_scaling_and_sizing(tiny_artifact, tmp_path):
    out = tmp_path / "corpus"
    done = run_module("benchmarks.corpus", str(tiny_artifact), "--lines", "600",
                      "--engines", "local", "--workers", "1,2", "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())
    local = result["engines"]["local"]
    assert set(local) == {"1", "2"} and local["1"]["scaling"] == 1.0
    assert all(e["lines_per_s"] > 0 for e in local.values())
    assert 1 <= len(local["2"]["per_worker_lines_per_s"]) <= 2  # a fast pool may idle one
    assert result["identical_outputs"] is True
    sizing = result["sizing"]
    assert sizing["workers_needed"] >= 1 and sizing["daily_lines"] == 100_000_000
    assert "Sizing on paper" in (out / "report.md").read_text()


def test_training_benchmark_times_both_paddings_on_the_same_pairs(tmp_path):
    """Per-batch padding against padding to the longest pair: both timed, and the
    padding shares from the batches themselves (cutting can only remove padding)."""
    out = tmp_path / "t.json"
    done = run_module("benchmarks.training", "--words", "400", "--latent-dim", "16",
                      "--rounds", "1", "--json", str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["epoch_seconds"]) == {"per_batch", "longest_pair"}
    shares = result["padded_share"]
    assert 0 <= shares["per_batch"] < shares["longest_pair"] < 1
    assert result["speedup"] > 0 and "faster" in done.stdout
