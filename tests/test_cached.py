"""The cached step: KerasHub TransformerDecoder stacks decoded with their key/value
caches as state.

The answer keys are outside the code under test: keras.io's KerasHub translation
example's own decode loop (``GreedySampler`` over the whole model,
benchmarks/keras_hub_translation.py), the whole Keras model's probabilities at every
position, and the same model exported through the prefix step.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_json, replay_in_node, run_module

from benchmarks import keras_hub_translation as kh
from benchmarks.keras_io_transformer import make_pairs


def _truth(pairs):
    return [spa.replace("[start] ", "").replace(" [end]", "") for _, spa in pairs]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The KerasHub example, trained briefly, its held-out sentences, its own loop's
    decodes of them, and the artifacts of ``export.export_model`` (cached by auto,
    int8 and fp16 too; and the same model through the prefix step)."""
    import export

    model, eng, spa, _ = kh.train()
    held = kh.spanish(make_pairs(60, seed=5))
    texts = [e for e, _ in held]
    want = [kh.decode_sequences(model, eng, spa, [t]) for t in texts]
    vocab = export.from_text_vectorization(eng, spa)
    root = tmp_path_factory.mktemp("hub")
    quiet = dict(texts=texts, log=lambda *a, **k: None)
    export.export_model(model, vocab, root / "cached", quantize=("int8", "fp16"), **quiet)
    export.export_model(model, vocab, root / "prefix", step="prefix", formats=("onnx",),
                        fused=False, **quiet)
    return {"model": model, "vocab": vocab, "texts": texts, "want": want,
            "truth": _truth(held), "cached": root / "cached", "prefix": root / "prefix"}


def test_the_example_was_trained_until_it_translates(hub):
    assert sum(w == t for w, t in zip(hub["want"], hub["truth"])) >= 55, \
        list(zip(hub["want"], hub["truth"]))[:5]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("greedy", ["step", "fused"])
def test_cached_step_decodes_as_the_examples_own_sampler_loop(hub, backend, greedy):
    import runtime

    model = runtime.load(hub["cached"], backend=backend, greedy=greedy)
    assert model.translate(hub["texts"]) == hub["want"]
    assert [model.translate([t])[0] for t in hub["texts"][:8]] == hub["want"][:8]


def test_artifact_records_the_cached_step_and_its_state(hub):
    meta = read_json(hub["cached"] / "artifact.json")
    assert meta["version"] == 4 and meta["step"]["kind"] == "cached"
    length, heads, head_dim = kh.MAX_SEQUENCE_LENGTH, 2, 8  # embed 16 over 2 heads
    assert meta["state"] == [
        {"name": "prefix", "units": length, "dtype": "int32"},
        {"name": "position", "units": 1, "dtype": "int32"},
        {"name": "cache0", "units": 2 * length * heads * head_dim}]
    # The example's embeddings do not mask (mask_zero False): no memory mask.
    assert meta["memory"] == [{"name": "cross0", "shape": [2, length, heads, head_dim],
                               "dtype": "float32"}]
    assert meta["architecture"]["cached"]["decoder_layers"] == ["transformer_decoder"]
    assert {g["name"] for g in meta["graphs"]} == {"encoder", "decoder_step", "greedy"}
    assert meta["parity"]["passed"]


def _graphs(artifact, fmt="onnx"):
    from export.parity import step_backend

    return step_backend(artifact, fmt, "fp32")[1]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_cached_probabilities_equal_the_prefix_steps_and_keras_at_every_position(hub, fmt):
    """Stepping the same random prefixes token by token: the cached graph, the prefix
    graph and the whole Keras model give the same distribution at every position."""
    import tensorflow as tf

    vocab = hub["vocab"]
    ids = vocab.encode_inputs(hub["texts"][:16])
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, vocab.target_size, (len(ids), kh.MAX_SEQUENCE_LENGTH),
                          dtype=np.int32)
    tokens[:, 0] = vocab.start_id
    keras_probs = hub["model"]([tf.constant(ids), tf.constant(tokens)], training=False)
    cached, prefix = _graphs(hub["cached"], fmt), _graphs(hub["prefix"])
    c_state, p_state = cached.encode(ids), prefix.encode(ids)
    worst_prefix = worst_keras = 0.0
    for t in range(kh.MAX_SEQUENCE_LENGTH):
        c_probs, c_state, _, _ = cached.step(tokens[:, t], c_state)
        p_probs, p_state, _, _ = prefix.step(tokens[:, t], p_state)
        worst_prefix = max(worst_prefix, float(np.abs(c_probs - p_probs).max()))
        worst_keras = max(worst_keras, float(np.abs(c_probs - keras_probs[:, t]).max()))
    assert worst_prefix <= 1e-5 and worst_keras <= 1e-5, (worst_prefix, worst_keras)


def test_every_decoding_mode_runs_on_the_caches(hub):
    """Beams reorder the caches with their hypotheses (a beam's score is at least
    greedy's); a beam of one and a cold sampler are greedy; a stream joins to the
    greedy string; the quantized variants agree on this confident model."""
    import runtime

    texts = hub["texts"][:20]
    for backend in ("onnx", "tflite"):
        model = runtime.load(hub["cached"], backend=backend, greedy="step")
        greedy = model.translate(texts)
        beam = model.translate(texts, beam_size=4)
        assert np.all(model.score(texts, beam) >= model.score(texts, greedy) - 1e-6)
        assert model.translate(texts, beam_size=1) == greedy
        assert model.translate(texts, temperature=1e-4, seed=1) == greedy
        assert "".join(model.stream(texts[3])) == greedy[3]
    for backend, precision in (("onnx", "int8"), ("tflite", "int8"), ("tflite", "fp16")):
        q = runtime.load(hub["cached"], backend=backend, precision=precision)
        assert q.translate(texts) == greedy


def test_cached_golden_cases_replay_in_node(hub, tmp_path):
    """The JavaScript runtime carries the flattened caches and the rank-5 cross
    keys and values as listed: the Python runtime's answers in every mode."""
    summary = replay_in_node(hub["cached"], hub["texts"][:24], tmp_path / "cases.json")
    assert summary["strings"] > 0


def test_a_custom_attention_decoder_stays_on_the_prefix_step(tmp_path):
    """keras.io's other Transformer (its own layers, MultiHeadAttention inside them)
    cannot be read by structure: auto keeps the prefix step and says why; --step
    cached refuses it by name (its custom position embedding, the first thing not
    recognised)."""
    import export
    from benchmarks import keras_io_transformer as kio
    from family.errors import ModelShapeError

    model = kio.build()
    pairs = make_pairs(200)
    from keras.layers import TextVectorization

    eng = TextVectorization(max_tokens=kio.vocab_size, output_sequence_length=kio.sequence_length)
    spa = TextVectorization(max_tokens=kio.vocab_size, output_sequence_length=kio.sequence_length + 1,
                            standardize=kio.custom_standardization)
    eng.adapt([p[0] for p in pairs])
    spa.adapt([p[1] for p in pairs])
    vocab = export.from_text_vectorization(eng, spa)
    with pytest.raises(ModelShapeError, match="not a decoder the cached step recognises.*found "
                                              "benchmarks.PositionalEmbedding .* reading the "
                                              "decoder input"):
        export.export_model(model, vocab, tmp_path / "a", step="cached", formats=("onnx",),
                            log=lambda *a, **k: None)
    assert not (tmp_path / "a").exists()
    from export.pipeline import locate_step
    from family.prefix import PrefixParts

    parts, why = locate_step(model, vocab, "auto", log=lambda *a, **k: None)
    assert isinstance(parts, PrefixParts)
    assert "not cached (found benchmarks.PositionalEmbedding" in why


# About 50% of the held-out dates right after 6 epochs (40 s here).
TRANSFORMER = ["--arch", "transformer", "--builtin", "dates", "--samples", "4000",
               "--epochs", "6", "--embedding-dim", "32", "--heads", "4", "--ff-dim", "64",
               "--layers", "2", "--dropout", "0", "--quiet"]


def test_train_arch_transformer_exports_cached_and_decodes_everywhere(tmp_path):
    """``python -m train --arch transformer`` then ``python -m export``: a masked,
    two-layer KerasHub model exports with the cached step (its memory mask listed),
    its proof passes, and the runtime CLI and Node give export's checked answers."""
    run = tmp_path / "run"
    done = run_module("train", *TRANSFORMER, "--out", str(run), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = read_json(run / "train.json")
    assert summary["args"]["arch"] == "transformer" and summary["args"]["padding"] == "right"
    assert summary["held_out_exact_match"] > 0.2, summary["held_out_exact_match"]
    done = run_module("export", str(run / "model.keras"), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "cached step: 2 self-attention key/value cache(s) as state, 2 cross-attention(s)" \
        in done.stdout
    meta = read_json(run / "artifact" / "artifact.json")
    assert meta["step"]["kind"] == "cached"
    assert [s["name"] for s in meta["state"]] == ["prefix", "position", "cache0", "cache1"]
    assert [m["name"] for m in meta["memory"]] == ["cross0", "cross1", "memory_mask"]
    texts = [line.split("\t")[0] for line in
             (run / "heldout.tsv").read_text(encoding="utf-8").splitlines()[:20]]
    import runtime

    python = runtime.load(run / "artifact").translate(texts)
    done = run_module("runtime", str(run / "artifact"), "--backend", "tflite",
                      input="\n".join(texts) + "\n")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == python
    replay_in_node(run / "artifact", texts, tmp_path / "cases.json")


@pytest.mark.parametrize("flags,error", [
    (["--bidirectional"], "--bidirectional: options of the recurrent family"),
    (["--attention", "luong"], "--attention: options of the recurrent family"),
    (["--padding", "left"], "padded on the right"),
    (["--heads", "3", "--embedding-dim", "32"], "must divide by the 3 heads"),
])
def test_train_arch_transformer_refuses_what_does_not_apply(flags, error, tmp_path):
    done = run_module("train", "--arch", "transformer", *flags, "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and error in done.stderr, done.stderr[-1500:]
    assert not (tmp_path / "r").exists()


def test_heads_are_refused_for_an_rnn(tmp_path):
    done = run_module("train", "--heads", "2", "--out", str(tmp_path / "r"))
    assert done.returncode == 2 and "--heads and --ff-dim are for --arch transformer" in \
        done.stderr


@pytest.mark.parametrize("label,edit", [
    ("memory missing", lambda m: m.pop("memory")),
    ("cross keys dropped", lambda m: m.update(memory=[])),
    ("called a structured step", lambda m: m["step"].update(kind="structured")),
    ("a cache left out of the state", lambda m: m["state"].pop()),
], ids=lambda v: v if isinstance(v, str) else "")
def test_hostile_cached_metadata_is_refused_by_both_runtimes(hub, tmp_path, label, edit):
    import shutil
    import subprocess

    import runtime
    from conftest import ROOT, need_node

    art = tmp_path / "art"
    shutil.copytree(hub["cached"], art)
    meta = read_json(art / "artifact.json")
    edit(meta)
    (art / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(runtime.ArtifactError, match="artifact.json"):
        runtime.load(art)
    need_node()
    done = subprocess.run(["node", str(ROOT / "web" / "node_decode.mjs"), str(art)],
                          input="one two.\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "artifact.json" in done.stderr, (label, done.stderr[-500:])
    assert "TypeError" not in done.stderr
