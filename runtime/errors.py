"""The project's exception types. Every bad input ends in one of these."""


class Seq2SeqError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class DataError(Seq2SeqError):
    """A training data file is missing, unreadable or malformed."""


class VocabularyError(Seq2SeqError):
    """A vocabulary file is missing, malformed or does not fit the model."""


class ArtifactError(Seq2SeqError):
    """An exported artifact is missing, corrupt, tampered with or of an unknown version."""


class BackendError(Seq2SeqError):
    """A backend or device was asked for that is not available here."""


class OutputExistsError(Seq2SeqError):
    """An output directory already holds a result and --force was not given."""


class InputError(Seq2SeqError, ValueError):
    """Text or options given to the runtime are invalid."""
