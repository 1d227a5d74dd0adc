"""Every text gets the same answer whatever shares its batch: on each backend,
precision and greedy path, for strings, and for the step's probabilities within
1e-5. Hypothesis draws the batch compositions."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import runtime

PROBS_ATOL = 1e-5


@pytest.fixture(scope="module")
def models(quantized_artifact):
    config = runtime.load_config(quantized_artifact)
    loaded = {}
    for fmt, precision in config.variants():
        paths = ["step"] + (["fused"] if config.has_graph(fmt, precision, "greedy") else [])
        for path in paths:
            loaded[f"{fmt}/{precision}/{path}"] = runtime.load(
                quantized_artifact, backend=fmt, precision=precision, greedy=path)
    assert {"onnx/int8/step", "tflite/int8/fused", "tflite/fp16/step"} <= set(loaded)
    return loaded


@pytest.fixture(scope="module")
def alone(models, heldout):
    """Each text decoded on its own, and its first step's probabilities."""
    out = {}
    for name, model in models.items():
        start = model.vocabulary.start_id
        out[name] = [(model.translate([t])[0], model.step([start], model.encode([t]))[0][0])
                     for t in heldout]
    return out


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.integers(0, 39), min_size=2, max_size=12))
def test_answers_do_not_depend_on_the_rest_of_the_batch(models, alone, heldout, picks):
    texts = [heldout[i] for i in picks]
    for name, model in models.items():
        assert model.translate(texts, batch_size=len(texts)) == [
            alone[name][i][0] for i in picks], name
        start = model.vocabulary.start_id
        probs = model.step([start] * len(texts), model.encode(texts))[0]
        want = np.stack([alone[name][i][1] for i in picks])
        assert np.max(np.abs(probs - want)) <= PROBS_ATOL, name
