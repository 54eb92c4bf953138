"""Scene splits and nested, reproducible low-data subsets of key frames.

A subset is drawn at sample level from one seeded permutation of the split's sample tokens: the first
``ceil(fraction * N)`` tokens of that permutation. So for one seed the 1 % subset lies inside the 10 % subset, which
lies inside the full split, and the same seed always gives the same tokens. Subsets are saved as (and loaded from)
a JSON list of sample tokens, so that a run can be reproduced and shared.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, InputError

# The synthetic world writes its own split here (scene names per split) beside its tables.
SYNTHETIC_SPLITS_FILE = "occfeat_splits.json"

# nuscenes-devkit split names per dataroot version.
_OFFICIAL_SPLITS = {
    "v1.0-trainval": ("train", "val"),
    "v1.0-mini": ("mini_train", "mini_val"),
    "v1.0-test": ("test",),
}
# Our short names, mapped per version: "train"/"val" also work on v1.0-mini.
_ALIASES = {"v1.0-mini": {"train": "mini_train", "val": "mini_val"}}


def scene_names(table_root: str | Path, version: str, split: str) -> list[str]:
    """Names of the scenes in ``split`` for a dataroot version.

    Official versions use ``nuscenes.utils.splits.create_splits_scenes()``; any other version (a synthetic world)
    reads the split file it carries (``SYNTHETIC_SPLITS_FILE`` beside its tables). ``split="all"`` is every scene of
    the version's splits.
    """
    table_root = Path(table_root)
    if version in _OFFICIAL_SPLITS:
        from nuscenes.utils.splits import create_splits_scenes

        official = create_splits_scenes()
        names = _OFFICIAL_SPLITS[version]
        split = _ALIASES.get(version, {}).get(split, split)
        available = {name: official[name] for name in names}
    else:
        path = table_root / SYNTHETIC_SPLITS_FILE
        if not path.is_file():
            raise InputError(
                f"split {split!r}: version {version!r} is not an official nuScenes version and {path} does not exist. "
                f"Official versions: {sorted(_OFFICIAL_SPLITS)}; a synthetic world written by `occfeat synth` carries "
                f"its own {SYNTHETIC_SPLITS_FILE}."
            )
        available = json.loads(path.read_text())
    if split == "all":
        return sorted({scene for scenes in available.values() for scene in scenes})
    if split not in available:
        raise InputError(f"unknown split {split!r} for version {version!r}; choose from {sorted(available)} or 'all'.")
    return list(available[split])


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(
            f"fraction={fraction!r}: expected 0 < fraction <= 1 (e.g. 0.01 for 1 % of the labelled samples); "
            "use count=N for an absolute number of samples."
        )


def _permutation_key(token: str, seed: int) -> str:
    # A hash, not random.shuffle: the order of a token does not depend on which other tokens are present, so a
    # subset drawn from a dataroot with extra scenes keeps the same members within the common scenes.
    return hashlib.sha256(f"{seed}:{token}".encode()).hexdigest()


def select_subset(
    sample_tokens: Sequence[str], fraction: float | None = None, count: int | None = None, seed: int = 0
) -> list[str]:
    """A nested, reproducible subset of ``sample_tokens``, in the input order.

    Exactly one of ``fraction`` (in (0, 1], rounded up so a non-empty split never yields an empty subset) and
    ``count`` (1..N) must be given.

    >>> tokens = [f"t{i}" for i in range(1000)]
    >>> small, large = select_subset(tokens, 0.01), select_subset(tokens, 0.1)
    >>> len(small), len(large), set(small) <= set(large)
    (10, 100, True)
    """
    if (fraction is None) == (count is None):
        raise ConfigError("select_subset: give exactly one of fraction= and count=.")
    n = len(sample_tokens)
    if fraction is not None:
        _check_fraction(fraction)
        count = math.ceil(fraction * n)
    assert count is not None
    if not 1 <= count <= n:
        raise ConfigError(f"count={count}: expected 1 <= count <= {n} (the number of samples in the split).")
    ranked = sorted(sample_tokens, key=lambda token: _permutation_key(token, seed))
    chosen = set(ranked[:count])
    return [token for token in sample_tokens if token in chosen]


def save_subset(tokens: Sequence[str], path: str | Path) -> Path:
    """Write a subset as a JSON list of sample tokens."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(tokens), indent=0) + "\n")
    return path


def load_subset(path: str | Path) -> list[str]:
    """Read a subset written by ``save_subset`` (or by hand: a JSON list of sample-token strings)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"subset file {path} does not exist; write one with occfeat.data.save_subset(tokens, path).")
    tokens = json.loads(path.read_text())
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise InputError(f"subset file {path}: expected a JSON list of sample-token strings.")
    return tokens
