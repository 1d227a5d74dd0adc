"""``python -m train --resume RUN``: a stopped run goes on as if it had never stopped."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_TRAIN, read_json, run_module

# Adam, so that the optimizer's saved moments and step count matter; loss as the
# monitor and no schedule, so the one-epoch run's checkpoint is its last epoch.
FIT = [*TINY_TRAIN, "--samples", "400", "--embedding-dim", "8", "--mask", "--optimizer",
       "adam", "--monitor", "loss", "--schedule", "none", "--patience", "5"]


def _weights(run):
    import keras

    return keras.models.load_model(run / "model.keras").get_weights()


def test_one_epoch_then_a_resumed_one_equals_two_epochs_straight(tmp_path):
    """The reference is Keras's own uninterrupted fit of the same two epochs: the
    resumed epoch has its loss, its validation loss and its final weights."""
    from train.__main__ import main

    straight, first, resumed = tmp_path / "straight", tmp_path / "first", tmp_path / "resumed"
    assert main([*FIT, "--epochs", "2", "--out", str(straight)]) == 0
    assert main([*FIT, "--epochs", "1", "--out", str(first)]) == 0
    assert main(["--resume", str(first), "--epochs", "2", "--quiet",
                 "--out", str(resumed)]) == 0

    want = read_json(straight / "history.json")["epochs"]
    got = read_json(resumed / "history.json")["epochs"]
    assert [e["epoch"] for e in got] == [1, 2]
    assert got[0] == read_json(first / "history.json")["epochs"][0]
    for key in ("loss", "val_loss", "accuracy"):
        assert got[1][key] == pytest.approx(want[1][key], rel=1e-5, abs=1e-6), key
    assert want[1]["val_loss"] < want[0]["val_loss"]  # so epoch 2 is the one kept
    for a, b in zip(_weights(straight), _weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)

    summary = read_json(resumed / "train.json")
    assert summary["epochs_run"] == 2 and summary["best_epoch"] == 2
    assert summary["resumed"][0]["from"] == str(first)
    assert summary["resumed"][0]["epochs"] == 1
    assert summary["args"]["embedding_dim"] == 8 and summary["args"]["epochs"] == 2
    assert summary["seconds"] > read_json(first / "train.json")["seconds"]


@pytest.mark.parametrize("monitor", ["loss", "exact-match"])
def test_a_resumed_run_that_never_beats_its_start_keeps_the_start(tmp_path, monitor,
                                                                  tiny_run_one_epoch):
    """With a learning rate far too large the new epoch is worse; the result is
    then the earlier run's best model, weight for weight, also where the monitor
    changed (the starting model is measured anew, not taken from the history)."""
    from train.__main__ import main

    first, resumed = tiny_run_one_epoch, tmp_path / "resumed"
    assert main(["--resume", str(first), "--epochs", "2", "--learning-rate", "50",
                 "--monitor", monitor, "--quiet", "--out", str(resumed)]) == 0
    history = read_json(resumed / "history.json")["epochs"]
    assert not history[1]["val_loss"] < history[0]["val_loss"]
    summary = read_json(resumed / "train.json")
    assert summary["best_epoch"] == 1 and summary["args"]["learning_rate"] == 50
    for a, b in zip(_weights(first), _weights(resumed)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("extra, message", [
    (["--latent-dim", "64"], "--latent-dim: a resumed run keeps the data and the model"),
    (["--builtin", "numbers"], "--builtin: a resumed run keeps"),
    (["--epochs", "1"], "has already run 1 epochs"),
    (["--no-reset-after"], "--no-reset-after: a resumed run keeps"),
    ([], "the earlier run's --epochs 1: "),
])
def test_resume_refuses_what_it_cannot_change(tmp_path, tiny_run_one_epoch, extra, message):
    done = run_module("train", "--resume", str(tiny_run_one_epoch), *extra,
                      "--out", str(tmp_path / "o"))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_resume_never_writes_over_the_run_it_resumes(tiny_run_one_epoch):
    before = {p.name: p.read_bytes() for p in tiny_run_one_epoch.iterdir()}
    done = run_module("train", "--resume", str(tiny_run_one_epoch), "--epochs", "2",
                      "--force", "--out", str(tiny_run_one_epoch))
    assert done.returncode == 2 and "the run being resumed" in done.stderr
    assert {p.name: p.read_bytes() for p in tiny_run_one_epoch.iterdir()} == before


@pytest.mark.parametrize("name, text, message", [
    ("train.json", "[1]", "not a JSON object"),
    ("train.json", "{not json", "not readable JSON"),
    ("train.json", '{"args": {}, "seconds": 1}', "a run of an older version"),
    ("history.json", '{"epochs": 3}', "is not as python -m train writes it"),
    ("model.keras", "not a zip", "model.keras does not load"),
])
def test_resume_of_a_damaged_run_says_which_file(tmp_path, tiny_run_one_epoch, name, text,
                                                 message):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run_one_epoch, run)
    (run / name).write_text(text)
    done = run_module("train", "--resume", str(run), "--epochs", "2", "--out",
                      str(tmp_path / "o"))
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_resume_of_a_directory_that_is_not_a_run_names_what_is_missing(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "train.json").write_text("{}")
    done = run_module("train", "--resume", str(tmp_path / "run"), "--out",
                      str(tmp_path / "o"))
    assert done.returncode == 2
    assert "not a finished training run (no model.keras, vocab.json, history.json)" in (
        done.stderr)
    assert "Traceback" not in done.stderr


def test_resume_refuses_a_vocabulary_the_data_no_longer_gives(tmp_path, tiny_run_one_epoch,
                                                              capsys):
    import shutil

    from train.__main__ import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run_one_epoch, run)
    vocab = json.loads((run / "vocab.json").read_text())
    vocab["input_tokens"] = vocab["input_tokens"][::-1]
    (run / "vocab.json").write_text(json.dumps(vocab))
    assert main(["--resume", str(run), "--epochs", "2", "--out", str(tmp_path / "o")]) == 2
    assert f"another vocabulary than {run / 'vocab.json'}" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def tiny_run_one_epoch(tmp_path_factory):
    from train.__main__ import main

    out = tmp_path_factory.mktemp("resume") / "run"
    assert main([*FIT, "--epochs", "1", "--out", str(out)]) == 0
    return out
