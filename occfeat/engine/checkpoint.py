"""Checkpoints on disk: atomic writes, one folder per saved step, tensors in safetensors.

Layout of a run's ``out_dir``::

    checkpoints/step-00001200/      one training state, complete or absent (written as a hidden folder, renamed)
        model.safetensors           the model's state dict (unwrapped): ``occfeat.load(..., checkpoint=...)`` reads it
        state.safetensors           every other tensor: extra modules, optimizer moments, RNG states
        state.pt                    the rest (step, data position, scheduler, scaler, config, ...): plain python
                                    values, each tensor replaced by the name of its entry in state.safetensors
        integrity.json              the size and sha256 of each file above, written last
    checkpoints/damaged-step-*/     a checkpoint whose bytes no longer match its integrity record, set aside
    best.safetensors                the model's state dict at the best evaluation (metadata: step, metric, value)

``state.pt`` is read with ``torch.load(..., weights_only=True)``, which refuses anything but plain containers,
numbers, strings and tensors: a checkpoint never runs code.

Why a folder renamed into place: a process killed mid-write (SIGKILL, power loss) leaves only a hidden
``.step-*.tmp-*`` folder, which is ignored and removed later, so the newest ``step-*`` folder is always complete.
Why an integrity record too: a complete folder can still be damaged later (a full disk, a bad copy, bit rot). A
resume checks the newest checkpoint against its record and falls back past a damaged one, loudly
(``newest_intact_checkpoint``).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import ConfigError, LoadError
from ..io import atomic_write, fsync, make_temp_dir, sha256_file

CHECKPOINTS_DIR = "checkpoints"
MODEL_FILE = "model.safetensors"
TENSORS_FILE = "state.safetensors"
STATE_FILE = "state.pt"
BEST_FILE = "best.safetensors"
INTEGRITY_FILE = "integrity.json"
DAMAGED_PREFIX = "damaged-"
_STEP_DIR = re.compile(r"step-(\d+)")
_TENSOR_REF = "__tensor__"  # {"__tensor__": key} stands for state.safetensors[key] in state.pt


def step_dir(root: str | Path, step: int) -> Path:
    """``root/checkpoints/step-XXXXXXXX``: zero-padded so that names sort like steps."""
    return Path(root) / CHECKPOINTS_DIR / f"step-{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """The complete checkpoint folders under ``root``, oldest first."""
    folder = Path(root) / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _STEP_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


# The attribute (and state-dict prefix) of the trained BEVModel inside the module both trainers train: a checkpoint's
# network weights are its "network." keys, whatever else (loss weights, the pretraining head) it holds.
NETWORK_PREFIX = "network."
_LEGACY_PREFIXES = ("model.",)  # fine-tuning runs before 0.13 wrapped the network as "model"


def run_network_state(run_dir: str | Path, which: str = "best") -> tuple[dict[str, Tensor], Path]:
    """The BEV network's weights of a training run (``occfeat finetune`` or ``occfeat pretrain``), keys as a bare
    ``BEVModel`` has them, and the file they came from. ``which``: ``"best"`` (the best evaluation's weights, else the
    latest checkpoint) or ``"latest"``."""
    run = Path(run_dir)
    if which not in ("best", "latest"):
        raise ConfigError(f"which={which!r}: expected 'best' or 'latest'.")
    weights = run / BEST_FILE if which == "best" and (run / BEST_FILE).is_file() else None
    if weights is None:
        latest = newest_intact_checkpoint(run)
        if latest is None:
            raise ConfigError(f"{run} holds no checkpoint: train first (occfeat finetune|pretrain ... --out {run}).")
        weights = latest / MODEL_FILE
    try:
        state = load_file(str(weights))
    except SafetensorError as error:
        raise LoadError(f"{weights} cannot be read ({error}): the file is damaged. Export another checkpoint "
                          "(occfeat export RUN --which latest) or train again.") from error
    for prefix in (NETWORK_PREFIX, *_LEGACY_PREFIXES):
        network = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if network:
            return network, weights
    raise ConfigError(f"{weights}: no {NETWORK_PREFIX!r} weights; it is not an occfeat training checkpoint.")


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def _split_tensors(tree: Any, key: str, tensors: dict[str, Tensor]) -> Any:
    """``tree`` with each tensor moved into ``tensors`` (under its path in the tree) and replaced by a reference."""
    if isinstance(tree, Tensor):
        tensors[key] = tree.detach().cpu().contiguous()
        return {_TENSOR_REF: key}
    if isinstance(tree, dict):
        return {k: _split_tensors(v, f"{key}/{k}", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_split_tensors(v, f"{key}/{i}", tensors) for i, v in enumerate(tree))
    return tree


def _join_tensors(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """The inverse of ``_split_tensors``."""
    if isinstance(tree, dict):
        if tree.keys() == {_TENSOR_REF}:
            return tensors[tree[_TENSOR_REF]]
        return {k: _join_tensors(v, tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_join_tensors(v, tensors) for v in tree)
    return tree


def _model_tensors(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}


def save_checkpoint(folder: str | Path, model_state: dict[str, Tensor], state: dict[str, Any]) -> Path:
    """Write a checkpoint folder (``step_dir``): the model's state dict and a nested ``state`` of python values and
    tensors. The folder appears complete or not at all. Returns ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_temp_dir(folder.parent, prefix=f".{folder.name}.tmp-")  # the umask's mode, as mkdir would
    try:
        save_file(_model_tensors(model_state), str(tmp / MODEL_FILE))
        tensors: dict[str, Tensor] = {}
        skeleton = _split_tensors(state, "state", tensors)
        save_file(tensors, str(tmp / TENSORS_FILE))
        torch.save(skeleton, tmp / STATE_FILE)
        for name in (MODEL_FILE, TENSORS_FILE, STATE_FILE):
            fsync(tmp / name)
        record = {name: {"size": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)}
                  for name in (MODEL_FILE, TENSORS_FILE, STATE_FILE)}
        (tmp / INTEGRITY_FILE).write_text(json.dumps({"files": record}, indent=1) + "\n")
        fsync(tmp / INTEGRITY_FILE)
        fsync(tmp)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync(folder.parent)
    return folder


def checkpoint_damage(folder: str | Path) -> str | None:
    """Why a checkpoint folder cannot be trusted (a file missing, or not the size and sha256 its integrity record
    says), or None when it is intact. Folders written before the record existed are checked for their files only."""
    folder = Path(folder)
    missing = [name for name in (MODEL_FILE, TENSORS_FILE, STATE_FILE) if not (folder / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    if not (folder / INTEGRITY_FILE).is_file():
        return None
    try:
        record = json.loads((folder / INTEGRITY_FILE).read_text())["files"]
    except (ValueError, KeyError, TypeError) as error:
        return f"unreadable {INTEGRITY_FILE} ({type(error).__name__})"
    for name, expected in record.items():
        size = (folder / name).stat().st_size
        if size != expected["size"]:
            return f"{name} is {size} bytes, its record says {expected['size']}"
        if sha256_file(folder / name) != expected["sha256"]:
            return f"{name}'s sha256 differs from its record"
    return None


def newest_intact_checkpoint(root: str | Path, *, set_aside: bool = False) -> Path | None:
    """The newest checkpoint under ``root`` that matches its integrity record, or None when there is none. Each newer
    damaged one is named in a warning; ``set_aside=True`` (a resuming rank 0) also renames it to
    ``damaged-step-*``, out of the way of the step the resumed run will write again. Raises ``ConfigError`` when
    checkpoints exist and all are damaged: starting from step 0 would silently discard the run."""
    found = list_checkpoints(root)
    for folder in reversed(found):
        reason = checkpoint_damage(folder)
        if reason is None:
            return folder
        message = f"checkpoint {folder} is damaged ({reason})"
        if set_aside:
            damaged = folder.with_name(DAMAGED_PREFIX + folder.name)
            os.rename(folder, damaged)
            message += f"; set aside as {damaged.name}"
        warnings.warn(message + "; falling back to the checkpoint before it.", stacklevel=2)
        print(f"occfeat: warning: {message}", flush=True)
    if found:
        raise ConfigError(f"every checkpoint in {Path(root) / CHECKPOINTS_DIR} is damaged; the run cannot resume. "
                          "Start it again with --overwrite (overwrite=True), or in a new --out.")
    return None


def load_checkpoint(folder: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read what ``save_checkpoint`` wrote: ``(model_state, state)``, tensors on the CPU."""
    folder = Path(folder)
    try:
        model_state = load_file(str(folder / MODEL_FILE))
        skeleton = torch.load(folder / STATE_FILE, weights_only=True)
        return model_state, _join_tensors(skeleton, load_file(str(folder / TENSORS_FILE)))
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError, KeyError) as error:
        raise LoadError(f"checkpoint {folder} cannot be read ({type(error).__name__}: {error}). Delete that folder "
                          "to resume from the one before it, or start again with --overwrite.") from error


def save_weights(path: str | Path, model_state: dict[str, Tensor], metadata: dict[str, str]) -> None:
    """Write a model's state dict to one safetensors file, atomically (``best.safetensors``)."""
    tensors = _model_tensors(model_state)
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def prune_checkpoints(root: str | Path, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoint folders, and leftovers of interrupted writes. Each folder is
    first renamed to a hidden name, so that a kill during deletion never leaves a partial ``step-*`` folder."""
    folder = Path(root) / CHECKPOINTS_DIR
    if folder.is_dir():
        for leftover in folder.glob(".step-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep]:
        trash = folder / f".{old.name}.trash"
        os.rename(old, trash)
        shutil.rmtree(trash)
