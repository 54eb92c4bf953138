"""File writes that never leave a half-written file behind (checkpoints, weights, configs, reports)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Create or replace ``path`` with what ``write(tmp_path)`` writes, so that ``path`` is always either the old
    file or the complete new one: the temporary file lives in the same folder (a rename across file systems is not
    atomic), is flushed to disk, then renamed over ``path``.

    >>> atomic_write("out/notes.txt", lambda tmp: tmp.write_text("done"))  # doctest: +SKIP
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent)
