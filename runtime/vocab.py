"""Vocabulary and the input encoding rule, shared by training, export and apps.

The vocabulary file (``vocab.json``) is the single record of how text becomes
model input. Its format (version 2; version-1 files, which have no ``unit``
fields and are character-level, still load)::

    {
      "format": "seq2seq-vocab", "version": 2,
      "input_tokens":  ["a", "b", ...],      # one-hot position i <-> token i
      "target_tokens": ["\\t", "\\n", ...],  # must contain start and end tokens
      "start_token": "\\t", "end_token": "\\n",
      "max_input_length": 30,               # encoder steps; every input is padded to this
      "max_output_length": 11,              # most tokens decoded, end token included
      "padding": {"side": "left", "token": null},
      "unit": "char",                       # input tokens: "char" or "word"
      "target_unit": "char",                # output tokens: "char" or "word"
      "standardize": null,                  # inputs: null, "lower", "strip_punctuation"
                                            # or "lower_and_strip_punctuation"
      "unknown_token": null                 # an input token unknown words may map to
    }

Words are split on whitespace after standardisation (Keras ``TextVectorization``'s
rules; its defaults are ``lower_and_strip_punctuation`` with id 0 ``""`` for
padding and id 1 ``"[UNK]"``); decoded words are joined with spaces.

``padding.side`` is where padding goes: ``"left"`` puts it before the text (the
text ends on the last encoder step; this project's training default) and
``"right"`` after it (keras.io's example). ``padding.token`` is ``null`` for
all-zero one-hot rows, or an input token whose one-hot fills the padding
(keras.io uses ``" "``). A model reading an ``Embedding`` pads with a token id;
with ``mask_zero=True`` that is id 0, so both token lists then start with the
reserved token ``""`` (``padding.token`` is ``""``).
"""
from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError, VocabularyError

VOCAB_FORMAT = "seq2seq-vocab"
VOCAB_VERSION = 2
READABLE_VERSIONS = (1, 2)
PAD_SIDES = ("left", "right")
UNITS = ("char", "word")
STANDARDIZE = (None, "lower", "strip_punctuation", "lower_and_strip_punctuation")
# TextVectorization's punctuation: ASCII punctuation (string.punctuation).
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
# "unk" maps unknown words (or characters) to the vocabulary's unknown_token.
UNKNOWN_POLICIES = ("error", "skip", "unk")
LONG_POLICIES = ("error", "truncate")


@dataclass(frozen=True)
class InputPadding:
    """Where input padding goes and what fills it (``vocab.json``'s ``padding``)."""
    side: str = "left"  # "left": padding before the text; "right": after it
    token: str | None = None  # None: all-zero rows; else the input token used as padding


@dataclass(frozen=True)
class Vocabulary:
    """The token tables and the input encoding rule of ``vocab.json`` (see the module's
    docstring); checked on construction, which raises VocabularyError."""
    input_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    start_token: str
    end_token: str
    max_input_length: int
    max_output_length: int
    padding: InputPadding = field(default_factory=InputPadding)
    unit: str = "char"  # input side
    target_unit: str = "char"
    # Applied to inputs before they are split: one of STANDARDIZE, or a recorded custom
    # rule {"lower": bool, "strip": "characters removed"} (export.from_text_vectorization).
    standardize: str | dict | None = None
    unknown_token: str | None = None  # input token that unknown units may map to
    # The same for target texts (what encode_target reads: references, scored outputs).
    target_standardize: str | dict | None = None

    def __post_init__(self) -> None:
        for name in ("standardize", "target_standardize"):  # a copy of a recorded rule
            if isinstance(getattr(self, name), dict):
                object.__setattr__(self, name, dict(getattr(self, name)))
        _check(len(self.input_tokens) > 0, "input_tokens is empty")
        _check(len(self.target_tokens) > 0, "target_tokens is empty")
        _check(self.unit in UNITS and self.target_unit in UNITS,
               f"unit and target_unit must be one of {UNITS}, got {self.unit!r}, "
               f"{self.target_unit!r}")
        for name in ("standardize", "target_standardize"):
            rule = getattr(self, name)
            _check(rule in STANDARDIZE if not isinstance(rule, dict) else (
                set(rule) == {"lower", "strip"} and isinstance(rule["lower"], bool)
                and isinstance(rule["strip"], str)),
                   f"{name} must be one of {STANDARDIZE} or {{\"lower\": true|false, "
                   f"\"strip\": \"characters\"}}, got {rule!r}")
        for name, unit in (("input_tokens", self.unit), ("target_tokens", self.target_unit)):
            toks = getattr(self, name)
            # "" at id 0 is the reserved padding id an Embedding(mask_zero=True) needs.
            if unit == "char":
                ok = all(isinstance(t, str) and (len(t) == 1 or (t == "" and i == 0)
                                                 or t == self.unknown_token)
                         for i, t in enumerate(toks))
                what = "single characters"
            else:
                ok = all(isinstance(t, str) and (t == "" and i == 0 or (
                    t and _split_words(t) == [t])) for i, t in enumerate(toks))
                what = "words without whitespace"
            _check(ok, f"{name} must be {what} (and \"\" only at id 0, the reserved "
                       "padding id)")
            _check(len(set(toks)) == len(toks), f"{name} has duplicates")
        _check(self.unknown_token is None or self.unknown_token in self.input_tokens,
               f"unknown token {self.unknown_token!r} is not in input_tokens")
        _check(self.start_token in self.target_tokens,
               f"start token {self.start_token!r} is not in target_tokens")
        _check(self.end_token in self.target_tokens,
               f"end token {self.end_token!r} is not in target_tokens")
        _check(self.start_token != self.end_token, "start and end tokens are the same")
        for name in ("max_input_length", "max_output_length"):
            v = getattr(self, name)
            _check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                   f"{name} must be a positive integer, got {v!r}")
        _check(self.padding.side in PAD_SIDES,
               f"padding.side must be one of {PAD_SIDES}, got {self.padding.side!r}")
        _check(self.padding.token is None or self.padding.token in self.input_tokens,
               f"padding token {self.padding.token!r} is not in input_tokens")

    # -- derived tables -------------------------------------------------
    @cached_property
    def input_index(self) -> dict[str, int]:
        """Input token -> its id."""
        return {t: i for i, t in enumerate(self.input_tokens)}

    @cached_property
    def target_index(self) -> dict[str, int]:
        """Target token -> its id."""
        return {t: i for i, t in enumerate(self.target_tokens)}

    @property
    def input_size(self) -> int:
        """Number of input tokens (the width of an input one-hot row)."""
        return len(self.input_tokens)

    @property
    def target_size(self) -> int:
        """Number of target tokens (the width of the decoder's ``probs``)."""
        return len(self.target_tokens)

    @property
    def pad_id(self) -> int:
        """Input id of padding; ``input_size`` stands for an all-zero row."""
        if self.padding.token is None:
            return self.input_size
        return self.input_index[self.padding.token]

    @property
    def start_id(self) -> int:
        """Target id of the start token, the decoder's first input."""
        return self.target_index[self.start_token]

    @property
    def end_id(self) -> int:
        """Target id of the end token, which stops decoding."""
        return self.target_index[self.end_token]

    # -- encoding -------------------------------------------------------
    def split_input(self, text: str) -> list[str]:
        """The input's units after standardisation: characters, or words."""
        text = standardized(text, self.standardize)
        return _split_words(text) if self.unit == "word" else list(text)

    def encode_inputs(self, texts: Sequence[str], unknown: str = "error",
                      too_long: str = "error") -> np.ndarray:
        """Token ids ``[batch, max_input_length]`` (int32), padded by the recorded rule.

        ``unknown="skip"`` drops units (characters or words) outside the vocabulary
        instead of raising, ``unknown="unk"`` maps them to ``unknown_token``;
        ``too_long="truncate"`` keeps the first ``max_input_length`` units instead
        of raising.
        """
        if unknown not in UNKNOWN_POLICIES:
            raise InputError(f"unknown= must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        if unknown == "unk" and self.unknown_token is None:
            raise InputError("unknown='unk' needs a vocabulary with an unknown_token")
        if too_long not in LONG_POLICIES:
            raise InputError(f"too_long= must be one of {LONG_POLICIES}, got {too_long!r}")
        if type(texts) is not list and (isinstance(texts, str)
                                        or not isinstance(texts, Sequence)):
            raise InputError("expected a list of strings, got "
                             f"{type(texts).__name__}")
        out = np.full((len(texts), self.max_input_length), self.pad_id, dtype=np.int32)
        index = self.input_index
        units = "characters" if self.unit == "char" else "words"
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {row} is {type(text).__name__}, not str")
            if not text.strip():  # all padding, or nothing: no input to translate
                raise InputError(f"input {row} is empty" + (" (only whitespace)" if text else ""))
            pieces = self.split_input(text)
            ids = [index.get(p, -1) if p != "" else -1 for p in pieces]
            if -1 in ids:
                if unknown == "error":
                    bad = sorted({p for p, i in zip(pieces, ids) if i < 0})
                    raise InputError(f"input {row} has {units} outside the vocabulary: "
                                     + ", ".join(repr(c) for c in bad[:20]))
                fill = index[self.unknown_token] if unknown == "unk" else -1
                ids = [i if i >= 0 else fill for i in ids]
                ids = [i for i in ids if i >= 0]
            if not ids:
                raise InputError(f"input {row} is empty" +
                                 (" after dropping unknown " + units if text.strip() else ""))
            if len(ids) > self.max_input_length:
                if too_long == "error":
                    raise InputError(f"input {row} has {len(ids)} {units}; the model takes "
                                     f"at most {self.max_input_length}")
                ids = ids[: self.max_input_length]
            if self.padding.side == "left":
                out[row, self.max_input_length - len(ids):] = ids
            else:
                out[row, : len(ids)] = ids
        return out

    def one_hot_inputs(self, ids: np.ndarray) -> np.ndarray:
        """One-hot rows ``[batch, steps, input_size]``; id ``input_size`` is an all-zero row."""
        table = np.eye(self.input_size + 1, self.input_size, dtype=np.float32)
        return table[ids]

    def one_hot_targets(self, ids: np.ndarray) -> np.ndarray:
        """One-hot rows ``[batch, steps, target_size]``; id ``target_size`` is an all-zero row."""
        table = np.eye(self.target_size + 1, self.target_size, dtype=np.float32)
        return table[ids]

    def encode_target(self, text: str) -> list[int]:
        """Ids of ``text`` (characters, or whitespace-separated words) followed by the
        end token (no start token)."""
        index = self.target_index
        text = standardized(text, self.target_standardize)
        pieces = _split_words(text) if self.target_unit == "word" else list(text)
        bad = sorted({p for p in pieces if p not in index})
        if bad:
            raise InputError("target has tokens outside the vocabulary: "
                             + ", ".join(repr(c) for c in bad))
        return [index[p] for p in pieces] + [self.end_id]

    @property
    def input_separator(self) -> str:
        """What joins input tokens into a text: nothing for characters, a space for words."""
        return " " if self.unit == "word" else ""

    def text_tokens(self) -> list[str]:
        """Input tokens a text can contain: not padding, not the unknown token, and
        unchanged by the standardisation (so a text made of them encodes to them)."""
        return [t for t in self.input_tokens
                if t and t not in (self.padding.token, self.unknown_token)
                and self.split_input(t) == [t]]

    def sample_text(self, pick, length: int) -> str:
        """A text of ``length`` input tokens, each drawn by ``pick(tokens)``, that
        encodes to them: its first token is not whitespace, since a text of only
        whitespace is empty."""
        tokens = self.text_tokens()
        first = pick([t for t in tokens if t.strip()])
        return self.input_separator.join([first] + [pick(tokens) for _ in range(length - 1)])

    @property
    def separator(self) -> str:
        """What joins decoded tokens: nothing for characters, a space for words."""
        return " " if self.target_unit == "word" else ""

    def join_target(self, ids: list[int]) -> str:
        """Text of decoded ids that hold no end token (what the decode loops return)."""
        return self.separator.join(map(self.target_tokens.__getitem__, ids))

    def decode_target(self, ids: Iterable[int]) -> str:
        """Text of decoded ids, stopping before the first end token."""
        ids = [int(i) for i in ids]
        end = self.end_id
        if end in ids:
            ids = ids[:ids.index(end)]
        tokens = self.target_tokens
        return self.separator.join([tokens[i] for i in ids])

    # -- serialisation --------------------------------------------------
    def to_dict(self) -> dict:
        """The ``vocab.json`` object, at the current format version."""
        return {
            "format": VOCAB_FORMAT,
            "version": VOCAB_VERSION,
            "input_tokens": list(self.input_tokens),
            "target_tokens": list(self.target_tokens),
            "start_token": self.start_token,
            "end_token": self.end_token,
            "max_input_length": self.max_input_length,
            "max_output_length": self.max_output_length,
            "padding": {"side": self.padding.side, "token": self.padding.token},
            "unit": self.unit,
            "target_unit": self.target_unit,
            "standardize": self.standardize,
            "unknown_token": self.unknown_token,
            # Only where set: the vocabulary (and the digests made of it) of a model
            # without one stays as it was.
            **({"target_standardize": self.target_standardize}
               if self.target_standardize is not None else {}),
        }

    @classmethod
    def from_dict(cls, d: object) -> "Vocabulary":
        """The vocabulary of a ``vocab.json`` object (any readable version); raises
        VocabularyError naming what is missing or wrong."""
        _check(isinstance(d, dict), "vocabulary must be a JSON object")
        assert isinstance(d, dict)
        _check(d.get("format") == VOCAB_FORMAT,
               f"'format' must be {VOCAB_FORMAT!r}, got {d.get('format')!r}")
        _check(d.get("version") in READABLE_VERSIONS,
               f"unsupported vocabulary version {d.get('version')!r} (this toolkit reads "
               f"versions {', '.join(map(str, READABLE_VERSIONS))})")
        try:
            pad = d.get("padding") or {}
            return cls(
                input_tokens=tuple(d["input_tokens"]),
                target_tokens=tuple(d["target_tokens"]),
                start_token=d["start_token"],
                end_token=d["end_token"],
                max_input_length=d["max_input_length"],
                max_output_length=d["max_output_length"],
                padding=InputPadding(side=pad.get("side", "left"), token=pad.get("token")),
                unit=d.get("unit", "char"),
                target_unit=d.get("target_unit", "char"),
                standardize=d.get("standardize"),
                unknown_token=d.get("unknown_token"),
                target_standardize=d.get("target_standardize"),
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise VocabularyError(f"vocabulary field missing or of the wrong type: {e}") from None

    def save(self, path: str | Path) -> None:
        """Write ``to_dict()`` to ``path`` as UTF-8 JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Read a ``vocab.json`` file; raises VocabularyError naming the file and the fault."""
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabularyError(f"{path}: vocabulary file not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VocabularyError(f"{path}: not a JSON vocabulary file ({e})") from None
        except RecursionError:
            raise VocabularyError(f"{path}: not a JSON vocabulary file (nested too "
                                  "deeply)") from None
        try:
            return cls.from_dict(d)
        except VocabularyError as e:
            raise VocabularyError(f"{path}: {e}") from None

    @classmethod
    def build(cls, inputs: Sequence[str], targets: Sequence[str], start_token: str = "\t",
              end_token: str = "\n", padding: InputPadding | None = None,
              reserve_padding_id: bool = False, unit: str = "char",
              target_unit: str = "char") -> "Vocabulary":
        """The vocabulary that covers ``inputs`` and ``targets`` (sorted tokens).

        ``reserve_padding_id``: id 0 on both sides is the token "" and input padding
        (what ``Embedding(mask_zero=True)`` needs); tokens start at id 1. Word-level
        inputs are standardised as TextVectorization does by default and get an
        ``[UNK]`` token (id 1 after the padding id)."""
        padding = padding or InputPadding()
        words = unit == "word"
        standardize = "lower_and_strip_punctuation" if words else None
        probe = cls(("a",), ("a", "b"), "a", "b", 1, 1, unit=unit, standardize=standardize)
        in_units = set().union(*(probe.split_input(t) for t in inputs))
        split_target = _split_words if target_unit == "word" else list
        out_units = set().union(*(split_target(t) for t in targets)) | {start_token, end_token}
        if reserve_padding_id or words:
            padding = InputPadding(padding.side, "")
        elif padding.token is not None:
            in_units.add(padding.token)
        reserved = ("",) if reserve_padding_id or words else ()
        unknown = "[UNK]" if words else None
        in_units.discard("[UNK]")
        return cls(
            input_tokens=reserved + ((unknown,) if unknown else ()) + tuple(sorted(in_units)),
            target_tokens=(("",) if reserve_padding_id else ()) + tuple(sorted(out_units)),
            start_token=start_token,
            end_token=end_token,
            max_input_length=max(len(probe.split_input(t)) for t in inputs),
            max_output_length=max(len(split_target(t)) for t in targets) + 1,
            padding=padding, unit=unit, target_unit=target_unit, standardize=standardize,
            unknown_token=unknown,
        )


_STRIP = str.maketrans("", "", PUNCTUATION)


def standardized(text: str, rule) -> str:
    """``text`` as a standardisation rule leaves it, as TextVectorization does: ASCII
    letters lowered (tf.strings.lower), punctuation removed (ASCII's, or a recorded
    rule's characters); None leaves it as it is."""
    if rule is None:
        return text
    if isinstance(rule, dict):
        if rule["lower"]:
            text = text.translate(_LOWER)
        return text.translate(str.maketrans("", "", rule["strip"])) if rule["strip"] else text
    if rule in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(_LOWER)
    if rule in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = text.translate(_STRIP)
    return text
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")


def _split_words(text: str) -> list[str]:
    return [w for w in _WHITESPACE.split(text) if w]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise VocabularyError(message)
