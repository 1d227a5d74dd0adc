"""Errors of the training side (they build on the runtime's types)."""
from runtime.errors import Seq2SeqError


class ModelShapeError(Seq2SeqError):
    """A Keras model is not of the seed's encoder-decoder shape."""


class OutputExistsError(Seq2SeqError):
    """An output directory already holds a result and --force was not given."""


class TrainingError(Seq2SeqError):
    """Training cannot run as asked (a bad distribution setting, a lost peer)."""
