"""Golden cases: what the Python runtime answers for an artifact, written once and
replayed elsewhere (``node web/golden.mjs``, the browser page, or this module on
an emulated ARM64), where any difference is a failure.

    python -m checks.golden write ARTIFACT TEXTS_FILE CASES.json
    python -m checks.golden replay ARTIFACT CASES.json      # exit 1 on any difference

A case file holds, for one artifact (its ``artifact.json`` sha256 recorded):
``encode`` (texts, the policies and Python's token ids), ``decode`` (greedy on
the step loop and the fused graph, beam at several widths and length penalties,
a shorter ``max_length``, the unknown and too-long policies; outputs and their
sha256), ``scores`` (``Seq2SeqModel.score`` of the beam answers), ``attention``
(the maps of an attention model's greedy decodes) and ``refusals`` (inputs and
options Python refuses, with its message). Only the runtime is imported.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import runtime
from runtime.errors import Seq2SeqError

FORMAT = "seq2seq-golden"
VERSION = 1
BEAMS = ((2, 1.0), (3, 0.0), (4, 1.0), (5, 2.0))  # (width, length penalty)
SCORE_ATOL = 1e-5  # on log-prob sums: the two runtimes share the kernels, not the libm
WEIGHT_ATOL = 1e-5


def digest(outputs: list[str]) -> str:
    """sha256 of the outputs as canonical JSON (what both runtimes compute)."""
    text = json.dumps(outputs, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _variants(config) -> list[str]:
    """The ONNX precisions the JavaScript runtime can load."""
    return sorted({p for f, p in config.variants() if f == "onnx"})


def _odd_texts(vocab, texts: list[str]) -> dict[str, list[str]]:
    """Inputs for the policies: with a unit outside the vocabulary, too long."""
    known = set(vocab.input_tokens)
    strangers = "§¤€¶" if vocab.unit == "char" else ("zzqx", "qqxz", "xqzq")
    stranger = next(c for c in strangers if c not in known and vocab.split_input(c) == [c])
    sep = vocab.input_separator
    unknown = []
    for i, text in enumerate(texts[:6]):  # a stranger in, within the length limit
        pieces = vocab.split_input(text)
        if len(pieces) >= vocab.max_input_length:
            pieces = pieces[:vocab.max_input_length - 1]
        pieces = pieces + [stranger] if i % 2 else [stranger] + pieces
        unknown.append(sep.join(pieces))
    tokens = vocab.text_tokens()
    long = [sep.join([tokens[(i + j) % len(tokens)] for j in range(vocab.max_input_length + 3)])
            .strip() or tokens[0] for i in range(4)]
    long = [t for t in long if len(vocab.split_input(t)) > vocab.max_input_length]
    return {"unknown": unknown, "long": long}


def _refusals(model, texts: list[str], odd: dict) -> list[dict]:
    vocab = model.vocabulary
    top = vocab.max_output_length
    cases = [
        ({}, [texts[0], odd["unknown"][0]], "outside the vocabulary"),
        ({}, [texts[0], ""], "is empty"),
        ({}, [" \t\u3000"], "is empty"),
        ({"beam_size": 0}, texts[:1], "beam"),
        ({"beam_size": 257}, texts[:1], "beam"),
        ({"max_length": 0}, texts[:1], "max"),
        ({"max_length": top + 1}, texts[:1], "max"),
        ({"unknown": "ignore"}, texts[:1], "unknown"),
        ({"too_long": "cut"}, texts[:1], "too"),
    ]
    if odd["long"]:
        cases.append(({}, odd["long"][:1], "takes at most"))
    if vocab.unknown_token is None:
        cases.append(({"unknown": "unk"}, odd["unknown"][:1], "unknown"))
    out = []
    for options, case_texts, phrase in cases:
        try:
            model.translate(case_texts, **options)
        except Seq2SeqError as e:
            message = str(e)
        else:
            raise AssertionError(f"Python accepted {case_texts!r} with {options}")
        assert phrase in message.lower(), (phrase, message)
        out.append({"texts": case_texts, "options": options, "phrase": phrase,
                    "python": message})
    return out


def write_cases(artifact: str | Path, texts: list[str], out: str | Path,
                beam_texts: int = 12) -> dict:
    """Decode ``texts`` with the Python runtime in every mode the JavaScript runtime
    has and write the cases to ``out``; returns them."""
    artifact = Path(artifact)
    config = runtime.load_config(artifact)
    vocab = config.vocabulary
    odd = _odd_texts(vocab, texts)
    cases = {"format": FORMAT, "version": VERSION,
             "artifact_sha256": hashlib.sha256((artifact / "artifact.json").read_bytes())
             .hexdigest(), "encode": [], "decode": [], "scores": [], "attention": [],
             "refusals": []}
    policies = [("error", "error", texts), ("skip", "error", odd["unknown"])]
    if vocab.unknown_token is not None:
        policies.append(("unk", "error", odd["unknown"]))
    if odd["long"]:
        policies.append(("error", "truncate", odd["long"]))
    for unknown, too_long, batch in policies:
        ids = vocab.encode_inputs(batch, unknown, too_long)
        cases["encode"].append({"texts": batch, "unknown": unknown, "too_long": too_long,
                                "ids": ids.tolist()})
    for precision in _variants(config):
        paths = ["step"] + (["fused"] if config.has_graph("onnx", precision, "greedy") else [])
        for greedy in paths:
            model = runtime.load(artifact, greedy=greedy, precision=precision)
            runs = [({}, texts), ({"max_length": max(1, vocab.max_output_length // 2)}, texts)]
            runs += [({"unknown": u, "too_long": t}, b) for u, t, b in policies[1:]]
            if greedy == "step":
                runs += [({"beam_size": w, "length_penalty": lp}, texts[:beam_texts])
                         for w, lp in BEAMS]
            for options, batch in runs:
                outputs = model.translate(batch, **options)
                cases["decode"].append({"precision": precision, "greedy": greedy,
                                        "options": options, "texts": batch,
                                        "outputs": outputs, "sha256": digest(outputs)})
        step = runtime.load(artifact, greedy="step", precision=precision)
        for width, lp in BEAMS[:2]:
            batch = texts[:beam_texts]
            outputs = step.translate(batch, beam_size=width, length_penalty=lp)
            scores = step.score(batch, outputs, length_penalty=lp)
            cases["scores"].append({"precision": precision, "beam_size": width,
                                    "length_penalty": lp, "texts": batch,
                                    "outputs": outputs, "scores": scores.tolist()})
        if config.attention is not None:
            maps = step.translate(texts[:beam_texts], return_attention=True)
            cases["attention"].append({"precision": precision, "texts": texts[:beam_texts],
                                       "maps": [{"output": m.text,
                                                 "input_tokens": list(m.input_tokens),
                                                 "output_tokens": list(m.output_tokens),
                                                 "weights": m.weights.tolist()}
                                                for m in maps]})
    cases["refusals"] = _refusals(runtime.load(artifact, greedy="step"), texts, odd)
    Path(out).write_text(json.dumps(cases, ensure_ascii=False) + "\n", encoding="utf-8")
    return cases


def replay(artifact: str | Path, cases_file: str | Path) -> list[str]:
    """This machine's Python runtime against the cases: the differences, described."""
    artifact = Path(artifact)
    cases = json.loads(Path(cases_file).read_text(encoding="utf-8"))
    failures = []
    found = hashlib.sha256((artifact / "artifact.json").read_bytes()).hexdigest()
    if found != cases["artifact_sha256"]:
        return [f"{artifact}: not the artifact the cases were written for"]
    models: dict = {}

    def model(precision: str, greedy: str):
        if (precision, greedy) not in models:
            models[precision, greedy] = runtime.load(artifact, greedy=greedy,
                                                     precision=precision)
        return models[precision, greedy]

    for case in cases["decode"]:
        got = model(case["precision"], case["greedy"]).translate(case["texts"],
                                                                 **case["options"])
        if digest(got) != case["sha256"]:
            bad = sum(a != b for a, b in zip(got, case["outputs"]))
            failures.append(f"decode {case['precision']}/{case['greedy']} {case['options']}: "
                            f"{bad} of {len(got)} outputs differ")
    for case in cases["scores"]:
        got = model(case["precision"], "step").score(case["texts"], case["outputs"],
                                                      length_penalty=case["length_penalty"])
        worst = max(abs(a - b) for a, b in zip(got.tolist(), case["scores"]))
        if worst > SCORE_ATOL:
            failures.append(f"scores {case['precision']} beam {case['beam_size']}: off by {worst:.2e}")
    return failures


def strings(cases: dict) -> int:
    return sum(len(c["outputs"]) for c in cases["decode"])


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "write":
        texts = [ln.split("\t")[0] for ln in
                 Path(argv[2]).read_text(encoding="utf-8").splitlines() if ln]
        cases = write_cases(argv[1], texts, argv[3])
        print(f"golden: {len(cases['decode'])} decode cases, {strings(cases)} strings, "
              f"{len(cases['refusals'])} refusals -> {argv[3]}")
        return 0
    if len(argv) == 3 and argv[0] == "replay":
        failures = replay(argv[1], argv[2])
        for f in failures:
            print(f"golden: DIFFERS: {f}", file=sys.stderr)
        return 1 if failures else 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    from runtime.console import quiet_native_noise

    quiet_native_noise()
    sys.exit(main(sys.argv[1:]))
