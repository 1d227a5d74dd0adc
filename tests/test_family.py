"""The model family: GRU, Embedding (with mask_zero), bidirectional and stacked
models train, export with parity on both formats, and decode as Keras does."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from conftest import FAMILY, TINY_TRAIN, read_json, replay_in_node, run_module
from runtime.vocab import InputPadding, Vocabulary

QUIET = dict(log=lambda *a, **k: None)
PATHS = [(b, g) for b in ("onnx", "tflite") for g in ("step", "fused")]

VARIANTS = FAMILY
STATE = {"gru": ["h0"], "embedding-mask-right-padding": ["h0", "c0"],
         "bidirectional-gru-embedding": ["h0"],
         "stacked-bidirectional-lstm-mask": ["h0", "c0", "h1", "c1"],
         "stacked-gru": ["h0", "h1"], "word-inputs": ["h0", "c0"], "word-outputs": ["h0", "c0"],
         "deep-encoder-last-state": ["h0", "c0"], "gru-reset-before-logits": ["h0"]}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request, family):
    """A tiny model of each variant, trained by ``python -m train`` and exported."""
    return (request.param, *family(request.param))


def _reference(run_dir):
    import keras

    from family.reference import ReferenceDecoder

    return ReferenceDecoder(keras.models.load_model(run_dir / "model.keras"),
                            Vocabulary.load(run_dir / "vocab.json"))


def test_variant_exports_with_parity_on_both_formats(variant):
    from export.opguard import check_tflite

    name, run_dir, result, _ = variant
    meta = read_json(run_dir / "artifact" / "artifact.json")
    assert [s["name"] for s in meta["state"]] == STATE[name]
    assert meta["architecture"]["output"] == ("logits" if "--logits" in VARIANTS[name]
                                              else "softmax")
    if "gru" in VARIANTS[name]:
        assert meta["architecture"]["reset_after"] == ("--no-reset-after" not in VARIANTS[name])
    layers = 2 if "--layers" in VARIANTS[name] else 1
    assert meta["architecture"]["encoder_layers"] == layers
    assert meta["architecture"]["state_from"] == (
        [layers - 1] if "last" in VARIANTS[name] else list(range(layers)))
    assert meta["parity"]["passed"] and all(c.ok for c in result.checks)
    numeric = [c for c in result.checks if c.bound == "<= 1e-05"]
    for fmt in ("onnx", "tflite"):
        keys = {c.what for c in numeric if c.variant == f"{fmt}/fp32"}
        assert keys == {f"encoder.{n}" for n in STATE[name]} | {"decoder_step.probs"} | {
            f"decoder_step.{n}_out" for n in STATE[name]}
    assert all(0 <= c.value <= 1e-5 for c in numeric)
    for graph in ("encoder", "decoder_step", "greedy"):
        check_tflite(run_dir / "artifact" / f"{graph}.tflite", allow_while=graph != "decoder_step")
    # Where tf2onnx would run Keras's layers in a Loop (GRU, masks), the ONNX encoder is
    # the cells unrolled instead; otherwise Keras's layers as fused ONNX ops.
    import onnx

    ops = {n.op_type for n in onnx.load(str(run_dir / "artifact" / "encoder.onnx")).graph.node}
    looped = "gru" in VARIANTS[name] or "--mask" in VARIANTS[name]
    assert meta["onnx_encoder"] == ("unrolled" if looped else "dynamic")
    assert "Loop" not in ops and (looped or "LSTM" in ops)


def test_looped_tflite_encoder_is_refused_where_it_cannot_exist(tmp_path):
    import keras
    from keras import layers

    import export

    enc_in = keras.Input((None, 4))
    _, fh, bh = layers.Bidirectional(layers.GRU(4, return_state=True))(enc_in)
    dec_in = keras.Input((None, 3))
    seq = layers.GRU(8, return_sequences=True)(dec_in,
                                               initial_state=layers.Concatenate()([fh, bh]))
    model = keras.Model([enc_in, dec_in], layers.Dense(3, activation="softmax")(seq))
    vocab = Vocabulary(tuple("abc "), ("\t", "\n", "x"), "\t", "\n", 4, 4,
                       InputPadding("right", " "))
    with pytest.raises(runtime.InputError, match="looped TFLite encoder form needs one "
                                                 "unidirectional encoder layer"):
        export.export_model(model, vocab, tmp_path / "art", tflite_encoder="loop", **QUIET)
    assert not (tmp_path / "art").exists()


def test_variant_decodes_as_keras_in_every_mode(variant):
    name, run_dir, _, texts = variant
    reference = _reference(run_dir)
    want = reference.greedy(texts)
    for backend, greedy in PATHS:
        model = runtime.load(run_dir / "artifact", backend=backend, greedy=greedy)
        assert model.translate(texts) == want, (backend, greedy)
        assert [model.translate([t])[0] for t in texts[:5]] == want[:5]
        assert ["".join(model.stream(t)) for t in texts[:5]] == want[:5]
    model = runtime.load(run_dir / "artifact", backend="tflite", greedy="step")
    onnx = runtime.load(run_dir / "artifact", backend="onnx", greedy="step")
    # Beam search and seeded sampling carry the whole state through the step graph.
    assert model.translate(texts[:6], beam_size=3) == onnx.translate(texts[:6], beam_size=3)
    sampled = model.translate(texts[:6], temperature=1.0, top_k=3, seed=5)
    assert sampled == onnx.translate(texts[:6], temperature=1.0, top_k=3, seed=5)


def test_variant_decodes_in_javascript_as_in_python(variant, tmp_path):
    """Node replays the Python runtime's golden cases for every family member:
    token ids under each policy, greedy on both paths, beam at several widths and
    length penalties, scores, n-best heads and the refusals."""
    _, run_dir, _, texts = variant
    replay_in_node(run_dir / "artifact", texts, tmp_path / "cases.json")


def test_encoder_gives_keras_state_for_every_length(variant):
    """Every input length gives Keras's state on both formats (with a mask, padding
    steps leave the state unchanged)."""
    name, run_dir, _, _ = variant
    reference = _reference(run_dir)
    vocab = reference.vocab
    rng = np.random.default_rng(0)
    texts = [vocab.sample_text(lambda ts: ts[int(rng.integers(len(ts)))], n)
             for n in range(1, vocab.max_input_length + 1)]
    ids = vocab.encode_inputs(texts)
    want = reference.encode(ids)
    for backend in ("onnx", "tflite"):
        got = runtime.load(run_dir / "artifact", backend=backend).encode(texts)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, atol=1e-5)


def _onehot_vocab(tmp_path, inputs, targets, max_in, max_out):
    vocab = Vocabulary(tuple(inputs), tuple(targets), "\t", "\n", max_in, max_out,
                       InputPadding("right", " "))
    vocab.save(tmp_path / "vocab.json")
    return vocab


def _export_and_compare(model, vocab, tmp_path, texts):
    from export.pipeline import export_artifact
    from family.reference import ReferenceDecoder

    model.save(tmp_path / "model.keras")
    result = export_artifact(tmp_path / "model.keras", vocab, tmp_path / "art", texts=texts,
                             **QUIET)
    assert all(c.ok for c in result.checks)
    want = ReferenceDecoder(model, vocab).greedy(texts)
    for backend, greedy in PATHS:
        loaded = runtime.load(tmp_path / "art", backend=backend, greedy=greedy)
        assert loaded.translate(texts) == want, (backend, greedy)
    return result, want


def _prefix_greedy(model, vocab, texts):
    """Keras's answer for any causal decoder: the whole model on the growing decoder
    prefix, reading the last position. Exact, if slow."""
    enc = vocab.one_hot_inputs(vocab.encode_inputs(texts))
    out = []
    for row in range(len(texts)):
        ids = [vocab.start_id]
        for _ in range(vocab.max_output_length):
            dec = vocab.one_hot_targets(np.array([ids]))
            probs = model.predict([enc[row:row + 1], dec], verbose=0)
            nxt = int(probs[0, -1].argmax())
            if nxt == vocab.end_id:
                break
            ids.append(nxt)
        out.append(vocab.decode_target(ids[1:]))
    return out


@pytest.mark.parametrize("reset_after", [True, False])
def test_keras_io_gru_model_without_decoder_return_state(tmp_path, reset_after):
    """keras.io's GRU variant: unnamed layers, a single initial_state, and a decoder
    GRU without return_state; export rebuilds its step from the trained weights."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    vocab = _onehot_vocab(tmp_path, " abcdefg", "\t\nxyz!", 8, 7)
    encoder_inputs = keras.Input(shape=(None, vocab.input_size))
    _, state_h = layers.GRU(24, return_state=True, reset_after=reset_after)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, vocab.target_size))
    decoder_outputs = layers.GRU(24, return_sequences=True, reset_after=reset_after)(
        decoder_inputs, initial_state=state_h)
    outputs = layers.Dense(vocab.target_size, activation="softmax")(decoder_outputs)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    texts = ["abc", "g", "fed cba", "a b", "gggg"]
    result, want = _export_and_compare(model, vocab, tmp_path, texts)
    assert result.metadata["state"] == [{"name": "h0", "units": 24}]
    assert want == _prefix_greedy(model, vocab, texts)


def test_embedding_model_with_mask_in_keras_io_word_level_style(tmp_path):
    """Integer inputs through Embedding(mask_zero=True) on both sides (keras.io's
    word-level variant, here over characters): id 0 is padding."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(4)
    vocab = Vocabulary(("",) + tuple("abcdef "), ("",) + tuple("\t\nxyz"), "\t", "\n", 9, 6,
                       InputPadding("right", ""))
    encoder_inputs = keras.Input(shape=(None,))
    x = layers.Embedding(vocab.input_size, 6, mask_zero=True)(encoder_inputs)
    _, state_h, state_c = layers.LSTM(16, return_state=True)(x)
    decoder_inputs = keras.Input(shape=(None,))
    y = layers.Embedding(vocab.target_size, 6, mask_zero=True)(decoder_inputs)
    y = layers.LSTM(16, return_sequences=True)(y, initial_state=[state_h, state_c])
    model = keras.Model([encoder_inputs, decoder_inputs],
                        layers.Dense(vocab.target_size, activation="softmax")(y))
    result, _ = _export_and_compare(model, vocab, tmp_path, ["abc", "f", "a b c d", "ee"])
    assert result.metadata["architecture"]["encoder_input"] == "embedding 6 mask_zero"


def test_deep_encoder_handing_its_last_state_and_linear_logits(tmp_path):
    """Two encoder layers, only the top one's state starts a one-layer decoder; the
    Dense gives logits, and probs are still probabilities (the step applies softmax)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    vocab = _onehot_vocab(tmp_path, " abcdefg", "\t\nxyz!", 8, 7)
    encoder_inputs = keras.Input(shape=(None, vocab.input_size))
    x = layers.LSTM(16, return_sequences=True)(encoder_inputs)
    _, h, c = layers.LSTM(16, return_state=True)(x)
    decoder_inputs = keras.Input(shape=(None, vocab.target_size))
    y = layers.LSTM(16, return_sequences=True)(decoder_inputs, initial_state=[h, c])
    model = keras.Model([encoder_inputs, decoder_inputs], layers.Dense(vocab.target_size)(y))
    result, _ = _export_and_compare(model, vocab, tmp_path, ["abc", "g", "fed cba"])
    arch = result.metadata["architecture"]
    assert (arch["encoder_layers"], arch["decoder_layers"], arch["output"]) == (2, 1, "logits")
    loaded = runtime.load(tmp_path / "art")
    probs, _, _ = loaded.step([vocab.start_id], loaded.encode(["abc"]))
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()


def test_stacked_decoder_with_a_layer_started_from_zeros(tmp_path):
    """Two decoder layers, only the first started from the encoder's state."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(6)
    vocab = _onehot_vocab(tmp_path, " abcdefg", "\t\nxyz!", 8, 7)
    encoder_inputs = keras.Input(shape=(None, vocab.input_size))
    _, h = layers.GRU(12, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input(shape=(None, vocab.target_size))
    y = layers.GRU(12, return_sequences=True)(decoder_inputs, initial_state=h)
    y = layers.GRU(12, return_sequences=True)(y)
    model = keras.Model([encoder_inputs, decoder_inputs],
                        layers.Dense(vocab.target_size, activation="softmax")(y))
    result, _ = _export_and_compare(model, vocab, tmp_path, ["abc", "g", "fed cba"])
    assert result.metadata["architecture"]["state_from"] == [0, None]


def _refused(model, tmp_path, *fragments):
    import export
    from family.errors import ModelShapeError

    vocab = Vocabulary(tuple("abc"), ("\t", "\n", "x"), "\t", "\n", 4, 4)
    with pytest.raises(ModelShapeError) as err:  # the structured step's own reasons
        export.export_model(model, vocab, tmp_path / "art", step="structured", **QUIET)
    expected, found = str(err.value).split("; found ")
    assert "expected" in expected and "attention" in expected  # what is supported
    for fragment in fragments:
        assert fragment in found
    assert not (tmp_path / "art").exists()


def test_concatenate_without_attention_is_refused_clearly(tmp_path):
    """Attention models pass (tests/test_attention.py); a Concatenate that joins no
    attention context does not."""
    import keras
    from keras import layers

    enc_in = keras.Input((None, 3))
    seq, h, c = layers.LSTM(8, return_sequences=True, return_state=True)(enc_in)
    dec_in = keras.Input((None, 3))
    dec = layers.LSTM(8, return_sequences=True)(dec_in, initial_state=[h, c])
    joined = layers.Concatenate()([seq, dec])
    model = keras.Model([enc_in, dec_in], layers.Dense(3, activation="softmax")(joined))
    _refused(model, tmp_path, "expected an attention layer's context")


def test_mixed_cells_and_lambda_are_refused_clearly(tmp_path):
    import keras
    from keras import layers

    enc_in = keras.Input((None, 3))
    _, h = layers.GRU(8, return_state=True)(enc_in)
    dec_in = keras.Input((None, 3))
    scaled = layers.Lambda(lambda t: t * 2.0)(h)
    dec = layers.GRU(8, return_sequences=True)(dec_in, initial_state=scaled)
    model = keras.Model([enc_in, dec_in], layers.Dense(3, activation="softmax")(dec))
    _refused(model, tmp_path, "initial_state comes from Lambda")


def test_masked_model_needs_padding_id_zero(tmp_path):
    import keras
    from keras import layers

    from export.pipeline import export_artifact
    from runtime.errors import VocabularyError

    enc_in = keras.Input((None,))
    _, h, c = layers.LSTM(8, return_state=True)(layers.Embedding(5, 4, mask_zero=True)(enc_in))
    dec_in = keras.Input((None, 4))
    dec = layers.LSTM(8, return_sequences=True)(dec_in, initial_state=[h, c])
    model = keras.Model([enc_in, dec_in], layers.Dense(4, activation="softmax")(dec))
    model.save(tmp_path / "m.keras")
    wrong = Vocabulary(tuple("abcd "), ("\t", "\n", "x", "y"), "\t", "\n", 4, 4,
                       InputPadding("right", " "))
    with pytest.raises(VocabularyError, match="mask_zero=True, so padding must be id 0"):
        export_artifact(tmp_path / "m.keras", wrong, tmp_path / "art", **QUIET)


def test_train_cli_refuses_mask_without_embedding():
    done = run_module("train", "--mask", "--epochs", "1")
    assert done.returncode == 2 and "--mask needs --embedding-dim" in done.stderr
    done = run_module("train", "--help")
    for flag in ("--cell", "--layers", "--bidirectional", "--embedding-dim", "--mask"):
        assert flag in done.stdout


def test_notebook_api_exports_the_model_in_memory(tmp_path):
    """keras.io's notebook variables and its model object, no files written by hand."""
    import keras
    from keras import layers

    import export

    keras.utils.set_random_seed(8)
    input_characters = sorted(set("go on hi run "))
    target_characters = sorted(set("va salut cours") | {"\t", "\n"})
    vocab = export.from_keras_io(input_characters, target_characters, 6, 9)
    assert (vocab.max_input_length, vocab.max_output_length) == (6, 8)
    enc_in = keras.Input((None, len(input_characters)))
    _, h, c = layers.LSTM(12, return_state=True)(enc_in)
    dec_in = keras.Input((None, len(target_characters)))
    seq = layers.LSTM(12, return_sequences=True)(dec_in, initial_state=[h, c])
    model = keras.Model([enc_in, dec_in],
                        layers.Dense(len(target_characters), activation="softmax")(seq))
    result = export.export_model(model, vocab, tmp_path / "art", formats=["tflite"],
                                 texts=["go on", "hi", "run"], **QUIET)
    assert all(c.ok for c in result.checks)
    assert result.metadata["source_model"]["file"] is None
    from family.reference import ReferenceDecoder

    texts = ["go on", "hi", "run"]
    want = ReferenceDecoder(model, vocab).greedy(texts)
    for greedy in ("step", "fused"):
        loaded = runtime.load(tmp_path / "art", backend="tflite", greedy=greedy)
        assert loaded.translate(texts) == want
    with pytest.raises(runtime.InputError, match="keras.Model"):
        export.export_model("model.keras", vocab, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_word_level_model_tokenised_by_text_vectorization(tmp_path):
    """keras.io's word-level setup: TextVectorization layers make the ids; the
    vocabulary is read from them, and the runtime tokenises exactly as they do."""
    import keras
    import tensorflow as tf
    from keras import layers

    import export

    keras.utils.set_random_seed(9)
    sources = ["Go on!", "Hi.", "Run, now!", "Who is it?", "I am HERE.", "go   away",
               "Été chaud."]
    targets = ["[start] va [end]", "[start] salut [end]", "[start] cours [end]",
               "[start] qui est ce [end]", "[start] je suis ici [end]", "[start] pars [end]"]
    src = layers.TextVectorization(output_sequence_length=5)
    src.adapt(sources)
    tgt = layers.TextVectorization(output_sequence_length=6, standardize=None)
    tgt.adapt(targets)
    vocab = export.from_text_vectorization(src, tgt)
    assert (vocab.unit, vocab.target_unit, vocab.unknown_token) == ("word", "word", "[UNK]")
    # TextVectorization lowers ASCII letters only: "Été" stays a known word.
    probes = ["GO on, NOW!", "who   is here?", "Hi", "run zebra away", "Été, CHAUD"]
    want = src(tf.constant(probes)).numpy()
    assert vocab.encode_inputs(probes, unknown="unk").tolist() == want.tolist()
    with pytest.raises(runtime.InputError, match="words outside the vocabulary: 'zebra'"):
        vocab.encode_inputs(probes)

    enc_in = keras.Input((None,), dtype="int32")
    x = layers.Embedding(vocab.input_size, 8, mask_zero=True)(enc_in)
    _, h = layers.GRU(16, return_state=True)(x)
    dec_in = keras.Input((None,), dtype="int32")
    y = layers.Embedding(vocab.target_size, 8, mask_zero=True)(dec_in)
    y = layers.GRU(16, return_sequences=True)(y, initial_state=h)
    model = keras.Model([enc_in, dec_in],
                        layers.Dense(vocab.target_size, activation="softmax")(y))
    texts = ["go on", "who is it", "hi", "i am here now"]
    result = export.export_model(model, vocab, tmp_path / "art", texts=texts, **QUIET)
    assert all(c.ok for c in result.checks)
    from family.reference import ReferenceDecoder

    expected = ReferenceDecoder(model, vocab).greedy(texts)
    for backend, greedy in PATHS:
        loaded = runtime.load(tmp_path / "art", backend=backend, greedy=greedy)
        out = loaded.translate(texts)
        assert out == expected, (backend, greedy)
        assert ["".join(loaded.stream(t)) for t in texts] == expected
        # Words come back joined by single spaces.
        assert all(o == " ".join(o.split()) for o in out)
    saved = runtime.load(tmp_path / "art").vocabulary
    assert saved == vocab and saved.to_dict()["version"] == 2
    # The CLI's policies for unknown words.
    done = run_module("runtime", str(tmp_path / "art"), "go zebra")
    assert done.returncode == 2 and "words outside the vocabulary: 'zebra'" in done.stderr
    done = run_module("runtime", str(tmp_path / "art"), "go zebra", "--unk", "--greedy", "step")
    want = runtime.load(tmp_path / "art", greedy="step").translate(["go zebra"], unknown="unk")
    assert done.returncode == 0 and done.stdout.splitlines() == want
    # The corpus tool's --unk, line by line.
    lines = ["go zebra", "hi", "who is it zebra"]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run_module("runtime.corpus", str(tmp_path / "art"), str(tmp_path / "in.txt"),
                      "--out", str(tmp_path / "out.txt"), "--unk", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out.txt").read_text().split("\n")[:-1] == runtime.load(
        tmp_path / "art").translate(lines, unknown="unk")
