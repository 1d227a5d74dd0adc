"""Pair files: ``input<TAB>target[<TAB>attribution]`` lines, the keras.io /
manythings.org Anki format. Read by training and by export (which builds a
keras.io vocabulary from the file a model was trained on)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.errors import DataError

# Pairs with a side longer than this are skipped (counted and reported): one
# stray megabyte-long line would otherwise size every padded input.
DEFAULT_MAX_CHARS = 200


@dataclass
class PairFile:
    pairs: list[tuple[str, str]]
    skipped_long: int = 0
    skipped_blank: int = 0


def read_pairs(path: str | Path, limit: int | None = None,
               max_chars: int = DEFAULT_MAX_CHARS) -> PairFile:
    """Read ``input<TAB>target[<TAB>attribution]`` lines (UTF-8, optional BOM).

    Blank lines are skipped. A line without a tab, an empty side or bytes that
    are not UTF-8 raise DataError naming the file and line. ``limit`` keeps the
    first N pairs, as keras.io's ``num_samples`` does.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: data file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a data file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    result = PairFile(pairs=[])
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if limit is not None and len(result.pairs) >= limit:
            break
        try:
            text = line.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}:{lineno}: not valid UTF-8 (byte {e.start})") from None
        if not text.strip():
            result.skipped_blank += 1
            continue
        fields = text.split("\t")
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: no tab; expected input<TAB>target")
        source, target = fields[0], fields[1]
        for side, value in (("input", source), ("target", target)):
            if not value.strip():
                raise DataError(f"{path}:{lineno}: empty {side}")
        if len(source) > max_chars or len(target) > max_chars:
            result.skipped_long += 1
            continue
        result.pairs.append((source, target))
    if not result.pairs:
        raise DataError(f"{path}: no input<TAB>target pairs found")
    return result
