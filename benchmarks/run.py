"""Measure every decode path on the same model and inputs, in one run."""
from __future__ import annotations

import itertools
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.metadata import load_config
from runtime.model import Seq2SeqModel, load

from . import coldstart, serving
from .timing import sample, stats


@dataclass
class Settings:
    artifact: Path
    model: Path
    texts: list[str]
    paths: list[str] | None  # None: every path available
    batch_sizes: list[int]
    budget: float  # seconds of timing per figure and path
    threads: int
    cold_runs: int
    min_repeats: int = 5
    progress: object = print
    # The right answers of each text (a list of references), where known.
    targets: list[list[str]] | None = None


def _count(fn, budget: float, lo: int, hi: int = 100_000) -> int:
    """Repetitions that fill ``budget`` seconds, at least ``lo``."""
    one = max(sample(fn, 1, warmup=0)[0], 1e-7)  # one call: slow paths are slow
    return int(min(hi, max(lo, budget / one)))


def environment(threads: int) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("numpy", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "tensorflow",
                "keras"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": sys.version.split()[0], "platform": platform.platform(),
            "versions": versions}


def build_paths(s: Settings):
    """name -> Seq2SeqModel, plus name -> reason for paths that cannot run here."""
    import tensorflow as tf

    from export.pipeline import load_keras_model
    from family.reference import ReferenceDecoder

    from .keras_backends import KerasBackend

    config = load_config(s.artifact)
    reference = ReferenceDecoder(load_keras_model(s.model), config.vocabulary)
    models, skipped = {}, {}
    for mode in ("predict", "call", "tf.function"):
        models[f"keras-{mode}"] = Seq2SeqModel(config, KerasBackend(reference, mode), "fp32")
    for fmt, precision in config.variants():
        name = fmt if precision == "fp32" else f"{fmt}-{precision}"
        models[name] = load(s.artifact, backend=fmt, precision=precision, threads=s.threads,
                            greedy="step")
        if config.has_graph(fmt, precision, "greedy"):
            models[f"{name}-fused"] = load(s.artifact, backend=fmt, precision=precision,
                                           threads=s.threads, greedy="fused")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        models["onnx-cuda"] = load(s.artifact, backend="onnx", device="cuda")
    else:
        skipped["onnx-cuda"] = "no CUDAExecutionProvider (onnxruntime-gpu not installed or no GPU)"
    if not tf.config.list_physical_devices("GPU"):
        skipped["keras-gpu"] = "TensorFlow sees no GPU"
    if s.paths is not None:
        unknown = set(s.paths) - set(models) - set(skipped) - {"browser"}
        if unknown:
            from runtime.errors import InputError

            raise InputError(f"unknown --backends {', '.join(sorted(unknown))}; available "
                             f"here: {', '.join(models)}")
        models = {k: v for k, v in models.items() if k in s.paths}
    return models, skipped, reference


def measure_path(name: str, model: Seq2SeqModel, s: Settings, keras_out: list[str]) -> dict:
    vocab = model.vocabulary
    texts = s.texts
    slow = name == "keras-predict"
    budget = s.budget * (0.5 if slow else 1.0)
    least = min(s.min_repeats, 2) if slow else s.min_repeats

    def _repeats(fn, budget, lo=least):
        return _count(fn, budget, max(lo, 1))

    cycle = itertools.cycle(texts)
    # Bare step call, batch 1, from a real encoder state.
    state = model.encode(texts[:1])
    token = np.full(1, vocab.start_id, dtype=np.int32)
    step = lambda: model.backend.step(token, state)  # noqa: E731
    step_s = sample(step, _repeats(step, budget))
    ids = vocab.encode_inputs(texts[:1])
    encode = lambda: model.backend.encode(ids)  # noqa: E731
    encoder_stats = stats(sample(encode, _repeats(encode, budget)))
    # Whole greedy sentences, batch 1.
    # Every text's output in one batched decode (the same answers as one at a time:
    # tests/test_batch_invariance.py); one by one, Keras predict would take minutes.
    outputs = dict(zip(texts, model.translate(texts, batch_size=len(texts))))
    sentence_times, tokens = [], []
    reps = _repeats(lambda: model.translate([texts[0]]), budget)
    for _ in range(reps):
        t = next(cycle)
        sentence_times += sample(lambda: model.translate([t]), 1, warmup=0)
        tokens.append(len(outputs[t]) + 1)
    per_token = float(np.sum(sentence_times) / np.sum(tokens) * 1e6)
    # The loop's own cost: sentence time less one encoder call, per token, over a bare step.
    loop_per_token = (np.sum(sentence_times) * 1e6 - len(tokens) * encoder_stats["p50_us"]
                      ) / np.sum(tokens)
    beam_reps = max(2, reps // 4)
    beam_times = [sample(lambda: model.translate([next(cycle)], beam_size=4), 1, warmup=0)[0]
                  for _ in range(beam_reps)]
    throughput = {}
    for batch in s.batch_sizes:
        batch_texts = list(itertools.islice(itertools.cycle(texts), batch))
        n_tokens = sum(len(o) + 1 for o in model.translate(batch_texts, batch_size=batch))
        fn = lambda: model.translate(batch_texts, batch_size=batch)  # noqa: E731
        times = sample(fn, _repeats(fn, budget, lo=1 if slow else least),
                       warmup=0 if slow else 1)
        throughput[str(batch)] = n_tokens / float(np.median(times))
    agreement = float(np.mean([outputs[t] == k for t, k in zip(texts, keras_out)]))
    step_stats = stats(step_s)
    return {
        "step": step_stats,
        "encoder": encoder_stats,
        "sentence": stats(sentence_times),
        "per_token_us": per_token,
        "decode_per_token_us": float(loop_per_token),
        "loop_overhead": float(loop_per_token / step_stats["p50_us"]),
        "beam4": stats(beam_times),
        "throughput_tokens_per_s": throughput,
        "agreement_with_keras": agreement,
        "outputs": [outputs[t] for t in texts],
    }


def head_to_head(fused: Seq2SeqModel, step: Seq2SeqModel, texts: list[str],
                 budget: float) -> dict:
    """Both paths decode the same sentences in alternation (batch 1), so a noisy
    spell on a shared machine slows both alike and their ratio holds."""
    fused_times, step_times = [], []
    cycle = itertools.cycle(texts)
    reps = _count(lambda: step.translate([texts[0]]), budget, lo=20, hi=20_000)
    for _ in range(reps):
        t = next(cycle)
        fused_times += sample(lambda: fused.translate([t]), 1, warmup=1)
        step_times += sample(lambda: step.translate([t]), 1, warmup=1)
    return {"fused_p50_us": stats(fused_times)["p50_us"],
            "step_p50_us": stats(step_times)["p50_us"], "n": reps}


def batched_head_to_head(quantized: Seq2SeqModel, fp32: Seq2SeqModel, texts: list[str],
                         batch: int, budget: float) -> dict:
    """Greedy tokens per second at ``batch`` of a quantized path against its format's
    fp32 path, the two decoding the same batch in alternation (the ratio the
    quantization targets ask for, held on a noisy machine)."""
    batch_texts = list(itertools.islice(itertools.cycle(texts), batch))
    runs = [quantized, fp32]
    tokens = [sum(len(o) + 1 for o in m.translate(batch_texts, batch_size=batch))
              for m in runs]
    times: list[list[float]] = [[], []]
    # Rounds sized by the fp32 side's call; each round runs both (about 2x budget),
    # the side that goes first alternating.
    reps = _count(lambda: fp32.translate(batch_texts, batch_size=batch), budget, lo=5, hi=200)
    for r in range(reps):
        for i in ((0, 1) if r % 2 == 0 else (1, 0)):
            m = runs[i]
            times[i] += sample(lambda: m.translate(batch_texts, batch_size=batch), 1, warmup=0)
    rates = [n / float(np.median(t)) for n, t in zip(tokens, times)]
    return {"batch": batch, "tokens_per_s": rates[0], "fp32_tokens_per_s": rates[1],
            "n": reps}


def _fp32_twin(name: str) -> str | None:
    """The fp32 path of the same format and kind (step loop or fused) as ``name``, a
    quantized or fp16 path; None for any other path."""
    from runtime.model import PRECISIONS

    fmt, _, rest = name.partition("-")
    if rest.removesuffix("-fused") not in set(PRECISIONS) - {"fp32"}:
        return None  # fp32 itself, or not a quantized variant (onnx-cuda)
    return fmt + ("-fused" if rest.endswith("-fused") else "")


def run(s: Settings) -> dict:
    s.progress(f"loading {s.artifact} and {s.model}")
    models, skipped, reference = build_paths(s)
    keras_out = reference.greedy(s.texts)
    results = {}
    for i, (name, model) in enumerate(models.items(), 1):
        s.progress(f"[{i}/{len(models)}] {name}")
        results[name] = measure_path(name, model, s, keras_out)
    quality = None
    if s.targets:
        from . import quality as judge

        s.progress("quality against the truth: greedy on every path, beam-4 on step loops")
        greedy = {name: r.pop("outputs") for name, r in results.items()}
        config = load_config(s.artifact)
        quality = judge.measure_modes(models, s.texts, s.targets, greedy,
                                      config.vocabulary.target_unit == "char")
    else:
        for r in results.values():
            r.pop("outputs")
    ratios = {}
    for name, r in results.items():
        ratios[name] = {}
        for base in ("keras-predict", "keras-tf.function"):
            if base in results:
                ratios[name][f"per_token_vs_{base}"] = (results[base]["per_token_us"]
                                                        / r["per_token_us"])
    for name in results:
        step_loop = name.removesuffix("-fused")
        if step_loop != name and step_loop in results:  # the same graphs, looped in Python
            s.progress(f"{name} against {step_loop}, in alternation")
            duel = head_to_head(models[name], models[step_loop], s.texts, s.budget)
            results[name]["against_step_loop"] = duel
            ratios[name]["sentence_vs_step_loop"] = duel["step_p50_us"] / duel["fused_p50_us"]
    batch = max(s.batch_sizes) if s.batch_sizes else 0
    for name in results:
        twin = _fp32_twin(name)
        if twin is None:
            continue
        if twin not in models or batch < 2:
            skipped[f"{name} against fp32, batched"] = (
                f"{twin} not measured (--backends)" if twin not in models else
                "no --batch-sizes above 1")
            continue
        s.progress(f"{name} against {twin} at batch {batch}, in alternation")
        duel = batched_head_to_head(models[name], models[twin], s.texts, batch, s.budget)
        duel["fp32_path"] = twin
        results[name]["against_fp32_batched"] = duel
        ratios[name]["batched_tokens_vs_fp32"] = (duel["tokens_per_s"]
                                                  / duel["fp32_tokens_per_s"])
    serve = {}
    for name, model in models.items():
        if name.startswith("keras") or name.endswith("-cuda"):
            continue
        s.progress(f"serving: {name}")
        rounds = max(2, int(s.budget * 3))
        entry = {"concurrency": serving.concurrency(model, s.texts, s.budget)}
        if model.fused:
            entry["call_overhead"] = serving.call_overhead(model, s.texts[:50], rounds)
        else:
            entry["beam"] = serving.beam(model, s.texts, max(1, rounds // 3))
        serve[name] = entry
    from . import browser

    reason = browser.missing()
    web = None
    if reason is None and (s.paths is None or "browser" in s.paths):
        s.progress("browser: the JavaScript runtime in headless Chromium")
        web = browser.per_token(s.artifact, s.texts[:20])
        web["vs_onnx"] = web["per_token_us"] / results["onnx"]["per_token_us"] if (
            "onnx" in results) else None
    elif reason is not None:
        skipped["browser"] = reason
    s.progress("cold start in fresh processes")
    text = s.texts[0]
    config = load_config(s.artifact)
    cold = {}
    for fmt, _ in config.variants():
        if s.paths is None or fmt in s.paths:
            if (fmt, "fp32") in config.variants():
                cold[f"runtime-{fmt}"] = coldstart.measure(
                    coldstart.RUNTIME_SCRIPT, [str(s.artifact), fmt, text], s.cold_runs)
    cold["keras"] = coldstart.measure(
        coldstart.KERAS_SCRIPT, [str(s.model), str(s.artifact), text],
        s.cold_runs)
    sizes = {g.file: g.bytes for g in config.graphs}
    sizes[s.model.name] = s.model.stat().st_size
    return {"environment": environment(s.threads),
            "settings": {"artifact": str(s.artifact), "model": str(s.model),
                         "inputs": len(s.texts), "batch_sizes": s.batch_sizes,
                         "budget_s": s.budget, "latent_dim": config.state[0].units,
                         "architecture": config.architecture,
                         "input_tokens": config.vocabulary.input_size,
                         "target_tokens": config.vocabulary.target_size},
            "paths": results, "ratios": ratios, "serving": serve, "browser": web,
            "quality": quality,
            "cold_start": cold,
            "file_sizes": sizes,
            "skipped": skipped}
