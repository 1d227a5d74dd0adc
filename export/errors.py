"""Errors of the export stage."""
from runtime.errors import Seq2SeqError


class ConversionError(Seq2SeqError):
    """A converter (tf2onnx, TFLite) failed or produced an invalid graph."""


class ParityError(Seq2SeqError):
    """An exported graph does not give Keras's answers."""


class OpGuardError(Seq2SeqError):
    """A TFLite file uses ops the standalone LiteRT interpreter cannot run."""
