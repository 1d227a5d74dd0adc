"""The fused greedy graph: one backend call per batch, same strings as the step loop."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from conftest import read_json
from runtime.errors import ArtifactError


def test_artifact_has_fused_graphs_with_parity_and_a_measured_choice(tiny_artifact):
    meta = read_json(tiny_artifact / "artifact.json")
    fused = {g["format"] for g in meta["graphs"] if g["name"] == "greedy"}
    assert fused == {"onnx", "tflite"}
    checks = [c for c in meta["parity"]["checks"] if c["variant"].endswith(" fused")]
    assert len(checks) == 4 and all(c["ok"] for c in checks)
    for variant in ("onnx/fp32", "tflite/fp32"):
        timing = meta["greedy_timing_us"][variant]
        assert timing["step"] > 0 and timing["fused"] > 0
        assert meta["greedy_path"][variant] == min(timing, key=timing.get)


def test_fused_tflite_is_builtin_only_with_while(tiny_artifact):
    from export.opguard import check_tflite

    ops = check_tflite(tiny_artifact / "greedy.tflite", allow_while=True)
    assert "WHILE" in ops
    assert not any(op.startswith("Flex") or "TensorList" in op for op in ops)


def test_onnx_fused_graph_is_a_loop_with_dynamic_batch(tiny_artifact):
    import onnx

    model = onnx.load(str(tiny_artifact / "greedy.onnx"))
    assert "Loop" in {n.op_type for n in model.graph.node}
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_fused_equals_step_loop_and_keras(tiny_artifact, heldout, reference, backend):
    fused = runtime.load(tiny_artifact, backend=backend, greedy="fused")
    step = runtime.load(tiny_artifact, backend=backend, greedy="step")
    assert fused.fused and not step.fused
    want = reference.greedy(heldout)
    assert fused.translate(heldout) == want == step.translate(heldout)
    assert [fused.translate([t])[0] for t in heldout[:10]] == want[:10]
    assert fused.translate(heldout, batch_size=7) == want
    for n in (1, 3):
        assert fused.translate(heldout, max_length=n) == step.translate(heldout, max_length=n)
    # Beam search and sampling keep the step loop on a fused model.
    assert fused.translate(heldout[:4], beam_size=3) == step.translate(heldout[:4], beam_size=3)


def test_fused_graph_stops_early_once_every_row_ended(tiny_artifact, heldout):
    model = runtime.load(tiny_artifact, greedy="fused")
    ids = model.vocabulary.encode_inputs(heldout[:5])
    out, lengths = model.backend.greedy(ids)
    steps = model.vocabulary.max_output_length
    assert out.shape == (5, steps) and lengths.shape == (5,)
    assert np.all(lengths <= steps)
    for row, n in zip(out, lengths):
        if n < steps:
            assert row[n] == model.vocabulary.end_id


def test_greedy_option_errors(tiny_artifact, tmp_path):
    import json
    import shutil

    with pytest.raises(runtime.InputError, match="greedy"):
        runtime.load(tiny_artifact, greedy="fast")
    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    meta = read_json(art / "artifact.json")
    meta["graphs"] = [g for g in meta["graphs"] if g["name"] != "greedy"]
    (art / "artifact.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="no fused onnx fp32 greedy graph"):
        runtime.load(art, greedy="fused")
    assert not runtime.load(art).fused  # auto falls back to the step loop it has


def test_readme_procedure_without_the_python_runtime(tiny_artifact, heldout, reference):
    """What a Kotlin/C++ app does (README, "Without Python"): artifact.json, the bare
    LiteRT interpreter and nothing of this project, giving Keras's strings."""
    import hashlib
    import json

    from ai_edge_litert.interpreter import Interpreter

    meta = json.loads((tiny_artifact / "artifact.json").read_text(encoding="utf-8"))
    v = meta["vocabulary"]
    entry = next(g for g in meta["graphs"] if (g["name"], g["format"], g["precision"])
                 == ("greedy", "tflite", "fp32"))
    data = (tiny_artifact / entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    pad_token, side = v["padding"]["token"], v["padding"]["side"]
    pad = len(v["input_tokens"]) if pad_token is None else v["input_tokens"].index(pad_token)
    rows = []
    for text in heldout:
        ids = [v["input_tokens"].index(ch) for ch in text]
        fill = [pad] * (v["max_input_length"] - len(ids))
        rows.append(fill + ids if side == "left" else ids + fill)
    runner = Interpreter(model_content=data).get_signature_runner("serving_default")
    out = runner(input_ids=np.array(rows, dtype=np.int32))
    assert out["output_ids"].shape == (len(heldout), v["max_output_length"])
    texts = ["".join(v["target_tokens"][i] for i in row[:n])
             for row, n in zip(out["output_ids"], out["lengths"])]
    assert texts == reference.greedy(heldout)
