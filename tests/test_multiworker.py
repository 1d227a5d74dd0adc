"""``python -m train --strategy multiworker``: two worker processes on 127.0.0.1
train in step (MultiWorkerMirroredStrategy, TF_CONFIG); only the chief writes the
result, which exports and decodes; a lost worker fails the run clearly."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runtime
from conftest import ROOT, read_json, run_module

TRAIN = ["--epochs", "1", "--latent-dim", "16", "--batch-size", "32", "--test-size", "20",
         "--seed", "3", "--quiet", "--strategy", "multiworker", "--force"]


def _ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _workers(args_of, tmp_path: Path) -> list[subprocess.Popen]:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in _ports(2)]}
    procs = []
    for index in (1, 0):  # the chief last, so the other is already listening
        env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CONFIG": json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, "-m", "train", *args_of(index)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    return procs[::-1]  # [chief, worker 1]


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    from train.data import date_pairs

    path = tmp_path_factory.mktemp("mw") / "pairs.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in date_pairs(400, seed=4)),
                    encoding="utf-8")
    return path


def test_two_workers_train_and_only_the_chief_writes_a_model_that_decodes(pairs_file,
                                                                          tmp_path):
    outs = {0: tmp_path / "chief", 1: tmp_path / "worker1"}
    chief, worker = _workers(lambda i: ["--data", str(pairs_file), *TRAIN,
                                        "--out", str(outs[i])], tmp_path)
    c_out, c_err = chief.communicate(timeout=300)
    w_out, w_err = worker.communicate(timeout=60)
    assert chief.returncode == 0, c_err[-3000:]
    assert worker.returncode == 0, w_err[-3000:]
    assert "2 replica(s); this process: chief" in c_out
    assert "worker 1: training done; the chief writes the results" in w_out
    assert not outs[1].exists()  # nothing a user could take for the result
    # Both workers trained in step: they end with the same weights, bit for bit.
    digests = [next(ln.split()[-1] for ln in out.splitlines() if "final weights sha256" in ln)
               for out in (c_out, w_out)]
    assert digests[0] == digests[1]
    summary = read_json(outs[0] / "train.json")
    assert summary["distribution"]["replicas"] == 2 and summary["epochs_run"] == 1
    assert summary["distribution"]["weights_sha256"] == digests[0]
    assert len(read_json(outs[0] / "history.json")["epochs"]) == 1
    done = run_module("export", str(outs[0] / "model.keras"), "--formats", "onnx",
                      "--no-fused", "--check-samples", "20")
    assert done.returncode == 0, done.stderr[-3000:]
    heldout = [ln.split("\t")[0] for ln in
               (outs[0] / "heldout.tsv").read_text(encoding="utf-8").splitlines()]
    decoded = runtime.load(outs[0] / "artifact").translate(heldout)
    assert len(decoded) == 20 and "greedy == Keras (20 inputs)" in done.stdout


def test_a_lost_worker_fails_the_run_clearly_and_writes_nothing(tmp_path):
    outs = {0: tmp_path / "chief", 1: tmp_path / "worker1"}
    long_run = ["--samples", "3000", "--epochs", "200", "--patience", "200",
                "--latent-dim", "16", "--batch-size", "32", "--quiet",
                "--strategy", "multiworker", "--force"]
    chief, worker = _workers(lambda i: [*long_run, "--out", str(outs[i])], tmp_path)
    deadline = time.monotonic() + 120
    staging = list(tmp_path.glob(".chief*"))
    while time.monotonic() < deadline and not any(
            (p / "history.json").exists() for p in staging):  # an epoch is done
        time.sleep(0.2)
        staging = list(tmp_path.glob(".chief*"))
        assert chief.poll() is None, chief.communicate()
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    _, err = chief.communicate(timeout=300)
    assert chief.returncode == 2, err[-3000:]
    assert "error: lost contact with another worker" in err and "Traceback" not in err
    assert not outs[0].exists() and not list(tmp_path.glob(".chief*"))


def test_multiworker_without_tf_config_is_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    done = subprocess.run([sys.executable, "-m", "train", "--strategy", "multiworker",
                           "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**env, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "needs TF_CONFIG" in done.stderr
    bad = {**env, "PYTHONPATH": str(ROOT), "TF_CONFIG": '{"cluster": {}}'}
    done = subprocess.run([sys.executable, "-m", "train", "--strategy", "multiworker",
                           "--out", str(tmp_path / "x")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=bad)
    assert done.returncode == 2 and "not a tf.distribute cluster spec" in done.stderr


def _small_fit_inputs(tmp_path, strategy=None, samples=300):
    import contextlib

    from runtime.vocab import Vocabulary
    from train import fit
    from train.data import date_pairs, split
    from train.model import build_model

    train, val, _ = split(date_pairs(samples, seed=2), 10, 0.2, seed=0)
    vocab = Vocabulary.build([a for a, _ in train + val], [b for _, b in train + val])
    with strategy.scope() if strategy else contextlib.nullcontext():  # as train does
        model = build_model(vocab.input_size, vocab.target_size, 16)
    return model, fit.teacher_forcing_arrays(vocab, train), fit.teacher_forcing_arrays(
        vocab, val)


def test_the_multiworker_loop_applies_its_gradients(tmp_path):
    """The custom loop (run here under one replica) changes the weights and makes
    the training loss fall epoch after epoch."""
    import numpy as np
    import tensorflow as tf

    from train import multiworker
    from train.fit import FitConfig

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    model, train_arrays, val_arrays = _small_fit_inputs(tmp_path, strategy)
    before = [w.copy() for w in model.get_weights()]
    history, _ = multiworker.fit(model, train_arrays, val_arrays, tmp_path,
                                 FitConfig(3, 32, 5, verbose=0), strategy)
    losses = [e["loss"] for e in history.epochs]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2], losses
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert all(changed)


def test_the_multiworker_loop_stops_early_and_restores_the_best_weights(tmp_path):
    """Validation losses 1.0, 0.5, 0.8, 0.9 with patience 2: the loop stops after
    epoch 4 and the model holds the weights it had after epoch 2 (the best)."""
    import numpy as np

    from train import multiworker
    from train.fit import AtomicCheckpoint, FitConfig, HistoryFile

    model, _, _ = _small_fit_inputs(tmp_path)
    val_losses = iter([1.0, 0.5, 0.8, 0.9, 0.1, 0.1])
    snapshots = []

    def train_fn(_):
        model.set_weights([w + 1.0 for w in model.get_weights()])  # a visible step
        snapshots.append([w.copy() for w in model.get_weights()])
        return [2.0, 1.0, 2.0]

    def val_fn(_):
        return [next(val_losses), 1.0, 1.0]

    checkpoint = AtomicCheckpoint(tmp_path / "model.keras")
    checkpoint.set_model(model)
    history, _ = multiworker._epochs(model, FitConfig(10, 32, 2, verbose=0), [0], [0],
                                     train_fn, val_fn, HistoryFile(tmp_path / "h.json"),
                                     checkpoint)
    assert [e["val_loss"] for e in history.epochs] == [1.0, 0.5, 0.8, 0.9]
    for got, want in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(got, want)
