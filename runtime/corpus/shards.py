"""The work of a corpus run, cut into shards of consecutive lines, each written
atomically (a temporary file renamed into place) beside the output, in
``OUTPUT.parts/``, with a manifest that ties them to the inputs and options. A
shard file exists complete or not at all, so a rerun redoes at most the shards
that were in flight. One run at a time owns an output: ``OUTPUT.lock`` is held
(an ``fcntl`` lock) for the whole run."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from .. import atomic
from ..errors import DataError

MANIFEST = "manifest.json"


def fingerprint(texts: list[str]) -> str:
    """sha256 (hex) of the inputs, one per line, for the manifest to tie a run to them."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


def one_line(text: str, tabs: bool = True) -> str:
    """A field as one line of a line-per-input file: line breaks (and, for a TSV
    field, tabs) escaped, so a newline inside an input or output cannot shift the
    lines after it."""
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return text.replace("\t", "\\t") if tabs else text


class OutputLock:
    """``OUTPUT.lock``, held for a whole run; a second run on the same output fails
    at once, naming the holder's pid. The file is removed on release; a waiter
    that finds its file replaced under it takes the new one."""

    def __init__(self, out: Path):
        self.path = out.with_name(out.name + ".lock")
        self._fd: int | None = None

    def __enter__(self) -> "OutputLock":
        import fcntl

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise DataError(f"{self.path.with_suffix('')}: another run (pid {holder}) "
                                "is writing this output; wait for it, or choose another "
                                "--out") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # released and removed while we waited: lock the new file
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            try:
                os.unlink(self.path)
            finally:
                os.close(self._fd)
                self._fd = None


class ShardStore:
    """The shard files of a run on ``out``, in ``OUTPUT.parts/``, with its manifest; also
    writes the final output and rejects files."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")

    def path(self, index: int) -> Path:
        """The file of shard ``index``."""
        return self.dir / f"shard-{index:06d}.jsonl"

    def check_outputs(self, force: bool) -> None:
        """Refuse what the tool must not touch: an output or rejects file from an
        earlier run (unless ``force``), a directory in the output's place, and a
        parts folder the tool did not write."""
        for path in (self.out, self.rejects_path):
            if path.is_dir():
                raise DataError(f"{path}: is a directory; choose another --out")
        if self.dir.exists() and not self.dir.is_dir():
            raise DataError(f"{self.dir}: exists and is not a folder of this tool's parts; "
                            "move it away or choose another --out")
        if self.dir.is_dir() and not (self.dir / MANIFEST).is_file():
            raise DataError(f"{self.dir}: a folder this tool did not write (no {MANIFEST}); "
                            "it is left untouched: move it away or choose another --out")
        if not force and not self.dir.is_dir():
            for path in (self.out, self.rejects_path):
                if path.exists():
                    raise DataError(f"{path} exists (a finished run?); pass --force to "
                                    "translate again and replace it")

    def open(self, manifest: dict, force: bool) -> bool:
        """Start or resume; True when resuming. A parts folder of another run (other
        inputs, artifact or options) is refused unless ``force``."""
        existing = self.dir / MANIFEST
        if existing.is_file() and not force:
            try:
                found = json.loads(existing.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError, RecursionError):
                raise DataError(f"{existing}: damaged (not the manifest this tool writes); "
                                "pass --force to discard the parts and start again") from None
            if found != manifest:
                raise DataError(f"{self.dir}: holds a run with other inputs, artifact or "
                                "options; pass --force to discard it and start again")
            return True
        if self.dir.exists():
            shutil.rmtree(self.dir)  # ours: check_outputs saw the manifest
        self.dir.mkdir(parents=True)
        self._atomic(existing, json.dumps(manifest, indent=1) + "\n")
        return False

    def done(self, shards: dict[int, tuple[int, int]], log=print) -> set[int]:
        """The shards already written whole. ``shards``: index -> (first, end line).
        A damaged shard file (truncated, edited) is this tool's own: it is removed,
        said so, and translated again."""
        found = set()
        for p in sorted(self.dir.glob("shard-*.jsonl")) if self.dir.is_dir() else []:
            try:
                index = int(p.stem.split("-")[1])
                lo, hi = shards[index]
                rows = self.read(index)
                whole = [r[0] for r in rows] == list(range(lo, hi)) and all(
                    isinstance(r[1], str) and (r[2] is None or isinstance(r[2], str))
                    for r in rows)
            except (KeyError, ValueError, TypeError, IndexError, UnicodeDecodeError):
                whole = False
            if whole:
                found.add(index)
            else:
                log(f"{p}: damaged; translating its lines again", flush=True)
                p.unlink()
        return found

    def write(self, index: int, first: int, outputs: list[str],
              reasons: list[str | None]) -> None:
        """Shard ``index``: one JSON line per input, [line number, output, reason]."""
        lines = [json.dumps([first + i, out, why], ensure_ascii=False)
                 for i, (out, why) in enumerate(zip(outputs, reasons))]
        self._atomic(self.path(index), "\n".join(lines) + "\n")

    def read(self, index: int) -> list[list]:
        """Shard ``index``'s rows, [line number, output, reason]; raises OSError or ValueError
        when the file is missing or damaged."""
        text = self.path(index).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def _atomic(self, path: Path, text: str) -> None:
        atomic.write_text(path, text)

    def assemble(self, texts: list[str], shards: int) -> tuple[int, int]:
        """Write OUTPUT (line i answers input i; a rejected line is empty) and
        OUTPUT.rejects.tsv (line number, reason, input), each atomically; then drop
        the parts. Returns (lines, rejects)."""
        outputs, rejects, expected = [], [], 0
        for index in range(shards):
            for number, out, why in self.read(index):
                if number != expected:
                    raise DataError(f"{self.path(index)}: line {number} where {expected} "
                                    "was expected; the parts are damaged, rerun with --force")
                expected += 1
                outputs.append(one_line(out, tabs=False))
                if why is not None:
                    rejects.append(f"{number + 1}\t{one_line(why)}\t{one_line(texts[number])}")
        if expected != len(texts):
            raise DataError(f"{self.dir}: {expected} lines in the parts, {len(texts)} inputs")
        self._atomic(self.rejects_path, "".join(r + "\n" for r in rejects))
        self._atomic(self.out, "".join(o + "\n" for o in outputs))
        shutil.rmtree(self.dir)
        return len(outputs), len(rejects)

    @property
    def rejects_path(self) -> Path:
        """``OUTPUT.rejects.tsv``, beside the output."""
        return self.out.with_name(self.out.name + ".rejects.tsv")
