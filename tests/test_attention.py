"""Attention models (Luong's Attention, Bahdanau's AdditiveAttention): trained by
``python -m train``, exported with parity, decoded in every mode on both backends,
attention maps equal to Keras's weights, and a hand-written tutorial model."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import runtime
from conftest import ATTENTION, ATTENTION_SMALL, ROOT, read_json, replay_in_node, run_module
from runtime.errors import InputError

QUIET = dict(log=lambda *a, **k: None)
SMALL = ATTENTION_SMALL
KINDS = ATTENTION
PATHS = [(b, g) for b in ("onnx", "tflite") for g in ("step", "fused")]


@pytest.fixture(scope="module", params=list(KINDS))
def trained(request, attention):
    """(run directory, artifact, Keras reference) of a trained attention model."""
    import keras

    from runtime.vocab import Vocabulary
    from family.reference import ReferenceDecoder

    run, _, _ = attention(request.param)
    reference = ReferenceDecoder(keras.models.load_model(run / "model.keras"),
                                 Vocabulary.load(run / "vocab.json"))
    return run, run / "artifact", reference


def test_attention_decodes_in_javascript_as_in_python(trained, tmp_path):
    """Node replays the Python runtime's golden cases, the attention maps among them
    (weights within 1e-5, the same input and output tokens)."""
    run, art, _ = trained
    summary = replay_in_node(art, _heldout(run), tmp_path / "cases.json")
    assert json.loads((tmp_path / "cases.json").read_text())["attention"], summary


def _heldout(run: Path) -> list[str]:
    return [ln.split("\t")[0] for ln in (run / "heldout.tsv").read_text().splitlines()]


def test_artifact_describes_the_attention(trained):
    run, artifact, _ = trained
    meta = read_json(artifact / "artifact.json")
    kind = run.name
    masked = kind == "bahdanau"
    assert meta["attention"] == {"kind": kind, "memory_units": 48 if masked else 24,
                                 "masked": masked}
    step = next(g for g in meta["graphs"] if g["name"] == "decoder_step")
    memory = ["memory", "memory_mask"] if masked else ["memory"]
    assert step["inputs"] == ["token", "h0", "c0", *memory]
    assert step["outputs"][-1] == "attention"
    assert meta["parity"]["passed"]
    checked = {(c["variant"], c["what"]) for c in meta["parity"]["checks"]}
    for fmt in ("onnx/fp32", "tflite/fp32"):
        assert (fmt, "decoder_step.attention") in checked and (fmt, "encoder.memory") in checked


@pytest.mark.parametrize("backend, greedy", PATHS)
def test_every_greedy_path_decodes_as_keras(trained, backend, greedy):
    run, artifact, reference = trained
    texts = _heldout(run)
    model = runtime.load(artifact, backend=backend, greedy=greedy)
    want = reference.greedy(texts)
    assert model.translate(texts, batch_size=7) == want
    assert ["".join(model.stream(t)) for t in texts[:5]] == want[:5]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_attention_maps_are_keras_weights(trained, backend):
    """Each output token's row is the weights Keras's attention layer gives at that
    step (teacher forcing the decoded tokens), restricted to the real input tokens."""
    run, artifact, reference = trained
    model = runtime.load(artifact, backend=backend, greedy="step")
    vocab = model.vocabulary
    texts = _heldout(run)[:6]
    maps = model.translate(texts, return_attention=True, batch_size=4)
    assert [m.text for m in maps] == model.translate(texts)
    for text, amap in zip(texts, maps):
        ids = vocab.encode_inputs([text])
        assert "".join(amap.input_tokens) == text
        assert "".join(amap.output_tokens) == amap.text
        state = reference.encode(ids)
        token, rows = vocab.start_id, []
        for out in vocab.encode_target(amap.text)[:-1]:
            _, state, weights = reference.step(np.array([token]), state)
            rows.append(weights[0])
            token = out
        real = ids[0] != vocab.pad_id
        assert amap.weights.shape == (len(amap.output_tokens), len(text))
        if rows:  # a briefly trained model may end at once: an empty map, checked above
            np.testing.assert_allclose(amap.weights, np.array(rows)[:, real], atol=1e-5)
        if vocab.pad_id == 0:  # masked: padding gets no weight, real tokens all of it
            np.testing.assert_allclose(amap.weights.sum(axis=1), 1, atol=1e-5)
    assert sum(bool(m.text) for m in maps) >= 3


def test_beam_sampling_and_batches_run_with_the_memory(trained):
    run, artifact, reference = trained
    texts = _heldout(run)[:8]
    model = runtime.load(artifact, greedy="step")
    greedy = model.translate(texts)
    # Beam width 1 is greedy; wider beams score at least as well as greedy.
    assert model.translate(texts, beam_size=1) == greedy
    for text, g, b in zip(texts, greedy, model.translate(texts, beam_size=3)):
        assert _score(model, text, b) >= _score(model, text, g) - 1e-6
    assert model.translate(texts, temperature=1.0, top_k=1, seed=0) == greedy
    assert model.translate(texts, batch_size=3) == [model.translate([t])[0] for t in texts]


def _score(model, text, out):
    from test_runtime import _logprobs

    rows = _logprobs(model, text, out)
    return sum(float(np.log(max(p[t], 1e-30))) for p, t in rows) / len(rows)


def test_low_level_step_returns_the_weights(trained):
    run, artifact, _ = trained
    model = runtime.load(artifact)
    state = model.encode(_heldout(run)[:2])
    names = [s.name for s in model.config.state] + list(model.config.attention.memory_names)
    assert len(state) == len(names) and state[len(model.config.state)].shape[:2] == (
        2, model.vocabulary.max_input_length)
    probs, state2, nxt, weights = model.step([model.vocabulary.start_id] * 2, state,
                                             return_attention=True)
    assert weights.shape == (2, model.vocabulary.max_input_length)
    np.testing.assert_allclose(weights.sum(axis=1), 1, atol=1e-5)
    # The memory is passed on unchanged; the carried state moves.
    assert all(a is b for a, b in zip(state[len(model.config.state):],
                                      state2[len(model.config.state):]))
    assert len(model.step([1, 1], state)) == 3
    n = len(model.config.state)
    memory = state[n]
    short = (*state[:n], memory[:, 1:], *state[n + 1:])
    with pytest.raises(InputError, match=rf"'memory' must be a float32 array of shape "
                                         rf"\[2, {memory.shape[1]}, {memory.shape[2]}\]"):
        model.step([1, 1], short)


def test_heatmap_command_writes_a_png(trained, tmp_path):
    run, artifact, _ = trained
    text = _heldout(run)[0]
    done = run_module("heatmap", str(artifact), text, "--out", str(tmp_path / "map.png"))
    assert done.returncode == 0, done.stderr
    png = (tmp_path / "map.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    again = run_module("heatmap", str(artifact), text, "--out", str(tmp_path / "map.png"))
    assert again.returncode == 2 and "--force" in again.stderr


def test_attention_requests_on_a_plain_model_are_clear_errors(tiny_artifact, heldout):
    model = runtime.load(tiny_artifact)
    with pytest.raises(InputError, match="no attention"):
        model.translate(heldout[:1], return_attention=True)
    with pytest.raises(InputError, match="no attention"):
        model.step([1], model.encode(heldout[:1]), return_attention=True)
    done = run_module("heatmap", str(tiny_artifact), heldout[0], "--out", "/tmp/x.png",
                      "--force")
    assert done.returncode == 2 and "no attention" in done.stderr
    assert "Traceback" not in done.stderr


def _tutorial_model(seed: int, n_in: int, n_out: int, latent: int = 16):
    """Luong attention as tutorials write it: unnamed layers, the decoder's outputs
    first in Concatenate, no attentional Dense."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    enc_in = keras.Input((None, n_in))
    enc_out, h, c = layers.LSTM(latent, return_sequences=True, return_state=True)(enc_in)
    dec_in = keras.Input((None, n_out))
    decoder_lstm = layers.LSTM(latent, return_sequences=True, return_state=True)
    dec_out, _, _ = decoder_lstm(dec_in, initial_state=[h, c])
    attention, concat = layers.Attention(use_scale=True), layers.Concatenate()
    dense = layers.Dense(n_out, activation="softmax")
    model = keras.Model([enc_in, dec_in],
                        dense(concat([dec_out, attention([dec_out, enc_out])])))
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    # The tutorial's inference encoder, and the layers its step model reuses.
    return model, keras.Model(enc_in, [enc_out, h, c]), (decoder_lstm, attention, concat,
                                                         dense)


def test_hand_written_luong_model_decodes_as_a_keras_predict_loop(tmp_path):
    import keras

    import export
    from export.pipeline import export_model

    inputs, targets = sorted(set("abcdefgh ")), ["\t", "\n"] + sorted(set("ABCDEFGH"))
    vocab = export.from_keras_io(inputs, targets, 8, 10)
    model, encoder, (lstm, attention, concat, dense) = _tutorial_model(3, len(inputs),
                                                                       len(targets))
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcdefgh"), rng.integers(1, 8))) for _ in range(300)]
    enc = np.zeros((300, 8, len(inputs)), np.float32)
    dec = np.zeros((300, 10, len(targets)), np.float32)
    out = np.zeros_like(dec)
    t_index = {t: i for i, t in enumerate(targets)}
    for n, w in enumerate(words):  # keras.io's arrays: space-padded inputs, \t...\n targets
        for i, ch in enumerate(w.ljust(8)):
            enc[n, i, inputs.index(ch)] = 1
        seq = "\t" + w.upper()[::-1] + "\n"
        for i, ch in enumerate(seq):
            dec[n, i, t_index[ch]] = 1
            if i:
                out[n, i - 1, t_index[ch]] = 1
    model.fit([enc, dec], out, epochs=3, batch_size=32, verbose=0)
    export_model(model, vocab, tmp_path / "art", texts=words[:20], **QUIET)

    # The tutorial's own inference models, reusing the trained layers, and its loop.
    tok, mem = keras.Input((None, len(targets))), keras.Input((None, 16))
    h_in, c_in = keras.Input((16,)), keras.Input((16,))
    seq, h2, c2 = lstm(tok, initial_state=[h_in, c_in])
    probs = dense(concat([seq, attention([seq, mem])]))
    step = keras.Model([tok, mem, h_in, c_in], [probs, h2, c2])

    def keras_decode(word):
        x = np.zeros((1, 8, len(inputs)), np.float32)
        for i, ch in enumerate(word.ljust(8)):
            x[0, i, inputs.index(ch)] = 1
        memory, hh, cc = encoder.predict(x, verbose=0)
        token, text = np.zeros((1, 1, len(targets)), np.float32), ""
        token[0, 0, 0] = 1
        for _ in range(vocab.max_output_length):
            p, hh, cc = step.predict([token, memory, hh, cc], verbose=0)
            ch = targets[int(p[0, -1].argmax())]
            if ch == "\n":
                break
            text += ch
            token = np.zeros_like(token)
            token[0, 0, t_index[ch]] = 1
        return text

    texts = words[:12]
    want = [keras_decode(w) for w in texts]
    for backend in ("onnx", "tflite"):
        assert runtime.load(tmp_path / "art", backend=backend).translate(texts) == want
    assert any(want), "an untrained-looking model would make this test weak"


@pytest.mark.parametrize("change, found", [
    ("causal", "use_causal_mask"),
    ("key", "no key"),
    ("concat", "score_mode='concat'"),
    ("relu", "activation relu"),
    ("memory", "expected the top encoder layer's sequence output"),
])
def test_unsupported_attention_shapes_are_refused_by_name(change, found):
    import keras
    from keras import layers

    from family.errors import ModelShapeError
    from family.structure import locate

    enc_in = keras.Input((None, 5))
    enc_out, h, c = layers.LSTM(8, return_sequences=True, return_state=True)(enc_in)
    dec_in = keras.Input((None, 6))
    dec_out, _, _ = layers.LSTM(8, return_sequences=True, return_state=True)(
        dec_in, initial_state=[h, c])
    value = layers.Dense(8)(enc_in) if change == "memory" else enc_out
    call = [dec_out, value, value] if change == "key" else [dec_out, value]
    attention = layers.Attention(score_mode="concat" if change == "concat" else "dot")
    context = attention(call, use_causal_mask=change == "causal")
    x = layers.Concatenate()([context, dec_out])
    x = layers.Dense(8, activation="relu" if change == "relu" else "tanh")(x)
    model = keras.Model([enc_in, dec_in], layers.Dense(6, activation="softmax")(x))
    with pytest.raises(ModelShapeError, match=re.escape(found)):
        locate(model)


def test_train_help_names_the_attention_options():
    done = run_module("train", "--help")
    assert "--attention {luong,bahdanau}" in done.stdout and "numbers" in done.stdout
    assert ROOT.joinpath("heatmap", "__main__.py").is_file()
