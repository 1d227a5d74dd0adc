"""Proof that the exported graphs give Keras's answers.

Per graph and output: max abs difference against Keras on random and real
inputs (fp32 atol 1e-5). Then whole greedy decodes through the runtime, as an
app would load the artifact, against the Keras reference decoder: the strings
must be identical. Quantized variants are held to agreement with fp32.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

import runtime
from runtime.backends import create
from runtime.metadata import load_config
from train.reference import ReferenceDecoder

ATOL = 1e-5
MIN_AGREEMENT = 0.99


@dataclass
class Check:
    variant: str  # e.g. "onnx/fp32"
    what: str  # "encoder.h", "greedy strings", ...
    value: float  # max abs diff, or agreement fraction
    bound: str  # what it is held to
    ok: bool
    fatal: bool = True  # a failed fatal check stops the export


def _random_inputs(vocab, rng, batch: int = 8):
    ids = rng.integers(0, vocab.input_size + 1, size=(batch, vocab.max_input_length),
                       dtype=np.int32)
    if vocab.padding.token is not None:
        ids[ids == vocab.input_size] = vocab.pad_id
    return ids


def graph_checks(directory: Path, variant: tuple[str, str], reference: ReferenceDecoder,
                 texts: list[str], seed: int = 0) -> list[Check]:
    fmt, precision = variant
    config = load_config(directory)
    enc, step = (config.graph(fmt, precision, n) for n in ("encoder", "decoder_step"))
    backend = create(fmt, config.path(enc).read_bytes(), config.path(step).read_bytes(),
                     enc.file, step.file)
    vocab = reference.vocab
    rng = np.random.default_rng(seed)
    worst: dict[str, float] = {}

    def note(key, got, want):
        worst[key] = max(worst.get(key, 0.0), float(np.max(np.abs(got - want))))

    latent = config.latent_dim
    for ids in (_random_inputs(vocab, rng), vocab.encode_inputs(texts[:32])):
        want_h, want_c = reference.encode(vocab.one_hot_inputs(ids))
        got_h, got_c = backend.encode(ids)
        note("encoder.h", got_h, want_h)
        note("encoder.c", got_c, want_c)
        starts = [(np.full(len(ids), vocab.start_id, np.int32), want_h, want_c)]
        batch = len(ids)
        starts.append((rng.integers(0, vocab.target_size, batch, dtype=np.int32),
                       rng.normal(0, 0.5, (batch, latent)).astype(np.float32),
                       rng.normal(0, 0.5, (batch, latent)).astype(np.float32)))
        for token, h, c in starts:
            want_p, want_h2, want_c2 = reference.step(token, h, c)
            got_p, got_h2, got_c2, got_next = backend.step(token, h, c)
            note("decoder_step.probs", got_p, want_p)
            note("decoder_step.h_out", got_h2, want_h2)
            note("decoder_step.c_out", got_c2, want_c2)
            top2 = np.sort(want_p, axis=1)[:, -2:]
            clear = top2[:, 1] - top2[:, 0] > 1e-4  # ignore near-ties
            mismatch = (got_next != want_p.argmax(axis=1)) & clear
            worst["decoder_step.next_token"] = max(worst.get("decoder_step.next_token", 0),
                                                   float(mismatch.sum()))
    name = f"{fmt}/{precision}"
    checks = []
    for key, value in worst.items():
        bound = "== 0 mismatches" if key.endswith("next_token") else f"<= {ATOL:g}"
        ok = value == 0 if key.endswith("next_token") else value <= ATOL
        checks.append(Check(name, key, value, bound, ok))
    return checks


def decode_checks(directory: Path, variants: list[tuple[str, str]],
                  reference: ReferenceDecoder, texts: list[str]):
    """Greedy strings per variant: fp32 against Keras, quantized against fp32."""
    checks: list[Check] = []
    keras_out = reference.greedy(texts)
    fp32_out: dict[str, list[str]] = {}
    for fmt, precision in variants:
        model = runtime.load(directory, backend=fmt, precision=precision)
        out = model.translate(texts, batch_size=256)
        if precision == "fp32":
            fp32_out[fmt] = out
            same = sum(a == b for a, b in zip(out, keras_out)) / len(texts)
            checks.append(Check(f"{fmt}/fp32", f"greedy == Keras ({len(texts)} inputs)", same,
                                "== 1.0", same == 1.0))
        else:
            base = fp32_out.get(fmt, keras_out)
            same = sum(a == b for a, b in zip(out, base)) / len(texts)
            checks.append(Check(f"{fmt}/{precision}", f"greedy == fp32 ({len(texts)} inputs)",
                                same, f">= {MIN_AGREEMENT}", same >= MIN_AGREEMENT,
                                fatal=False))
    return checks, keras_out


def table(checks: list[Check]) -> str:
    rows = [("variant", "check", "value", "bound", "result")]
    for c in checks:
        value = f"{c.value:.3g}" if "greedy" not in c.what else f"{c.value:.2%}"
        result = "ok" if c.ok else ("FAIL" if c.fatal else "LOW AGREEMENT")
        rows.append((c.variant, c.what, value, c.bound, result))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in rows)


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
