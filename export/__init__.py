"""Export a trained Keras seq2seq model to a verified artifact (``python -m export``).

From a notebook, with the model in memory::

    import export
    vocab = export.from_keras_io(input_characters, target_characters,
                                 max_encoder_seq_length, max_decoder_seq_length)
    export.export_model(model, vocab, "artifact/")

or, for texts tokenised by Keras ``TextVectorization`` layers,
``export.from_text_vectorization(source_layer, target_layer)``. A failed proof
raises ``export.ParityError``; nothing is written then.
"""
from .errors import ParityError  # noqa: F401 (light: the runtime's error types only)

_PIPELINE = ("export_model", "export_artifact", "ExportOptions", "ExportResult")


def __getattr__(name: str):
    # Lazy, so `python -m export.keras_io_vocab` does not load TensorFlow.
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    if name == "from_keras_io":
        from .keras_io_vocab import from_keras_io

        return from_keras_io
    if name == "from_text_vectorization":
        from .text_vectorization import from_text_vectorization

        return from_text_vectorization
    raise AttributeError(f"module 'export' has no attribute {name!r}")
