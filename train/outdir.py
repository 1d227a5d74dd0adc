"""Write a result directory so that it only ever appears complete.

Work happens in a hidden sibling directory; ``promote`` renames it into place.
A crash or SIGKILL leaves at most that hidden directory behind, and the
previous result, if any, stays untouched until the new one is whole.
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
    shutil.rmtree(staging, ignore_errors=True)
