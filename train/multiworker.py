"""Training across workers (``--strategy multiworker``) with a custom loop.

Keras 3's ``Model.fit`` fails under ``MultiWorkerMirroredStrategy`` ("Attempt to
convert a value (PerReplica...)", keras-team/keras#20585, still open), while a
``tf.function`` step run by ``strategy.run`` trains the same Keras model fine.
So this loop does what ``fit.fit`` does with callbacks, in the same files: one
global batch split across the workers (the data sharded by example), weighted
loss and accuracy (padding steps weigh 0), early stopping on validation loss
with the best weights restored, the best model checkpointed atomically, and the
history written after every epoch. Every worker runs it in step; only the
chief's directory is the result (see ``distribution``)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .errors import TrainingError
from family.rundir import HISTORY_FILE, MODEL_FILE

from .fit import AtomicCheckpoint, FitConfig, HistoryFile


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight's bytes, in order: workers that trained in step print
    the same one."""
    import hashlib

    digest = hashlib.sha256()
    for w in model.get_weights():
        digest.update(np.ascontiguousarray(w, dtype=np.float32).tobytes())
    return digest.hexdigest()


def _dataset(arrays, batch: int, shuffle: bool, drop_remainder: bool):
    x_enc, x_dec, y, w = arrays
    data = tf.data.Dataset.from_tensor_slices(((x_enc, x_dec), y, w))
    if shuffle:
        data = data.shuffle(len(y), seed=0, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return data.batch(batch, drop_remainder=drop_remainder).with_options(options)


def fit(model: keras.Model, train_arrays, val_arrays, workdir: Path, cfg: FitConfig,
        strategy, logits: bool = False, label_smoothing: float = 0.0):
    """Returns the history (``.epochs``) and False (an interrupt ends the run with
    an error instead: the other workers cannot go on without this one)."""
    batch = cfg.batch_size
    if len(train_arrays[2]) < batch:
        raise TrainingError(f"{len(train_arrays[2])} training pairs are fewer than one global "
                            f"batch of {batch}")
    train = strategy.experimental_distribute_dataset(
        _dataset(train_arrays, batch, shuffle=True, drop_remainder=True))
    val = strategy.experimental_distribute_dataset(
        _dataset(val_arrays, batch, shuffle=False, drop_remainder=False))
    optimizer = model.optimizer
    steps = int(train_arrays[2].shape[1])

    def sums(inputs, y, w, training: bool):
        probs = model(list(inputs), training=training)
        loss = keras.losses.categorical_crossentropy(y, probs, from_logits=logits,
                                                     label_smoothing=label_smoothing)
        right = tf.cast(tf.equal(tf.argmax(y, -1), tf.argmax(probs, -1)), tf.float32)
        return loss, tf.reduce_sum(right * w), tf.reduce_sum(w)

    def train_step(inputs, y, w):
        with tf.GradientTape() as tape:
            loss, right, weight = sums(inputs, y, w, True)
            per_example = tf.reduce_sum(loss * w, axis=1) / steps
            scaled = tf.nn.compute_average_loss(per_example, global_batch_size=batch)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.reduce_sum(loss * w), right, weight

    def val_step(inputs, y, w):
        loss, right, weight = sums(inputs, y, w, False)
        return tf.reduce_sum(loss * w), right, weight

    def reduced(fn):
        @tf.function
        def run(item):
            out = strategy.run(fn, args=item)
            return [strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None) for t in out]
        return run

    train_fn, val_fn = reduced(train_step), reduced(val_step)
    history = HistoryFile(workdir / HISTORY_FILE)
    checkpoint = AtomicCheckpoint(workdir / MODEL_FILE)
    checkpoint.set_model(model)
    try:
        return _epochs(model, cfg, train, val, train_fn, val_fn, history, checkpoint)
    except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError, tf.errors.InternalError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise TrainingError(f"lost contact with another worker ({first}); the run stops "
                            "and writes nothing: start every worker again") from None


def _epochs(model, cfg, train, val, train_fn, val_fn, history, checkpoint):
    best, best_weights, waited = math.inf, None, 0
    for epoch in range(cfg.epochs):
        logs = {}
        for name, data, fn in (("", train, train_fn), ("val_", val, val_fn)):
            total = np.zeros(3)
            for item in data:
                total += [float(t) for t in fn(item)]
            logs[f"{name}loss"] = total[0] / total[2]  # per real (unpadded) step
            logs[f"{name}accuracy"] = total[1] / total[2]
        if not all(math.isfinite(v) for v in logs.values()):
            print(f"epoch {epoch + 1}: loss is not finite; stopping", file=sys.stderr)
            break
        history.on_epoch_end(epoch, logs)
        checkpoint.on_epoch_end(epoch, logs)
        if cfg.verbose:
            print(f"epoch {epoch + 1}/{cfg.epochs}: " + " - ".join(
                f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        if logs["val_loss"] < best:
            best, best_weights, waited = logs["val_loss"], model.get_weights(), 0
        else:
            waited += 1
            if waited >= cfg.patience:
                break
    if best_weights is not None:
        model.set_weights(best_weights)
    return history, False
