"""Fit the model: teacher-forcing arrays, callbacks, and the result directory."""
from __future__ import annotations

import json
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from family.rundir import HISTORY_FILE, MODEL_FILE
from runtime.vocab import Vocabulary


def teacher_forcing_arrays(vocab: Vocabulary, pairs: list[tuple[str, str]],
                          ids: bool = False):
    """Encoder inputs, decoder inputs (start + target), targets (target + end)
    and per-step weights that are zero on padding, so padding adds no loss.
    Inputs are one-hot rows, or with ``ids`` token ids for Embedding layers (the
    vocabulary then reserves id 0 for padding on both sides)."""
    enc_ids = vocab.encode_inputs([p[0] for p in pairs])
    steps = vocab.max_output_length
    # Padding: id 0 for an Embedding; for one-hot, an id whose row is all zero.
    pad = 0 if ids else vocab.target_size
    dec_in = np.full((len(pairs), steps), pad, dtype=np.int32)
    dec_out = np.full((len(pairs), steps), vocab.target_size, dtype=np.int32)
    weights = np.zeros((len(pairs), steps), dtype=np.float32)
    for row, (_, target) in enumerate(pairs):
        out = vocab.encode_target(target)[:steps]
        dec_out[row, :len(out)] = out
        dec_in[row, 0] = vocab.start_id
        dec_in[row, 1:len(out)] = out[:-1]
        weights[row, :len(out)] = 1.0
    if ids:
        return enc_ids, dec_in, vocab.one_hot_targets(dec_out), weights
    return (vocab.one_hot_inputs(enc_ids), vocab.one_hot_targets(dec_in),
            vocab.one_hot_targets(dec_out), weights)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Keep the best model by val_loss; each save is written aside, then renamed,
    so an interrupt mid-save never leaves a broken model file."""

    def __init__(self, path: Path, monitor: str = "val_loss"):
        super().__init__()
        self.path = path
        self.monitor = monitor
        self.best = np.inf

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not np.isfinite(value) or value >= self.best:
            return
        self.best = float(value)
        tmp = self.path.with_name(self.path.name + ".saving.keras")
        self.model.save(tmp)
        os.replace(tmp, self.path)


class HistoryFile(keras.callbacks.Callback):
    """Write the history after every epoch, so an interrupted run keeps it."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.epochs: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        self.path.write_text(json.dumps({"epochs": self.epochs}, indent=1) + "\n")


class StopOnInterrupt(keras.callbacks.Callback):
    """Ctrl-C (SIGINT) ends training after the current batch. A KeyboardInterrupt
    raised inside TensorFlow's or Keras's own code can be lost there (training then
    ran on to the end, seen under load), so the signal only sets a flag that this
    callback turns into ``stop_training``. A second Ctrl-C interrupts at once."""

    def __init__(self):
        super().__init__()
        self.received = False

    def handle(self, signum, frame):
        if self.received:
            raise KeyboardInterrupt
        self.received = True

    def on_train_batch_end(self, batch, logs=None):
        if self.received:
            self.model.stop_training = True


@dataclass
class FitConfig:
    epochs: int
    batch_size: int
    patience: int
    verbose: int = 1


def fit(model: keras.Model, train_arrays, val_arrays, workdir: Path, cfg: FitConfig):
    """Fit with early stopping and an atomic best checkpoint. Returns the history
    callback and whether the run was interrupted (Ctrl-C)."""
    x_enc, x_dec, y, w = train_arrays
    history = HistoryFile(workdir / HISTORY_FILE)
    callbacks = [
        AtomicCheckpoint(workdir / MODEL_FILE),
        history,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience,
                                      restore_best_weights=True),
        keras.callbacks.TerminateOnNaN(),  # stop on a NaN loss; the checkpoint skips it
    ]
    v_enc, v_dec, v_y, v_w = val_arrays
    stop = StopOnInterrupt()
    callbacks.append(stop)
    interrupted = False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stop.handle) if main_thread else None
    try:
        model.fit([x_enc, x_dec], y, sample_weight=w, batch_size=cfg.batch_size,
                  epochs=cfg.epochs, validation_data=([v_enc, v_dec], v_y, v_w),
                  callbacks=callbacks, verbose=cfg.verbose, shuffle=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return history, interrupted or stop.received


def plot_history(history_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = json.loads(history_path.read_text())["epochs"]
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [e["epoch"] for e in epochs]
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        if all(key in e for e in epochs):
            ax.plot(xs, [e[key] for e in epochs], marker="o", label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("categorical cross-entropy")
    ax.set_title("seq2seq training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
