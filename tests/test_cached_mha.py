"""The cached step for a decoder of the user's own, built functionally from Keras's
MultiHeadAttention (causal self-attention, cross-attention over the encoder), an
Embedding plus KerasHub's PositionEmbedding, residual adds and LayerNormalization.

The answer keys are outside the code under test: the task's own right answers
(reversing a digit string), the whole Keras model called on the growing prefix
(keras.io's decode loop, written here), and its probabilities at every position.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import read_json, replay_in_node

D, HEADS, FF, DIGITS = 32, 4, 64, "0123456789"


def _pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    texts = ["".join(rng.choice(list(DIGITS), rng.integers(3, 7))) for _ in range(n)]
    return [(t, t[::-1]) for t in texts]


def _vocab():
    from runtime.vocab import InputPadding, Vocabulary

    return Vocabulary(("",) + tuple(DIGITS), ("", "\t", "\n") + tuple(DIGITS), "\t", "\n",
                      6, 8, InputPadding("right", ""))


def _model(vocab, value_dim=None, masked_decoder=False):
    """The encoder: masked token-and-position embedding, a feed-forward block (its
    padding mask reaches the cross-attention's value). The decoder: Embedding(mask_zero)
    + PositionEmbedding, causal self-attention, cross-attention, feed-forward, each
    with a residual and a LayerNormalization. Keras's PositionEmbedding drops the
    decoder's mask, so this self-attention attends padding; ``masked_decoder``: a
    TokenAndPositionEmbedding keeps it, so the self-attention masks padding keys.
    (The cross-attention's query gets no mask in either: the self-attention clears
    it on its input, and an Add of a masked and an unmasked tensor has none.)"""
    import keras
    import keras_hub
    from keras import layers

    keras.utils.set_random_seed(0)
    source = keras.Input((vocab.max_input_length,), dtype="int32", name="source")
    target = keras.Input((vocab.max_output_length,), dtype="int32", name="target")
    e = keras_hub.layers.TokenAndPositionEmbedding(vocab.input_size, vocab.max_input_length,
                                                   D, mask_zero=True)(source)
    # Position-wise layers and an Add layer (not ``+``, not a MultiHeadAttention, which
    # clears its inputs' masks): the encoder's padding mask reaches the cross-attention.
    e = layers.LayerNormalization()(layers.Add()([e, layers.Dense(D)(
        layers.Dense(FF, "relu")(e))]))
    if masked_decoder:
        x = keras_hub.layers.TokenAndPositionEmbedding(vocab.target_size,
                                                       vocab.max_output_length, D,
                                                       mask_zero=True)(target)
    else:
        x = layers.Embedding(vocab.target_size, D, mask_zero=True)(target)
        x = layers.Add()([x, keras_hub.layers.PositionEmbedding(vocab.max_output_length)(x)])
    s = layers.MultiHeadAttention(HEADS, D // HEADS, value_dim=value_dim, name="self")(
        x, x, use_causal_mask=True)
    x = layers.LayerNormalization()(layers.Add()([x, layers.Dropout(0.1)(s)]))
    x = layers.LayerNormalization()(x + layers.MultiHeadAttention(HEADS, D // HEADS,
                                                                  name="cross")(x, e))
    x = layers.LayerNormalization()(x + layers.Dense(D)(layers.Dense(FF, "relu")(x)))
    out = layers.Dense(vocab.target_size, activation="softmax")(x)
    return keras.Model([source, target], out)


def _teacher(vocab, pairs):
    ids = vocab.encode_inputs([a for a, _ in pairs])
    t = vocab.max_output_length
    given, want = np.zeros((len(pairs), t), np.int32), np.zeros((len(pairs), t), np.int32)
    for i, (_, b) in enumerate(pairs):
        out = vocab.encode_target(b)  # the tokens and the end
        given[i, :len(out)] = [vocab.start_id] + out[:-1]
        want[i, :len(out)] = out
    return ids, given, want


def _keras_greedy(model, vocab, texts) -> list[str]:
    """keras.io's loop: the whole model on the prefix so far, the argmax at its end."""
    ids = vocab.encode_inputs(texts)
    prefix = np.zeros((len(texts), vocab.max_output_length), np.int32)
    prefix[:, 0] = vocab.start_id
    done = np.zeros(len(texts), bool)
    out = [[] for _ in texts]
    for t in range(vocab.max_output_length):
        probs = np.asarray(model([ids, prefix], training=False))[:, t]
        for i, token in enumerate(probs.argmax(-1)):
            if not done[i]:
                done[i] = token == vocab.end_id
                if not done[i]:
                    out[i].append(int(token))
        if done.all() or t + 1 == vocab.max_output_length:
            break
        prefix[:, t + 1] = probs.argmax(-1)
    return [vocab.join_target(o) for o in out]


@pytest.fixture(scope="module")
def mha(tmp_path_factory):
    import export

    vocab = _vocab()
    model = _model(vocab)
    ids, given, want = _teacher(vocab, _pairs(3000, 0))
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit([ids, given], want, sample_weight=(want > 0).astype("float32"), epochs=24,
              batch_size=64, verbose=0)
    held = _pairs(80, 1)
    texts = [a for a, _ in held]
    root = tmp_path_factory.mktemp("mha")
    export.export_model(model, vocab, root / "artifact", texts=texts, log=lambda *a, **k: None)
    return {"model": model, "vocab": vocab, "texts": texts, "truth": [b for _, b in held],
            "keras": _keras_greedy(model, vocab, texts), "artifact": root / "artifact"}


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """The same shape with a decoder whose padding mask reaches its attention,
    untrained (probabilities equal or not regardless of what was learned)."""
    import export

    vocab = _vocab()
    model = _model(vocab, masked_decoder=True)
    head = model.layers[-1]  # untrained, it would emit padding, which no decode writes
    kernel, bias = head.get_weights()
    bias[0] = -30.0
    head.set_weights([kernel, bias])
    out = tmp_path_factory.mktemp("masked") / "artifact"
    texts = [a for a, _ in _pairs(40, 2)]
    export.export_model(model, vocab, out, texts=texts, fused=False, log=lambda *a, **k: None)
    return {"model": model, "vocab": vocab, "texts": texts, "artifact": out}


def test_the_model_learned_to_reverse(mha):
    right = sum(a == b for a, b in zip(mha["keras"], mha["truth"]))
    assert right >= 0.8 * len(mha["truth"]), (right, mha["keras"][:5], mha["truth"][:5])


def test_auto_picks_the_cached_step_with_one_cache_and_one_cross(mha):
    meta = read_json(mha["artifact"] / "artifact.json")
    assert meta["step"]["kind"] == "cached"
    assert [s["name"] for s in meta["state"]] == ["prefix", "position", "cache0"]
    assert [m["name"] for m in meta["memory"]] == ["cross0", "memory_mask"]
    cached = meta["architecture"]["cached"]
    assert (cached["self_attention_layers"], cached["cross_attention_layers"]) == (
        ["self"], ["cross"])
    assert meta["parity"]["passed"]


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
@pytest.mark.parametrize("greedy", ["step", "fused"])
def test_decodes_as_the_whole_model_on_its_prefix(mha, backend, greedy):
    import runtime

    model = runtime.load(mha["artifact"], backend=backend, greedy=greedy)
    assert model.translate(mha["texts"]) == mha["keras"]
    assert [model.translate([t])[0] for t in mha["texts"][:10]] == mha["keras"][:10]


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("which", ["mha", "masked"])
def test_probabilities_equal_keras_at_every_position_padding_included(request, which, fmt):
    """Random prefixes, some with padding ids inside: the cached graph stepped position
    by position gives the whole model's distribution there, with padding masked
    exactly where Keras masks it (the encoder's in cross-attention; the decoder's
    only where its mask reaches the attention)."""
    from export.parity import step_backend

    mha = request.getfixturevalue(which)
    vocab = mha["vocab"]
    ids = vocab.encode_inputs(mha["texts"][:16])
    rng = np.random.default_rng(3)
    tokens = rng.integers(1, vocab.target_size, (len(ids), vocab.max_output_length),
                          dtype=np.int32)
    tokens[:, 0] = vocab.start_id
    tokens[::3, 4:] = 0  # right padding, as training feeds it
    tokens[1::3, 2] = 0  # padding among tokens: keys the later positions must not see
    want = np.asarray(mha["model"]([ids, tokens], training=False))
    graphs = step_backend(mha["artifact"], fmt, "fp32")[1]
    state, worst = graphs.encode(ids), 0.0
    for t in range(vocab.max_output_length):
        probs, state, _, _ = graphs.step(tokens[:, t], state)
        # A padding query's own row is left out: with every key masked Keras attends
        # uniformly, over the future too (no decode writes padding, and the prefix
        # step's causality proof feeds none before a position for that reason).
        real = tokens[:, t] != 0
        worst = max(worst, float(np.abs(probs - want[:, t])[real].max()))
    assert worst <= 1e-5, worst


def test_beams_and_node_run_on_the_caches(mha, tmp_path):
    import runtime

    model = runtime.load(mha["artifact"], backend="tflite")
    texts = mha["texts"][:12]
    greedy = model.score(texts, model.translate(texts))
    beams = model.score(texts, model.translate(texts, beam_size=4))
    assert all(b >= g - 1e-4 for b, g in zip(beams, greedy))
    replay_in_node(mha["artifact"], texts, tmp_path / "cases.json")


def test_unequal_key_and_value_widths_stay_on_the_prefix_step(tmp_path):
    """Not cached (a cache stacks keys and values of one width); auto says why, the
    prefix step still exports it, and --step cached refuses it by name."""
    import export
    from export.pipeline import locate_step
    from family.errors import ModelShapeError
    from family.prefix import PrefixParts

    vocab = _vocab()
    model = _model(vocab, value_dim=4)
    parts, why = locate_step(model, vocab, "auto", log=lambda *a, **k: None)
    assert isinstance(parts, PrefixParts) and "equal key and value widths" in why
    with pytest.raises(ModelShapeError, match="keras.MultiHeadAttention 'self'"):
        export.export_model(model, vocab, tmp_path / "a", step="cached", formats=("onnx",),
                            log=lambda *a, **k: None)
    assert not (tmp_path / "a").exists()
