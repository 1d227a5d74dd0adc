"""Proof that the exported graphs give Keras's answers.

Per graph and output: max abs difference against Keras on random inputs, real
inputs and one input of every length (fp32 atol 1e-5, or where a long recurrence
amplifies float32's rounding, a small multiple of Keras's own error against a
float64 copy of the model, never more than 1e-3: an output whose Keras error is
past that is refused). Then whole greedy
decodes through the runtime, as an app would load the artifact, against the
Keras reference decoder: the strings must be identical. Quantized variants are
held to agreement with fp32 and judged by their quality against the truth. Beam
search and sampling are proven on the same model (``mode_checks``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import runtime
from runtime.backends import create
from runtime.metadata import FILE_FORMATS, load_config
from family.reference import ReferenceDecoder

ATOL = 1e-5
# A trained LSTM's cell state is not squashed, and its recurrence can amplify
# float32's rounding over a long input: Keras's own float32 encoder then lies
# 1e-5 or more from the same model computed in float64 (measured: 1.2e-5 on a
# 64-unit encoder whose recurrent weights were scaled up). The exported graphs round
# differently (other kernels, other summation orders), so they may differ from
# Keras by this many times Keras's own float32 error, but never by more than
# MAX_ATOL: a copy of the model that went wrong cannot loosen the bound past it.
NOISE_FACTOR = 10
MAX_ATOL = 1e-3
MIN_AGREEMENT = 0.99
# Where the right answers are known, a quantized variant may lose at most this much
# exact match against them (absolute) before export warns.
MAX_ACCURACY_LOSS = 0.01
# Beam search below greedy's exact match by more than MAX_ACCURACY_LOSS stops the
# export only where chance explains it this rarely (McNemar's exact test).
SIGNIFICANCE = 0.01
# ... or this many chrF points (0 to 100), or (a pronunciation lexicon) this much
# phone error rate (absolute).
MAX_CHRF_LOSS = 1.0
MAX_PER_LOSS = 0.005
# The beam width export proves on every model, and the near-zero sampling temperature
# that must reproduce greedy (at 1e-3, measured, a near-tie of two tokens already
# flipped one decode in 64 on a briefly trained model).
BEAM_WIDTH = 4
COLD = 1e-4
DECISIVE = 30


@dataclass
class Check:
    """One parity check of one variant: its value, its bound and whether it held."""
    variant: str  # e.g. "onnx/fp32"
    what: str  # "encoder.h", "greedy strings", ...
    value: float  # max abs diff, or agreement fraction
    bound: str  # what it is held to
    ok: bool
    fatal: bool = True  # a failed fatal check stops the export


def _load(directory: Path, **options):
    """The staging artifact, as an app would load it, before its proof has passed."""
    return runtime.load(directory, unproven=True, **options)


def _random_inputs(vocab, rng, batch: int = 8):
    ids = rng.integers(0, vocab.input_size + 1, size=(batch, vocab.max_input_length),
                       dtype=np.int32)
    if vocab.padding.token is not None:
        ids[ids == vocab.input_size] = vocab.pad_id
    return ids


def _every_length(vocab, rng):
    """One input of each length from 1 to the maximum, padded by the vocabulary's
    rule: a masked or fixed-length encoder must give Keras's state for each."""
    def pick(tokens):
        return tokens[int(rng.integers(len(tokens)))]

    return vocab.encode_inputs([vocab.sample_text(pick, n)
                                for n in range(1, vocab.max_input_length + 1)])


def step_backend(directory: Path, fmt: str, precision: str):
    """The staging artifact's config and a backend over its encoder and decoder_step
    graphs of ``fmt`` at ``precision`` (before the proof has passed)."""
    config = load_config(directory, unproven=True)
    graphs = {}
    for name in ("encoder", "decoder_step"):
        g = config.graph(fmt, precision, name)
        graphs[name] = (config.path(g).read_bytes(), g.file, g.inputs, g.outputs)
    return config, create(FILE_FORMATS[fmt], graphs)


def graph_checks(directory: Path, variant: tuple[str, str], reference: ReferenceDecoder,
                 texts: list[str], seed: int = 0) -> list[Check]:
    """The encoder and decoder_step graphs of ``variant`` (format, precision) against
    ``reference`` on random inputs, the first 32 of ``texts`` and one input of every
    length: one Check per output, its worst max abs difference held to ``ATOL``, and
    ``next_token`` mismatches outside near-ties held to 0."""
    fmt, precision = variant
    config, backend = step_backend(directory, fmt, precision)
    vocab = reference.vocab
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}
    names = [s.name for s in config.state]
    memory = list(config.attention.memory_names) if config.attention else []

    exact = reference.float64()
    noise: dict[str, float] = {}  # Keras's own float32 error, against float64

    def note(key, got, want, truth=None):
        worst[key] = max(worst.get(key, 0.0), float(np.max(np.abs(got - want))))
        if truth is not None:
            noise[key] = max(noise.get(key, 0.0), float(np.max(np.abs(want - truth))))

    for ids in (_random_inputs(vocab, rng), vocab.encode_inputs(texts[:32]),
                _every_length(vocab, rng)):
        want_state = reference.encode(ids)
        for name, got, want, truth in zip(names + memory, backend.encode(ids), want_state,
                                          exact.encode(ids), strict=True):
            note(f"encoder.{name}", got, want, truth)
        batch = len(ids)
        starts = [(np.full(batch, vocab.start_id, np.int32), want_state),
                  (rng.integers(0, vocab.target_size, batch, dtype=np.int32),
                   tuple(rng.normal(0, 0.5, (batch, s.units)).astype(np.float32)
                         for s in config.state) + want_state[len(names):])]
        for token, state in starts:
            want_p, want_state2, want_w = reference.step(token, state)
            got_p, got_state2, got_next, got_w = backend.step(token, state)
            true_p, true_state2, true_w = exact.step(token, state)
            note("decoder_step.probs", got_p, want_p, true_p)
            if want_w is not None:
                note("decoder_step.attention", got_w, want_w, true_w)
            for name, got, want, truth in zip(names, got_state2, want_state2, true_state2):
                note(f"decoder_step.{name}_out", got, want, truth)
            top2 = np.sort(want_p, axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 1e-4  # ignore near-ties
            mismatch = (got_next != want_p.argmax(axis=1)) & clear
            worst["decoder_step.next_token"] = max(worst.get("decoder_step.next_token", 0),
                                                   float(mismatch.sum()))
    name = f"{fmt}/{precision}"
    checks = []
    for key, value in worst.items():
        if key.endswith("next_token"):
            checks.append(Check(name, key, value, "== 0 mismatches", value == 0))
            continue
        if noise[key] * NOISE_FACTOR > MAX_ATOL:  # past the cap: no bound is honest
            checks.append(Check(name, key, value, f"Keras's own float32 error "
                                f"{noise[key]:.2g} <= {MAX_ATOL / NOISE_FACTOR:g} (else the "
                                "model's float32 answers are not to be trusted)", False))
            continue
        # Rounded as shown, so the bound printed is the bound applied.
        atol = float(f"{allowed(noise[key]):.2g}")
        bound = f"<= {atol:.2g}" + (f" ({NOISE_FACTOR}x Keras's own float32 error, "
                                    f"{noise[key]:.2g})" if atol > ATOL else "")
        checks.append(Check(name, key, value, bound, value <= atol))
    return checks


def allowed(keras_error: float) -> float:
    """The bound on an exported fp32 output whose Keras float32 value lies
    ``keras_error`` from the float64 truth: ``ATOL``, or ``NOISE_FACTOR`` times that
    error where it is larger, at most ``MAX_ATOL``."""
    return min(MAX_ATOL, max(ATOL, NOISE_FACTOR * keras_error))


def decode_checks(directory: Path, variants: list[tuple[str, str]],
                  reference: ReferenceDecoder, texts: list[str], judged_by_truth: bool = False):
    """Greedy strings per variant: fp32 against Keras, quantized against fp32 (shown
    only, with ``judged_by_truth``: ``truth_checks`` then judges them). Returns the
    checks, Keras's strings and every variant's, by "format/precision"."""
    checks: list[Check] = []
    keras_out = reference.greedy(texts)
    fp32_out: dict[str, list[str]] = {}
    outputs: dict[str, list[str]] = {}
    for fmt, precision in variants:
        model = _load(directory, backend=FILE_FORMATS[fmt], precision=precision,
                             file_format=fmt)
        out = model.translate(texts, batch_size=256)
        outputs[f"{fmt}/{precision}"] = out
        if precision == "fp32":
            fp32_out[fmt] = out
        check = _strings_check(f"{fmt}/{precision}", fmt, precision, out, keras_out, fp32_out)
        if judged_by_truth and precision != "fp32":
            check.ok, check.bound = True, "shown (judged by exact match)"
        checks.append(check)
    return checks, keras_out, outputs


def truth_checks(outputs: dict[str, list[str]], targets: list[list[str]],
                 char_level: bool = True, lexicon: bool = False):
    """Each variant's quality against the right answers (``targets``: the references
    of each input; any one counts as right): exact match and chrF, and for a
    pronunciation lexicon (``lexicon``) its WER and PER as well. A variant is named
    ``format/precision``, a fused graph's ``format/precision fused``. A quantized
    variant that loses more than ``MAX_ACCURACY_LOSS`` exact match (so WER),
    ``MAX_CHRF_LOSS`` chrF points or ``MAX_PER_LOSS`` PER against its format's fp32
    of the same path gets a (non-fatal) warning. Returns the checks and the quality by variant."""
    from family.quality import lexicon_rates, measure

    judged = {name: measure(out, targets, char_level) for name, out in outputs.items()}
    figures = [("exact match", lambda q: q.exact_match, MAX_ACCURACY_LOSS, 1,
                lambda v: f"{v:.1%}"),
               ("chrF", lambda q: q.chrf, MAX_CHRF_LOSS, 1, lambda v: f"{v:.1f}")]
    if lexicon:  # lower is better: the sign turns the loss around. WER is 1 - exact
        # match, whose bound is above, so it is shown, not judged twice.
        figures += [("WER", lambda q: lexicon_rates(q)["word_error_rate"], None, -1,
                     lambda v: f"{v:.2%}"),
                    ("PER", lambda q: lexicon_rates(q)["phone_error_rate"], MAX_PER_LOSS,
                     -1, lambda v: f"{v:.2%}")]
    checks = []
    for name, q in judged.items():
        fmt, rest = name.split("/", 1)
        precision, *path = rest.split(" ", 1)
        base = judged.get(" ".join([f"{fmt}/fp32", *path]))
        for what, figure, loss, sign, shown in figures:
            value = figure(q)
            label = f"{what} vs truth ({len(targets)} inputs)"
            if precision == "fp32" or base is None or loss is None:
                checks.append(Check(name, label, value, "reported", True, fatal=False))
                continue
            ref, op = figure(base), ">=" if sign > 0 else "<="
            bound = f"{op} {shown(ref)} {'-' if sign > 0 else '+'} {shown(loss)} (fp32's)"
            checks.append(Check(name, label, value, bound,
                                sign * (ref - value) <= loss + 1e-9, fatal=False))
    return checks, judged


def mode_checks(directory: Path, variants: list[tuple[str, str]], texts: list[str],
                outputs: dict[str, list[str]], targets: list[list[str]] | None = None):
    """The other decoding modes on the user's own model, per fp32 variant (fatal
    checks marked *):

    - beam-4's mean score (sum(log p) / length, what it maximises) is not below
      greedy's (*); the share of inputs where it is at least greedy's is shown,
      with a warning below 99% (a beam may miss greedy's path on a flat model);
    - beam-4's exact match is at most a point below greedy's, where the right
      answers are known (*, unless McNemar's exact test finds the loss may be
      chance: then a warning; ``_beam_truth_check``);
    - seeded sampling at a temperature near zero gives greedy's strings on every
      input whose greedy steps are decisive (each chosen token ahead of the
      runner-up by ``DECISIVE`` temperatures in log-probability, so a correct
      sampler strays with odds below e^-30) (*). An untrained model may have none.
    """
    checks, found = [], {}
    for fmt, precision in variants:
        if precision != "fp32":
            continue
        name = f"{fmt}/{precision}"
        model = _load(directory, backend=FILE_FORMATS[fmt], precision=precision,
                             file_format=fmt, greedy="step")
        greedy = outputs[name]
        beam = model.translate(texts, beam_size=BEAM_WIDTH, batch_size=256)
        found[name] = beam
        beam_scores, greedy_scores = model.score(texts, beam), model.score(texts, greedy)
        n, label = len(texts), f"beam-{BEAM_WIDTH}"
        gain = float(np.mean(beam_scores - greedy_scores))
        checks.append(Check(name, f"{label} mean score - greedy's ({n} inputs)", gain,
                            ">= 0", gain >= -1e-6))
        not_worse = float(np.mean(beam_scores >= greedy_scores - 1e-6))
        checks.append(Check(name, f"{label} score >= greedy's ({n} inputs)", not_worse,
                            f">= {MIN_AGREEMENT}", not_worse >= MIN_AGREEMENT, fatal=False))
        if targets:
            checks.append(_beam_truth_check(name, label, greedy, beam, targets))
        decisive = _margins(model, texts, greedy) >= DECISIVE * COLD
        chosen = [t for t, d in zip(texts, decisive) if d]
        cold = model.translate(chosen, temperature=COLD, seed=0, batch_size=256)
        same = _share(cold, [g for g, d in zip(greedy, decisive) if d]) if chosen else 1.0
        checks.append(Check(name, f"sampling T={COLD:g} == greedy ({len(chosen)} of {n} "
                                  "inputs decisive)", same, "== 1.0", same == 1.0))
    return checks, found


def _margins(model, texts: list[str], outputs: list[str]) -> np.ndarray:
    """Per input, the smallest lead in log-probability of greedy's token over the
    runner-up, over every step of its decode (the end token's step included)."""
    vocab = model.vocabulary
    seqs = [vocab.encode_target(o)[:vocab.max_output_length] for o in outputs]
    state = model.encode(texts)
    token = np.full(len(texts), vocab.start_id, dtype=np.int32)
    margin = np.full(len(texts), np.inf)
    for t in range(max(map(len, seqs))):
        probs, state, _ = model.step(token, state)
        top2 = np.sort(np.log(np.clip(probs, 1e-30, 1.0)), axis=1)[:, -2:]
        live = np.array([t < len(s) for s in seqs])
        margin = np.where(live, np.minimum(margin, top2[:, 1] - top2[:, 0]), margin)
        token = np.array([s[t] if t < len(s) else vocab.end_id for s in seqs], dtype=np.int32)
    return margin


def _beam_truth_check(name: str, label: str, greedy: list[str], beam: list[str],
                      targets: list[list[str]]) -> Check:
    """Beam's exact match against the truth, at most ``MAX_ACCURACY_LOSS`` below
    greedy's, unless that can be chance: then it is a warning. Beam maximises the
    model's score (the fatal score check proves it does), and on a learned model
    that may cost a few right answers; a beam that cuts answers short loses many.
    Chance is judged by McNemar's exact test: on the inputs where exactly one of
    the two is right, is beam the one right less often than a fair coin allows
    (one-sided binomial test, scipy), at ``SIGNIFICANCE``?"""
    from scipy.stats import binomtest

    g_ok = [a in refs for a, refs in zip(greedy, targets)]
    b_ok = [a in refs for a, refs in zip(beam, targets)]
    g, b, n = sum(g_ok) / len(targets), sum(b_ok) / len(targets), len(targets)
    lost = sum(x and not y for x, y in zip(g_ok, b_ok))
    won = sum(y and not x for x, y in zip(g_ok, b_ok))
    p = float(binomtest(lost, lost + won, 0.5, alternative="greater").pvalue) if lost else 1.0
    within = bool(b >= g - MAX_ACCURACY_LOSS - 1e-9)
    return Check(name, f"{label} exact match vs truth ({n} inputs)", b,
                 f">= {g:.1%} - {MAX_ACCURACY_LOSS:.0%} (greedy's), or the loss chance "
                 f"(greedy alone right on {lost}, beam on {won}: p = {p:.2g}, "
                 f"fatal below {SIGNIFICANCE:g})", within,
                 fatal=within or bool(p < SIGNIFICANCE))


def _right(got: list[str], targets: list[list[str]]) -> float:
    return sum(a in refs for a, refs in zip(got, targets)) / len(targets)


def _share(got: list[str], want: list[str]) -> float:
    return sum(a == b for a, b in zip(got, want)) / len(want)


def _strings_check(name: str, fmt: str, precision: str, out: list[str],
                   keras_out: list[str], fp32_out: dict[str, list[str]]) -> Check:
    """fp32 decodes must equal Keras's; quantized ones should agree with their
    format's fp32 decodes (a low agreement is reported, not fatal)."""
    if precision == "fp32":
        same = _share(out, keras_out)
        return Check(name, f"greedy == Keras ({len(out)} inputs)", same, "== 1.0",
                     same == 1.0)
    same = _share(out, fp32_out.get(fmt, keras_out))
    return Check(name, f"greedy == fp32 ({len(out)} inputs)", same, f">= {MIN_AGREEMENT}",
                 same >= MIN_AGREEMENT, fatal=False)


def fused_checks(directory: Path, variants: list[tuple[str, str]], texts: list[str],
                 keras_out: list[str], fp32_out: dict[str, list[str]]):
    """Each fused greedy graph against Keras (fp32) or its format's fp32 decodes
    (quantized), and against the step loop of the same variant at batch 1; then the
    time of both paths per sentence (batch 1), so the runtime can take the faster.
    Returns the checks, the timings and each fused graph's decodes (by
    ``format/precision fused``)."""
    import time

    checks, timing, decoded = [], {}, {}
    for fmt, precision in variants:
        name = f"{fmt}/{precision}"
        where = dict(backend=FILE_FORMATS[fmt], precision=precision, file_format=fmt)
        step = _load(directory, greedy="step", **where)
        fused = _load(directory, greedy="fused", **where)
        fused_out = fused.translate(texts, batch_size=256)
        decoded[f"{name} fused"] = fused_out
        checks.append(_strings_check(f"{name} fused", fmt, precision, fused_out, keras_out,
                                     fp32_out))
        one_by_one = [fused.translate([t])[0] for t in texts[:50]]
        step_out = step.translate(texts[:50])
        agree = _share(one_by_one, step_out)
        checks.append(Check(f"{name} fused", f"batch 1 == step loop ({len(step_out)} inputs)",
                            agree, "== 1.0", agree == 1.0, fatal=precision == "fp32"))
        sample = texts[:20]
        paths = {"step": step, "fused": fused}
        best = {path: float("inf") for path in paths}
        for model in paths.values():
            model.translate(sample[:2])
        for _ in range(3):  # rounds alternate, so a noisy spell slows both paths alike
            for path, model in paths.items():
                started = time.perf_counter()
                for t in sample:
                    model.translate([t])
                best[path] = min(best[path], (time.perf_counter() - started) / len(sample))
        timing[name] = {path: b * 1e6 for path, b in best.items()}
    return checks, timing, decoded


def fastest(timing_us: dict[str, float]) -> str:
    """The key of the smallest time: the path or form export keeps."""
    return min(timing_us, key=timing_us.get)


def table(checks: list[Check]) -> str:
    """The checks as an aligned text table: variant, check, value (shares as percentages),
    bound and result (a failed non-fatal check is labelled by what it measures)."""
    rows = [("variant", "check", "value", "bound", "result")]
    for c in checks:
        share = c.what.startswith(("greedy", "batch 1", "exact match", "sampling", "WER",
                                   "PER")) or (
            c.what.startswith("beam") and "mean" not in c.what)
        value = f"{c.value:.2%}" if share else f"{c.value:.3g}"
        result = "ok" if c.ok else "FAIL" if c.fatal else (
            "LOW AGREEMENT" if c.what.startswith("greedy") else
            "SEARCH ERRORS" if c.what.startswith("beam") else "ACCURACY LOST")
        rows.append((c.variant, c.what, value, c.bound, result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)


def as_json(checks: list[Check]) -> list[dict]:
    """The checks as plain dicts, for ``artifact.json``'s ``parity`` record."""
    return [asdict(c) for c in checks]
