"""Models saved by Keras 2 (``tf.keras``, TensorFlow up to 2.15), as the keras.io
example wrote them for years: ``model.save("s2s.h5")``.

Keras 3 reads the HDF5 file but not two things in its LSTM records: the
``time_major`` argument, and the decoder's call with ``initial_state``, which
Keras 2 stored as one call on ``[inputs, h, c]``. The adapter below restores
both; the weights load unchanged (same layout, checked against tf_keras's own
predictions in the tests).
"""
from __future__ import annotations

import keras


class Keras2LSTM(keras.layers.LSTM):
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


CUSTOM_OBJECTS = {"LSTM": Keras2LSTM}

SAVEDMODEL_HINT = (
    "a TensorFlow SavedModel directory, which Keras 3 cannot rebuild into layers; "
    "where it was trained (tf.keras), load it and save it as HDF5: "
    "tf.keras.models.load_model(DIR).save('s2s.h5'), then export s2s.h5")
