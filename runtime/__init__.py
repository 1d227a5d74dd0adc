"""TensorFlow-free runtime for exported seq2seq artifacts: numpy plus one backend.

    import runtime
    model = runtime.load("artifact/", backend="onnx")   # or "tflite"
    model.translate(["15 janv. 2023"])                   # -> ["2023-01-15"]
"""
from .alignment import AttentionMap
from .errors import (ArtifactError, BackendError, DataError, InputError, Seq2SeqError,
                     VocabularyError)
from .metadata import ArtifactConfig, load_config
from .model import Seq2SeqModel, load
from .vocab import InputPadding, Vocabulary

__version__ = "0.1.0"
__all__ = ["load", "Seq2SeqModel", "AttentionMap", "ArtifactConfig", "load_config", "Vocabulary",
           "InputPadding", "Seq2SeqError", "ArtifactError", "BackendError", "DataError",
           "InputError", "VocabularyError", "__version__"]
