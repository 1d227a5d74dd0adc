"""Training pairs: tab-separated files (keras.io / manythings.org Anki format)
and the built-in date data set, which needs no network."""
from __future__ import annotations

import datetime as dt
import random

from family.pairs import DEFAULT_MAX_CHARS, PairFile, read_pairs  # noqa: F401 (train's API)
from runtime.errors import DataError

# -- built-in data: dates as seven locales write them -> ISO 8601 ---------------
DATE_LOCALES = ("en", "fr", "de", "es", "it", "pt", "nl")
DATE_FORMATS = ("medium", "long")
FIRST_DATE = dt.date(1900, 1, 1)
LAST_DATE = dt.date(2099, 12, 31)


def date_pairs(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """``count`` pairs like ``("15 janv. 2023", "2023-01-15")``, one per distinct date.

    Month names come from CLDR through babel. Renderings without letters
    (numeric formats such as German ``15.01.2023``) are never used, since
    another locale could read them differently; a rendering two dates share
    is dropped. Every input therefore has exactly one right answer.
    """
    from babel.dates import format_date

    span = (LAST_DATE - FIRST_DATE).days + 1
    if not 1 <= count <= span:
        raise DataError(f"the built-in data set has 1 to {span} examples; asked for {count}")
    rng = random.Random(seed)
    days = rng.sample(range(span), count)
    pairs: dict[str, str] = {}
    clashes: set[str] = set()
    for day in days:
        date = FIRST_DATE + dt.timedelta(days=day)
        options = [(loc, fmt) for loc in DATE_LOCALES for fmt in DATE_FORMATS]
        rng.shuffle(options)
        for loc, fmt in options:
            text = format_date(date, fmt, locale=loc)
            if any(ch.isalpha() for ch in text):
                break
        iso = date.isoformat()
        if pairs.get(text, iso) != iso:
            clashes.add(text)
        pairs[text] = iso
    return [(t, iso) for t, iso in pairs.items() if t not in clashes]


def default_test_size(pairs: list[tuple[str, str]], most: int) -> int:
    """10% of the distinct inputs, at least 1 and at most ``most``."""
    distinct = len({source for source, _ in pairs})
    return max(1, min(most, distinct // 10))


def split(pairs: list[tuple[str, str]], test_size: int, val_fraction: float, seed: int):
    """Shuffle the distinct inputs, then cut off a held-out test set and a validation
    set of them. Every target of an input goes where the input goes, so no held-out
    input is ever trained on. All distinct pairs are kept: an input's alternative
    targets (fra.txt's "Go." -> "Va !", "Marche.", "Bouge !") all train, and all
    count as right answers when held out; an exact repeat of a pair is kept once.
    Returns the train, validation and test pairs, each input's pairs together."""
    groups = group(pairs)
    random.Random(seed).shuffle(groups)
    n_val = int(round(len(groups) * val_fraction))
    if len(groups) - test_size - n_val < 1 or (val_fraction > 0 and n_val < 1):
        raise DataError(f"{len(groups)} distinct inputs are too few for a test set of "
                        f"{test_size} and a validation fraction of {val_fraction}")

    def flat(part):
        return [(source, target) for source, targets in part for target in targets]

    return (flat(groups[test_size + n_val:]), flat(groups[test_size:test_size + n_val]),
            flat(groups[:test_size]))


def group(pairs: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``(input, [its distinct targets])`` per distinct input, in order of first
    appearance."""
    groups: dict[str, list[str]] = {}
    for source, target in pairs:
        targets = groups.setdefault(source, [])
        if target not in targets:
            targets.append(target)
    return list(groups.items())


# -- built-in data: English number words -> digits (where attention matters) --------
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_DIGITS = 7  # up to 9,999,999: the inputs run to 70 characters


def number_words(n: int) -> str:
    """American English words for 0 <= n < 10**9, without "and":
    ``3412007 -> "three million four hundred twelve thousand seven"``."""
    if not 0 <= n < 10 ** 9:
        raise ValueError(f"number words are made for 0 to 999,999,999, not {n}")
    if n == 0:
        return "zero"

    def below_thousand(k: int) -> list[str]:
        words = []
        if k >= 100:
            words += [_ONES[k // 100], "hundred"]
            k %= 100
        if k >= 20:
            words.append(_TENS[k // 10] + (f"-{_ONES[k % 10]}" if k % 10 else ""))
        elif k:
            words.append(_ONES[k])
        return words

    words = []
    for scale, name in ((10 ** 6, "million"), (10 ** 3, "thousand"), (1, "")):
        part, n = divmod(n, scale)
        if part:
            words += below_thousand(part) + ([name] if name else [])
    return " ".join(words)


def number_pairs(count: int, seed: int = 0,
                 digits: int = NUMBER_DIGITS) -> list[tuple[str, str]]:
    """``count`` distinct pairs like ``("three million four hundred twelve thousand
    seven", "3412007")``. Each length of 1 to ``digits`` digits is equally likely,
    so short and long numbers are both well represented. The answer sits far from
    where its words are in the input, and long inputs strain a model that must
    squeeze the whole input into one state: a task where attention matters."""
    lengths = range(1, digits + 1)
    available = 10 ** digits
    if not 1 <= count <= available // 2:
        raise DataError(f"the built-in number data set has 1 to {available // 2} examples; "
                        f"asked for {count}")
    rng = random.Random(seed)
    chosen: set[int] = set()
    while len(chosen) < count:
        length = rng.choice(lengths)
        chosen.add(rng.randrange(10 ** (length - 1) if length > 1 else 0, 10 ** length))
    numbers = sorted(chosen)
    rng.shuffle(numbers)
    return [(number_words(n), str(n)) for n in numbers]
