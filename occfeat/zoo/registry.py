"""The weights registry: data, not code. Imports neither torch nor timm, so `occfeat list` / `info` are instant.

Sources, later ones overriding earlier ones for the same id:
1. ``weights.json`` shipped in the package;
2. the files named in ``OCCFEAT_REGISTRY`` (``os.pathsep``-separated), read when first needed;
3. ``register_weights(path_or_dict)`` calls.

An id is ``"{architecture}.{tag}"``; aliases are explicit, never fuzzy. A published id is never re-pointed to other
bytes: a new training run is a new tag.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UnknownNameError

REGISTRY_ENV = "OCCFEAT_REGISTRY"
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Names that travel into file paths (bundles), Hub repositories and the code snippet of generated model cards: letters,
# digits, '.', '_', '-', starting with a letter or digit, with at most one 'namespace/' in front. No quotes, spaces,
# newlines or '..' components can get through.
WEIGHT_ID_PATTERN = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_NAME_LENGTH = 128
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# A file inside a Hub repository or bundle folder: relative, '/'-separated, every part a plain name (so no absolute
# path, drive, backslash, '.' or '..' part).
_FILE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_REQUIRED = ("architecture", "aliases", "hub", "files", "model_args", "input", "classes", "parts", "reinit_keys",
             "license", "dataset", "paper", "metrics", "recipe")


@dataclass(frozen=True)
class FileSpec:
    """One file of a published weight: its path in the repository, sha256 and size in bytes."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class WeightSpec:
    """Everything known about one weight id (see ``weights.json``): where its bytes are, what they are, how to feed
    them (``transforms()``) and how they were made."""

    id: str
    architecture: str
    aliases: tuple[str, ...]
    repo: str | None
    commit: str | None
    files: tuple[FileSpec, ...]
    model_args: dict[str, Any]
    input: dict[str, Any]
    classes: dict[str, list[str]]
    parts: dict[str, str]
    reinit_keys: tuple[str, ...]
    license: str
    dataset: str
    paper: dict[str, str]
    metrics: tuple[dict[str, Any], ...]
    recipe: dict[str, str]
    source: str = "occfeat"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def published(self) -> bool:
        """True when the registry pins a Hub commit and the sha256 of every file."""
        return self.commit is not None and bool(self.files)

    @property
    def status(self) -> str:
        """Where the weights are: published on the Hub, to be converted locally from their authors' release (the
        registry cannot redistribute them), or not published yet."""
        if self.published and self.commit:
            return f"published @ `{self.commit[:8]}`"
        if "convert" in self.recipe:
            return f"convert locally: `{self.recipe['convert']}` (from {self.recipe.get('source', 'its authors')})"
        return "not published yet"

    @property
    def tag(self) -> str:
        return self.id.split(".", 1)[1]

    def file(self, path: str) -> FileSpec:
        for spec in self.files:
            if spec.path == path:
                return spec
        raise UnknownNameError(f"{self.id}: no file {path!r} in the registry entry; files: {[f.path for f in self.files]}.")

    def model_config(self):  # type: ignore[no-untyped-def]
        """The ``BEVModelConfig`` these weights were trained with (architecture + ``model_args``), after checking that
        the entry's ``input`` and ``parts`` describe that network (``check_entry_matches``)."""
        from ..models import get_model_config

        config = get_model_config(self.architecture, **self.model_args)
        check_entry_matches(self, config)
        return config

    def transforms(self):  # type: ignore[no-untyped-def]
        """The input pipeline these weights expect (image size, crop, normalisation, intrinsics update): the same
        code as the training dataset's (``occfeat.data.images``), with the network's own input spec."""
        from .transforms import CameraTransform

        config = self.model_config()
        return CameraTransform(tuple(config.image_size), tuple(config.image_mean), tuple(config.image_std))

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)


def check_entry_matches(spec: WeightSpec, config: Any) -> None:
    """Raise ``ConfigError`` when a registry entry's ``input`` (image size, normalisation, cameras, raster) or
    ``parts`` disagree with the network its ``architecture`` and ``model_args`` build: the entry would promise users
    an input the weights were not trained on."""
    from ..conventions.geometry import NUSCENES_CAMERAS

    grid = config.grid
    built = {"image_size": list(config.image_size), "mean": list(config.image_mean), "std": list(config.image_std),
             "cameras": list(NUSCENES_CAMERAS),  # every network takes the nuScenes rig, in this order
             "bev_grid": {"x_range": list(grid.x_range), "y_range": list(grid.y_range), "resolution": grid.resolution}}
    wrong = {k: (spec.input[k], built[k]) for k in built if k in spec.input and json.dumps(spec.input[k]) != json.dumps(built[k])}
    if wrong:
        details = "; ".join(f"input.{k} is {ours} but the network has {theirs}" for k, (ours, theirs) in wrong.items())
        raise ConfigError(f"weights registry entry {spec.id!r}: {details}. Fix the entry's input (or its model_args): "
                          "occfeat derives the network from architecture + model_args.")
    from ..models import PARTS

    # ``parts``: the parts the weight file holds (a pretrained export has no heads), each with its state-dict prefix.
    wrong_parts = {part: prefix for part, prefix in spec.parts.items() if part not in PARTS or prefix != f"{part}."}
    if wrong_parts or not spec.parts:
        raise ConfigError(f"weights registry entry {spec.id!r}: parts {spec.parts} must map some of the network's "
                          f"parts {list(PARTS)} to their state-dict prefixes ('backbone': 'backbone.', ...).")


def check_weight_id(name: Any, what: str = "weight id") -> str:
    """``name`` if it is a safe weight id or alias (``WEIGHT_ID_PATTERN``), else a ``ConfigError`` saying why."""
    if not isinstance(name, str) or len(name) > _MAX_NAME_LENGTH or not WEIGHT_ID_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid name: use letters, digits, '.', '_' and '-', starting with a letter or a "
            f"digit, at most {_MAX_NAME_LENGTH} characters, optionally after one 'namespace/' (e.g. "
            "'simplebev-tiny.my-run'). Quotes, spaces and line breaks are refused: the name goes into file paths and "
            "the model card's code."
        )
    return name


def is_safe_file_path(path: Any) -> bool:
    """Whether ``path`` is a relative, '/'-separated path of plain names, which stays inside any folder it is joined
    to (no absolute path, drive, backslash, '.' or '..' part)."""
    return isinstance(path, str) and len(path) <= 255 and all(_FILE_PART.fullmatch(part) for part in path.split("/"))


def validate_entry(weight_id: str, entry: dict[str, Any]) -> None:
    """Raise ``ConfigError`` naming the field when a registry entry is malformed."""

    def fail(message: str) -> None:
        raise ConfigError(f"weights registry entry {weight_id!r}: {message}")

    check_weight_id(weight_id)
    if not isinstance(entry, dict):
        fail(f"expected an object, got {type(entry).__name__}.")
    if "." not in weight_id or weight_id.split(".", 1)[0] != entry.get("architecture"):
        fail("the id must be '{architecture}.{tag}' with the entry's architecture as prefix.")
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        fail(f"missing field(s) {missing}.")
    hub = entry["hub"]
    if not isinstance(hub, dict) or "repo" not in hub or "commit" not in hub:
        fail("'hub' must be {'repo': 'org/name', 'commit': 40-hex or null}.")
    if hub["repo"] is not None and not (isinstance(hub["repo"], str) and _REPO_ID.fullmatch(hub["repo"])):
        fail(f"hub.repo={hub['repo']!r} is not a Hub repository id 'namespace/name'.")
    if hub["commit"] is not None and not _HEX40.match(str(hub["commit"])):
        fail(f"hub.commit={hub['commit']!r} is not a 40-hex commit id (pin a commit, never a branch).")
    if hub["commit"] is not None and not entry["files"]:
        fail("a pinned commit needs its files with sha256 and size.")
    if not isinstance(entry["files"], dict):
        fail("'files' must map each file's path to its sha256 and size.")
    for path, spec in entry["files"].items():
        if not is_safe_file_path(path):
            fail(f"files[{path!r}]: a file's path must be relative inside the repository ('model.safetensors', "
                 "'sub/model.safetensors'): no absolute path, backslash, '.' or '..' part.")
        if not isinstance(spec, dict):
            fail(f"files[{path!r}] must be {{'sha256': 64-hex, 'size': bytes}}.")
        if not _HEX64.match(str(spec.get("sha256", ""))) or not isinstance(spec.get("size"), int) or spec["size"] <= 0:
            fail(f"files[{path!r}] needs a 64-hex sha256 and a positive integer size.")
        if path.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl")):
            fail(f"files[{path!r}]: weights are safetensors only; pickles are never loaded.")
    for name in ("image_size", "mean", "std"):
        if name not in entry["input"]:
            fail(f"input.{name} is required.")
    if not isinstance(entry["aliases"], list):
        fail("'aliases' must be a list.")
    for alias in entry["aliases"]:
        check_weight_id(alias, f"weights registry entry {weight_id!r}: alias")


def _spec(weight_id: str, entry: dict[str, Any], source: str) -> WeightSpec:
    validate_entry(weight_id, entry)
    return WeightSpec(
        id=weight_id,
        architecture=entry["architecture"],
        aliases=tuple(entry["aliases"]),
        repo=entry["hub"]["repo"],
        commit=entry["hub"]["commit"],
        files=tuple(FileSpec(p, s["sha256"], s["size"]) for p, s in entry["files"].items()),
        model_args=dict(entry["model_args"]),
        input=dict(entry["input"]),
        classes=dict(entry["classes"]),
        parts=dict(entry["parts"]),
        reinit_keys=tuple(entry["reinit_keys"]),
        license=entry["license"],
        dataset=entry["dataset"],
        paper=dict(entry["paper"]),
        metrics=tuple(entry["metrics"]),
        recipe=dict(entry["recipe"]),
        source=source,
        raw=entry,
    )


class _Registry:
    def __init__(self) -> None:
        self._specs: dict[str, WeightSpec] | None = None
        self._extra: list[tuple[dict[str, Any], str]] = []

    def _load(self) -> dict[str, WeightSpec]:
        if self._specs is None:
            specs: dict[str, WeightSpec] = {}
            sources = [(json.loads(resources.files(__package__).joinpath("weights.json").read_text()), "occfeat")]
            for path in filter(None, os.environ.get(REGISTRY_ENV, "").split(os.pathsep)):
                sources.append((_read_registry_file(Path(path), f"${REGISTRY_ENV}"), path))
            for data, source in [*sources, *self._extra]:
                for weight_id, entry in data.get("weights", {}).items():
                    specs[weight_id] = _spec(weight_id, entry, source)
            aliases: dict[str, str] = {}
            for spec in specs.values():
                for alias in spec.aliases:
                    if alias in specs or aliases.get(alias, spec.id) != spec.id:
                        raise ConfigError(f"weights registry: alias {alias!r} of {spec.id!r} is already a name.")
                    aliases[alias] = spec.id
            self._aliases = aliases
            self._specs = specs
        return self._specs

    def add(self, data: dict[str, Any], source: str) -> list[str]:
        _check_document(data, source)
        for weight_id, entry in data.get("weights", {}).items():
            validate_entry(weight_id, entry)
        self._extra.append((data, source))
        self._specs = None
        return list(data.get("weights", {}))

    def get(self, name: str) -> WeightSpec:
        specs = self._load()
        weight_id = self._aliases.get(name, name)
        if weight_id not in specs:
            known = [*specs, *self._aliases]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownNameError(
                f"unknown weights {name!r}.{hint} `occfeat list` shows every id and alias; architectures without "
                "weights are built with occfeat.create_model(ARCH) or load(ARCH, pretrained=False)."
            )
        return specs[weight_id]

    def names(self, pattern: str, include_aliases: bool) -> list[str]:
        specs = self._load()
        names = [*specs, *(self._aliases if include_aliases else [])]
        return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))

    def reset(self) -> None:
        """Forget the cached registry (re-read ``OCCFEAT_REGISTRY``) and every ``register_weights`` call."""
        self._specs = None
        self._extra = []


def _read_registry_file(path: Path, origin: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"weights registry file {path} (from {origin}) does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"weights registry file {path}: not valid JSON ({type(exc).__name__}: {str(exc)[:200]}).") from exc
    _check_document(data, str(path))
    return data


def _check_document(data: Any, source: str) -> None:
    if not isinstance(data, dict) or not isinstance(data.get("weights", {}), dict):
        raise ConfigError(f"weights registry {source}: expected an object {{\"weights\": {{id: entry, ...}}}}.")


REGISTRY = _Registry()


def register_weights(source: str | Path | dict[str, Any]) -> list[str]:
    """Add weight entries (a registry JSON file, or its dict ``{"weights": {id: entry}}``); returns the ids added.

    >>> register_weights("my_registry.json")  # doctest: +SKIP
    ['bevformer-tiny.my-run']
    """
    if isinstance(source, dict):
        return REGISTRY.add(source, "register_weights(dict)")
    return REGISTRY.add(_read_registry_file(Path(source), "register_weights"), str(source))


def weights_table(pattern: str = "*") -> str:
    """The registered weights as a markdown table (what the README's zoo table is generated from)."""
    lines = ["| weight id | aliases | architecture | pretraining | status | reported, not measured (OccFeat paper: 1 % labels; Simple-BEV: 100 %) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in list_weights(pattern):
        spec = get_weights(name)
        status = spec.status.split(" (from ")[0]
        reported = ", ".join(f"{m['task'].split(' (')[0]} {m['value']}" for m in spec.metrics) or "-"
        aliases = ", ".join(f"`{a}`" for a in spec.aliases) or "-"
        lines.append(f"| `{spec.id}` | {aliases} | `{spec.architecture}` | {spec.recipe.get('mode', '-')} | {status} | {reported} |")
    return "\n".join(lines)


def list_weights(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Weight ids (and aliases, if asked) matching a shell-style pattern, sorted."""
    return REGISTRY.names(pattern, include_aliases)


def get_weights(name: str) -> WeightSpec:
    """The ``WeightSpec`` of an id or alias; ``UnknownNameError`` suggests close names otherwise."""
    return REGISTRY.get(name)
