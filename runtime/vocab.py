"""Character vocabulary and the input encoding rule, shared by training, export and apps.

The vocabulary file (``vocab.json``) is the single record of how text becomes
model input. Its format, version 1::

    {
      "format": "seq2seq-vocab", "version": 1,
      "input_tokens":  ["a", "b", ...],      # one-hot position i <-> token i
      "target_tokens": ["\\t", "\\n", ...],  # must contain start and end tokens
      "start_token": "\\t", "end_token": "\\n",
      "max_input_length": 30,               # encoder steps; every input is padded to this
      "max_output_length": 11,              # most tokens decoded, end token included
      "padding": {"side": "left", "token": null}
    }

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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .errors import InputError, VocabularyError

VOCAB_FORMAT = "seq2seq-vocab"
VOCAB_VERSION = 1
PAD_SIDES = ("left", "right")
UNKNOWN_POLICIES = ("error", "skip")
LONG_POLICIES = ("error", "truncate")


@dataclass(frozen=True)
class InputPadding:
    side: str = "left"  # "left": padding before the text; "right": after it
    token: str | None = None  # None: all-zero rows; else the input token used as padding


@dataclass(frozen=True)
class Vocabulary:
    input_tokens: tuple[str, ...]
    target_tokens: tuple[str, ...]
    start_token: str
    end_token: str
    max_input_length: int
    max_output_length: int
    padding: InputPadding = field(default_factory=InputPadding)

    def __post_init__(self) -> None:
        _check(len(self.input_tokens) > 0, "input_tokens is empty")
        _check(len(self.target_tokens) > 0, "target_tokens is empty")
        for name in ("input_tokens", "target_tokens"):
            toks = getattr(self, name)
            # "" at id 0 is the reserved padding id an Embedding(mask_zero=True) needs.
            _check(all(isinstance(t, str) and (len(t) == 1 or (t == "" and i == 0))
                       for i, t in enumerate(toks)),
                   f"{name} must be single characters (and \"\" only at id 0, the "
                   "reserved padding id)")
            _check(len(set(toks)) == len(toks), f"{name} has duplicates")
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
        return {t: i for i, t in enumerate(self.input_tokens)}

    @cached_property
    def target_index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.target_tokens)}

    @property
    def input_size(self) -> int:
        return len(self.input_tokens)

    @property
    def target_size(self) -> int:
        return len(self.target_tokens)

    @property
    def pad_id(self) -> int:
        """Input id of padding; ``input_size`` stands for an all-zero row."""
        if self.padding.token is None:
            return self.input_size
        return self.input_index[self.padding.token]

    @property
    def start_id(self) -> int:
        return self.target_index[self.start_token]

    @property
    def end_id(self) -> int:
        return self.target_index[self.end_token]

    # -- encoding -------------------------------------------------------
    def encode_inputs(self, texts: Sequence[str], unknown: str = "error",
                      too_long: str = "error") -> np.ndarray:
        """Token ids ``[batch, max_input_length]`` (int32), padded by the recorded rule.

        ``unknown="skip"`` drops characters outside the vocabulary instead of
        raising; ``too_long="truncate"`` keeps the first ``max_input_length``
        characters instead of raising.
        """
        if unknown not in UNKNOWN_POLICIES:
            raise InputError(f"unknown= must be one of {UNKNOWN_POLICIES}, got {unknown!r}")
        if too_long not in LONG_POLICIES:
            raise InputError(f"too_long= must be one of {LONG_POLICIES}, got {too_long!r}")
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise InputError("expected a list of strings, got "
                             f"{type(texts).__name__}")
        out = np.full((len(texts), self.max_input_length), self.pad_id, dtype=np.int32)
        index = self.input_index
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"input {row} is {type(text).__name__}, not str")
            ids = [index.get(ch, -1) for ch in text]
            if -1 in ids:
                if unknown == "error":
                    bad = sorted({ch for ch in text if ch not in index})
                    raise InputError(f"input {row} has characters outside the vocabulary: "
                                     + ", ".join(repr(c) for c in bad))
                ids = [i for i in ids if i >= 0]
            if not ids:
                raise InputError(f"input {row} is empty" +
                                 (" after dropping unknown characters" if text else ""))
            if len(ids) > self.max_input_length:
                if too_long == "error":
                    raise InputError(f"input {row} has {len(ids)} characters; the model takes "
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
        table = np.eye(self.target_size + 1, self.target_size, dtype=np.float32)
        return table[ids]

    def encode_target(self, text: str) -> list[int]:
        """Ids of ``text`` followed by the end token (no start token)."""
        index = self.target_index
        bad = sorted({ch for ch in text if ch not in index})
        if bad:
            raise InputError("target has characters outside the vocabulary: "
                             + ", ".join(repr(c) for c in bad))
        return [index[ch] for ch in text] + [self.end_id]

    def decode_target(self, ids: Iterable[int]) -> str:
        """Text of decoded ids, stopping before the first end token."""
        ids = [int(i) for i in ids]
        end = self.end_id
        if end in ids:
            ids = ids[:ids.index(end)]
        tokens = self.target_tokens
        return "".join([tokens[i] for i in ids])

    # -- serialisation --------------------------------------------------
    def to_dict(self) -> dict:
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
        }

    @classmethod
    def from_dict(cls, d: object) -> "Vocabulary":
        _check(isinstance(d, dict), "vocabulary must be a JSON object")
        assert isinstance(d, dict)
        _check(d.get("format") == VOCAB_FORMAT,
               f"'format' must be {VOCAB_FORMAT!r}, got {d.get('format')!r}")
        _check(d.get("version") == VOCAB_VERSION,
               f"unsupported vocabulary version {d.get('version')!r} (this toolkit reads "
               f"version {VOCAB_VERSION})")
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
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise VocabularyError(f"vocabulary field missing or of the wrong type: {e}") from None

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n",
                              encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        path = Path(path)
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise VocabularyError(f"{path}: vocabulary file not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise VocabularyError(f"{path}: not a JSON vocabulary file ({e})") from None
        try:
            return cls.from_dict(d)
        except VocabularyError as e:
            raise VocabularyError(f"{path}: {e}") from None

    @classmethod
    def build(cls, inputs: Sequence[str], targets: Sequence[str], start_token: str = "\t",
              end_token: str = "\n", padding: InputPadding | None = None,
              reserve_padding_id: bool = False) -> "Vocabulary":
        """The vocabulary that covers ``inputs`` and ``targets`` (sorted characters).

        ``reserve_padding_id``: id 0 on both sides is the token "" and input padding
        (what ``Embedding(mask_zero=True)`` needs); characters start at id 1."""
        in_chars = set().union(*map(set, inputs))
        padding = padding or InputPadding()
        if reserve_padding_id:
            padding = InputPadding(padding.side, "")
        elif padding.token is not None:
            in_chars.add(padding.token)
        out_chars = set().union(*map(set, targets)) | {start_token, end_token}
        reserved = ("",) if reserve_padding_id else ()
        return cls(
            input_tokens=reserved + tuple(sorted(in_chars)),
            target_tokens=reserved + tuple(sorted(out_chars)),
            start_token=start_token,
            end_token=end_token,
            max_input_length=max(map(len, inputs)),
            max_output_length=max(map(len, targets)) + 1,
            padding=padding,
        )


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise VocabularyError(message)
