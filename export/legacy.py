"""Models saved by Keras 2 (``tf.keras``, TensorFlow up to 2.15), as the keras.io
example wrote them for years: ``model.save("s2s.h5")`` or, from Keras 2.13,
``model.save("s2s_model.keras")``.

Keras 3 reads neither as is. In both, the LSTM records carry ``time_major`` and
store the decoder's call with ``initial_state`` as one call on ``[inputs, h, c]``;
a ``.keras`` file also names its model class by a ``tf_keras`` module. The
adapter below restores the LSTM records, and a ``.keras`` file is loaded from a
copy whose config names Keras 3's classes. The weights load unchanged (same
layout; the tests compare the loaded model with tf_keras's own predictions).
"""
from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import keras

ADAPTER = "Keras2LSTM"
SAVEDMODEL_HINT = (
    "a TensorFlow SavedModel directory, which Keras 3 cannot rebuild into layers; "
    "where it was trained (tf.keras), load it and save it as HDF5: "
    "tf.keras.models.load_model(DIR).save('s2s.h5'), then export s2s.h5")


# Named LSTM on purpose: Keras 3 finds a layer's weights in a .keras file under
# its class name in snake case ("lstm"), where Keras 2 wrote them.
class LSTM(keras.layers.LSTM):
    """Keras 3's LSTM reading a Keras 2 record: ``time_major=True`` raises ValueError, and
    a call on ``[inputs, h, c]`` runs as one with ``initial_state=[h, c]``."""

    def __init__(self, *args, time_major: bool = False, **kwargs):
        if time_major:
            raise ValueError("time_major=True LSTMs are not supported")
        super().__init__(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        if (len(args) == 1 and isinstance(args[0], (list, tuple)) and len(args[0]) == 3
                and "initial_state" not in kwargs):
            inputs, h, c = args[0]
            return super().__call__(inputs, initial_state=[h, c], **kwargs)
        return super().__call__(*args, **kwargs)


def load_model(path: Path):
    """A Keras model from a .keras or .h5 file, whichever Keras saved it."""
    path = Path(path)
    if path.suffix in (".h5", ".hdf5"):
        return keras.models.load_model(path, compile=False, custom_objects={"LSTM": LSTM})
    if saved_by_keras2(path):
        return load_keras2_archive(path)
    return keras.models.load_model(path, compile=False)


def saved_by_keras2(path: Path) -> bool:
    """Whether ``path`` is a .keras archive whose metadata names Keras 2."""
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return False
    return isinstance(meta, dict) and str(meta.get("keras_version", "")).startswith("2.")


def load_keras2_archive(path: Path):
    """A Keras model from a .keras archive Keras 2 wrote, loaded from a temporary copy
    whose config names Keras 3's functional module and, for each top-level LSTM, the
    adapter."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    if config.get("class_name") == "Functional":
        config["module"] = "keras.src.models.functional"
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "LSTM":
            layer["class_name"] = layer["registered_name"] = ADAPTER
            layer.pop("module", None)
    files["config.json"] = json.dumps(config).encode()
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / path.name
        with zipfile.ZipFile(copy, "w") as archive:
            for name, data in files.items():
                archive.writestr(name, data)
        return keras.models.load_model(copy, compile=False, custom_objects={ADAPTER: LSTM})
