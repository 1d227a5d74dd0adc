"""Errors of the training side (they build on the runtime's types)."""
from runtime.errors import Seq2SeqError


class TrainingError(Seq2SeqError):
    """Training cannot run as asked (a bad distribution setting, a lost peer)."""
