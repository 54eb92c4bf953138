"""Files: writes that never leave a half-written file behind (checkpoints, weights, configs, reports), content
hashes, output paths checked before any work, and the one guarded way occfeat reads a pickled state dict.

Files and folders occfeat creates get the mode a plain ``open(path, "w")`` / ``mkdir`` gives them (0o666 / 0o777 less
the umask), so that teammates and containers running as another user can read exports, checkpoints and ONNX files
wherever the umask allows it. ``tempfile.mkstemp`` / ``mkdtemp`` would give 0o600 / 0o700 whatever the umask.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

from .errors import InputError

# A pickled state dict's tensors, once copied (``.contiguous()``, ``.clone()``, a save), may hold at most this many
# times the bytes of the file they were read from. Tied weights (two names, one storage) legitimately count twice;
# an expanded view (a 4-byte storage seen as 2**32 elements: 16 GiB once copied) exceeds any such factor.
PICKLED_EXPANSION_LIMIT = 4
_UNIQUE_NAME_TRIES = 100


def fsync(path: Path) -> None:
    """Flush a file or a folder (its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_uniquely(parent: Path, prefix: str, create: Callable[[Path], None]) -> Path:
    """``create(parent / (prefix + random))`` for a name nobody holds yet (``create`` must fail with
    ``FileExistsError`` when the name is taken, as ``O_EXCL`` and ``mkdir`` do)."""
    for _ in range(_UNIQUE_NAME_TRIES):
        candidate = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{parent}: no free name starting with {prefix!r} after {_UNIQUE_NAME_TRIES} tries.")


# The mode is left to the kernel, which applies the umask when it creates the entry, exactly as for a plain open():
# occfeat never reads the umask. Reading it means setting it (os.umask is the only call), and the umask is
# process-wide: any thread creating a file between the two os.umask calls would get the temporary value.
def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))


def _create_folder(path: Path) -> None:
    os.mkdir(path, 0o777)


def _make_parents(folder: Path, *, for_path: Path) -> None:
    """``folder`` and its missing parents (umask modes), or an ``InputError`` naming the file in the way."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), folder)
        raise InputError(f"{for_path}: cannot create the folder {folder}: {blocker} is a file, not a folder. Choose "
                         "another output path, or move that file away.") from error
    except PermissionError as error:
        raise InputError(f"{for_path}: cannot create the folder {folder} (permission denied). Choose an output path "
                         "in a folder you can write to.") from error


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Create or replace ``path`` with what ``write(tmp_path)`` writes, so that ``path`` is always either the old
    file or the complete new one: the temporary file lives in the same folder (a rename across file systems is not
    atomic), is flushed to disk, then renamed over ``path``. Missing parent folders are created. The file gets the
    mode a plain ``open(path, "w")`` would give it (0o666 less the umask), whatever mode the file it replaces had.

    >>> atomic_write("out/notes.txt", lambda tmp: tmp.write_text("done"))  # doctest: +SKIP
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; expected the path of a file to write. Give a file name (e.g. "
                         f"{path / 'model.safetensors'}).")
    _make_parents(path.parent, for_path=path)
    tmp = _create_uniquely(path.parent, f".{path.name}.tmp-", _create_file)
    plain_mode = stat.S_IMODE(tmp.stat().st_mode)  # what the kernel gives a new file here (umask, default ACL)
    try:
        write(tmp)
        # Some writers replace the file instead of writing into it (safetensors' save_file creates its own, 0600):
        # the result gets the mode of the file occfeat created.
        if stat.S_IMODE(tmp.stat().st_mode) != plain_mode:
            os.chmod(tmp, plain_mode)
        fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync(path.parent)


def make_temp_dir(parent: str | Path, prefix: str) -> Path:
    """A new, empty folder ``parent/<prefix><random>`` with the mode a plain ``mkdir`` gives (0o777 less the umask;
    ``tempfile.mkdtemp`` gives 0o700), e.g. to assemble a checkpoint folder before renaming it into place. ``parent``
    and its missing parents are created. The caller removes the folder (or renames it) when done."""
    parent = Path(parent)
    _make_parents(parent, for_path=parent / f"{prefix}*")
    return _create_uniquely(parent, prefix, _create_folder)


def check_output_path(path: str | Path, *, kind: Literal["file", "folder"], what: str = "output") -> Path:
    """``path`` (``~`` expanded), checked before any work can be written there as a ``kind``: refuses a folder where a
    file is expected and the reverse, a file where a parent folder is needed, and a nearest existing folder that is
    not writable, each with an ``InputError`` saying what to change. Missing parent folders are fine: writing creates
    them."""
    path = Path(path).expanduser()
    if kind == "file" and path.is_dir():
        raise InputError(f"{what} {path} is a folder; expected the path of a file to write (e.g. "
                         f"{path / 'model.safetensors'}).")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file; expected a folder to write into. Give a new or existing folder "
                         "path, or move the file away.")
    existing = next(p for p in path.parents if p.exists() or p == p.parent)  # the root always exists
    if not existing.is_dir():
        raise InputError(f"{what} {path}: {existing} is a file, not a folder, so nothing can be written under it. "
                         "Choose another output path, or move that file away.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: the folder {existing} is not writable. Choose an output path in a folder "
                         "you can write to.")
    return path


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
    wanted, e.g. "a DINOv2 state dict"); occfeat never falls back to a full unpickle.

    The tensors read are bounded before anyone copies them: together they may materialise to at most
    ``PICKLED_EXPANSION_LIMIT`` times the file's size. A pickle can hold views that repeat memory (``torch.zeros(1)
    .expand(2**32)``: 4 bytes in the file, 16 GiB once ``.contiguous()``); such a file is refused with an
    ``InputError`` naming the tensors."""
    import torch

    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (unpickling raises UnpicklingError, RuntimeError, EOFError, ...)
        raise InputError(f"{path}: torch.load(weights_only=True) could not read it ({type(error).__name__}: "
                         f"{_reason_without_advice(error)}). Expected {expected}; occfeat never unpickles code, so "
                         "a file that needs more than tensors and plain containers cannot be read.") from error
    _check_materialised_size(loaded, path=Path(path), expected=expected)
    return loaded


# torch wraps the reason it refused a pickle in advice to rerun with weights_only=False (arbitrary code execution) or
# to allow-list the pickle's classes; occfeat does neither, so only the reason is passed on.
_ADVICE = re.compile(r"weights_only|safe_globals|re-running|can still be loaded|\btrust(ed)?\b|do it only|\bplease\b|"
                     r"file an issue|documentation of torch\.load", re.IGNORECASE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _reason_without_advice(error: BaseException) -> str:
    text = _ANSI.sub("", str(error))
    text = text.split("WeightsUnpickler error:", 1)[-1]
    sentences = re.split(r"(?<=[.!?])\s+|\n+", text)
    kept = [s.strip() for s in sentences if s.strip() and not _ADVICE.search(s)]
    return " ".join(kept).rstrip(".") or "refused"


def _tensors_in(loaded: Any) -> Iterator[tuple[str, Any]]:
    """(dotted name, tensor) for every tensor in nested dicts / lists / tuples (iteratively: no recursion limit)."""
    import torch

    stack: list[tuple[str, Any]] = [("", loaded)]
    while stack:
        name, value = stack.pop()
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, dict):
            stack.extend((f"{name}.{key}" if name else str(key), item) for key, item in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{name}.{index}" if name else str(index), item) for index, item in enumerate(value))


def _check_materialised_size(loaded: Any, *, path: Path, expected: str) -> None:
    file_bytes = path.stat().st_size
    total, repeating = 0, []
    for name, tensor in _tensors_in(loaded):
        materialised = tensor.numel() * tensor.element_size()
        total += materialised
        if materialised > tensor.untyped_storage().nbytes():
            repeating.append((name, tuple(tensor.shape), tensor.untyped_storage().nbytes()))
    limit = PICKLED_EXPANSION_LIMIT * file_bytes
    if total <= limit:
        return
    views = "; ".join(f"{name} {shape} over {nbytes} bytes of storage" for name, shape, nbytes in repeating[:3])
    raise InputError(
        f"{path}: its tensors would take {_size(total)} once copied, from a file of {_size(file_bytes)} (the limit is "
        f"{PICKLED_EXPANSION_LIMIT}x the file's size)"
        + (f": views that repeat their memory ({views}{' ...' if len(repeating) > 3 else ''})" if views else "")
        + f". A state dict saved from a model holds each tensor's own values. Expected {expected}; save the model's "
        "state_dict() again (torch.save(model.state_dict(), PATH))."
    )


def _size(num_bytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} bytes"
