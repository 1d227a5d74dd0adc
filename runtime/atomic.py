"""Write results so that they only ever appear complete: a directory (training's
run, export's artifact) or a single file (the corpus tool's shards and outputs).

A directory is built in a hidden sibling; ``promote`` renames it into place. A
file is written to a hidden sibling, synced and renamed. A crash or SIGKILL
leaves at most that hidden sibling behind, and the previous result, if any,
stays untouched until the new one is whole. Standard library only.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputExistsError


def check_target(out: Path, marker: str, force: bool) -> None:
    """Refuse to replace a finished result (one holding ``marker``) without force."""
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")
    if (out / marker).exists() and not force:
        raise OutputExistsError(f"{out} already holds {marker}; pass --force to replace it")
    if out.exists() and any(out.iterdir()) and not (out / marker).exists() and not force:
        raise OutputExistsError(f"{out} exists and is not empty; pass --force to replace it")


def staging_dir(out: Path) -> Path:
    """A fresh hidden directory beside ``out`` to build the result in."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))


def promote(staging: Path, out: Path) -> None:
    """Move ``staging`` to ``out``, replacing what was there only once it is whole."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def discard(staging: Path) -> None:
    """Remove a staging directory that will not be promoted."""
    shutil.rmtree(staging, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) in one rename, after an fsync."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
