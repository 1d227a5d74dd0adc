"""Failure behaviour as a tested guarantee: corrupted artifacts, hostile input,
concurrency and interrupted runs never crash, hang or lose work."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime
from conftest import ROOT, TINY_TRAIN, read_json, run_module, signal_part_way
from runtime.errors import Seq2SeqError

MODEL_FILES = ("encoder.onnx", "decoder_step.onnx", "encoder.tflite", "decoder_step.tflite")

# Loads run in a fresh process, so a native crash (segfault, abort) fails the
# test instead of killing the test run. The child prints one line of JSON.
LOAD_SCRIPT = """
import json, sys
import runtime
try:
    model = runtime.load(sys.argv[1], backend=sys.argv[2], verify=sys.argv[3] == "1")
    out = model.translate([sys.argv[4]])
    print(json.dumps({"ok": True, "output": out}))
except runtime.Seq2SeqError as e:
    print(json.dumps({"ok": False, "type": type(e).__name__, "message": str(e)}))
"""


def load_in_subprocess(artifact: Path, backend: str, verify: bool, text: str) -> dict:
    done = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(artifact), backend,
                           "1" if verify else "0", text], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"crashed with {done.returncode}: {done.stderr[-800:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _corruptions(data: bytes, other: bytes):
    yield "empty", b""
    for frac in (0.01, 0.5, 0.99):
        yield f"truncated at {frac:.0%}", data[:int(len(data) * frac)]
    flipped = bytearray(data)
    for i in range(17, len(flipped), max(1, len(flipped) // 25)):
        flipped[i] ^= 0x5A
    yield "bytes flipped", bytes(flipped)
    yield "swapped with the other graph", other


def _backend(name: str) -> str:
    return "onnx" if name.endswith(".onnx") else "tflite"


@pytest.mark.parametrize("name", MODEL_FILES)
def test_corrupted_model_files_give_a_named_error(tiny_artifact, heldout, tmp_path, name):
    data = (tiny_artifact / name).read_bytes()
    other_name = name.replace("encoder", "X").replace("decoder_step", "encoder").replace(
        "X", "decoder_step")
    other = (tiny_artifact / other_name).read_bytes()
    for i, (label, content) in enumerate(_corruptions(data, other)):
        art = tmp_path / f"a{i}"
        shutil.copytree(tiny_artifact, art)
        (art / name).write_bytes(content)
        for verify in (True, False):
            result = load_in_subprocess(art, _backend(name), verify, heldout[0])
            if verify:
                assert not result["ok"], (label, result)
                assert result["type"] == "ArtifactError" and name in result["message"], label
            elif not result["ok"]:
                # Without hashes the backend's own parser must still refuse cleanly.
                assert result["type"] == "ArtifactError" and name in result["message"], label


def test_corrupted_metadata_gives_a_named_error(tiny_artifact, heldout, tmp_path):
    meta = (tiny_artifact / "artifact.json").read_text()
    other_version = json.loads(meta)
    other_version["version"] = 99
    wrong_hash = json.loads(meta)
    wrong_hash["graphs"][0]["sha256"] = "0" * 64
    outside = json.loads(meta)
    outside["graphs"][0]["file"] = "../" + outside["graphs"][0]["file"]
    cases = {"empty": "", "truncated": meta[: len(meta) // 2], "not json": "\x00\x01garbage",
             "nested 100,000 deep": "[" * 100_000 + "]" * 100_000,
             "a list": "[]", "other version": json.dumps(other_version),
             "wrong sha256": json.dumps(wrong_hash), "path outside": json.dumps(outside)}
    for i, (label, content) in enumerate(cases.items()):
        art = tmp_path / f"m{i}"
        shutil.copytree(tiny_artifact, art)
        (art / "artifact.json").write_text(content)
        result = load_in_subprocess(art, "onnx", True, heldout[0])
        assert not result["ok"] and result["type"] == "ArtifactError", (label, result)
        assert "artifact.json" in result["message"] or "sha256" in result["message"], label


def test_symlinked_model_file_is_refused(tiny_artifact, tmp_path):
    art = tmp_path / "a"
    shutil.copytree(tiny_artifact, art)
    (art / "encoder.onnx").unlink()
    os.symlink(tiny_artifact / "encoder.onnx", art / "encoder.onnx")
    for verify in (True, False):
        with pytest.raises(runtime.ArtifactError, match="symbolic link"):
            runtime.load(art, verify=verify)


def test_onnx_external_data_outside_the_artifact_is_refused(tiny_artifact, tmp_path):
    import onnx

    art = tmp_path / "a"
    shutil.copytree(tiny_artifact, art)
    model = onnx.load(str(art / "decoder_step.onnx"))
    onnx.save_model(model, str(art / "decoder_step.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    shutil.move(art / "weights.bin", tmp_path / "outside.bin")
    model = onnx.load(str(art / "decoder_step.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:  # onnx itself refuses to write "../"
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../outside.bin"
    onnx.save_model(model, str(art / "decoder_step.onnx"))
    meta = read_json(art / "artifact.json")
    for g in meta["graphs"]:
        if g["file"] == "decoder_step.onnx":
            from runtime.metadata import sha256_file

            g["sha256"] = sha256_file(art / g["file"])
            g["bytes"] = (art / g["file"]).stat().st_size
    (art / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(runtime.ArtifactError, match="external data"):
        runtime.load(art)


printable = st.text(st.characters(codec="utf-8"), max_size=300)


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_hostile_text_ends_in_a_result_or_our_error(tiny_artifact, backend):
    model = runtime.load(tiny_artifact, backend=backend)
    bound = model.vocabulary.max_output_length

    @settings(max_examples=150, deadline=5000, suppress_health_check=list(HealthCheck))
    @given(texts=st.lists(printable | st.sampled_from(["", "\x00", "\n\t\r", "🙂" * 50]),
                          max_size=5),
           unknown=st.sampled_from(["error", "skip"]),
           too_long=st.sampled_from(["error", "truncate"]),
           beam=st.integers(-2, 300), max_length=st.none() | st.integers(-2, bound + 3))
    def check(texts, unknown, too_long, beam, max_length):
        start = time.monotonic()
        try:
            out = model.translate(texts, beam_size=beam, max_length=max_length,
                                  unknown=unknown, too_long=too_long)
        except Seq2SeqError:
            return
        assert len(out) == len(texts)
        assert all(isinstance(s, str) and len(s) <= (max_length or bound) for s in out)
        assert time.monotonic() - start < 30

    check()


@pytest.mark.parametrize("argv, stdin", [
    (["\x07\x1b[2J\x7f"], None),
    ([], "\x00\x01\n"),  # NUL cannot be an argument, but can come on stdin
    (["x" * 100_000], None),
    ([""], None),
    ([], "ok\n\u202e\ud7ff\n\n" + "é" * 5000 + "\n"),
])
def test_hostile_cli_input_ends_cleanly(tiny_artifact, argv, stdin):
    done = run_module("runtime", str(tiny_artifact), *argv, input=stdin or "", timeout=60)
    assert done.returncode in (0, 2), done.stderr[-500:]
    assert "Traceback" not in done.stderr
    if done.returncode == 2:
        assert done.stderr.startswith("error:")


@pytest.mark.parametrize("argv, message", [
    (["--beam", "0"], "beam_size"),
    (["--max-length", "-3"], "max_length"),
    (["--threads", "0"], "threads"),
    (["--temperature", "1", "--seed", "-1"], "seed"),
    (["--beam", "3", "--length-penalty", "nan"], "length_penalty"),
])
def test_bad_cli_options_are_refused(tiny_artifact, heldout, argv, message):
    done = run_module("runtime", str(tiny_artifact), heldout[0], *argv, timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("error:"), done.stderr[-500:]
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", None], [["nested"]], {"a": 1}])
def test_non_strings_are_refused(tiny_artifact, bad):
    model = runtime.load(tiny_artifact)
    with pytest.raises(runtime.InputError):
        model.translate(bad)


def test_huge_batch(tiny_artifact, heldout):
    model = runtime.load(tiny_artifact, backend="tflite")
    texts = (heldout * 100)[:3000]
    out = model.translate(texts, batch_size=1024)
    assert out == model.translate(heldout) * (3000 // len(heldout)) + model.translate(
        heldout[:3000 % len(heldout)])


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_eight_threads_by_200_decodes_equal_serial(tiny_artifact, heldout, backend):
    model = runtime.load(tiny_artifact, backend=backend)
    texts = [heldout[i % len(heldout)] for i in range(1600)]
    serial = {t: model.translate([t])[0] for t in set(texts)}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: model.translate([t])[0], texts))
    assert results == [serial[t] for t in texts]
    if backend == "tflite" and (os.cpu_count() or 1) > 1:
        from runtime.backends.litert import POOL_SIZE

        # Concurrent callers got interpreters of their own, up to one per core.
        graph = model.backend._greedy if model.fused else model.backend._step
        assert 1 < graph.size <= POOL_SIZE == os.cpu_count()


def test_killed_training_keeps_previous_output_and_rerun_succeeds(tmp_path):
    from train.__main__ import main

    out = tmp_path / "run"
    args = [*TINY_TRAIN, "--samples", "300", "--epochs", "1"]
    assert main([*args, "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    proc = signal_part_way(["train", *args, "--epochs", "100", "--patience", "100", "--out",
                            str(out), "--force"], tmp_path, ".run.partial-*/model.keras",
                           signal.SIGKILL)
    proc.communicate(timeout=30)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    done = run_module("train", *args, "--out", str(out), "--force")
    assert done.returncode == 0, done.stderr[-2000:]
    assert read_json(out / "train.json")["epochs_run"] == 1


def test_edited_metadata_is_refused_by_the_digest_inside_each_model_file(
        tiny_artifact, heldout, tmp_path):
    """Reversing the target tokens in artifact.json (a valid vocabulary, hashes all
    still right) would decode confidently wrong strings: every model file carries a
    digest of its contract, and the runtime refuses the mismatch."""
    from runtime.embedded import contract_of

    for g in runtime.load_config(tiny_artifact).graphs:
        assert len(contract_of((tiny_artifact / g.file).read_bytes(), g.format)) == 64
    edits = {"reversed target tokens": lambda m: m["vocabulary"].update(
                 target_tokens=m["vocabulary"]["target_tokens"][::-1]),
             "longer inputs": lambda m: m["vocabulary"].update(
                 max_input_length=m["vocabulary"]["max_input_length"] + 5)}
    for i, (label, edit) in enumerate(edits.items()):
        art = tmp_path / f"e{i}"
        shutil.copytree(tiny_artifact, art)
        meta = read_json(art / "artifact.json")
        edit(meta)
        (art / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
        for backend in ("onnx", "tflite"):
            for verify in (True, False):
                result = load_in_subprocess(art, backend, verify, heldout[0])
                assert not result["ok"] and result["type"] == "ArtifactError", (label, result)
                assert "does not match this model file" in result["message"], label


def test_a_model_file_without_its_digest_is_refused(tiny_artifact, heldout, tmp_path):
    """A version-3 artifact whose ONNX encoder lost its contract digest (the file
    rewritten without it, and artifact.json's hash updated to match) is refused:
    the digest is required, not optional."""
    import onnx

    from runtime.metadata import sha256_file

    art = tmp_path / "stripped"
    shutil.copytree(tiny_artifact, art)
    model = onnx.load(art / "encoder.onnx")
    kept = [p for p in model.metadata_props if p.key != "seq2seq.contract_sha256"]
    assert len(kept) < len(model.metadata_props)
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, art / "encoder.onnx")
    meta = read_json(art / "artifact.json")
    for g in meta["graphs"]:
        if g["file"] == "encoder.onnx":
            g["sha256"], g["bytes"] = sha256_file(art / "encoder.onnx"), (
                art / "encoder.onnx").stat().st_size
    (art / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    result = load_in_subprocess(art, "onnx", True, heldout[0])
    assert not result["ok"] and result["type"] == "ArtifactError", result
    assert "carries no contract digest" in result["message"]


def test_a_litert_interpreter_that_fails_mid_call_goes_back_to_the_pool(tiny_artifact,
                                                                        heldout):
    """An interpreter that raises inside a call (here: the real interpreter refuses a
    float token) is returned to the pool, and the next call works."""
    model = runtime.load(tiny_artifact, backend="tflite", greedy="step")
    want = model.translate(heldout[:3])
    graph = model.backend._step
    state = model.encode(heldout[:1])
    with pytest.raises(Exception):
        graph(np.array([1.5], dtype=np.float32), *state)
    # Checked before any other call: a pool that lost it would block once full.
    assert graph.size == 1 and graph._free.qsize() == 1
    assert model.translate(heldout[:3]) == want
