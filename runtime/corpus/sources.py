"""The inputs of a corpus run: lines of a text file, of every ``*.txt`` file in a
folder (in name order), or one column of a CSV or Parquet file."""
from __future__ import annotations

import csv
from pathlib import Path

from ..errors import DataError


def read_inputs(path: Path, column: str | None = None, log=print) -> list[str]:
    """Every input, in order; line (or row) i of the output answers item i."""
    path = Path(path)
    if path.is_dir():
        entries = sorted(path.iterdir())
        files = [p for p in entries if p.suffix == ".txt" and p.is_file()]
        if not files:
            raise DataError(f"{path}: a folder without .txt files")
        skipped = [p.name + ("/" if p.is_dir() else "") for p in entries if p not in files]
        if skipped:  # said, not silent: only the .txt files directly inside are read
            log(f"{path}: reading {len(files)} .txt file(s); skipping "
                + ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""), flush=True)
        return [line for f in files for line in _lines(f)]
    if not path.is_file():
        raise DataError(f"{path}: input not found")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _csv_column(path, column, "\t" if suffix == ".tsv" else ",")
    if suffix == ".parquet":
        return _parquet_column(path, column)
    if column is not None:
        raise DataError(f"{path}: --column applies to .csv, .tsv and .parquet inputs")
    return _lines(path)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 (byte {e.start})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


def _csv_column(path: Path, column: str | None, delimiter: str) -> list[str]:
    if column is None:
        raise DataError(f"{path}: name the column to translate with --column")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            # strict: an unterminated quote is an error, not the rest of the file
            # swallowed into one field.
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            if column not in (reader.fieldnames or []):
                raise DataError(f"{path}: no column {column!r} (columns: "
                                f"{', '.join(reader.fieldnames or [])})")
            rows = []
            for row in reader:
                if None in row:  # more fields than the header names
                    raise DataError(f"{path}:{reader.line_num}: more fields than the header")
                rows.append(row[column] or "")
            return rows
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e})") from None
    except csv.Error as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None


def _parquet_column(path: Path, column: str | None) -> list[str]:
    if column is None:
        raise DataError(f"{path}: name the column to translate with --column")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError("reading Parquet needs pyarrow (pip install pyarrow, or the "
                        "project's [ray] extra)") from None
    try:
        table = pq.read_table(path, columns=[column])
    except KeyError:
        raise DataError(f"{path}: no column {column!r}") from None
    except Exception as e:  # pyarrow raises many types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    return ["" if v is None else str(v) for v in table.column(column).to_pylist()]
