"""The vocabulary of a model whose texts were tokenised by Keras ``TextVectorization``
layers (the usual word-level setup), from the layers' own vocabularies and settings.

    vocab = from_text_vectorization(source_vectorization, target_vectorization)
    vocab.save("vocab.json")

Ids are the layers' own (0: padding ``""``, 1: ``"[UNK]"``), inputs are padded after
the text to the source layer's ``output_sequence_length``, and the runtime
standardises and splits exactly as the layer does for its built-in settings.
"""
from __future__ import annotations

from runtime.errors import VocabularyError
from runtime.vocab import STANDARDIZE, InputPadding, Vocabulary

SPLITS = {"whitespace": "word", "character": "char"}


def _settings(layer, side: str) -> tuple[list[str], str, dict]:
    config = layer.get_config()
    if config.get("output_mode", "int") != "int" or config.get("ngrams"):
        raise VocabularyError(f"the {side} TextVectorization must have output_mode='int' "
                              "and no ngrams")
    split = config.get("split")
    if split not in SPLITS:
        raise VocabularyError(f"the {side} TextVectorization splits by {split!r}; the "
                              f"runtime can repeat {sorted(SPLITS)} only")
    return list(layer.get_vocabulary()), SPLITS[split], config


def from_text_vectorization(source, target, start_token: str = "[start]",
                            end_token: str = "[end]",
                            max_output_length: int | None = None) -> Vocabulary:
    """``source`` and ``target``: the adapted TextVectorization layers of the inputs
    and of the decoder's texts. ``max_output_length`` (most tokens decoded, end
    included) defaults to the target layer's sequence length less one (the
    decoder reads ``[start] ...`` and predicts ``... [end]``)."""
    tokens, unit, config = _settings(source, "source")
    standardize = config.get("standardize")
    if standardize not in STANDARDIZE:
        raise VocabularyError(f"the source TextVectorization standardises with "
                              f"{standardize!r}; the runtime can repeat {STANDARDIZE[1:]} "
                              "or none, so an app could not encode text as the model saw it")
    steps = config.get("output_sequence_length")
    if not steps:
        raise VocabularyError("the source TextVectorization has no output_sequence_length: "
                              "the model's encoder length is not recorded")
    target_tokens, target_unit, target_config = _settings(target, "target")
    for token in (start_token, end_token):
        if token not in target_tokens:
            raise VocabularyError(f"{token!r} is not in the target TextVectorization's "
                                  "vocabulary; pass start_token= / end_token=")
    if max_output_length is None:
        length = target_config.get("output_sequence_length")
        if not length:
            raise VocabularyError("pass max_output_length= (the target TextVectorization "
                                  "has no output_sequence_length)")
        max_output_length = int(length) - 1
    if tokens[:2] != ["", "[UNK]"]:
        raise VocabularyError("the source vocabulary does not start with '' and '[UNK]' "
                              f"(got {tokens[:2]}); was the layer adapted?")
    return Vocabulary(tuple(tokens), tuple(target_tokens), start_token, end_token,
                      max_input_length=int(steps), max_output_length=int(max_output_length),
                      padding=InputPadding("right", ""), unit=unit, target_unit=target_unit,
                      standardize=standardize, unknown_token="[UNK]")
