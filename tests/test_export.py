"""Export: graphs, formats, parity proof, op guard, accepted and refused models."""
from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import read_json, run_module, signal_part_way
from runtime.errors import InputError, VocabularyError
from runtime.metadata import sha256_file
from runtime.vocab import InputPadding, Vocabulary

QUIET = dict(log=lambda *a, **k: None)


def test_artifact_describes_itself(tiny_artifact):
    meta = read_json(tiny_artifact / "artifact.json")
    assert meta["format"] == "seq2seq-artifact" and meta["version"] == 3
    assert meta["onnx_encoder"] == "dynamic"  # one fused ONNX LSTM op
    assert meta["state"] == [{"name": "h0", "units": 32}, {"name": "c0", "units": 32}]
    assert meta["architecture"]["cell"] == "lstm" and meta["architecture"]["units"] == [32]
    assert meta["parity"]["passed"] is True
    assert {(g["format"], g["name"]) for g in meta["graphs"]} == {
        ("onnx", "encoder"), ("onnx", "decoder_step"), ("onnx", "greedy"),
        ("tflite", "encoder"), ("tflite", "decoder_step"), ("tflite", "greedy")}
    for g in meta["graphs"]:
        assert sha256_file(tiny_artifact / g["file"]) == g["sha256"]
    for key in ("tensorflow", "keras", "tf2onnx", "toolkit"):
        assert meta["versions"][key]
    assert meta["vocabulary"]["padding"] == {"side": "left", "token": None}
    checks = meta["parity"]["checks"]
    assert all(c["ok"] for c in checks)
    assert any(c["what"].startswith("greedy == Keras") for c in checks)


def test_onnx_graphs_are_checked_named_dynamic_and_carry_metadata(tiny_artifact):
    import onnx

    enc = onnx.load(str(tiny_artifact / "encoder.onnx"))
    onnx.checker.check_model(enc)
    props = {p.key: p.value for p in enc.metadata_props}
    assert props["seq2seq.graph"] == "encoder"
    assert json.loads(props["seq2seq.vocabulary"])["format"] == "seq2seq-vocab"
    (inp,) = enc.graph.input
    assert inp.name == "input_ids"
    dims = inp.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value")
    assert "LSTM" in {n.op_type for n in enc.graph.node}
    step = onnx.load(str(tiny_artifact / "decoder_step.onnx"))
    assert [i.name for i in step.graph.input] == ["token", "h0", "c0"]
    assert {o.name for o in step.graph.output} == {"probs", "h0_out", "c0_out", "next_token"}


def test_onnx_encoder_takes_any_length(tiny_artifact, reference):
    import onnxruntime as ort

    vocab = reference.vocab
    session = ort.InferenceSession(str(tiny_artifact / "encoder.onnx"))
    for steps in (1, 5, vocab.max_input_length):
        ids = np.random.default_rng(steps).integers(0, vocab.input_size, (3, steps), np.int32)
        h, c = session.run(["h0", "c0"], {"input_ids": ids})
        want_h, want_c = reference.encode(ids)
        assert np.abs(h - want_h).max() < 1e-5 and np.abs(c - want_c).max() < 1e-5


def test_tflite_op_guard_on_real_files(tiny_artifact, tmp_path):
    import tensorflow as tf

    from export.errors import OpGuardError
    from export.opguard import check_tflite

    step_ops = check_tflite(tiny_artifact / "decoder_step.tflite", allow_while=False)
    assert {"FULLY_CONNECTED", "GATHER", "SOFTMAX", "ARG_MAX"} <= set(step_ops)
    assert "WHILE" in check_tflite(tiny_artifact / "greedy.tflite", allow_while=True)
    with pytest.raises(OpGuardError, match="greedy.tflite.*WHILE"):
        check_tflite(tiny_artifact / "greedy.tflite", allow_while=False)

    @tf.function(input_signature=[tf.TensorSpec([None, 2, 2], tf.float32)])
    def needs_flex(x):
        return tf.linalg.det(x)  # a Select TF (Flex) op

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [needs_flex.get_concrete_function()], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    flex = tmp_path / "flex.tflite"
    flex.write_bytes(converter.convert())
    with pytest.raises(OpGuardError, match="flex.tflite"):
        check_tflite(flex, allow_while=False)


BUILTIN = ["FULLY_CONNECTED", "GATHER", "SOFTMAX", "ARG_MAX", "LOGISTIC", "TANH"]


@pytest.mark.parametrize("bad, allow_while", [
    ("FlexMatrixDeterminant", True), ("CUSTOM", True), ("TensorListReserve", True),
    ("TensorListSetItem", True), ("VAR_HANDLE", True), ("READ_VARIABLE", True),
    ("ASSIGN_VARIABLE", True), ("CALL_ONCE", True), ("WHILE", False)])
def test_op_guard_refuses_each_forbidden_op(tiny_artifact, monkeypatch, bad, allow_while):
    """The guard's own rules, apart from the interpreter (which refuses some of these
    files before the guard would see them)."""
    from export import opguard
    from export.errors import OpGuardError

    assert opguard.refused_ops(BUILTIN + [bad], allow_while) == [bad]
    monkeypatch.setattr(opguard, "tflite_ops", lambda path: BUILTIN + [bad])
    with pytest.raises(OpGuardError, match=f"decoder_step.tflite .*: {bad}$"):
        opguard.check_tflite(tiny_artifact / "decoder_step.tflite", allow_while)


def test_op_guard_allows_builtin_ops_and_while_where_asked():
    from export.opguard import refused_ops

    assert refused_ops(BUILTIN, allow_while=False) == []
    assert refused_ops(BUILTIN + ["WHILE"], allow_while=True) == []


@pytest.mark.parametrize("lost, won, p_value", [
    # McNemar's exact test, one-sided: P(X >= lost) for X ~ Binomial(lost + won, 1/2).
    (3, 0, 1 / 8),
    (4, 1, 6 / 32),
    (12, 0, 1 / 4096),
])
def test_beam_below_greedy_against_the_truth_stops_export_only_beyond_chance(lost, won,
                                                                            p_value):
    """A learned model may prefer, under beam search, a few answers that are wrong;
    a beam that cuts answers short loses many. Both lose past the 1-point bound on
    200 inputs; only a loss that chance explains less than 1% of the time is fatal."""
    from dataclasses import asdict

    from export.parity import SIGNIFICANCE, _beam_truth_check

    targets = [[f"t{i}"] for i in range(200)]
    greedy = [f"t{i}" if i < 150 else "x" for i in range(200)]
    beam = list(greedy)
    for i in range(lost):
        beam[i] = "wrong"
    for i in range(won):
        beam[150 + i] = f"t{150 + i}"
    check = _beam_truth_check("onnx/fp32", "beam-4", greedy, beam, targets)
    assert check.value == (150 - lost + won) / 200 and not check.ok
    assert f"p = {p_value:.2g}" in check.bound
    assert check.fatal == (p_value < SIGNIFICANCE)
    assert json.loads(json.dumps(asdict(check)))["fatal"] is check.fatal  # artifact.json
    same = _beam_truth_check("onnx/fp32", "beam-4", greedy, greedy, targets)
    assert same.ok and same.fatal


def test_the_faster_measured_choice_is_kept():
    from export.parity import fastest

    assert fastest({"step": 120.0, "fused": 80.5}) == "fused"
    assert fastest({"step": 80.5, "fused": 120.0}) == "step"
    assert fastest({"unrolled": 3.0, "loop": 2.0}) == "loop"


def test_cli_exports_end_to_end_with_quantized_variants(tiny_run, tmp_path):
    out = tmp_path / "art"
    done = run_module("export", str(tiny_run / "model.keras"), "--out", str(out),
                      "--quantize", "int8,fp16", "--check-samples", "30")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "greedy == Keras" in done.stdout and "FAIL" not in done.stdout
    # TensorFlow's and LiteRT's start-up chatter stays off the user's terminal.
    for noise in ("oneDNN", "absl::InitializeLog", "cuInit", "XNNPACK"):
        assert noise not in done.stderr, done.stderr[:2000]
    meta = read_json(out / "artifact.json")
    variants = {(g["format"], g["precision"]) for g in meta["graphs"]}
    assert variants == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"),
                        ("tflite", "int8"), ("tflite", "fp16")}
    sizes = {(g["format"], g["precision"]): g["bytes"] for g in meta["graphs"]
             if g["name"] == "decoder_step"}
    assert sizes[("onnx", "int8")] < sizes[("onnx", "fp32")]
    assert sizes[("tflite", "int8")] < sizes[("tflite", "fp16")] < sizes[("tflite", "fp32")]
    import runtime

    # The recorded agreement of each quantized variant is what it decodes: the
    # share of the check inputs (the first 30 held-out) equal to fp32's strings.
    texts = [ln.split("\t")[0] for ln in
             (tiny_run / "heldout.tsv").read_text(encoding="utf-8").splitlines()[:30]]
    for fmt, precision in (("onnx", "int8"), ("tflite", "int8"), ("tflite", "fp16")):
        (check,) = [c for c in meta["parity"]["checks"]
                    if c["variant"] == f"{fmt}/{precision}" and c["what"].startswith("greedy")]
        got = runtime.load(out, backend=fmt, precision=precision, greedy="step").translate(texts)
        fp32 = runtime.load(out, backend=fmt, greedy="step").translate(texts)
        assert check["value"] == sum(a == b for a, b in zip(got, fp32)) / len(texts)
        assert check["what"] == "greedy == fp32 (30 inputs)"
    # Held-out pairs carry the truth: every variant's exact match against it is
    # recorded, and a quantized one is judged by the accuracy it loses.
    truth = [ln.split("\t")[1] for ln in
             (tiny_run / "heldout.tsv").read_text(encoding="utf-8").splitlines()[:30]]
    accuracy = meta["accuracy"]
    fused_graphs = {f"{g['format']}/{g['precision']} fused" for g in meta["graphs"]
                    if g["name"] == "greedy"}
    assert accuracy["pairs"] == 30 and set(accuracy["exact_match"]) == {
        f"{f}/{p}" for f, p in variants} | fused_graphs
    import sacrebleu

    for name, value in accuracy["exact_match"].items():
        fmt, rest = name.split("/")
        precision, *path = rest.split(" ")  # "int8", or "int8 fused" for a fused graph
        got = runtime.load(out, backend=fmt, precision=precision,
                           greedy="fused" if path else "step").translate(texts)
        assert value == sum(a == b for a, b in zip(got, truth)) / 30, name
        (check,) = [c for c in meta["parity"]["checks"]
                    if c["variant"] == name and c["what"] == "exact match vs truth (30 inputs)"]
        assert check["value"] == value
        chrf = sacrebleu.corpus_chrf(got, [truth]).score
        assert accuracy["quality"][name]["chrf"] == pytest.approx(chrf, abs=1e-5)
        (chrf_check,) = [c for c in meta["parity"]["checks"]
                         if c["variant"] == name and c["what"] == "chrF vs truth (30 inputs)"]
        if precision != "fp32":
            fp32 = " ".join([f"{fmt}/fp32", *path])
            base = accuracy["exact_match"][fp32]
            assert check["ok"] == (base - value <= 0.01)
            base_chrf = accuracy["quality"][fp32]["chrf"]
            assert chrf_check["ok"] == (base_chrf - chrf <= 1.0 + 1e-6)
    # Beam search and near-zero sampling are proven on each fp32 variant.
    for name in ("onnx/fp32", "tflite/fp32"):
        whats = {c["what"]: c for c in meta["parity"]["checks"] if c["variant"] == name}
        for what in ("beam-4 mean score - greedy's (30 inputs)",
                     "beam-4 exact match vs truth (30 inputs)"):
            assert whats[what]["fatal"] and whats[what]["ok"], what
        (cold,) = [c for w, c in whats.items() if w.startswith("sampling T=0.0001 == greedy")]
        assert cold["fatal"] and cold["ok"] and cold["value"] == 1.0
        beam = runtime.load(out, backend=name.split("/")[0]).translate(texts, beam_size=4)
        assert accuracy["beam4_quality"][name]["exact_match"] == pytest.approx(
            sum(a == b for a, b in zip(beam, truth)) / 30)
    fused = {g["precision"] for g in meta["graphs"]
             if g["name"] == "greedy" and g["format"] == "tflite"}
    assert fused == {"fp32", "int8", "fp16"}
    assert set(meta["greedy_path"]) == {"onnx/fp32", "tflite/fp32", "tflite/int8",
                                        "tflite/fp16"}
    # Each quantized fused graph decodes what its own step loop decodes.
    for fmt, precision in (("tflite", "int8"), ("tflite", "fp16")):
        fused = runtime.load(out, backend=fmt, precision=precision, greedy="fused")
        step = runtime.load(out, backend=fmt, precision=precision, greedy="step")
        assert fused.fused and fused.translate(texts) == step.translate(texts)
    again = run_module("export", str(tiny_run / "model.keras"), "--out", str(out))
    assert again.returncode == 2 and "--force" in again.stderr


def _keras_io_model(tmp_path: Path, latent: int, inputs: str, targets: str, max_in: int,
                    max_out: int, seed: int = 0):
    """A model built exactly like keras.io's example (unnamed layers), untrained."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    enc_in = keras.Input((None, len(inputs)))
    _, h, c = layers.LSTM(latent, return_state=True)(enc_in)
    dec_in = keras.Input((None, len(targets)))
    seq, _, _ = layers.LSTM(latent, return_sequences=True, return_state=True)(
        dec_in, initial_state=[h, c])
    model = keras.Model([enc_in, dec_in], layers.Dense(len(targets), activation="softmax")(seq))
    model.save(tmp_path / "s2s_model.keras")
    vocab = Vocabulary(tuple(inputs), tuple(targets), "\t", "\n", max_in, max_out,
                       InputPadding("right", " "))
    vocab.save(tmp_path / "vocab.json")
    return vocab


def test_keras_io_style_model_with_space_padding(tmp_path):
    from export.pipeline import export_artifact

    vocab = _keras_io_model(tmp_path, 24, " !,.?abcdefghij", "\t\n !abcdefgé", 12, 9)
    result = export_artifact(tmp_path / "s2s_model.keras", vocab, tmp_path / "art",
                             texts=["abc", "hi!", "j", "a b c d e f "], **QUIET)
    assert all(c.ok for c in result.checks)
    meta = read_json(tmp_path / "art" / "artifact.json")
    assert meta["vocabulary"]["padding"] == {"side": "right", "token": " "}


def test_untrained_model_of_the_seed_shape(tmp_path):
    """28 tokens on both sides, latent 128: the seed's exact model."""
    from export.pipeline import export_artifact

    chars = "abcdefghijklmnopqrstuvwxyz '"
    vocab = _keras_io_model(tmp_path, 128, chars, "\t\n" + chars[:26], 10, 10)
    result = export_artifact(tmp_path / "s2s_model.keras", vocab, tmp_path / "art", **QUIET)
    assert result.metadata["architecture"]["units"] == [128]
    assert all(c.ok for c in result.checks)


def test_not_a_seq2seq_model_is_refused_clearly(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.save(tmp_path / "dense.keras")
    Vocabulary(("a",), ("\t", "\n"), "\t", "\n", 3, 3).save(tmp_path / "vocab.json")
    done = run_module("export", str(tmp_path / "dense.keras"))
    assert done.returncode == 2
    assert "not a seq2seq model of the expected shape" in done.stderr
    assert "expected" in done.stderr and "found" in done.stderr
    assert "Traceback" not in done.stderr


def test_vocabulary_size_mismatch_is_refused(tmp_path):
    from export.pipeline import export_artifact

    _keras_io_model(tmp_path, 8, "abc ", "\t\nxy", 5, 4)
    wrong = Vocabulary(tuple("abc"), tuple("\t\nxy"), "\t", "\n", 5, 4)
    with pytest.raises(VocabularyError, match="3 input tokens .* 4 wide"):
        export_artifact(tmp_path / "s2s_model.keras", wrong, tmp_path / "art", **QUIET)
    assert not (tmp_path / "art").exists()


def test_missing_vocabulary_and_model_give_clear_errors(tmp_path):
    done = run_module("export", str(tmp_path / "none.keras"), "--vocab", str(tmp_path / "v"))
    assert done.returncode == 2 and "not found" in done.stderr
    (tmp_path / "m.keras").write_bytes(b"not a zip")
    done = run_module("export", str(tmp_path / "m.keras"))
    assert done.returncode == 2 and "--vocab" in done.stderr


def test_killed_export_leaves_previous_artifact_intact(tiny_run, tiny_artifact, tmp_path):
    import shutil

    out = tmp_path / "art"
    shutil.copytree(tiny_artifact, out)
    before = (out / "artifact.json").read_bytes()
    proc = signal_part_way(["export", str(tiny_run / "model.keras"), "--out", str(out),
                            "--force"], tmp_path, ".art.partial-*/*.onnx", signal.SIGKILL)
    proc.communicate(timeout=60)
    assert (out / "artifact.json").read_bytes() == before
    # What is left of the killed run is hidden and does not claim to have passed.
    for partial in tmp_path.glob(".art.partial-*"):
        meta = partial / "artifact.json"
        assert not meta.exists() or read_json(meta)["parity"]["passed"] is False
    done = run_module("export", str(tiny_run / "model.keras"), "--out", str(out), "--force",
                      "--formats", "onnx")
    assert done.returncode == 0, done.stderr[-2000:]


def test_export_killed_after_its_metadata_is_first_written_leaves_nothing_that_loads(
        tiny_run, tmp_path):
    """SIGKILL once artifact.json (``passed: false``) is in the staging folder, while
    parity is being checked: no artifact appears at --out, and what is left loads
    nowhere as a verified artifact."""
    out = tmp_path / "art"
    proc = signal_part_way(["export", str(tiny_run / "model.keras"), "--out", str(out),
                            "--formats", "onnx"], tmp_path, ".art.partial-*/artifact.json",
                           signal.SIGKILL)
    proc.communicate(timeout=60)
    assert not out.exists()
    partials = list(tmp_path.glob(".art.partial-*"))
    assert partials and all(read_json(p / "artifact.json")["parity"]["passed"] is False
                            for p in partials)
    import runtime

    for partial in partials:
        with pytest.raises(runtime.ArtifactError, match="parity"):
            runtime.load(partial)
    done = run_module("export", str(tiny_run / "model.keras"), "--out", str(out),
                      "--formats", "onnx")
    assert done.returncode == 0, done.stderr[-2000:]


def test_keras_io_vocabulary_helper(tmp_path):
    data = tmp_path / "fra.txt"
    data.write_text("Go on.\tVa !\tCC-BY\nHi.\tSalut !\tCC-BY\nRun!\tCours\u202f!\tCC-BY\n"
                    "Who?\tQui ?\tCC-BY\n", encoding="utf-8")
    done = run_module("export.keras_io_vocab", str(data), "--samples", "3", "--out",
                      str(tmp_path / "vocab.json"))
    assert done.returncode == 0, done.stderr
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab.input_tokens == tuple(sorted(set("Go on.Hi.Run!")))  # 4th line not used
    assert vocab.target_tokens == tuple(sorted(set("Va !Salut !Cours\u202f!") | {"\t", "\n"}))
    assert (vocab.start_token, vocab.end_token) == ("\t", "\n")
    assert vocab.padding == InputPadding("right", " ")
    assert vocab.max_input_length == 6 and vocab.max_output_length == len("Cours\u202f!") + 1
    no_space = tmp_path / "nospace.txt"
    no_space.write_text("a\tb\nc\td\n", encoding="utf-8")
    done = run_module("export.keras_io_vocab", str(no_space), "--out", str(tmp_path / "v2"))
    assert done.returncode == 2 and "space" in done.stderr


KERAS2_SCRIPT = r"""
import sys
import numpy as np
import tf_keras as keras
from tf_keras.layers import LSTM, Dense, Input

out, ni, nt = sys.argv[1], 8, 9
keras.utils.set_random_seed(0)
enc_in = Input(shape=(None, ni))
_, h, c = LSTM(16, return_state=True)(enc_in)
dec_in = Input(shape=(None, nt))
dec_out, _, _ = LSTM(16, return_sequences=True, return_state=True)(dec_in, initial_state=[h, c])
model = keras.Model([enc_in, dec_in], Dense(nt, activation="softmax")(dec_out))
model.compile(optimizer="rmsprop", loss="categorical_crossentropy")
rng = np.random.default_rng(0)
x = np.eye(ni, dtype="float32")[rng.integers(0, ni, (32, 5))]
y = np.eye(nt, dtype="float32")[rng.integers(0, nt, (32, 6))]
model.fit([x, y], y, epochs=2, verbose=0)
model.save(out + "/s2s.h5")
model.save(out + "/s2s_model.keras")
model.save(out + "/s2s_savedmodel")
np.savez(out + "/probe.npz", x=x[:4], y=y[:4], probs=model.predict([x[:4], y[:4]], verbose=0))
"""


def test_keras2_models_from_tf_keras_export_and_savedmodel_is_explained(tmp_path):
    """The keras.io example under TensorFlow <= 2.15 saved Keras 2 files."""
    import subprocess
    import sys

    import runtime
    from export.pipeline import load_keras_model

    done = subprocess.run([sys.executable, "-c", KERAS2_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = np.load(tmp_path / "probe.npz")
    Vocabulary(tuple("abcdefgh"), ("\t", "\n") + tuple("ABCDEFG"), "\t", "\n", 5, 6,
               InputPadding("right", "a")).save(tmp_path / "vocab.json")
    for name in ("s2s.h5", "s2s_model.keras"):
        model = load_keras_model(tmp_path / name)  # Keras 3, through the adapter
        got = model.predict([probe["x"], probe["y"]], verbose=0)
        np.testing.assert_allclose(got, probe["probs"], atol=1e-6, err_msg=name)
        out = tmp_path / f"art-{name}"
        done = run_module("export", str(tmp_path / name), "--formats", "tflite",
                          "--out", str(out), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "greedy == Keras" in done.stdout
        assert len(runtime.load(out, backend="tflite").translate(["abc", "h"])) == 2

    done = run_module("export", str(tmp_path / "s2s_savedmodel"), "--out",
                      str(tmp_path / "art2"))
    assert done.returncode == 2
    assert "SavedModel directory" in done.stderr and ".save('s2s.h5')" in done.stderr
    assert not (tmp_path / "art2").exists()


def test_tflite_encoder_form_is_measured_and_either_form_gives_the_same_answers(
        tiny_run, tiny_artifact, heldout, reference, tmp_path):
    import runtime
    from export.parity import fastest
    from export.opguard import tflite_ops
    from export.pipeline import export_artifact

    forms = read_json(tiny_artifact / "artifact.json")["tflite_encoder"]
    assert set(forms) == {"fp32"}
    timing = forms["fp32"]["timing_us"]
    assert set(timing) == {"unrolled", "loop"} and min(timing.values()) > 0
    assert forms["fp32"]["style"] == fastest(timing)
    has_while = "WHILE" in tflite_ops(tiny_artifact / "encoder.tflite")
    assert has_while == (forms["fp32"]["style"] == "loop")

    vocab = Vocabulary.load(tiny_run / "vocab.json")
    other = "unrolled" if forms["fp32"]["style"] == "loop" else "loop"
    result = export_artifact(tiny_run / "model.keras", vocab, tmp_path / "art", ("tflite",),
                             texts=heldout, tflite_encoder=other, **QUIET)
    assert all(c.ok for c in result.checks)
    assert result.metadata["tflite_encoder"]["fp32"] == {"style": other, "timing_us": {}}
    assert ("WHILE" in tflite_ops(tmp_path / "art" / "encoder.tflite")) == (other == "loop")
    assert not list((tmp_path / "art").glob("*.tflite.*"))  # the other form's file is gone
    ids = vocab.encode_inputs(heldout[:8])
    mine = runtime.load(tmp_path / "art", backend="tflite").backend.encode(ids)
    theirs = runtime.load(tiny_artifact, backend="tflite").backend.encode(ids)
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, atol=1e-6)
    fused = runtime.load(tmp_path / "art", backend="tflite", greedy="fused")
    want = reference.greedy(heldout)
    assert fused.translate(heldout) == want
    assert [fused.translate([t])[0] for t in heldout[:5]] == want[:5]  # batch resized to 1
    step = runtime.load(tmp_path / "art", backend="tflite", greedy="step")
    assert step.translate(heldout) == want
    assert [step.translate([t])[0] for t in heldout[:5]] == want[:5]
    with pytest.raises(InputError, match="TFLite encoder form must be one of"):
        export_artifact(tiny_run / "model.keras", vocab, tmp_path / "x", tflite_encoder="rolled")
    assert not (tmp_path / "x").exists()
    done = run_module("export", str(tiny_run / "model.keras"), "--tflite-encoder", "rolled")
    assert done.returncode == 2 and "--tflite-encoder" in done.stderr


def test_every_numeric_check_of_a_real_export_is_within_fp32_atol(tiny_artifact):
    from export import parity

    assert parity.ATOL == 1e-5  # the promise in the README: fp32 outputs within 1e-5
    meta = read_json(tiny_artifact / "artifact.json")
    assert meta["parity"]["atol"] == 1e-5
    numeric = [c for c in meta["parity"]["checks"] if c["bound"].startswith("<= ")]
    # encoder h, c and step probs, h_out, c_out, per fp32 format
    assert len(numeric) == 10
    assert all(c["ok"] and 0 <= c["value"] <= 1e-5 for c in numeric)


def test_a_slightly_wrong_graph_fails_parity_and_writes_nothing(tiny_run, heldout, tmp_path,
                                                                monkeypatch):
    """Decoder recurrent weights scaled by 1.002 in the graphs export builds: strings
    may still agree, but the outputs drift past 1e-5 and export must refuse."""
    import dataclasses

    from export.errors import ParityError
    from export.graphs import GraphBuilder
    from export.pipeline import export_artifact

    original = GraphBuilder.__init__

    def perturbed(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.dec = [dataclasses.replace(w, recurrent=w.recurrent * 1.002) for w in self.dec]

    monkeypatch.setattr(GraphBuilder, "__init__", perturbed)
    vocab = Vocabulary.load(tiny_run / "vocab.json")
    out = tmp_path / "art"
    lines = []
    with pytest.raises(ParityError) as err:
        export_artifact(tiny_run / "model.keras", vocab, out, texts=heldout, fused=False,
                        tflite_encoder="unrolled", log=lambda *a, **k: lines.append(a))
    message = str(err.value)
    assert "greedy" not in message  # only the numbers can tell: the strings still agree
    for fmt in ("onnx", "tflite"):
        assert f"{fmt}/fp32 decoder_step.c0_out" in message
        assert f"{fmt}/fp32 encoder" not in message  # the encoder was left alone
    assert not out.exists() and not list(tmp_path.iterdir())


def _amplifying_model(tmp_path: Path) -> Path:
    """A 64-unit LSTM trained briefly, then its encoder's recurrent weights scaled
    by 10: a recurrence that amplifies float32's rounding over the input, as a
    large trained one can. Keras's own float32 cell state then lies about 1e-5 from
    the same model in float64, and the converters' graphs about 2e-5 from Keras."""
    import keras

    from train.__main__ import main

    run = tmp_path / "run"
    assert main(["--samples", "800", "--epochs", "3", "--latent-dim", "64",
                 "--batch-size", "32", "--test-size", "40", "--seed", "1", "--quiet",
                 "--out", str(run)]) == 0
    model = keras.models.load_model(run / "model.keras")
    scaled = 0
    for layer in model.layers:
        if layer.name.startswith("encoder"):
            for w in layer.weights:
                if "recurrent" in w.path:
                    w.assign(w.numpy() * 10.0)
                    scaled += 1
    assert scaled == 1
    model.save(run / "model.keras")
    return run


def test_a_recurrence_that_amplifies_rounding_is_held_to_kerass_own_float32_error(
        tmp_path, monkeypatch):
    """Such a model exports (a fixed 1e-5 bound refused it, and refused the
    bidirectional LSTMs trained on the CMU dictionary), its strings equal to
    Keras's, each output within 10x Keras's own float32 error; and the same model
    with its decoder's recurrent weights off by 0.2% is still refused."""
    import dataclasses

    from export import parity
    from export.errors import ParityError
    from export.graphs import GraphBuilder
    from export.pipeline import check_texts, export_artifact

    run = _amplifying_model(tmp_path)
    vocab = Vocabulary.load(run / "vocab.json")
    texts = check_texts(vocab, run / "heldout.tsv", 40)
    export_artifact(run / "model.keras", vocab, run / "artifact", texts=texts, fused=False,
                    log=lambda *a, **k: None)
    meta = read_json(run / "artifact" / "artifact.json")
    assert meta["parity"]["noise_factor"] == parity.NOISE_FACTOR == 10
    checks = {(c["variant"], c["what"]): c for c in meta["parity"]["checks"]}
    for fmt in ("onnx", "tflite"):
        cell = checks[(f"{fmt}/fp32", "encoder.c0")]
        assert cell["ok"] and "Keras's own float32 error" in cell["bound"], cell
        allowed = float(cell["bound"].split()[1])
        assert 1e-5 < allowed <= parity.MAX_ATOL and cell["value"] <= allowed
        assert checks[(f"{fmt}/fp32", f"greedy == Keras ({len(texts)} inputs)")]["ok"]

    original = GraphBuilder.__init__

    def perturbed(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.dec = [dataclasses.replace(w, recurrent=w.recurrent * 1.002) for w in self.dec]

    monkeypatch.setattr(GraphBuilder, "__init__", perturbed)
    with pytest.raises(ParityError, match="decoder_step.c0_out"):
        export_artifact(str(run / "model.keras"), vocab, str(tmp_path / "wrong"),
                        texts=texts, fused=False, log=lambda *a, **k: None)  # str paths too
    assert not (tmp_path / "wrong").exists()


def test_a_float64_copy_that_disagrees_cannot_loosen_the_bound(tiny_run, heldout, tmp_path,
                                                               monkeypatch):
    """Were the float64 copy wrong (its weights off by 1%), Keras's "own error"
    would be large and the bound with it: export refuses instead, naming it."""
    from export.errors import ParityError
    from export.pipeline import export_artifact
    from family import reference

    real = reference.float64_twin

    def off(model):
        twin = real(model)
        twin.set_weights([w * 1.01 for w in twin.get_weights()])
        return twin

    monkeypatch.setattr(reference, "float64_twin", off)
    vocab = Vocabulary.load(tiny_run / "vocab.json")
    with pytest.raises(ParityError, match="encoder"):
        export_artifact(tiny_run / "model.keras", vocab, tmp_path / "art", texts=heldout,
                        fused=False, formats=("onnx",), log=lambda *a, **k: None)
    assert not (tmp_path / "art").exists()


@pytest.mark.parametrize("broken", ["beam", "sampling"])
def test_export_proves_beam_search_and_sampling_on_the_model(learned, tmp_path, monkeypatch,
                                                             broken):
    """A beam search that cuts its answers one token short, or sampling that ignores
    its temperature, fails export's fatal mode checks on a model that has learned
    its task: no artifact is written."""
    from export.errors import ParityError
    from export.pipeline import export_artifact
    from runtime import decoding

    artifact, pairs = learned("plain")  # made (and proven) before anything is broken
    if broken == "beam":
        real_beam = decoding.beam_search
        monkeypatch.setattr(decoding, "beam_search",
                            lambda *a, **k: [s[:-1] for s in real_beam(*a, **k)])
        wanted = "onnx/fp32 beam-4 mean score - greedy's"
    else:
        real_sample = decoding.sample
        monkeypatch.setattr(decoding, "sample", lambda backend, ids, start, end, steps, _t,
                            top_k, rng: real_sample(backend, ids, start, end, steps, 1.0,
                                                    top_k, rng))
        wanted = "onnx/fp32 sampling T=0.0001 == greedy"
    run = artifact.parent
    vocab = Vocabulary.load(run / "vocab.json")
    out = tmp_path / "art"
    with pytest.raises(ParityError) as err:
        export_artifact(run / "model.keras", vocab, out, formats=("onnx",),
                        texts=[a for a, _ in pairs[:60]], fused=False,
                        log=lambda *a, **k: None)
    assert wanted in str(err.value)
    assert not out.exists()


def test_ort_files_decode_identically_with_their_own_parity_proof(tiny_run, reference,
                                                                  heldout, tmp_path):
    """--ort writes ORT-format files for ONNX Runtime Mobile (converted by the tool in
    the onnxruntime wheel) and the operator config of a reduced build; they are
    hashed, carry the contract digest, pass the same parity checks and decode as
    Keras."""
    from export.pipeline import export_artifact
    from runtime.embedded import contract_of
    from runtime.errors import InputError
    from runtime.metadata import sha256_file
    from runtime.vocab import Vocabulary

    import runtime

    vocab = Vocabulary.load(tiny_run / "vocab.json")
    out = tmp_path / "art"
    result = export_artifact(tiny_run / "model.keras", vocab, out, formats=("onnx",),
                             quantize=("int8",), texts=heldout, ort=True, **QUIET)
    ort = {(g["name"], g["precision"]): g for g in result.metadata["graphs"]
           if g["format"] == "ort"}
    assert set(ort) == {("encoder", "fp32"), ("decoder_step", "fp32"), ("greedy", "fp32"),
                        ("encoder", "int8"), ("decoder_step", "int8")}
    for g in ort.values():
        data = (out / g["file"]).read_bytes()
        assert data[4:8] == b"ORTM" and g["sha256"] == sha256_file(out / g["file"])
        assert len(contract_of(data, "ort")) == 64
    config = result.metadata["ort_required_operators"]
    assert sha256_file(out / config["file"]) == config["sha256"]
    assert "LSTM" in (out / config["file"]).read_text() or "MatMul" in (
        out / config["file"]).read_text()
    checked = {(c.variant, c.what) for c in result.checks if c.ok}
    assert ("ort/fp32", "decoder_step.probs") in checked
    assert ("ort/fp32", f"greedy == Keras ({len(heldout)} inputs)") in checked
    want = reference.greedy(heldout)
    for greedy in ("step", "fused"):
        model = runtime.load(out, file_format="ort", greedy=greedy)
        assert model.translate(heldout) == want
    assert runtime.load(out, file_format="ort", precision="int8").translate(heldout) == \
        runtime.load(out, precision="int8").translate(heldout)
    with pytest.raises(InputError, match="does not run on the tflite backend"):
        runtime.load(out, backend="tflite", file_format="ort")


@pytest.mark.parametrize("change, message", [
    (dict(formats=()), "formats is empty"),
    (dict(formats=("onnx", "coreml")), "formats must be among"),
    (dict(quantize=("int4",)), "quantize must be among"),
    (dict(formats=("onnx",), quantize=("fp16",)), "fp16 variants are TFLite files"),
    (dict(formats=("tflite",), ort=True), "--ort needs the onnx format"),
    (dict(opset=99), "opset must be an integer from 7 to 21"),
    (dict(tflite_encoder="fast"), "TFLite encoder form must be one of"),
])
def test_export_options_refuse_what_cannot_be_written(change, message):
    """The notebook API gets the command line's checks (before, fp16 with ONNX alone
    quietly wrote no fp16 file)."""
    import export

    with pytest.raises(InputError, match=message):
        export.ExportOptions(**change).validate()
