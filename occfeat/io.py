"""Files: writes that never leave a half-written file behind (checkpoints, weights, configs, reports), content
hashes, and the one guarded way occfeat reads a pickled state dict."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError


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


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The sha256 of a file's bytes (hex), read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def read_pickled_weights(path: str | Path, *, expected: str) -> Any:
    """A ``.pth`` / ``.pt`` file read with ``torch.load(weights_only=True)``: tensors and plain containers only, no
    code runs. Anything torch refuses becomes an ``InputError`` naming the file and ``expected`` (what the caller
    wanted, e.g. "a DINOv2 state dict"); occfeat never falls back to a full unpickle."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (unpickling raises UnpicklingError, RuntimeError, EOFError, ...)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise InputError(f"{path}: torch.load(weights_only=True) could not read it ({type(error).__name__}: "
                         f"{first_line}). Expected {expected}; occfeat never unpickles code.") from error
