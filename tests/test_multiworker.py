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
    summary = read_json(outs[0] / "train.json")
    assert summary["distribution"]["replicas"] == 2 and summary["epochs_run"] == 1
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
