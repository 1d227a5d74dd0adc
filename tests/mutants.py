"""Hand-written mutations of the project's central promises, each applied alone to
a copy of the source tree, with the tests that should catch it. A mutation the
tests survive is a hollow spot in the suite.

    make mutants                       # every mutation (about 30 minutes on 2 cores)
    python tests/mutants.py --list     # names only
    python tests/mutants.py parity-atol sampling-argmax

Each mutation's tests first run on the unmutated tree (the baseline); a failure
there stops the run, since a failing test would "catch" every mutant.

Exit code: 0 when every mutation is caught, 1 otherwise, 2 when the baseline or a
mutation's text is wrong. Not part of CI (slow).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str  # must occur exactly once in ``file``
    new: str
    tests: tuple[str, ...]  # pytest arguments that should fail once it is applied


MUTANTS = (
    Mutant("parity-atol", "export/parity.py", "ATOL = 1e-5", "ATOL = 1.0",
           ("tests/test_export.py", "-k", "slightly_wrong or within_fp32")),
    Mutant("parity-ignores-numbers", "export/parity.py",
           "checks.append(Check(name, key, value, bound, value <= atol))",
           "checks.append(Check(name, key, value, bound, value == value))",
           ("tests/test_export.py", "-k", "slightly_wrong")),
    Mutant("parity-fixed-atol-only", "export/parity.py",
           "return min(MAX_ATOL, max(ATOL, NOISE_FACTOR * keras_error))", "return ATOL",
           ("tests/test_export.py", "-k", "amplifies")),
    Mutant("parity-noise-unbounded", "export/parity.py",
           "return min(MAX_ATOL, max(ATOL, NOISE_FACTOR * keras_error))",
           "return max(ATOL, 1e6 * keras_error)",
           ("tests/test_export.py", "-k", "amplifies")),
    Mutant("parity-twin-suspect-ignored", "export/parity.py",
           "        if noise[key] * NOISE_FACTOR > MAX_ATOL:  # past the cap: no bound is honest",
           "        if False:",
           ("tests/test_export.py", "-k", "float64_copy")),
    Mutant("int8-io-zero-point-sign", "runtime/backends/litert.py",
           "                                -128, 127).astype(np.int8)",
           "                                -128, 127).astype(np.int8) - 2 * q[1]",
           ("tests/test_integer.py", "-k", "int8_io_decodes")),
    Mutant("litert-plain-ignores-outputs", "runtime/backends/litert.py",
           "            self.plain = not any(self.quantize) and not any(self.dequantize)",
           "            self.plain = not any(self.quantize)",
           ("tests/test_integer.py", "-k", "int8_io_decodes")),
    Mutant("int8-io-scale-unchecked", "runtime/backends/litert.py",
           "    if not (abs(given[0] - scale) <= 1e-6 * scale and given[1] == zero):",
           "    if False:",
           ("tests/test_integer.py", "-k", "disagree")),
    Mutant("int16x8-argmax-float-anywhere", "export/opguard.py",
           '            if name == "ARG_MAX" and all(i in argmax for i in touched):',
           '            if name in ("ARG_MAX", "DEQUANTIZE"):',
           ("tests/test_integer.py", "-k", "sixteen_bit")),
    Mutant("opguard-lets-flex-through", "export/opguard.py",
           "or op.startswith(\"Flex\")", "or op.startswith(\"Flax\")",
           ("tests/test_export.py", "-k", "op_guard")),
    Mutant("opguard-lets-tensorlist-through", "export/opguard.py",
           "or \"TensorList\" in op", "or \"TensorArray\" in op",
           ("tests/test_export.py", "-k", "op_guard")),
    Mutant("opguard-lets-while-through", "export/opguard.py",
           "(op == \"WHILE\" and not allow_while)", "(op == \"WHILE\" and allow_while is None)",
           ("tests/test_export.py", "-k", "op_guard")),
    Mutant("opguard-lets-variables-through", "export/opguard.py",
           "FORBIDDEN = {\"VAR_HANDLE\", \"READ_VARIABLE\",", "FORBIDDEN = {",
           ("tests/test_export.py", "-k", "op_guard")),
    Mutant("sampling-argmax", "runtime/decoding.py",
           "token = np.array([rng.choice(len(w), p=w) for w in weights], dtype=np.int32)",
           "token = weights.argmax(axis=1).astype(np.int32)",
           ("tests/test_runtime.py", "-k", "sampling or top_k")),
    Mutant("top-k-ignored", "runtime/decoding.py", "if 0 < top_k < logits.shape[1]:",
           "if top_k < 0:", ("tests/test_runtime.py", "-k", "sampling or top_k or top_1")),
    Mutant("length-penalty-ignored", "runtime/decoding.py",
           "last, denominator = t == steps - 1, (t + 1) ** length_penalty",
           "last, denominator = t == steps - 1, t + 1",
           ("tests/test_runtime.py", "-k", "exhaustive")),
    # Beam search: the rule users were once given, piece by piece.
    Mutant("beam-finishes-outside-top-k", "runtime/decoding.py",
           "if rank < width and score / denominator > best_score[who]:",
           "if rank < 2 * width and score / denominator > best_score[who]:",
           ("tests/test_beam.py", "-k", "weak_ending or random_tables")),
    Mutant("beam-stops-at-first-finished", "runtime/decoding.py",
           "if kept and _ceiling(leader, t, steps, length_penalty) > best_score[who]:",
           "if kept and best_score[who] == -np.inf:",
           ("tests/test_beam.py", "-k", "weak_ending or random_tables")),
    Mutant("beam-rows-stay-when-an-input-leaves", "runtime/decoding.py",
           "if rows != unmoved[:n * beams]:", "if rows != unmoved[:len(rows)]:",
           ("tests/test_beam.py", "-k", "random_tables")),
    Mutant("beam-bound-ignores-penalty", "runtime/decoding.py",
           "length = steps if length_penalty > 0 else t + 2", "length = t + 2",
           ("tests/test_beam.py", "-k", "weak_ending or random_tables")),
    # Full-integer export: the guard's integer mode, and a calibration apart from the
    # inputs the checks judge.
    Mutant("integer-guard-off", "export/opguard.py", "    if integer:\n",
           "    if False:\n", ("tests/test_integer.py", "-k", "integer_and_calibrated")),
    Mutant("calibration-on-the-checked-inputs", "export/pipeline.py",
           "keep = [i for i, t in enumerate(texts) if t not in seen]",
           "keep = list(range(len(texts)))",
           ("tests/test_integer.py", "-k", "integer_and_calibrated")),
    Mutant("masked-attention-drops-padding-by-1e9", "export/graphs.py",
           "floor = tf.reduce_min(scores, axis=-1, keepdims=True) - MASK_MARGIN",
           "floor = scores - 1e9", ("tests/test_integer.py", "-k", "within_the_gate")),
    Mutant("javascript-beam-stops-at-first-finished", "web/seq2seq.mjs",
           "if (ceiling <= bestScore) break;", "if (bestScore > -Infinity) break;",
           ("tests/test_web.py", "-k", "learned")),
    Mutant("javascript-length-penalty-dropped", "web/seq2seq.mjs",
           "const denominator = (t + 1) ** lengthPenalty;", "const denominator = t + 1;",
           ("tests/test_web.py", "-k", "int8_and_plain")),
    Mutant("javascript-state-size-fixed-to-2", "web/seq2seq.mjs",
           "const carried = this.state.length;", "const carried = 2;",
           ("tests/test_family.py", "-k", "javascript and stacked-bidirectional")),
    Mutant("javascript-word-separator-emptied", "web/vocab.mjs",
           "this.separator = this.targetUnit === \"word\" ? \" \" : \"\";",
           "this.separator = \"\";",
           ("tests/test_family.py", "-k", "javascript and word-outputs")),
    Mutant("javascript-traversal-check-removed", "web/artifact.mjs",
           "if (name.includes(\"/\") || name.includes(\"\\\\\")", "if (false && name.includes(\"/\")",
           ("tests/test_web.py", "-k", "outside-the-artifact or traversing or absolute")),
    Mutant("javascript-int8-batched", "web/seq2seq.mjs",
           "this.perRow || batch === 1", "!this.perRow || batch === 1",
           ("tests/test_web.py", "-k", "int8_and_plain")),
    Mutant("javascript-unknown-policy-unchecked", "web/vocab.mjs",
           "check(unknown !== \"unk\" || this.unknownToken !== null,",
           "check(true,",
           ("tests/test_web.py", "-k", "unk-without or int8_and_plain")),
    Mutant("javascript-whitespace-by-trim", "web/vocab.mjs",
           "check(!ONLY_SPACE.test(text)", "check(text.trim() !== \"\"",
           ("tests/test_web.py", "-k", "vocabulary_rules")),
    Mutant("javascript-blank-lines-dropped", "web/node_decode.mjs",
           "return lines.map((line, i) => {",
           "return lines.filter((l) => l !== \"\").map((line, i) => {",
           ("tests/test_web.py", "-k", "blank-line")),
    Mutant("export-ignores-beam-check", "export/parity.py", "gain >= -1e-6))", "gain == gain))",
           ("tests/test_export.py", "-k", "proves")),
    Mutant("quality-ignores-alternatives", "family/quality.py",
           "hits = sum(out in r for out, r in zip(outputs, refs))",
           "hits = sum(out == r[0] for out, r in zip(outputs, refs))",
           ("tests/test_train.py", "-k", "quality or alternative")),
    Mutant("training-keeps-first-target-only", "train/data.py",
           "        if target not in targets:", "        if not targets:",
           ("tests/test_train.py", "-k", "distinct or alternative")),
    Mutant("greedy-one-token-short", "runtime/decoding.py", "lengths[ended] = t",
           "lengths[ended] = t - 1", ("tests/test_runtime.py", "-k", "greedy_equals")),
    Mutant("stream-ignores-end", "runtime/decoding.py", "        if tid == end:\n            break",
           "        if tid < 0:\n            break", ("tests/test_runtime.py", "-k", "stream")),
    Mutant("padding-side-flipped", "runtime/vocab.py", "if self.padding.side == \"left\":",
           "if self.padding.side != \"left\":",
           ("tests/test_runtime.py", "tests/test_fused.py", "tests/test_export.py")),
    Mutant("sha256-skipped", "runtime/metadata.py",
           "if hashlib.sha256(data).hexdigest() != graph.sha256:",
           "if hashlib.sha256(data).hexdigest() == \"\":",
           ("tests/test_runtime.py", "-k", "load_errors")),
    Mutant("fused-never-stops-early", "export/graphs.py",
           "return tf.logical_and(t < steps, tf.logical_not(tf.reduce_all(done)))",
           "return t < steps", ("tests/test_fused.py", "-k", "stops_early")),
    Mutant("auto-ignores-recorded-path", "runtime/model.py",
           "fused = greedy == \"fused\" or (", "fused = greedy == \"fused\" and (",
           ("tests/test_fused.py", "-k", "auto")),
    Mutant("slower-choice-kept", "export/parity.py", "return min(timing_us, key=timing_us.get)",
           "return max(timing_us, key=timing_us.get)",
           ("tests/test_export.py", "-k", "faster")),
    Mutant("runtime-imports-train", "runtime/decoding.py", "from .errors import InputError",
           "from .errors import InputError\nfrom train import errors as _errors",
           ("tests/test_runtime.py", "-k", "never_imports")),
    Mutant("mask-ignored-by-tflite-encoder", "export/graphs.py",
           "return tf.not_equal(input_ids, 0)[:, :, None] if self.parts.masked else None",
           "return None", ("tests/test_family.py", "-k", "embedding-mask-right")),
    Mutant("backward-direction-runs-forward", "export/graphs.py",
           "mask, backward=d == 1,", "mask, backward=False,",
           ("tests/test_family.py", "-k", "bidirectional-gru")),
    Mutant("gru-reset-gate-dropped", "export/cells.py",
           "candidate = tf.tanh(x_h + r * r_h)", "candidate = tf.tanh(x_h + r_h)",
           ("tests/test_family.py", "-k", "gru and decodes")),
    Mutant("zero-started-layer-given-a-state", "family/structure.py",
           "position[id(s[0][0])] if s else None)", "position[id(s[0][0])] if s else 0)",
           ("tests/test_family.py", "-k", "started_from_zeros")),
    Mutant("unicode-lowercasing", "runtime/vocab.py", "text = text.translate(_LOWER)",
           "text = text.lower()", ("tests/test_family.py", "-k", "text_vectorization")),
    Mutant("streamed-words-unspaced", "runtime/model.py", "separator = vocab.separator",
           "separator = \"\"", ("tests/test_family.py", "-k", "text_vectorization")),
    Mutant("litert-pool-never-grows", "runtime/backends/litert.py",
           "grow = self.size < self._max", "grow = False",
           ("tests/test_reliability.py", "-k", "eight_threads")),
    Mutant("mirrored-strategy-ignored", "train/distribution.py",
           "if name == \"mirrored\":", "if name == \"none\":",
           ("tests/test_train.py", "-k", "mirrored")),
    Mutant("attention-ignores-the-mask", "export/graphs.py",
           "scores = tf.where(mask > 0.5, scores, scores - 1e9)",
           "scores = tf.where(mask > 0.5, scores, scores)",
           ("tests/test_attention.py", "-k", "describes")),
    Mutant("attention-concat-order-fixed", "export/graphs.py",
           "x = tf.concat([context, x] if self.parts.attention.context_first",
           "x = tf.concat([context, x] if True",
           ("tests/test_attention.py", "-k", "hand_written")),
    Mutant("attention-maps-keep-padding", "runtime/alignment.py",
           "real = np.flatnonzero(input_ids != vocab.pad_id)",
           "real = np.arange(len(input_ids))",
           ("tests/test_attention.py", "-k", "maps_are_keras")),
    Mutant("int8-onnx-batched", "runtime/model.py",
           'per_row=backend == "onnx" and precision == "int8")', "per_row=False)",
           ("tests/test_batch_invariance.py",)),
    Mutant("contract-digest-ignored", "runtime/metadata.py",
           "    if found != want:", "    if found != found:",
           ("tests/test_reliability.py", "-k", "edited_metadata")),
    Mutant("corpus-resume-redoes-everything", "runtime/corpus/run.py",
           "done = store.done(lines, log) if resumed else set()", "done = set()",
           ("tests/test_corpus.py", "-k", "killed_run_resumes")),
    Mutant("multiworker-applies-no-gradients", "train/multiworker.py",
           "        optimizer.apply_gradients(zip(grads, model.trainable_variables))\n",
           "", ("tests/test_multiworker.py", "-k", "applies_its_gradients")),
    Mutant("corpus-force-ignored", "runtime/corpus/run.py", "store.check_outputs(force)",
           "store.check_outputs(False)", ("tests/test_corpus.py", "-k", "options_reach")),
    Mutant("tsv-read-as-csv", "runtime/corpus/sources.py",
           '"\\t" if suffix == ".tsv" else ","', '","',
           ("tests/test_corpus.py", "-k", "options_reach")),
    Mutant("corpus-lock-shared", "runtime/corpus/shards.py",
           "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)",
           "fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)",
           ("tests/test_hostile.py", "-k", "second_run")),
    Mutant("litert-pool-loses-failed-interpreter", "runtime/backends/litert.py",
           "        try:\n            return worker(*arrays)\n        finally:\n"
           "            self._free.put(worker)",
           "        result = worker(*arrays)\n        self._free.put(worker)\n"
           "        return result", ("tests/test_reliability.py", "-k", "back_to_the_pool")),
    Mutant("parity-passed-before-the-checks", "export/pipeline.py",
           '"parity": {"passed": False},  # until the checks below pass',
           '"parity": {"passed": True},', ("tests/test_export.py", "-k", "first_written")),
    Mutant("multiworker-peer-loss-unreported", "train/multiworker.py",
           "        raise TrainingError(f\"lost contact with another worker",
           "        raise RuntimeError(f\"lost contact with another worker",
           ("tests/test_multiworker.py", "-k", "lost_worker")),
    # The prefix step (family/prefix.py, export/prefix_graphs.py).
    Mutant("prefix-causality-unchecked", "family/prefix.py",
           "if moved > CAUSAL_ATOL:", "if moved > 1e9:",
           ("tests/test_prefix.py", "-k", "reads_the_future")),
    Mutant("prefix-token-written-one-late", "export/prefix_graphs.py",
           "here = tf.equal(tf.range(length)[None, :], at[:, None])",
           "here = tf.equal(tf.range(length)[None, :], at[:, None] + 1)",
           ("tests/test_prefix.py", "-k", "decodes_as_the_examples_own_loop")),
    Mutant("prefix-crossing-mask-dropped", "family/prefix.py",
           "parts = dataclasses.replace(parts, masked=tuple(m is not None for m in masks),",
           "parts = dataclasses.replace(parts, masked=tuple(False for m in masks),",
           ("tests/test_prefix.py", "-k", "attention_rnn")),
    Mutant("recorded-standardize-keeps-punctuation", "runtime/vocab.py",
           "return text.translate(str.maketrans(\"\", \"\", rule[\"strip\"])) if rule[\"strip\"] else text",
           "return text",
           ("tests/test_prefix.py", "-k", "standardization")),
    Mutant("javascript-recorded-standardize-ignored", "web/vocab.mjs",
           "if (typeof rule === \"object\") {", "if (typeof rule === \"object\" && false) {",
           ("tests/test_web.py", "-k", "vocabulary_rules")),
    Mutant("cached-key-written-one-late", "family/cached.py",
           "self.here = tf.equal(tf.range(length)[None, :], self.at[:, None])  # [batch, T]",
           "self.here = tf.equal(tf.range(length)[None, :], self.at[:, None] + 1)",
           ("tests/test_cached.py", "-k", "sampler_loop")),
    Mutant("cached-step-sees-empty-future-slots", "family/cached.py",
           "self.causal = tf.range(length)[None, :] <= self.at[:, None]  # [batch, T]",
           "self.causal = tf.range(length)[None, :] >= 0",
           ("tests/test_cached.py", "-k", "sampler_loop")),
    Mutant("cached-encoder-padding-unmasked", "family/cached.py",
           "encoder_padding_mask=None if mask is None else tf.greater(mask, 0.5),",
           "encoder_padding_mask=None,",
           ("tests/test_cached.py", "-k", "train_arch_transformer_exports")),
    Mutant("cached-mha-cross-padding-unmasked", "family/cached.py",
           "keys = tf.greater(mask, 0.5)[:, None, :] if c.value_masked else None",
           "keys = None",
           ("tests/test_cached_mha.py", "-k", "padding_included or decodes_as")),
    Mutant("scaling-floor-from-every-file", "benchmarks/scaling.py",
           '"floor_us": step_bytes / bandwidth * 1e6,',
           '"floor_us": size / bandwidth * 1e6,',
           ("tests/test_benchmarks.py", "-k", "scaling")),
    Mutant("cached-mha-padding-keys-attended", "family/cached.py",
           "mask = here.self_keys(c.value_masked)[:, None, :]  # [batch, 1, T]",
           "mask = here.self_keys(False)[:, None, :]  # [batch, 1, T]",
           ("tests/test_cached_mha.py", "-k", "padding_included and masked")),
)


def _copy_tree(dest: Path) -> None:
    # Not .cache: the arm64 check's aarch64 root holds device files a copy would read
    # for ever. The npm packages are linked, not copied (hundreds of MB, unchanged).
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
        ".venv", ".git", ".cache", "runs", "build", "*.egg-info", "__pycache__",
        ".pytest_cache", ".hypothesis", "node_modules"))
    modules = ROOT / "web" / "node_modules"
    if modules.is_dir():
        (dest / "web" / "node_modules").symlink_to(modules)


def _pytest(tree: Path, args: tuple[str, ...], timeout: int) -> tuple[int, float]:
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p",
                               "no:cacheprovider", *args], cwd=tree, capture_output=True,
                              text=True, timeout=timeout, env=_env(tree))
        code = done.returncode
    except subprocess.TimeoutExpired:
        code = -1  # a hang counts as caught: the suite did not pass
    return code, time.monotonic() - started


def _env(tree: Path) -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(tree), "TF_CPP_MIN_LOG_LEVEL": "2"}


def _baseline(tmp: str, mutants: list[Mutant], timeout: int) -> bool:
    """The targets must pass on the unmutated tree first: a broken or flaky test, a
    collection error or a timeout would otherwise "catch" every mutant."""
    tree = Path(tmp) / "unmutated"
    _copy_tree(tree)
    ok = True
    for tests in dict.fromkeys(m.tests for m in mutants):
        code, seconds = _pytest(tree, tests, timeout)
        if code != 0:
            print(f"baseline: {' '.join(tests)} fails without any mutation (pytest exit "
                  f"{code}); fix it first", flush=True)
            ok = False
    shutil.rmtree(tree)
    return ok


def run(mutants: list[Mutant], timeout: int) -> int:
    caught = 0
    with tempfile.TemporaryDirectory(prefix="mutants-") as tmp:
        if not _baseline(tmp, mutants, timeout):
            return 2
        print(f"baseline: the targets of {len(mutants)} mutation(s) pass unmutated",
              flush=True)
        for m in mutants:
            tree = Path(tmp) / m.name
            _copy_tree(tree)
            path = tree / m.file
            source = path.read_text(encoding="utf-8")
            if source.count(m.old) != 1:
                print(f"{m.name}: ERROR: the text to mutate occurs {source.count(m.old)} "
                      f"times in {m.file}; update tests/mutants.py", flush=True)
                return 2
            path.write_text(source.replace(m.old, m.new), encoding="utf-8")
            code, seconds = _pytest(tree, m.tests, timeout)
            # pytest: 1 tests failed, 2 interrupted, 5 nothing collected (a wrong -k).
            if code == 5 or code == 4:
                print(f"{m.name}: ERROR: pytest exit {code} (no tests selected?)", flush=True)
                return 2
            verdict = "caught" if code != 0 else "SURVIVED"
            caught += code != 0
            print(f"{m.name:34s} {verdict:9s} {seconds:6.0f} s", flush=True)
            shutil.rmtree(tree)
    print(f"score: {caught}/{len(mutants)} mutations caught")
    return 0 if caught == len(mutants) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Apply each hand-written mutation to a copy of "
                                "the tree and check that its tests fail.")
    p.add_argument("names", nargs="*", help="mutations to run (default: all)")
    p.add_argument("--list", action="store_true", help="list the mutations and exit")
    p.add_argument("--timeout", type=int, default=900, help="seconds per mutation's tests")
    args = p.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:34s} {m.file}")
        return 0
    by_name = {m.name: m for m in MUTANTS}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        p.error(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    return run([by_name[n] for n in args.names] or list(MUTANTS), args.timeout)


if __name__ == "__main__":
    sys.exit(main())
