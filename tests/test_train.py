"""Training: the seed's model, data loading, the CLI, and its failure behaviour."""
from __future__ import annotations

import signal

import numpy as np
import pytest

from conftest import TINY_TRAIN, read_json, run_module, signal_part_way
from runtime.errors import DataError, InputError
from runtime.vocab import InputPadding, Vocabulary
from train import data


def test_seed_model_has_164380_parameters():
    from train.model import build_model

    model = build_model(28, 28, 128)
    assert model.count_params() == 164_380
    assert {"encoder_lstm", "decoder_lstm", "decoder_dense"} <= {l.name for l in model.layers}


def test_structure_finds_layers_whatever_their_names_and_order():
    import keras
    from keras import layers

    from family.structure import locate

    # Built like keras.io's example: unnamed layers; decoder input declared first.
    dec_in = keras.Input((None, 7))
    enc_in = keras.Input((None, 5))
    _, h, c = layers.LSTM(16, return_state=True)(enc_in)
    seq, _, _ = layers.LSTM(16, return_sequences=True, return_state=True)(dec_in,
                                                                        initial_state=[h, c])
    model = keras.Model([enc_in, dec_in], layers.Dense(7, activation="softmax")(seq))
    parts = locate(model)
    assert parts.input_size == 5 and parts.target_size == 7 and parts.latent_dim == 16
    assert parts.decoder[0].layer.return_sequences
    assert not parts.encoder[0].layer.return_sequences and parts.decoder[0].state_from == 0
    assert parts.cell == "lstm" and parts.state_kinds == ("h", "c")


def test_loss_falls_on_tiny_data(tmp_path):
    import keras

    from train.fit import Batches, FitConfig, fit
    from train.model import build_model

    keras.utils.set_random_seed(0)
    pairs = data.date_pairs(300, seed=0)
    vocab = Vocabulary.build([p[0] for p in pairs], [p[1] for p in pairs])
    model = build_model(vocab.input_size, vocab.target_size, 32)
    train = Batches(vocab, pairs, 16, ids=False, trim_inputs=False, shuffle=True)
    val = Batches(vocab, pairs, 16, ids=False, trim_inputs=False, shuffle=False)
    history, interrupted, best = fit(model, train, val, tmp_path, FitConfig(5, 16, 5, verbose=0))
    losses = [e["loss"] for e in history.epochs]
    assert not interrupted and len(losses) == 5 and 1 <= best <= 5
    assert losses[-1] < 0.8 * losses[0]
    assert (tmp_path / "model.keras").exists() and (tmp_path / "history.json").exists()


def test_teacher_forcing_shifts_target_after_start_token():
    from train.fit import teacher_forcing_arrays

    pairs = [("ab", "xy"), ("b", "y")]
    vocab = Vocabulary.build([p[0] for p in pairs], [p[1] for p in pairs])
    enc, dec_in, dec_out, weights = teacher_forcing_arrays(vocab, pairs)
    ids_in, ids_out = dec_in.argmax(-1), dec_out.argmax(-1)
    x, y = vocab.target_index["x"], vocab.target_index["y"]
    assert ids_in[0].tolist() == [vocab.start_id, x, y]
    assert ids_out[0].tolist() == [x, y, vocab.end_id]
    assert weights.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert dec_out[1, 2].sum() == 0  # padding has no target, so no loss
    # Left padding: the text ends on the last encoder step; padding rows are zero.
    assert enc[1, 0].sum() == 0 and enc[1, 1].argmax() == vocab.input_index["b"]


def test_vocabulary_round_trip_and_padding_rules(tmp_path):
    vocab = Vocabulary.build(["abc", "a "], ["xy"])
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab
    ids = vocab.encode_inputs(["a"])
    assert ids.tolist() == [[vocab.pad_id, vocab.pad_id, vocab.input_index["a"]]]
    right = Vocabulary.build(["abc", "a"], ["xy"], padding=InputPadding("right", "b"))
    assert right.encode_inputs(["a"]).tolist() == [[right.input_index["a"]] +
                                                   [right.input_index["b"]] * 2]
    assert vocab.decode_target([vocab.target_index["x"], vocab.end_id,
                                vocab.target_index["y"]]) == "x"


def test_builtin_dates_are_deterministic_unambiguous_and_held_out():
    pairs = data.date_pairs(3000, seed=7)
    assert pairs == data.date_pairs(3000, seed=7)
    assert pairs != data.date_pairs(3000, seed=8)
    answers = {}
    for text, iso in pairs:
        assert any(ch.isalpha() for ch in text), text  # no numeric, locale-ambiguous forms
        assert answers.setdefault(text, iso) == iso
    languages = {"January": "en", "janvier": "fr", "Januar": "de", "enero": "es",
                 "gennaio": "it", "janeiro": "pt", "januari": "nl"}
    found = {lang for word, lang in languages.items() if any(word in t for t, _ in pairs)}
    assert len(found) == 7
    train, val, test = data.split(pairs, 100, 0.1, seed=0)
    assert not {t for t, _ in test} & {t for t, _ in train + val}
    assert len(test) == 100 and len(val) == round(len(pairs) * 0.1)


@pytest.mark.parametrize("content, message", [
    (b"", "no input<TAB>target pairs"),
    (b"hello\tbonjour\nno tab here\n", ":2: no tab"),
    (b"hello\tbonjour\n\tvide\n", ":2: empty input"),
    (b"hello\t \n", ":1: empty target"),
    (b"ok\tfine\n\xff\xfe bad\tbytes\n", ":2: not valid UTF-8"),
])
def test_bad_data_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "pairs.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as err:
        data.read_pairs(path)
    assert str(path) in str(err.value)


def test_missing_data_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        data.read_pairs(tmp_path / "nope.txt")


def test_pair_file_format_bom_crlf_limit_and_long_lines(tmp_path):
    path = tmp_path / "fra.txt"
    long = "x" * 1_000_000
    path.write_bytes("\ufeffGo.\tVa !\tCC-BY 2.0 (France)\r\n\nHi.\tSalut !\n"
                     f"{long}\tlong\nRun!\tCours !\r\n".encode())
    result = data.read_pairs(path)
    assert result.pairs == [("Go.", "Va !"), ("Hi.", "Salut !"), ("Run!", "Cours !")]
    assert result.skipped_long == 1
    assert data.read_pairs(path, limit=2).pairs == result.pairs[:2]


def test_cli_trains_writes_everything_and_refuses_to_overwrite(tmp_path):
    pairs = tmp_path / "pairs.txt"
    rows = data.date_pairs(400, seed=3)
    pairs.write_text("".join(f"{a}\t{b}\tattribution\n" for a, b in rows), encoding="utf-8")
    out = tmp_path / "run"
    args = ["--data", str(pairs), "--epochs", "2", "--latent-dim", "16", "--test-size", "20",
            "--quiet", "--out", str(out)]
    done = run_module("train", *args)
    assert done.returncode == 0, done.stderr
    assert "held-out exact match" in done.stdout
    names = {p.name for p in out.iterdir()}
    assert {"model.keras", "vocab.json", "history.json", "loss.png", "train.json",
            "heldout.tsv"} <= names
    summary = read_json(out / "train.json")
    assert summary["epochs_run"] == 2 and 0 <= summary["held_out_exact_match"] <= 1
    assert len(read_json(out / "history.json")["epochs"]) == 2
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = run_module("train", *args)
    assert again.returncode == 2 and "--force" in again.stderr
    assert "Traceback" not in again.stderr


def test_cli_reports_bad_data_without_traceback(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("one\tun\ntwo deux\n", encoding="utf-8")
    done = run_module("train", "--data", str(path), "--out", str(tmp_path / "o"))
    assert done.returncode == 2
    assert f"{path}:2: no tab" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_cli_help():
    done = run_module("train", "--help")
    assert done.returncode == 0
    for flag in ("--data", "--epochs", "--batch-size", "--latent-dim", "--seed", "--out",
                 "--strategy", "--force"):
        assert flag in done.stdout


def test_same_seed_same_model(tmp_path):
    import keras

    from train.__main__ import main

    for name in ("a", "b"):
        assert main([*TINY_TRAIN, "--samples", "300", "--epochs", "1",
                     "--out", str(tmp_path / name)]) == 0
    wa = keras.models.load_model(tmp_path / "a" / "model.keras").get_weights()
    wb = keras.models.load_model(tmp_path / "b" / "model.keras").get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(wa, wb))


def test_mirrored_strategy_trains_the_same_model_with_one_replica(tmp_path):
    """Under MirroredStrategy with one replica (this CPU machine) training is the same
    computation: the same weights as the default strategy, and the strategy recorded."""
    import keras

    from train.__main__ import main

    weights = {}
    for strategy in ("default", "mirrored"):
        out = tmp_path / strategy
        assert main([*TINY_TRAIN, "--samples", "300", "--epochs", "1", "--strategy", strategy,
                     "--out", str(out)]) == 0
        weights[strategy] = keras.models.load_model(out / "model.keras").get_weights()
    assert read_json(tmp_path / "mirrored" / "train.json")["distribution"] == {
        "strategy": "MirroredStrategy", "replicas": 1}
    assert read_json(tmp_path / "default" / "train.json")["distribution"]["replicas"] == 1
    assert all(np.array_equal(a, b) for a, b in zip(weights["default"], weights["mirrored"]))


def test_ctrl_c_keeps_best_checkpoint_loadable(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--samples", "2000", "--epochs", "200", "--latent-dim", "32",
            "--patience", "200", "--test-size", "20", "--quiet", "--out", str(out)]
    proc = signal_part_way(args, tmp_path, ".run.partial-*/model.keras", signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr
    import keras

    model = keras.models.load_model(out / "model.keras")
    assert model.count_params() > 0
    assert read_json(out / "train.json")["interrupted"] is True
    assert not list(tmp_path.glob(".run.*"))


def test_version_1_vocabulary_files_still_load_as_characters(tmp_path):
    import json

    v1 = {"format": "seq2seq-vocab", "version": 1, "input_tokens": ["a", "b", " "],
          "target_tokens": ["\t", "\n", "x"], "start_token": "\t", "end_token": "\n",
          "max_input_length": 4, "max_output_length": 3,
          "padding": {"side": "right", "token": " "}}
    (tmp_path / "v1.json").write_text(json.dumps(v1))
    vocab = Vocabulary.load(tmp_path / "v1.json")
    assert (vocab.unit, vocab.target_unit, vocab.standardize) == ("char", "char", None)
    assert vocab.encode_inputs(["ab"]).tolist() == [[0, 1, 2, 2]]
    assert vocab.to_dict()["version"] == 2 and Vocabulary.from_dict(vocab.to_dict()) == vocab


def test_word_vocabulary_standardises_splits_and_maps_unknown_words():
    vocab = Vocabulary.build(["Hello, World!", "the  cat"], ["le chat", "bonjour le monde"],
                             "[start]", "[end]", unit="word", target_unit="word")
    assert vocab.input_tokens[:2] == ("", "[UNK]") and vocab.padding.token == ""
    hello, cat, unk = (vocab.input_index[w] for w in ("hello", "cat", "[UNK]"))
    assert vocab.max_input_length == 2
    assert vocab.encode_inputs(["HELLO... cat"]).tolist() == [[hello, cat]]
    assert vocab.encode_inputs(["hello dog"], unknown="unk").tolist() == [[hello, unk]]
    assert vocab.encode_inputs(["hello dog"], unknown="skip").tolist() == [[0, hello]]
    with pytest.raises(InputError, match="words outside the vocabulary: 'dog'"):
        vocab.encode_inputs(["hello dog"])
    assert vocab.decode_target(vocab.encode_target("le  chat")) == "le chat"
    chars = Vocabulary.build(["ab"], ["x"])
    with pytest.raises(InputError, match="needs a vocabulary with an unknown_token"):
        chars.encode_inputs(["ab"], unknown="unk")


def test_a_small_pair_file_trains_with_a_held_out_set_sized_from_it(tmp_path):
    """400 pairs cannot spare the default 500 for testing: with no --test-size the
    held-out set is 10% of the data; an explicit size keeps the check."""
    pairs = tmp_path / "pairs.txt"
    rows = data.date_pairs(400, seed=5)
    pairs.write_text("".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    out = tmp_path / "run"
    done = run_module("train", "--data", str(pairs), "--epochs", "2", "--latent-dim", "8",
                      "--patience", "5", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "held-out set: 40 inputs (10% of the distinct inputs" in done.stdout
    assert read_json(out / "train.json")["pairs"]["held_out"] == 40
    # Not a terminal: one progress line per epoch, not one per batch update.
    assert done.stdout.count("val_loss:") == 2  # one line for each of the 2 epochs
    assert "\r" not in done.stdout and "\x1b[" not in done.stdout
    done = run_module("train", "--data", str(pairs), "--test-size", "500", "--epochs", "1",
                      "--out", str(tmp_path / "again"))
    assert done.returncode == 2 and "too few for a test set of 500" in done.stderr


def test_a_deeply_nested_vocabulary_file_is_a_clear_error(tmp_path):
    from runtime.errors import VocabularyError

    path = tmp_path / "vocab.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(VocabularyError, match="nested too deeply"):
        Vocabulary.load(path)


def test_every_distinct_pair_is_kept_and_split_by_input():
    """fra.txt gives one input several translations: all of them train, an input
    and all its targets land on one side of the split, and only an exact repeat of
    a pair is dropped."""
    rows = [("Go.", "Va !"), ("Go.", "Marche."), ("Hi.", "Salut !"), ("Go.", "Bouge !"),
            ("Go.", "Va !"), ("Run!", "Cours !"), ("Run!", "Courez !")]
    rows += [(f"w{i}", f"m{i}") for i in range(40)]
    train, val, test = data.split(rows, 5, 0.2, seed=1)
    everything = train + val + test
    assert sorted(everything) == sorted(set(rows))  # each distinct pair exactly once
    sides = [{a for a, _ in part} for part in (train, val, test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(sides[2]) == 5 and len(sides[1]) == round(len({a for a, _ in rows}) * 0.2)
    assert dict(data.group(rows))["Go."] == ["Va !", "Marche.", "Bouge !"]


def test_quality_metrics_match_the_maintained_libraries():
    """Exact match counts any reference; chrF and BLEU are sacrebleu's with every
    reference; CER and WER equal jiwer's on single references, and take the
    closest reference where there are several."""
    import jiwer
    import sacrebleu

    from family.quality import measure

    outputs = ["2023-01-15", "1949-04-0", "le chat noir", "x"]
    refs = ["2023-01-15", "1949-04-05", "le chien noir", "xyz"]
    q = measure(outputs, refs)
    assert q.exact_match == 0.25 and q.count == 4
    assert q.chrf == pytest.approx(sacrebleu.corpus_chrf(outputs, [refs]).score)
    assert q.bleu == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs], tokenize="char").score)
    assert q.cer == pytest.approx(jiwer.cer(refs, outputs))
    assert q.wer == pytest.approx(jiwer.wer(refs, outputs))
    words = measure(outputs, refs, char_level=False)
    assert words.bleu == pytest.approx(sacrebleu.corpus_bleu(outputs, [refs]).score)
    multi = measure(outputs, [[r, o] if i == 1 else [r] for i, (r, o) in
                              enumerate(zip(refs, outputs))])
    assert multi.exact_match == 0.5
    # Item 1's closest reference is its own output (no edits, 9 characters).
    others = [r for i, r in enumerate(refs) if i != 1]
    edits = jiwer.cer(others, [o for i, o in enumerate(outputs) if i != 1]) * sum(
        map(len, others))
    assert multi.cer == pytest.approx(edits / (sum(map(len, others)) + len(outputs[1])))
    alt = [None, "1949-04-0", None, None]
    assert multi.chrf == pytest.approx(sacrebleu.corpus_chrf(outputs, [refs, alt]).score)


def test_alternative_targets_train_and_all_count_when_held_out(tmp_path):
    """A pair file whose inputs each have two right answers: both train, held-out
    inputs keep both in heldout.tsv, train.json's quality counts either as right
    (checked with sacrebleu and the Keras model's own decodes), and export groups
    them into one case per input."""
    import keras
    import sacrebleu

    from export.pipeline import check_pairs
    from family.reference import ReferenceDecoder

    rows = data.date_pairs(300, seed=4)
    path = tmp_path / "pairs.txt"
    path.write_text("".join(f"{a}\t{b}\n{a}\t{b.replace('-', '/')}\n" for a, b in rows),
                    encoding="utf-8")
    out = tmp_path / "run"
    done = run_module("train", "--data", str(path), "--epochs", "2", "--latent-dim", "16",
                      "--test-size", "30", "--quiet", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    summary = read_json(out / "train.json")
    assert summary["pairs"]["held_out_inputs"] == 30 and summary["pairs"]["held_out"] == 60
    assert summary["pairs"]["train"] + summary["pairs"]["validation"] == 2 * (300 - 30)
    vocab = Vocabulary.load(out / "vocab.json")
    texts, targets = check_pairs(vocab, out / "heldout.tsv", 100)
    assert len(texts) == 30 and all(len(t) == 2 for t in targets)
    decoded = ReferenceDecoder(keras.models.load_model(out / "model.keras"), vocab).greedy(texts)
    quality = summary["held_out_quality"]
    assert quality["exact_match"] == pytest.approx(
        sum(d in t for d, t in zip(decoded, targets)) / 30)
    assert quality["chrf"] == pytest.approx(sacrebleu.corpus_chrf(
        decoded, [[t[0] for t in targets], [t[1] for t in targets]]).score, abs=1e-5)
