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


def teacher_forcing_ids(vocab: Vocabulary, pairs: list[tuple[str, str]], ids: bool):
    """Encoder input ids (padded by the vocabulary's rule), decoder input ids
    (start + target), target ids (target + end) and per-step weights that are zero
    on padding, so padding adds no loss. Decoder padding is id 0 for an Embedding
    (``ids``: the vocabulary then reserves id 0 on both sides), else
    ``target_size``, whose one-hot row is all zero."""
    enc_ids = vocab.encode_inputs([p[0] for p in pairs])
    steps = vocab.max_output_length
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
    return enc_ids, dec_in, dec_out, weights


def teacher_forcing_arrays(vocab: Vocabulary, pairs: list[tuple[str, str]],
                          ids: bool = False):
    """``teacher_forcing_ids`` as the model takes them: one-hot rows, or with
    ``ids`` token ids for Embedding layers; targets one-hot."""
    enc_ids, dec_in, dec_out, weights = teacher_forcing_ids(vocab, pairs, ids)
    if ids:
        return enc_ids, dec_in, vocab.one_hot_targets(dec_out), weights
    return (vocab.one_hot_inputs(enc_ids), vocab.one_hot_targets(dec_in),
            vocab.one_hot_targets(dec_out), weights)


class Batches:
    """Teacher-forcing batches, each padded only as far as its own longest pair.

    The decoder side is always cut to the batch's longest target: its padding
    has weight 0 and the decoder is causal, and the loss is the mean over real
    target tokens (``compile_model``), so cutting changes nothing. The encoder side is cut only where
    the encoder skips padding (``trim_inputs``: an Embedding with ``mask_zero``);
    an unmasked encoder reads its padding, and at run time inputs are padded to
    the vocabulary's full length, so it trains on that. With ``shuffle``, pairs of
    similar length (of the sides that are cut) share a batch, sorted within random
    windows of 64 batches, and the order is drawn anew for every epoch, so little
    compute goes to padding.
    ``dataset()`` is what Keras's ``fit`` takes."""

    WINDOW = 64

    def __init__(self, vocab: Vocabulary, pairs, batch_size: int, ids: bool,
                 trim_inputs: bool, shuffle: bool, seed: int = 0):
        self.vocab, self.ids, self.trim_inputs = vocab, ids, trim_inputs
        self.batch_size, self.shuffle = batch_size, shuffle
        self.enc, self.dec_in, self.dec_out, self.w = teacher_forcing_ids(vocab, pairs, ids)
        self.enc_len = (self.enc != vocab.pad_id).sum(axis=1)
        self.dec_len = self.w.sum(axis=1).astype(np.int64)
        self.seed, self.epoch = seed, 0
        self.order = self._order()

    def _order(self) -> list[np.ndarray]:
        """This epoch's batches: drawn from (seed, epoch), so epoch k's order is the
        same however the batches before it were consumed."""
        n = len(self.enc)
        if not self.shuffle:
            rows = np.arange(n)
            return [rows[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        rng = np.random.default_rng((self.seed, self.epoch))
        perm = rng.permutation(n)
        batches = []
        span = self.batch_size * self.WINDOW
        for start in range(0, n, span):
            window = perm[start:start + span]
            # Sorted by what is cut: an unmasked encoder's inputs keep their full
            # length, so there only the targets' lengths group the pairs (and pairs
            # of one target length stay in random order).
            keys = ((self.dec_len[window], self.enc_len[window]) if self.trim_inputs
                    else (self.dec_len[window],))
            window = window[np.lexsort(keys)]
            batches += [window[i:i + self.batch_size]
                        for i in range(0, len(window), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int):
        rows = self.order[index]
        enc = self.enc[rows]
        if self.trim_inputs:
            keep = max(int(self.enc_len[rows].max()), 1)
            enc = enc[:, -keep:] if self.vocab.padding.side == "left" else enc[:, :keep]
        steps = int(self.dec_len[rows].max())
        dec_in, dec_out = self.dec_in[rows, :steps], self.dec_out[rows, :steps]
        if not self.ids:
            enc = self.vocab.one_hot_inputs(enc)
            dec_in = self.vocab.one_hot_targets(dec_in)
        return (enc, dec_in), self.vocab.one_hot_targets(dec_out), self.w[rows, :steps]

    def _epoch(self):
        """One pass over the batches of epoch ``self.epoch``, which Keras's epoch
        counter sets (``EpochCounter``): a pass begun and dropped (a strategy may
        start an iterator to look at the data) then changes no later epoch."""
        self.order = self._order()
        for index in range(len(self.order)):
            yield self[index]

    def dataset(self):
        """A tf.data pipeline over the batches whose shapes leave batch and time
        open (Keras's own adapters fix a time length seen in the first batches)."""
        import tensorflow as tf

        def spec(one_hot_width: int | None, dtype):
            shape = (None, None) if one_hot_width is None else (None, None, one_hot_width)
            return tf.TensorSpec(shape, dtype)

        v = self.vocab
        tokens = (spec(None, tf.int32), spec(None, tf.int32)) if self.ids else (
            spec(v.input_size, tf.float32), spec(v.target_size, tf.float32))
        signature = (tokens, spec(v.target_size, tf.float32), spec(None, tf.float32))
        batches = tf.data.Dataset.from_generator(self._epoch, output_signature=signature)
        # A known length: Keras then shows progress and does not warn at the end.
        return batches.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)

    def padded_share(self, per_batch: bool = True) -> float:
        """The share of encoder and decoder steps in this epoch's batches that are
        padding: as cut here, or (``per_batch=False``) padded to the longest pair of
        the whole data set."""
        real = padded = 0
        for rows in self.order:
            cut = per_batch and self.trim_inputs
            e = int(self.enc_len[rows].max()) if cut else self.enc.shape[1]
            d = int(self.dec_len[rows].max()) if per_batch else self.dec_in.shape[1]
            padded += len(rows) * (e + d)
            real += int(self.enc_len[rows].sum() + self.dec_len[rows].sum())
        return 1 - real / padded


class AtomicCheckpoint(keras.callbacks.Callback):
    """Keep the best model by val_loss (the multi-worker loop's checkpoint), saved
    atomically."""

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
        save_atomically(self.model, self.path)


class HistoryFile(keras.callbacks.Callback):
    """Write the history after every epoch, so an interrupted run keeps it."""

    def __init__(self, path: Path, earlier: list[dict] | None = None):
        super().__init__()
        self.path = path
        # A resumed run's history goes on from the earlier run's.
        self.epochs: list[dict] = list(earlier or [])

    def on_train_begin(self, logs=None):
        self._write()  # a resumed run stopped before its first epoch keeps the old history

    def _write(self):
        self.path.write_text(json.dumps({"epochs": self.epochs}, indent=1) + "\n")

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}})
        self._write()


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


class EpochCounter(keras.callbacks.Callback):
    """Tell the training batches which epoch Keras is starting, so each epoch's
    order is drawn from (seed, epoch)."""

    def __init__(self, batches: "Batches"):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.epoch = epoch


class ValidationDecode(keras.callbacks.Callback):
    """After every epoch, greedy-decode a sample of the validation inputs with the
    Keras reference decoder and put their exact match (any reference counts) into
    the logs as ``val_exact_match``: the progress line shows it, and the best
    epoch is chosen by it. The loss can keep falling while the answers stop
    improving, or the reverse."""

    def __init__(self, vocab: Vocabulary, groups: list[tuple[str, list[str]]]):
        super().__init__()
        self.vocab = vocab
        self.texts = [source for source, _ in groups]
        # Targets as the model writes them (words single-spaced).
        self.refs = [{vocab.decode_target(vocab.encode_target(t)) for t in targets}
                     for _, targets in groups]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["val_exact_match"] = self.measure(self.model)

    def measure(self, model: keras.Model) -> float:
        from family.reference import reference_for

        # Built anew each time: its copy of an attention layer holds that layer's
        # weights as they were when the copy was made.
        decoded = reference_for(model, self.vocab).greedy(self.texts)
        return sum(d in r for d, r in zip(decoded, self.refs)) / len(decoded)


def save_atomically(model: keras.Model, path: Path) -> None:
    """Write aside, then rename: an interrupt mid-save never leaves a broken file."""
    tmp = path.with_name(path.name + ".saving.keras")
    model.save(tmp)
    os.replace(tmp, path)


class BestEpoch(keras.callbacks.Callback):
    """Choose the best epoch, keep it and stop when none has come for ``patience``
    epochs; at the end the model holds the best epoch's weights.

    With ``monitor="exact_match"`` the best epoch has the highest
    ``val_exact_match``, ties broken by the lower ``val_loss`` (a model at 100%
    still improves); with ``"loss"`` the lowest ``val_loss``. Each new best is
    saved atomically to ``path``. An epoch whose loss is not finite is never best.

    A resumed run starts from ``start``: the number of the earlier run's best
    epoch, which the model holds when training begins, and that model's logs as
    measured now on this run's validation data. A new epoch must beat it; if none
    does, the model ends as it began."""

    def __init__(self, path: Path, patience: int, monitor: str = "loss",
                 start: tuple[int, dict | None] | None = None):
        super().__init__()
        if monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {MONITORS}, got {monitor!r}")
        self.path, self.patience, self.monitor = path, patience, monitor
        self.best: tuple | None = None
        self.best_epoch = 0
        self.best_weights = None
        self.waited = 0
        self.start = start

    def on_train_begin(self, logs=None):
        if self.start is None:
            return
        self.best_epoch, earlier = self.start
        self.best = self._key(earlier)
        self.best_weights = self.model.get_weights()
        save_atomically(self.model, self.path)  # the result, should no epoch beat it

    def _key(self, logs: dict) -> tuple | None:
        loss = logs.get("val_loss")
        if loss is None or not np.isfinite(loss):
            return None
        if self.monitor == "exact_match":
            return (-float(logs["val_exact_match"]), float(loss))
        return (float(loss),)

    def on_epoch_end(self, epoch, logs=None):
        key = self._key(logs or {})
        if key is not None and (self.best is None or key < self.best):
            self.best, self.best_epoch, self.waited = key, epoch + 1, 0
            self.best_weights = self.model.get_weights()
            save_atomically(self.model, self.path)
            return
        self.waited += 1
        if self.waited >= self.patience:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)


MONITORS = ("exact_match", "loss")
SCHEDULES = ("plateau", "none")


@dataclass
class FitConfig:
    # Upper bound on the epochs; training stops earlier on ``patience``.
    epochs: int
    batch_size: int
    # Epochs without a better one (see BestEpoch) before stopping.
    patience: int
    verbose: int = 1
    # What makes an epoch the best: "exact_match" (needs validation groups) or "loss".
    monitor: str = "loss"
    # "plateau": halve the learning rate when val_loss has not fallen for
    # ``patience // 2`` epochs (at least 1), down to 1/64 of the start; "none".
    schedule: str = "none"
    # Epochs already run (a resumed run): Keras numbers the next one from here.
    initial_epoch: int = 0
    # The plateau schedule's floor (default: 1/64 of the rate the fit starts at; a
    # resumed run keeps its first run's floor).
    min_lr: float | None = None


def callbacks_for(model: keras.Model, workdir: Path, cfg: FitConfig, vocab: Vocabulary | None,
                  val_groups, earlier: "Earlier | None" = None
                  ) -> tuple[list, HistoryFile, BestEpoch]:
    """The callbacks in the order they must run: the validation decode writes the
    metric the best epoch is chosen by and the progress line shows."""
    history = HistoryFile(workdir / HISTORY_FILE, earlier.epochs if earlier else None)
    best = BestEpoch(workdir / MODEL_FILE, cfg.patience, cfg.monitor,
                     (earlier.best_epoch, earlier.logs) if earlier else None)
    callbacks = []
    if cfg.monitor == "exact_match":
        if not val_groups or vocab is None:
            raise ValueError("monitor exact_match needs the validation inputs and a vocabulary")
        callbacks.append(ValidationDecode(vocab, val_groups))
    callbacks += [history, best]
    if cfg.schedule == "plateau":
        start = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, cfg.patience // 2),
            min_lr=cfg.min_lr or start / 64, verbose=1 if cfg.verbose else 0))
    callbacks.append(keras.callbacks.TerminateOnNaN())  # a NaN loss stops; BestEpoch skips it
    return callbacks, history, best


@dataclass(frozen=True)
class Earlier:
    """The run a resumed fit continues (``train.resume``)."""
    # Its history, epoch 1 first.
    epochs: list[dict]
    # The epoch whose weights the model starts with.
    best_epoch: int
    # The starting model measured as this fit measures an epoch (``start_logs``).
    logs: dict


def start_logs(model: keras.Model, val: "Batches", monitor: str, vocab: Vocabulary,
               val_groups) -> dict:
    """The validation figures of the model a resumed fit starts from, on this fit's
    validation data and decode sample: what a new epoch must beat. (The earlier
    history's figures may come from another sample or monitor.)"""
    loss = model.evaluate(val.dataset(), verbose=0, return_dict=True)["loss"]
    logs = {"val_loss": float(loss)}
    if monitor == "exact_match":
        logs["val_exact_match"] = ValidationDecode(vocab, val_groups).measure(model)
    return logs


def fit(model: keras.Model, train: "Batches", val: "Batches", workdir: Path, cfg: FitConfig,
        val_groups=None, earlier: Earlier | None = None):
    """Fit until ``cfg.epochs`` or no better epoch for ``cfg.patience``, keeping the
    best epoch on disk and in the model. Returns the history callback, whether the
    run was interrupted (Ctrl-C), and the best epoch (1-based)."""
    callbacks, history, best = callbacks_for(model, workdir, cfg, train.vocab, val_groups,
                                             earlier)
    callbacks.insert(0, EpochCounter(train))
    stop = StopOnInterrupt()
    callbacks.append(stop)
    interrupted = False
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stop.handle) if main_thread else None
    try:
        model.fit(train.dataset(), epochs=cfg.epochs, validation_data=val.dataset(),
                  callbacks=callbacks, verbose=cfg.verbose, shuffle=False,  # ours
                  initial_epoch=cfg.initial_epoch)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    return history, interrupted or stop.received, best.best_epoch


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
    ax.legend(loc="upper left")
    if all("val_exact_match" in e for e in epochs):  # the metric the best epoch is chosen by
        right = ax.twinx()
        right.plot(xs, [100 * e["val_exact_match"] for e in epochs], color="tab:green",
                   marker="s", label="validation exact match")
        right.set_ylabel("validation exact match (%)")
        right.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
