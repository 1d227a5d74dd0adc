"""The training strategy: one device, all local GPUs (``mirrored``), or several
workers (``multiworker``: ``MultiWorkerMirroredStrategy`` configured by
``TF_CONFIG``, as tf.distribute expects). With several workers only the chief
writes the results; the others train into a scratch folder that is removed."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .errors import TrainingError

STRATEGIES = ("default", "mirrored", "multiworker")
# A collective that waits this long for a peer fails the run instead of hanging.
PEER_TIMEOUT_S = 120


@dataclass(frozen=True)
class Role:
    chief: bool  # writes the outputs
    name: str  # "chief", "worker 1", ... for messages


def role_from_tf_config(text: str | None) -> Role:
    """Which worker this process is, from ``TF_CONFIG``; the chief is the task of
    type "chief", or worker 0 where the cluster names no chief."""
    if not text:
        raise TrainingError("--strategy multiworker needs TF_CONFIG, e.g. "
                            '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                            '"task": {"type": "worker", "index": 0}} (docs/training.md)')
    try:
        config = json.loads(text)
        cluster, task = config["cluster"], config["task"]
        kind, index = str(task["type"]), int(task["index"])
        members = cluster[kind]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise TrainingError(f"TF_CONFIG is not a tf.distribute cluster spec: {e!r}") from None
    if not 0 <= index < len(members):
        raise TrainingError(f"TF_CONFIG task index {index} is outside its "
                            f"{len(members)} {kind}(s)")
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return Role(chief, "chief" if chief else f"{kind} {index}")


def make_strategy(name: str):
    """(strategy, role) for ``--strategy``."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise TrainingError(f"strategy must be one of {STRATEGIES}, got {name!r}")
    if name == "multiworker":
        role = role_from_tf_config(os.environ.get("TF_CONFIG"))
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=PEER_TIMEOUT_S)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options), role
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(), Role(True, "chief")
    return tf.distribute.get_strategy(), Role(True, "chief")
