"""The work of a corpus run, cut into shards of consecutive lines, each written
atomically (a temporary file renamed into place) beside the output, in
``OUTPUT.parts/``, with a manifest that ties them to the inputs and options. A
shard file exists complete or not at all, so a rerun redoes at most the shards
that were in flight."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ..errors import DataError

MANIFEST = "manifest.json"


def fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\n")
    return digest.hexdigest()


class ShardStore:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = self.out.with_name(self.out.name + ".parts")

    def path(self, index: int) -> Path:
        return self.dir / f"shard-{index:06d}.jsonl"

    def open(self, manifest: dict, force: bool) -> bool:
        """Start or resume; True when resuming. A parts folder of another run (other
        inputs, artifact or options) is refused unless ``force``."""
        existing = self.dir / MANIFEST
        if existing.is_file() and not force:
            try:
                found = json.loads(existing.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                found = None
            if found != manifest:
                raise DataError(f"{self.dir}: holds a run with other inputs, artifact or "
                                "options; pass --force to discard it and start again")
            return True
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self._atomic(existing, json.dumps(manifest, indent=1) + "\n")
        return False

    def done(self) -> set[int]:
        if not self.dir.is_dir():
            return set()
        return {int(p.stem.split("-")[1]) for p in self.dir.glob("shard-*.jsonl")}

    def write(self, index: int, first: int, outputs: list[str],
              reasons: list[str | None]) -> None:
        """Shard ``index``: one JSON line per input, [line number, output, reason]."""
        lines = [json.dumps([first + i, out, why], ensure_ascii=False)
                 for i, (out, why) in enumerate(zip(outputs, reasons))]
        self._atomic(self.path(index), "\n".join(lines) + "\n")

    def read(self, index: int) -> list[list]:
        text = self.path(index).read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines()]

    def _atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

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
                # One output per line: a newline inside an output would shift the rest.
                outputs.append(out.replace("\r", "\\r").replace("\n", "\\n"))
                if why is not None:
                    rejects.append(f"{number + 1}\t{why}\t{texts[number]}")
        if expected != len(texts):
            raise DataError(f"{self.dir}: {expected} lines in the parts, {len(texts)} inputs")
        self._atomic(self.rejects_path, "".join(r + "\n" for r in rejects))
        self._atomic(self.out, "".join(o + "\n" for o in outputs))
        shutil.rmtree(self.dir)
        return len(outputs), len(rejects)

    @property
    def rejects_path(self) -> Path:
        return self.out.with_name(self.out.name + ".rejects.tsv")
