"""Errors of the Keras side (they build on the runtime's types)."""
from runtime.errors import Seq2SeqError


class ModelShapeError(Seq2SeqError):
    """A Keras model is not of a shape the model family covers."""
