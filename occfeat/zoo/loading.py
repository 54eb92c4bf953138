"""``occfeat.load``: names -> a built network with its weights, a load report and its provenance.

The network is built on the meta device (nothing allocated, no wasted random init), the safetensors are read straight
onto the target device, and ``load_state_dict(assign=True)`` hands those tensors to the model. Parts that are not
loaded (re-initialised heads, parts left out with ``parts=``) are then built fresh on the device.
"""

from __future__ import annotations

import fnmatch
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..errors import (  # LoadError, WeightsNotPublishedError, UnsafeWeightsError are also imported from here
    ConfigError,
    HubError,
    InputError,
    LoadError,
    OccfeatError,
    UnknownNameError,
    UnsafeWeightsError,
    WeightsNotPublishedError,
)
from ..models import PARTS, BEVModel, BEVModelConfig, get_model_config, list_models
from ..models.load_report import LoadReport
from ..models.registry import check_device
from ..models.compile import CompileOption, compile_model, compile_options
from .hub import announced_sha256, commit_of, fetch_file, verify_file
from .registry import WeightSpec, get_weights

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile


__all__ = ["LoadError", "LoadReport", "UnsafeWeightsError", "WeightsNotPublishedError", "load",
           "load_distributed", "load_for_finetuning", "training_load_kwargs"]




# ---------------------------------------------------------------------------------------------------------------------
# Sources


@dataclass
class _Source:
    """Where the config and the weights of a load come from."""

    description: str
    config: BEVModelConfig
    weights: Path | None
    spec: WeightSpec | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    reinit_keys: tuple[str, ...] = ("heads.*",)


def read_config_document(path: Path) -> dict[str, Any]:
    """A ``config.json`` as a dict; anything else (not UTF-8, not JSON, nested too deep, not an object) is a
    ``ConfigError`` naming the file. A Hub copy of it comes from whoever controls that repository."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ConfigError(f"{path}: not a readable JSON file ({type(error).__name__}: {str(error)[:200]}). Write it "
                          "with occfeat.save_pretrained.") from error
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(data).__name__}. Write it with occfeat.save_pretrained.")
    provenance = data.get("provenance")
    if provenance is not None and not isinstance(provenance, dict):
        raise ConfigError(f"{path}: 'provenance' must be an object, got {type(provenance).__name__}.")
    return data


def _read_config(path: Path) -> tuple[BEVModelConfig, dict[str, Any]]:
    data = read_config_document(path)
    if not isinstance(data.get("model"), dict):
        raise ConfigError(f"{path}: not an occfeat config.json (no 'model' section). Write it with occfeat.save_pretrained.")
    try:
        config = BEVModelConfig.from_dict(data["model"])
    except OccfeatError:
        raise
    except (TypeError, AttributeError, ValueError, KeyError, RecursionError) as error:  # a field of the wrong type
        raise ConfigError(f"{path}: its 'model' section does not describe an occfeat network ({type(error).__name__}: "
                          f"{str(error)[:200]}). Write config.json with occfeat.save_pretrained.") from error
    return config, data


def _local_folder(name: str) -> str:
    """``name`` itself, or ``local-dir:NAME`` when it is a folder on disk that is not a registered name: the
    ``from_pretrained("path/to/folder")`` habit of transformers and timm."""
    if name.startswith(("local-dir:", "hf-hub:")) or not Path(name).expanduser().is_dir():
        return name
    try:
        get_weights(name)
        return name  # a registered name wins over a folder that happens to share it
    except UnknownNameError:
        return f"local-dir:{name}"


def _resolve(name: str, *, pretrained: bool, revision: str | None, hub_kwargs: dict[str, Any], overrides: dict,
             checkpoint_given: bool = False) -> _Source:
    name = _local_folder(name)
    if name.startswith("local-dir:"):
        folder = Path(name[len("local-dir:") :]).expanduser()
        if not (folder / CONFIG_FILE).is_file():
            if (folder / "run.json").is_file():
                raise InputError(
                    f"{name}: {folder} is a training run folder, not a saved model (no {CONFIG_FILE}). Export it with "
                    f"`occfeat export {folder} --out DIR` and load local-dir:DIR, or load its checkpoint with "
                    f"occfeat.load(ARCH, checkpoint={str(folder)!r}).")
            raise InputError(f"{name}: {folder / CONFIG_FILE} does not exist; a local-dir holds config.json + "
                             "model.safetensors (occfeat.save_pretrained or `occfeat export` writes one).")
        config, data = _read_config(folder / CONFIG_FILE)
        weights = folder / WEIGHTS_FILE if pretrained else None
        provenance = {"source": "local-dir", "path": str(folder), **(data.get("provenance") or {})}
        return _Source(name, config.replace(**overrides), weights, provenance=provenance)

    if name.startswith("hf-hub:"):
        repo, _, rev = name[len("hf-hub:") :].partition("@")
        revision = revision or rev or None
        config_path = fetch_file(repo, CONFIG_FILE, revision=revision, **hub_kwargs)
        config, data = _read_config(config_path)
        weights = fetch_file(repo, WEIGHTS_FILE, revision=revision, **hub_kwargs) if pretrained else None
        provenance = {"source": "hf-hub", "repo": repo, "commit": commit_of(config_path), "pinned": False,
                      **_inherited(data)}
        return _Source(name, config.replace(**overrides), weights, provenance=provenance)

    try:
        spec = get_weights(name)
    except UnknownNameError:
        if name in list_models():
            if pretrained and not checkpoint_given:  # with checkpoint=, the architecture is the skeleton it fills
                ids = _weights_of(name)
                registered = (f"its registered weights are {', '.join(map(repr, ids))}: load one of those ids"
                              if ids else "no weights are registered for it")
                raise WeightsNotPublishedError(
                    f"{name!r} is an architecture, not a weight id; {registered}. Build it untrained with "
                    f"occfeat.load({name!r}, pretrained=False) or occfeat.create_model({name!r})."
                ) from None
            return _Source(name, get_model_config(name, **overrides), None)
        raise
    config = spec.model_config()  # checks the entry's input and parts against the network they describe
    if overrides:
        config = config.replace(**overrides)
    if not pretrained:
        return _Source(spec.id, config, None, spec=spec, reinit_keys=spec.reinit_keys)
    if not spec.published and "convert" in spec.recipe:
        raise WeightsNotPublishedError(
            f"weights {spec.id!r} are {spec.paper.get('title', 'another project')}'s own release, which occfeat does "
            f"not redistribute. Download it ({spec.recipe.get('source', 'see its authors')}), convert it with "
            f"`{spec.recipe['convert']}` and load the folder with occfeat.load('local-dir:{spec.id}'); or build the "
            f"architecture untrained with occfeat.load({spec.id!r}, pretrained=False)."
        )
    if not spec.published:
        raise WeightsNotPublishedError(
            f"weights {spec.id!r} are registered but not published on the Hub yet (no pinned commit). "
            f"Reproduce them: `{spec.recipe.get('pretraining', 'occfeat pretrain ...')}` then "
            f"`{spec.recipe.get('export', 'occfeat export RUN_DIR --out DIR')}` and load with occfeat.load('local-dir:DIR'); "
            f"or build the architecture untrained with occfeat.load({spec.id!r}, pretrained=False)."
        )
    # An explicit revision overrides the registry's pin: the pin's sha256s describe the pinned commit only, so other
    # bytes at another commit are not "corrupt". A revision that resolves to the pinned commit is checked against them.
    at_pin = revision is None or revision == spec.commit
    weights = None
    hashes, inherited, commits = {}, {}, set()
    for file in spec.files:
        path = fetch_file(spec.repo, file.path, revision=revision or spec.commit, expected=file if at_pin else None,
                          weight_id=spec.id, **hub_kwargs)
        commit = spec.commit if at_pin else commit_of(path)
        if commit == spec.commit:
            if not at_pin and hub_kwargs.get("verify") != "never":
                verify_file(path, file, always=hub_kwargs.get("verify") == "always", weight_id=spec.id)
            hashes[file.path] = file.sha256
        commits.add(commit)
        if file.path.endswith(".safetensors"):
            weights = path
        if file.path == CONFIG_FILE:  # verified like the weights: what made them (the registry entry builds the net)
            inherited = _inherited(read_config_document(path))
    if len(commits) > 1:
        raise HubError(f"{spec.id}: revision {revision!r} of {spec.repo} moved while its files were downloaded "
                       f"(commits {sorted(map(str, commits))}); load again, or pass a commit id as revision.")
    commit = commits.pop() if commits else spec.commit
    provenance = {"source": "registry", "id": spec.id, "repo": spec.repo, "commit": commit,
                  **({"sha256": hashes} if hashes else {}), "pinned": commit == spec.commit,
                  **({"revision": revision} if revision is not None and revision != commit else {}), **inherited}
    return _Source(spec.id, config, weights, spec=spec, provenance=provenance, reinit_keys=spec.reinit_keys)


def _inherited(document: dict[str, Any]) -> dict[str, Any]:
    """What a Hub copy's ``config.json`` says about how its weights began (``backbone_init``: the ImageNet weights
    the backbone started from), carried into the loaded model's provenance and so into the runs started from it."""
    init = (document.get("provenance") or {}).get("backbone_init")
    return {"backbone_init": init} if init else {}


def _weights_of(arch: str) -> list[str]:
    from .registry import list_weights

    return [w for w in list_weights() if w.split(".", 1)[0] == arch]


# ---------------------------------------------------------------------------------------------------------------------
# Key matching


def _strip_wrappers(state: dict[str, Tensor]) -> dict[str, Tensor]:
    stripped = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix) :]
        stripped[key] = value
    return stripped


def _apply_key_map(state: dict[str, Tensor], key_map: dict[str, str]) -> dict[str, Tensor]:
    out = {}
    for key, value in state.items():
        for old, new in key_map.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def _diagnose_prefix(unexpected: list[str], missing: list[str]) -> dict[str, str] | None:
    """When most keys are both missing and unexpected, find the prefix rewrite that matches them up."""
    votes: Counter[tuple[str, str]] = Counter()
    missing_set = set(missing)
    for key in unexpected:
        parts = key.split(".")
        for cut in range(0, len(parts)):
            suffix = ".".join(parts[cut:])
            for add in ("", *{m[: -len(suffix)] for m in missing if m.endswith(suffix) and m != suffix}):
                if add + suffix in missing_set:
                    votes[(".".join(parts[:cut]) + ("." if cut else ""), add)] += 1
                    break
            else:
                continue
            break
    if not votes:
        return None
    (old, new), count = votes.most_common(1)[0]
    return {old: new} if count >= 0.5 * len(unexpected) and old != new else None


# ---------------------------------------------------------------------------------------------------------------------
# The load itself


def load(
    name: str,
    *,
    pretrained: bool = True,
    num_classes: int | None = None,
    parts: Sequence[str] | None = None,
    revision: str | None = None,
    checkpoint: str | Path | None = None,
    strict: bool | str = "auto",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    key_map: dict[str, str] | None = None,
    verify: str = "once",
    compile: CompileOption = False,
    pretrained_backbone: bool | str = False,
    **overrides: Any,
) -> BEVModel:
    """Build a network and load its weights.

    Args:
        name: a weight id or alias (``"bevformer-enb0-occfeat"``), ``"hf-hub:org/repo[@revision]"``,
            ``"local-dir:PATH"`` (a ``save_pretrained`` folder or bundle), or an architecture with ``pretrained=False``.
        pretrained: load the weights (else build the architecture with random weights).
        num_classes: number of map classes of a new ``map`` head (re-initialised, said in the report).
        parts: load only these parts (e.g. ``("backbone", "neck", "view_transform")``); the others stay freshly
            initialised.
        revision: a Hub revision (branch, tag or commit) instead of the registry's pinned commit. It overrides the
            pin: the registry's sha256s apply only when it resolves to the pinned commit, and the provenance records
            the commit it resolved to.
        checkpoint: a local ``.safetensors`` state dict applied after building, or the folder of an ``occfeat
            finetune`` / ``occfeat pretrain`` run (its best weights, else its latest checkpoint; the network only).
        strict: ``"auto"`` raises on anything undeclared (a missing key outside the re-initialisable heads, an
            unexpected key, a shape mismatch); ``True`` raises on any difference; ``False`` never raises.
        device, dtype: where and in which floating dtype the tensors are materialised.
        cache_dir, local_files_only, endpoint, token: Hub access (offline: argument, ``OCCFEAT_OFFLINE``,
            ``HF_HUB_OFFLINE``).
        key_map: prefix rewrites applied to the checkpoint's keys, e.g. ``{"model.": ""}``.
        verify: ``"once"`` (hash on first use, then trust a size+mtime stamp), ``"always"`` or ``"never"``.
        compile: ``torch.compile`` the loaded model's calls in place: ``True`` (inductor), a backend name, or a dict
            of ``torch.compile`` arguments (``occfeat.models.compile.compile_model``); state-dict keys are unchanged.
        pretrained_backbone: for a network built untrained (an architecture, ``pretrained=False``): ImageNet weights
            for its backbone, as ``create_model`` takes them (``True``; a file). Loaded weights would replace them, so
            combining it with weights to load is an error.
        **overrides: architecture options (see ``BEVModelConfig``).

    Returns the model with ``.load_report``, ``.weight_spec`` and ``.provenance``.

    >>> model = occfeat.load("bevformer-enb0-occfeat")  # doctest: +SKIP
    >>> print(model.load_report)  # doctest: +SKIP
    loaded 412 tensors from bevformer-enb0.occfeat-nuscenes; missing 0, unexpected 0, shape mismatches 0
    """
    if strict not in (True, False, "auto"):
        raise ConfigError(f"strict={strict!r}: expected True, False or 'auto'.")
    compile_options(compile)  # an unknown backend fails before any download
    if num_classes is not None:
        overrides["map_classes"] = tuple(f"class_{i}" for i in range(num_classes))
    hub_kwargs = dict(cache_dir=cache_dir, local_files_only=local_files_only, endpoint=endpoint, token=token, verify=verify)
    check_device(device)  # before any download
    source = _resolve(name, pretrained=pretrained, revision=revision, hub_kwargs=hub_kwargs, overrides=overrides,
                      checkpoint_given=checkpoint is not None)
    device = torch.device(device) if device is not None else torch.device("cpu")
    run_state: dict[str, Tensor] = {}
    if checkpoint is not None:  # the report and any error name the file read, not only the architecture it fills
        read = f"checkpoint {checkpoint}"
        source.description = read if source.weights is None else f"{source.description} + {read}"
    if checkpoint is not None and Path(checkpoint).is_dir():  # a training run's folder: its network's weights
        from ..engine.checkpoint import run_network_state

        run_state = run_network_state(checkpoint, "best")[0]
        checkpoint = None
    files = [f for f in (source.weights, Path(checkpoint) if checkpoint else None) if f is not None]
    if pretrained_backbone and (files or run_state):
        raise ConfigError(
            f"pretrained_backbone={pretrained_backbone!r} initialises the backbone of an untrained network, but "
            f"{name!r} loads weights{' (checkpoint=...)' if checkpoint or run_state else ''} that replace it. Drop "
            "pretrained_backbone, or build the architecture untrained (pretrained=False, no checkpoint)."
        )

    if not files and not run_state:
        with device:
            model = BEVModel(source.config, pretrained_backbone=pretrained_backbone)
        report = model.load_report
        report.source = source.description
    else:
        with torch.device("meta"):
            model = BEVModel(source.config)
        state: dict[str, Tensor] = {}
        for path in files:
            state.update(_read_safetensors(path, device))
        state.update({k: v.to(device) for k, v in run_state.items()})
        report = _assign(model, state, source, parts=parts, strict=strict, key_map=key_map or {}, device=device)
    if dtype is not None:
        model.to(dtype=dtype)
    model.load_report = report
    model.weight_spec = source.spec
    model.provenance = {**source.provenance, **model.provenance}  # the build's backbone_init, if any
    return compile_model(model, compile, device=device)


def _read_safetensors(path: Path, device: torch.device) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise UnsafeWeightsError(
            f"{path}: occfeat loads safetensors only and never unpickles a checkpoint (a pickle can run code). Convert "
            "it where you trust it: `safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')`."
        )
    if not path.is_file():
        raise InputError(f"weights file {path} does not exist.")
    from safetensors import SafetensorError

    try:
        return load_file(str(path), device=str(device))
    except SafetensorError as error:
        recheck = (" It is a Hub download: load again with verify=\"always\" to check it against the sha256 the "
                   "server announced and fetch it afresh." if announced_sha256(path, path.name) else "")
        raise LoadError(f"{path}: not a readable safetensors file ({error}); damaged, truncated, or not weights."
                        f"{recheck}") from error


def _assign(
    model: BEVModel,
    state: dict[str, Tensor],
    source: _Source,
    *,
    parts: Sequence[str] | None,
    strict: bool | str,
    key_map: dict[str, str],
    device: torch.device,
) -> LoadReport:
    report = LoadReport(source=source.description, renamed_prefixes=dict(key_map))
    state = _apply_key_map(_strip_wrappers(state), key_map)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if parts is not None:
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ConfigError(f"parts={list(parts)}: unknown part(s) {unknown}; parts are {list(PARTS)}.")
        report.skipped_parts = [p for p in PARTS if p not in parts]
        state = {k: v for k, v in state.items() if k.split(".", 1)[0] in parts}
        expected = {k: s for k, s in expected.items() if k.split(".", 1)[0] in parts}

    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unexpected and len(unexpected) >= 0.5 * len(state) and missing:
        rewrite = _diagnose_prefix(unexpected, missing)
        if rewrite is not None:
            raise LoadError(
                f"{source.description}: {len(unexpected)} of {len(state)} checkpoint keys match no model key, e.g. "
                f"{unexpected[0]!r}, while {len(missing)} model keys are missing, e.g. {missing[0]!r}. The checkpoint "
                f"uses another prefix: pass key_map={rewrite!r}."
            )
    mismatched = [(k, tuple(state[k].shape), expected[k]) for k in sorted(set(state) & set(expected))
                  if tuple(state[k].shape) != expected[k]]
    declared = lambda key: any(fnmatch.fnmatchcase(key, pattern) for pattern in source.reinit_keys)  # noqa: E731
    report.reinitialized = sorted([k for k in missing if declared(k)] + [k for k, _, _ in mismatched if declared(k)])
    report.missing = [k for k in missing if not declared(k)]
    report.unexpected = unexpected
    report.mismatched = [m for m in mismatched if not declared(m[0])]
    undeclared = report.missing or report.unexpected or report.mismatched
    if (strict == "auto" and undeclared) or (strict is True and (missing or unexpected or mismatched)):
        raise LoadError(
            f"{source.description} does not fit {model.config.arch}: {report.summary()}. "
            + (f"Missing e.g. {report.missing[:3]}. " if report.missing else "")
            + (f"Unexpected e.g. {report.unexpected[:3]}. " if report.unexpected else "")
            + (f"Shape mismatches e.g. {report.mismatched[:2]}. " if report.mismatched else "")
            + "Pass strict=False to load what fits, parts=(...) to load some parts, or key_map={...} to rename keys."
        )
    usable = {k: v for k, v in state.items() if k in expected and tuple(v.shape) == expected[k]}
    usable = _checked_values(usable, model, source.description, report)
    model.load_state_dict(usable, strict=False, assign=True)
    report.loaded = sorted(usable)
    # Whatever is still on the meta device was not loaded: build those parts fresh on the device, keeping what loaded.
    for part in PARTS:
        module = getattr(model, part)
        if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
            with device:
                fresh = model.build_part(part)
            prefix = part + "."
            fresh.load_state_dict({k[len(prefix) :]: v for k, v in usable.items() if k.startswith(prefix)}, strict=False)
            setattr(model, part, fresh)
    return report


def _checked_values(state: dict[str, Tensor], model: BEVModel, source: str, report: LoadReport) -> dict[str, Tensor]:
    """The tensors to load, in the network's dtypes. A floating tensor of another floating dtype (float16, float64)
    is cast and listed in ``report.cast``; an integer where a float is expected (or the reverse) and any NaN or
    infinity are a ``LoadError`` naming the tensors: they would fail, or give NaN, at the first forward."""
    wanted = {k: v.dtype for k, v in model.state_dict().items()}
    wrong_kind, non_finite, checked = [], [], {}
    for key, tensor in state.items():
        target = wanted[key]
        if tensor.dtype != target:
            if tensor.dtype.is_complex or tensor.dtype.is_floating_point != target.is_floating_point:
                wrong_kind.append(f"{key} ({str(tensor.dtype).replace('torch.', '')}, expected "
                                  f"{str(target).replace('torch.', '')})")
                continue
            report.cast[key] = f"{str(tensor.dtype).replace('torch.', '')} -> {str(target).replace('torch.', '')}"
            tensor = tensor.to(target)
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            non_finite.append(key)
        checked[key] = tensor
    if wrong_kind:
        raise LoadError(f"{source}: {len(wrong_kind)} tensors have a dtype the network cannot take, e.g. "
                        f"{wrong_kind[:3]}. The file does not hold this network's weights (or was quantised): export "
                        "the weights in floating point (occfeat.save_pretrained).")
    if non_finite:
        raise LoadError(f"{source}: {len(non_finite)} tensors hold NaN or infinite values, e.g. {non_finite[:3]}. The "
                        "weights are damaged or their training diverged: use an earlier checkpoint.")
    return checked


def load_for_finetuning(name: str | BEVModel, *, image_size: tuple[int, int] | None = None, **load_kwargs: Any) -> BEVModel:
    """The network a training run starts from: a zoo name / ``hf-hub:`` / ``local-dir:`` loads weights, a bare
    architecture name builds it untrained, a ``BEVModel`` is used as given. ``image_size``: the recipe's network image
    size, which the network is built at (a given ``BEVModel`` must already have it)."""
    if isinstance(name, BEVModel):
        if image_size is not None and tuple(name.config.image_size) != tuple(image_size):
            raise ConfigError(
                f"the model was built for {tuple(name.config.image_size)} images but the recipe trains at "
                f"{tuple(image_size)}: build it with image_size={tuple(image_size)}, or choose a recipe of its size."
            )
        return name
    options = {**load_kwargs, **({"image_size": tuple(image_size)} if image_size is not None else {})}
    return load(name, pretrained=name not in list_models(), **options)


def training_load_kwargs(load_kwargs: dict[str, Any] | None, recipe_image_size: str | Sequence[int]) -> dict[str, Any]:
    """``load_for_finetuning``'s arguments for a training run: the recipe's image size, unless the caller's load
    arguments name one explicitly (the explicit choice wins; ``run.json`` records the size used)."""
    from ..data.images import image_size_of

    options = dict(load_kwargs or {})
    options["image_size"] = image_size_of(options.get("image_size", recipe_image_size))
    return options


def load_distributed(name: str, **kwargs: Any) -> BEVModel:
    """``load`` under ``torch.distributed``: rank 0 downloads (and verifies) while the other ranks wait at a barrier,
    then they read the shared cache with ``local_files_only=True`` — one download per cache, not one per GPU.
    Without an initialised process group it is ``load``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return load(name, **kwargs)
    if dist.get_rank() == 0:
        model = load(name, **kwargs)
    dist.barrier()
    if dist.get_rank() != 0:
        model = load(name, **{**kwargs, "local_files_only": True})
    return model
