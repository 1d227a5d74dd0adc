"""The fused greedy graph: one backend call per batch, same strings as the step loop."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from conftest import read_json
from runtime.errors import ArtifactError


def test_artifact_has_fused_graphs_with_parity_and_a_measured_choice(tiny_artifact):
    from export.parity import fastest

    meta = read_json(tiny_artifact / "artifact.json")
    fused = {g["format"] for g in meta["graphs"] if g["name"] == "greedy"}
    assert fused == {"onnx", "tflite"}
    checks = [c for c in meta["parity"]["checks"] if c["variant"].endswith(" fused")]
    assert len(checks) == 4 and all(c["ok"] for c in checks)
    for variant in ("onnx/fp32", "tflite/fp32"):
        timing = meta["greedy_timing_us"][variant]
        assert timing["step"] > 0 and timing["fused"] > 0
        assert meta["greedy_path"][variant] == fastest(timing)


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
    """Columns after the last row's end token are never written (they stay 0), where
    a graph running all steps would write the tokens decoded after the end token."""
    model = runtime.load(tiny_artifact, greedy="fused")
    vocab = model.vocabulary
    steps = vocab.max_output_length
    ids = vocab.encode_inputs(heldout)
    out, lengths = model.backend.greedy(ids)
    assert out.shape == (len(heldout), steps) and lengths.shape == (len(heldout),)
    for row, n in zip(out, lengths):
        assert n == steps or row[n] == vocab.end_id
    # Batches whose rows all end early: what the step graph decodes past the end.
    done = int(lengths.max()) + 1
    assert done < steps, "every row must end early for this test"
    state = model.backend.encode(ids)
    token = np.full(len(ids), vocab.start_id, np.int32)
    past_end = []
    for t in range(steps):
        _, state, token, _ = model.backend.step(token, state)
        if t >= done:
            past_end.append(token)
    assert np.any(np.stack(past_end) != 0), "a never-stopping graph would be invisible"
    assert not out[:, done:].any()


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


@pytest.mark.parametrize("recorded", ["step", "fused"])
def test_auto_takes_the_path_export_recorded(tiny_artifact, tmp_path, recorded):
    import json
    import shutil

    art = tmp_path / "art"
    shutil.copytree(tiny_artifact, art)
    meta = read_json(art / "artifact.json")
    meta["greedy_path"] = {v: recorded for v in meta["greedy_path"]}
    (art / "artifact.json").write_text(json.dumps(meta))
    for backend in ("onnx", "tflite"):
        assert runtime.load(art, backend=backend).fused == (recorded == "fused")
        assert runtime.load(art, backend=backend, greedy="step").fused is False
        assert runtime.load(art, backend=backend, greedy="fused").fused is True


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
