"""The prefix step: any causal two-input functional model exported by its own graph cut.

The answer key is outside the code under test: keras.io's own ``decode_sequence``
loop on the Transformer example (benchmarks/keras_io_transformer.py), and for an RNN
forced through the prefix step, the same model's structured step artifact.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_json, replay_in_node, run_module

from benchmarks import keras_io_transformer as kio


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    """keras.io's Transformer, trained briefly (greedy decodes confident), its
    vectorisers, held-out English sentences, the example's own decodes of them and
    the artifact ``export.export_model`` writes (int8 and fp16 too)."""
    import export

    model, eng, spa, _ = kio.train()
    texts = [e for e, _ in kio.make_pairs(60, seed=5)]
    want = [kio.decode_sequence(model, eng, spa, t) for t in texts]
    vocab = export.from_text_vectorization(eng, spa)
    out = tmp_path_factory.mktemp("transformer") / "artifact"
    export.export_model(model, vocab, out, quantize=("int8", "fp16"), texts=texts,
                        log=lambda *a, **k: None)
    return {"model": model, "eng": eng, "spa": spa, "texts": texts, "want": want,
            "artifact": out}


def _as_example_writes(output: str) -> str:
    return f"[start] {output} [end]"


def test_the_example_was_trained_until_it_translates(transformer):
    """The decodes compared below are the right translations, not noise."""
    right = [spa for _, spa in kio.make_pairs(60, seed=5)]
    got = transformer["want"]
    rules = [kio.custom_standardization(r).numpy().decode() for r in right]
    assert sum(g == r for g, r in zip(got, rules)) >= 55, list(zip(got, rules))[:5]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("greedy", ["step", "fused"])
def test_transformer_decodes_as_the_examples_own_loop(transformer, backend, greedy):
    import runtime

    model = runtime.load(transformer["artifact"], backend=backend, greedy=greedy)
    got = [_as_example_writes(o) for o in model.translate(transformer["texts"])]
    assert got == transformer["want"]
    one_by_one = [_as_example_writes(model.translate([t])[0]) for t in transformer["texts"][:8]]
    assert one_by_one == transformer["want"][:8]


def test_transformer_artifact_records_the_prefix_step(transformer):
    meta = read_json(transformer["artifact"] / "artifact.json")
    assert meta["version"] == 4 and meta["step"]["kind"] == "prefix"
    assert "no structured step" in meta["step"]["why"]
    assert meta["state"] == [{"name": "prefix", "units": kio.sequence_length, "dtype": "int32"},
                             {"name": "position", "units": 1, "dtype": "int32"}]
    assert [m["name"] for m in meta["memory"]] == ["memory", "memory_mask"]
    assert meta["memory"][0]["shape"] == [kio.sequence_length, 16]
    arch = meta["architecture"]
    assert arch["kind"] == "functional" and any("TransformerEncoder" in n
                                                for n in arch["encoder_layers"])
    assert any("TransformerDecoder" in n for n in arch["decoder_layers"])
    assert meta["parity"]["passed"] and {g["precision"] for g in meta["graphs"]} == {
        "fp32", "int8", "fp16"}


def test_transformer_beams_sampling_and_streams_run_on_the_prefix_state(transformer):
    """Beams reorder the prefix rows with their hypotheses; a beam of 1 and a cold
    sampler are greedy; a stream joins to the greedy string; the quantized
    variants agree with fp32 on this confident model."""
    import runtime

    texts = transformer["texts"][:20]
    for backend in ("onnx", "tflite"):
        model = runtime.load(transformer["artifact"], backend=backend, greedy="step")
        greedy = model.translate(texts)
        beam = model.translate(texts, beam_size=4)
        assert np.all(model.score(texts, beam) >= model.score(texts, greedy) - 1e-6)
        assert model.translate(texts, beam_size=1) == greedy
        assert model.translate(texts, temperature=1e-4, seed=1) == greedy
        assert "".join(model.stream(texts[3])) == greedy[3]
    for backend, precision in (("onnx", "int8"), ("tflite", "int8"), ("tflite", "fp16")):
        q = runtime.load(transformer["artifact"], backend=backend, precision=precision)
        assert q.translate(texts) == greedy


def test_transformer_golden_cases_replay_in_node(transformer, tmp_path):
    """The JavaScript runtime runs the prefix state (int32 tensors) and memory as
    listed: the Python runtime's answers in every mode, replayed in Node."""
    summary = replay_in_node(transformer["artifact"], transformer["texts"][:24],
                             tmp_path / "cases.json")
    assert summary["strings"] > 0


def _rnn_outputs(artifact, texts):
    import runtime

    out = {}
    for backend in ("onnx", "tflite"):
        model = runtime.load(artifact, backend=backend, greedy="step")
        out[backend] = (model.translate(texts), model.translate(texts[:12], beam_size=3))
    return out


def test_rnn_forced_through_the_prefix_step_decodes_like_its_structured_step(tiny_run,
                                                                             tiny_artifact,
                                                                             heldout, tmp_path):
    """The keras.io LSTM (one-hot on both sides), exported with --step prefix from
    the command line: the same strings, greedy and beam, as its structured step."""
    out = tmp_path / "prefix"
    done = run_module("export", str(tiny_run / "model.keras"), "--step", "prefix", "--out",
                      str(out), "--check-samples", "24", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    meta = read_json(out / "artifact.json")
    assert meta["step"] == {"kind": "prefix", "why": "asked for (--step prefix)",
                            "prefix_length": meta["vocabulary"]["max_output_length"]}
    assert meta["architecture"]["decoder_input"] == "one-hot"
    assert _rnn_outputs(out, heldout[:30]) == _rnn_outputs(tiny_artifact, heldout[:30])


def test_attention_rnn_through_the_prefix_step_decodes_like_its_structured_step(learned,
                                                                                tmp_path):
    """A masked Embedding, Bahdanau attention: the encoder hands over its outputs,
    its final states and the mask Keras propagates; the cut carries all of them."""
    from export.pipeline import check_texts, export_artifact
    from runtime.vocab import Vocabulary

    artifact, pairs = learned("attention")
    run = artifact.parent
    vocab = Vocabulary.load(run / "vocab.json")
    texts = check_texts(vocab, run / "heldout.tsv", 40)
    out = tmp_path / "prefix"
    result = export_artifact(run / "model.keras", vocab, out, texts=texts, step="prefix",
                             fused=False, log=lambda *a, **k: None)
    names = [m["name"] for m in result.metadata["memory"]]
    assert len(names) >= 3 and any(n.endswith("_mask") for n in names), names
    held = [a for a, _ in pairs[:40]]
    assert _rnn_outputs(out, held) == _rnn_outputs(artifact, held)


def _peeking_model(vocab_size=12, length=6, width=8):
    """A decoder whose self-attention has no causal mask: position t reads t+1."""
    import keras

    src = keras.Input((None,), dtype="int32", name="src")
    dec = keras.Input((None,), dtype="int32", name="dec")
    memory = keras.layers.Embedding(vocab_size, width)(src)
    x = keras.layers.Embedding(vocab_size, width)(dec)
    x = keras.layers.MultiHeadAttention(2, width)(x, x)
    x = keras.layers.MultiHeadAttention(2, width)(x, memory)
    return keras.Model([src, dec], keras.layers.Dense(vocab_size, activation="softmax")(x))


def _word_vocab(size=12, length=6):
    from runtime.vocab import InputPadding, Vocabulary

    words = tuple(["", "[UNK]"] + [f"w{i}" for i in range(size - 2)])
    targets = tuple(["", "[UNK]", "[start]", "[end]"] + [f"t{i}" for i in range(size - 4)])
    return Vocabulary(words, targets, "[start]", "[end]", max_input_length=length,
                      max_output_length=length, padding=InputPadding("right", ""),
                      unit="word", target_unit="word", unknown_token="[UNK]")


def test_a_model_that_reads_the_future_is_refused(tmp_path):
    import export
    from family.errors import ModelShapeError

    with pytest.raises(ModelShapeError) as e:
        export.export_model(_peeking_model(), _word_vocab(), tmp_path / "a",
                            log=lambda *a, **k: None)
    message = str(e.value)
    assert "reads the future" in message and "not a seq2seq model of the expected shape" in message
    assert not (tmp_path / "a").exists()


def test_step_options_are_checked(tmp_path, tiny_run):
    """A structured step asked of a Transformer names why not; an unknown step and
    int8-full on the prefix path are refused before anything is converted."""
    import export
    from family.errors import ModelShapeError
    from runtime.errors import InputError

    with pytest.raises(ModelShapeError, match="expected shape"):
        export.export_model(_peeking_model(), _word_vocab(), tmp_path / "a", step="structured")
    with pytest.raises(InputError, match="step must be one of"):
        export.export_model(_peeking_model(), _word_vocab(), tmp_path / "a", step="cut")
    done = run_module("export", str(tiny_run / "model.keras"), "--step", "prefix", "--quantize",
                      "int8-full", "--out", str(tmp_path / "b"))
    assert done.returncode == 2 and "int8-full is not available" in done.stderr
    assert not (tmp_path / "b").exists()
    helped = run_module("export", "--help")
    assert "--step {auto,structured,prefix,cached}" in helped.stdout


def test_the_examples_custom_standardization_is_recorded_and_repeated():
    """keras.io's custom_standardization (lowercase, strip punctuation and "¿" but keep
    "[" and "]") is recorded as that rule: the runtime's ids equal the layers' own,
    on the source side (the callable used there) and for targets; a callable that
    replaces characters is refused, naming the text it fails on."""
    import tensorflow as tf
    from keras.layers import TextVectorization

    import export
    from runtime.errors import VocabularyError

    pairs = kio.make_pairs(200, seed=3)
    src = TextVectorization(output_mode="int", output_sequence_length=kio.sequence_length,
                            standardize=kio.custom_standardization)
    tgt = TextVectorization(output_mode="int", output_sequence_length=kio.sequence_length + 1,
                            standardize=kio.custom_standardization)
    src.adapt([e for e, _ in pairs])
    tgt.adapt([s for _, s in pairs])
    vocab = export.from_text_vectorization(src, tgt)
    assert vocab.target_standardize == vocab.standardize
    rule = vocab.standardize
    assert rule["lower"] and "¿" in rule["strip"] and "!" in rule["strip"]
    assert "[" not in rule["strip"] and "]" not in rule["strip"]
    probes = ["¿One, TWO... three?", "[start] Nine!", "five (six) 'seven'", "Zero\t-eight-"]
    want = src(tf.constant(probes)).numpy().tolist()
    assert vocab.encode_inputs(probes, unknown="unk").tolist() == want
    target = "[start] ¿Tres, DOS? [end]"
    ids = [i for i in tgt(tf.constant([target])).numpy()[0].tolist() if i]
    assert vocab.encode_target(target)[:-1] == ids  # encode_target appends the end id
    saved = type(vocab).from_dict(json.loads(json.dumps(vocab.to_dict())))
    assert saved == vocab

    def replacing(text):
        return tf.strings.regex_replace(tf.strings.lower(text), "[0-9]", "#")

    odd = TextVectorization(output_sequence_length=4, standardize=replacing)
    odd.adapt(["a b c"])
    with pytest.raises(VocabularyError, match="cannot be recorded: on '0' it gives '#'"):
        export.from_text_vectorization(odd, tgt)


def test_registered_custom_layers_export_from_the_command_line(transformer, tmp_path):
    """Saved to .keras, the example's model (its layers registered with get_config)
    exports with python -m export --import MODULE and decodes as the example's loop;
    without --import the error says what to pass, and nothing is written."""
    import runtime

    model_path = tmp_path / "transformer.keras"
    transformer["model"].save(model_path)
    vocab_path = tmp_path / "vocab.json"
    runtime.load(transformer["artifact"]).vocabulary.save(vocab_path)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(transformer["texts"][:30]) + "\n", encoding="utf-8")
    args = [str(model_path), "--vocab", str(vocab_path), "--check-texts", str(texts),
            "--formats", "onnx", "--out", str(tmp_path / "art")]
    refused = run_module("export", *args)
    assert refused.returncode == 2 and "--import MODULE" in refused.stderr, refused.stderr[-800:]
    assert not (tmp_path / "art").exists()
    done = run_module("export", *args, "--import", "benchmarks.keras_io_transformer",
                      timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = runtime.load(tmp_path / "art").translate(transformer["texts"][:30])
    assert [_as_example_writes(o) for o in got] == transformer["want"][:30]
    bad = run_module("export", *args, "--import", "no_such_module_here")
    assert bad.returncode == 2 and "--import no_such_module_here: ModuleNotFoundError" in bad.stderr


def _never_padding(dense) -> None:
    """An untrained model may write id 0, the empty padding word, which a decoded
    string cannot hold (words are joined by spaces); a trained one never does."""
    kernel, bias = dense.get_weights()
    bias[0] = -30.0
    dense.set_weights([kernel, bias])


def _whole_model_greedy(model, vocab, texts):
    """keras.io's decode loop, written here: the whole model on the growing zero-padded
    prefix of ids, position i read at step i."""
    length = vocab.max_output_length
    ids = vocab.encode_inputs(texts).astype(np.int64)
    prefix = np.zeros((len(texts), length), np.int64)
    prefix[:, 0] = vocab.start_id
    want = [[] for _ in texts]
    done = np.zeros(len(texts), bool)
    for i in range(length):
        token = np.asarray(model([ids, prefix]))[:, i].argmax(-1)
        for r in np.flatnonzero(~done):
            done[r] |= token[r] == vocab.end_id
            if not done[r]:
                want[r].append(int(token[r]))
        if i + 1 < length:
            prefix[:, i + 1] = token
    return [vocab.join_target(w) for w in want]


def test_a_boolean_mask_crossing_from_the_encoder_travels_as_data(tmp_path):
    """A model that hands the decoder an explicit source mask (a bool tensor made from
    the source ids) and a causal self-attention: the mask crosses as float32 and is
    turned back; greedy decodes equal the whole model's on the growing prefix."""
    import keras

    import export
    import runtime

    keras.utils.set_random_seed(4)
    vocab = _word_vocab(12, 6)
    src = keras.Input((None,), dtype="int64", name="src")
    dec = keras.Input((None,), dtype="int64", name="dec")
    memory = keras.layers.Embedding(12, 8)(src)
    keep = keras.ops.not_equal(src, 0)
    x = keras.layers.Embedding(12, 8)(dec)
    x = keras.layers.MultiHeadAttention(2, 8)(x, x, use_causal_mask=True)
    x = keras.layers.MultiHeadAttention(2, 8)(x, memory, value_mask=keep)
    out = keras.layers.Dense(12, activation="softmax")
    model = keras.Model([src, dec], out(x))
    _never_padding(out)
    rng = np.random.default_rng(0)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 10, rng.integers(1, 7)))
             for _ in range(20)]
    result = export.export_model(model, vocab, tmp_path / "art", texts=texts, fused=False,
                                 log=lambda *a, **k: None)
    assert [m["dtype"] for m in result.metadata["memory"]] == ["float32", "float32"]
    expected = _whole_model_greedy(model, vocab, texts)
    for backend in ("onnx", "tflite"):
        assert runtime.load(tmp_path / "art", backend=backend).translate(texts) == expected


def test_a_model_outside_the_rnn_family_goes_through_the_prefix_step(tmp_path):
    """Recurrent layers whose decoder outputs are joined to a Dense of themselves (no
    attention layer): refused by the structured step, exported by auto through the
    prefix step, which says why; its decodes are the whole model's."""
    import keras
    from keras import layers

    import export
    import runtime

    keras.utils.set_random_seed(2)
    vocab = _word_vocab(12, 6)
    enc_in = keras.Input((None,), dtype="int32")
    _, h, c = layers.LSTM(8, return_state=True)(layers.Embedding(12, 8)(enc_in))
    dec_in = keras.Input((None,), dtype="int32")
    dec = layers.LSTM(8, return_sequences=True)(layers.Embedding(12, 8)(dec_in),
                                                 initial_state=[h, c])
    joined = layers.Concatenate()([dec, layers.Dense(8)(dec)])
    out = layers.Dense(12, activation="softmax")
    model = keras.Model([enc_in, dec_in], out(joined))
    _never_padding(out)
    rng = np.random.default_rng(3)
    texts = [" ".join(f"w{i}" for i in rng.integers(0, 10, rng.integers(1, 7)))
             for _ in range(20)]
    result = export.export_model(model, vocab, tmp_path / "art", texts=texts,
                                 log=lambda *a, **k: None)
    assert result.metadata["step"]["kind"] == "prefix"
    assert "expected an attention layer's context" in result.metadata["step"]["why"]
    want = _whole_model_greedy(model, vocab, texts)
    for backend in ("onnx", "tflite"):
        for greedy in ("step", "fused"):
            got = runtime.load(tmp_path / "art", backend=backend, greedy=greedy)
            assert got.translate(texts) == want


HOSTILE_PREFIX_METADATA = [
    ("memory not a list", lambda m: m.update(memory={"name": "memory"})),
    ("memory shape a string", lambda m: m["memory"][0].update(shape="16")),
    ("memory name not a string", lambda m: m["memory"][0].update(name=True)),
    ("memory dtype unknown", lambda m: m["memory"][0].update(dtype="int64")),
    ("memory missing", lambda m: m.pop("memory")),
    ("step not an object", lambda m: m.update(step="prefix")),
    ("step kind unknown", lambda m: m["step"].update(kind="kv-cache")),
    ("state entry null", lambda m: m["state"].insert(0, None)),
    ("state dtype unknown", lambda m: m["state"][0].update(dtype="int64")),
]


@pytest.mark.parametrize("label,edit", HOSTILE_PREFIX_METADATA,
                         ids=[h[0] for h in HOSTILE_PREFIX_METADATA])
def test_hostile_prefix_metadata_is_refused_by_both_runtimes(transformer, tmp_path, label,
                                                             edit):
    import shutil
    import subprocess

    import runtime
    from conftest import ROOT, need_node

    art = tmp_path / "art"
    shutil.copytree(transformer["artifact"], art)
    meta = read_json(art / "artifact.json")
    edit(meta)
    (art / "artifact.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(runtime.ArtifactError, match="artifact.json"):
        runtime.load(art)
    need_node()
    (tmp_path / "in.txt").write_text("one two.\n", encoding="utf-8")
    done = subprocess.run(["node", str(ROOT / "web" / "node_decode.mjs"), str(art),
                           str(tmp_path / "in.txt")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "artifact.json" in done.stderr, (label, done.stderr[-500:])
    assert "TypeError" not in done.stderr
