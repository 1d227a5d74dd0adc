"""The vocabulary of a model whose texts were tokenised by Keras ``TextVectorization``
layers (the usual word-level setup), from the layers' own vocabularies and settings.

    vocab = from_text_vectorization(source_vectorization, target_vectorization)
    vocab.save("vocab.json")

Ids are the layers' own (0: padding ``""``, 1: ``"[UNK]"``), inputs are padded after
the text to the source layer's ``output_sequence_length``, and the runtime
standardises and splits exactly as the layer does for its built-in settings. A
custom ``standardize`` callable (keras.io's Transformer example lowercases and
strips punctuation but keeps ``[`` and ``]``) is recorded as the rule it is found
to apply, lowercasing and a set of characters removed, once that rule gives the
callable's own output on every probe; anything else is refused.
"""
from __future__ import annotations

import string

from runtime.errors import VocabularyError
from runtime.vocab import STANDARDIZE, InputPadding, Vocabulary, standardized

# What a custom standardisation is tried on: ASCII, and the punctuation, letters and
# spaces of the languages keras.io's examples translate.
PROBE = (string.printable + "¿¡«»„“”‘’‚‹›…–—·•€£¥§°©®™ªº¨´"
         + "ÁÉÍÓÚÑÜÀÈÌÒÙÂÊÎÔÛÄËÏÖÇŒÆáéíóúñüàèìòùâêîôûäëïöçœæß\u00a0\u3000")
SENTENCES = ("Hello, World! ¿Qué tal? ¡Muy bien!", "[start] Él dijo: «sí»... [end]",
             "It's 10:30 -- isn't it?", "  Spaces\tand\nlines  ")


def _apply(fn, texts: list[str]) -> list[str]:
    import tensorflow as tf

    out = fn(tf.constant(texts))
    return [x.decode("utf-8") for x in out.numpy().tolist()]


def record_standardize(fn, side: str, vocabulary=()) -> dict:
    """The rule a custom standardisation callable applies, as the vocabulary records
    it: ``{"lower": ..., "strip": ...}``; raises VocabularyError when no such rule
    gives the callable's own output on every probe (it replaces characters, lowers
    beyond ASCII, or depends on context)."""
    # Each character of the probe and of the layer's own vocabulary, alone; then whole
    # texts, where a rule that depends on context would show.
    singles = list(dict.fromkeys(list(PROBE) + [c for t in vocabulary for c in t]))
    texts = [PROBE, *SENTENCES, " ".join(vocabulary[:200]).upper()]
    try:
        chars = _apply(fn, singles)
        whole = _apply(fn, texts)
    except Exception as e:  # a user's callable may raise anything
        raise VocabularyError(f"the {side} TextVectorization's standardize callable fails "
                              f"on probe texts: {e}") from None
    rule = {"lower": chars[singles.index("A")] == "a",
            "strip": "".join(c for c, out in zip(singles, chars) if out == "")}
    for text, got in zip(singles + texts, chars + whole):
        if standardized(text, rule) != got:
            raise VocabularyError(
                f"the {side} TextVectorization's standardize callable cannot be recorded: "
                f"on {text[:40]!r} it gives {got[:40]!r}, where lowercasing ASCII "
                f"({rule['lower']}) and removing {rule['strip'][:40]!r} gives "
                f"{standardized(text, rule)[:40]!r}; the runtime can repeat only such "
                "rules (or TextVectorization's built-in ones)")
    return rule


def _rule(layer, config: dict, side: str):
    standardize = getattr(layer, "_standardize", config.get("standardize"))
    if callable(standardize):
        return record_standardize(standardize, side, list(layer.get_vocabulary()))
    if standardize not in STANDARDIZE:
        raise VocabularyError(f"the {side} TextVectorization standardises with "
                              f"{standardize!r}; the runtime can repeat {STANDARDIZE[1:]}, "
                              "a recorded custom rule, or none, so an app could not encode "
                              "text as the model saw it")
    return standardize

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
    standardize = _rule(source, config, "source")
    steps = config.get("output_sequence_length")
    if not steps:
        raise VocabularyError("the source TextVectorization has no output_sequence_length: "
                              "the model's encoder length is not recorded")
    target_tokens, target_unit, target_config = _settings(target, "target")
    target_standardize = _rule(target, target_config, "target")
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
                      standardize=standardize, unknown_token="[UNK]",
                      target_standardize=target_standardize)
