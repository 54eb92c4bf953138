"""Training runs, one owner for what both trainers share: the run folder and its ``run.json``, the engine settings
a recipe gives (``train_config``), this process's shard of an evaluation set, and ``export(run_dir)``.

A run folder (``occfeat finetune|pretrain --out DIR``) holds ``run.json`` (what was run: kind, model, recipe,
data, seed, steps), ``checkpoints/step-*`` (the engine's exact-resume checkpoints), ``best.safetensors`` (fine-tuning:
the best evaluation's weights), ``metrics.jsonl``, ``eval.json`` and ``pictures/``. Both trainers train a module whose
``network`` is the ``BEVModel`` (``engine.checkpoint.NETWORK_PREFIX``), so ``occfeat.load(ARCH, checkpoint=DIR)``
and ``export`` read either kind of run the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from .engine import TrainConfig, distributed as dist_utils
from .engine.checkpoint import run_network_state
from .errors import ConfigError, RunMismatchError
from .io import atomic_write

RUN_FILE = "run.json"
# What a pretraining run exports: the network without its heads (the segmentation heads were never trained).
PRETRAINED_PARTS = ("backbone", "neck", "view_transform", "decoder")
FINETUNE_KIND = "occfeat finetune"
PRETRAIN_KIND = "occfeat pretrain"


# run.json fields that say how a run executes, not what it computes: a resume may change them.
EXECUTION_FIELDS = ("processes", "compile", "activation_checkpointing", "load_report", "teacher_cache")
# What a run writes into its folder; --overwrite deletes these and nothing else.
RUN_ARTEFACTS = (RUN_FILE, "checkpoints", "best.safetensors", "metrics.jsonl", "eval.json", "pictures", "subset.json",
                 "tensorboard")


def _flatten(record: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(record, dict):
        return {k: v for key, value in record.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: record}


def _identity(record: dict[str, Any]) -> dict[str, Any]:
    """The fields that make a run this run, flattened ("recipe.lr"), as JSON would hold them; paths resolved, so
    that data/world and ./data/world are one dataroot."""
    plain = json.loads(json.dumps({k: v for k, v in record.items() if k not in EXECUTION_FIELDS}, default=str))
    if plain.get("dataroot"):
        plain["dataroot"] = str(Path(plain["dataroot"]).resolve())
    return _flatten(plain)


def run_changes(recorded: dict[str, Any], requested: dict[str, Any]) -> list[str]:
    """Each field whose value differs between a recorded run and a requested one, as "field: old -> new"."""
    old, new = _identity(recorded), _identity(requested)
    return [f"{key}: {json.dumps(old.get(key, '(absent)'))} -> {json.dumps(new.get(key, '(absent)'))}"
            for key in sorted(old.keys() | new.keys()) if old.get(key, "(absent)") != new.get(key, "(absent)")]


def claim_run_folder(out_dir: str | Path, record: dict[str, Any], *, overwrite: bool = False) -> bool:
    """Check that ``out_dir`` may hold the run ``record`` describes, before anything is written to it; returns True
    when it continues the run already there.

    A run folder holds one run. Resuming needs the same run: every field of ``run.json`` but how it executes
    (``EXECUTION_FIELDS``) must match, or a ``RunMismatchError`` names each changed field. ``overwrite=True``
    deletes the run there first (its ``RUN_ARTEFACTS`` only; other files in the folder stay). Read-only: call it on
    every process, then let rank 0 delete (``clear_run_folder``) and write."""
    out = Path(out_dir)
    blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out {out}: {blocking} is a file, so no run folder can be made there. Choose another "
                          "--out.")
    recorded_path = out / RUN_FILE
    has_checkpoints = (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())
    if overwrite or not (recorded_path.exists() or has_checkpoints):
        return False
    if not recorded_path.is_file():
        raise RunMismatchError(f"{out} holds checkpoints but no {RUN_FILE}: it is not a run occfeat can identify. "
                               "Choose another --out, or pass --overwrite to delete them and start a new run.")
    try:
        recorded = json.loads(recorded_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunMismatchError(f"{recorded_path} is not valid JSON ({error}); the run there cannot be identified. "
                               "Choose another --out, or pass --overwrite to start a new run there.") from error
    changes = run_changes(recorded, record)
    if changes:
        listed = "\n  ".join(changes)
        raise RunMismatchError(
            f"{out} holds another run ({recorded.get('kind', 'a run')} of {recorded.get('model')!r}); resuming it "
            f"with these changes would relabel its weights:\n  {listed}\nChoose a new --out for this run, or pass "
            "--overwrite (overwrite=True) to delete that run and start this one there.")
    return True


def clear_run_folder(out_dir: str | Path) -> list[str]:
    """Delete a run's artefacts from ``out_dir`` (``--overwrite``; rank 0 only); returns what was deleted."""
    out = Path(out_dir)
    deleted = []
    for name in RUN_ARTEFACTS:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        deleted.append(name)
    return deleted


def start_run(out_dir: str | Path, record: dict[str, Any], *, overwrite: bool = False) -> bool:
    """Claim ``out_dir`` for the run ``record`` describes (``claim_run_folder``, on every process), then, on rank 0,
    delete the run there when ``overwrite`` and write ``run.json``. Returns True when the run resumes."""
    resuming = claim_run_folder(out_dir, record, overwrite=overwrite)
    dist_utils.barrier()  # no process reads the folder while rank 0 changes it
    if dist_utils.is_main():
        if overwrite:
            deleted = clear_run_folder(out_dir)
            if deleted:
                print(f"--overwrite: deleted the run in {out_dir} ({', '.join(deleted)})", flush=True)
        write_run_record(out_dir, record)
    dist_utils.barrier()
    return resuming


def write_run_record(out_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write ``run.json`` atomically (rank 0 only; the caller checks)."""
    path = Path(out_dir) / RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(record, indent=2, default=str) + "\n"))
    return path


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """A run folder's ``run.json``, or a typed error naming what the folder is missing."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {RUN_FILE}): give the --out folder of `occfeat "
                          "finetune` or `occfeat pretrain`.")
    return json.loads(path.read_text())


def train_config(
    recipe: Any, *, out_dir: str | Path, steps: int, device: str, progress: bool, seed: int,
    best_metric: str | None = None,
) -> TrainConfig:
    """The engine settings of a fine-tuning or pretraining recipe for a run of ``steps``: the recipe's optimiser,
    its precision on CUDA (fp32 on the CPU), and its checkpoint / evaluation cadence clamped to the run's length."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return TrainConfig(
        out_dir=str(out_dir), max_steps=steps, lr=recipe.lr, weight_decay=recipe.weight_decay,
        warmup_fraction=recipe.warmup_fraction, grad_clip=recipe.grad_clip,
        grad_accum_steps=getattr(recipe, "grad_accum_steps", 1),
        precision=recipe.precision if use_cuda else "fp32", device=device,  # type: ignore[arg-type]
        checkpoint_every=max(1, min(recipe.checkpoint_every, steps)), eval_every=min(recipe.eval_every, steps),
        best_metric=best_metric, log_every=max(1, min(50, steps // 20)), progress=progress, seed=seed,
    )


def rank_shard(dataset: Dataset) -> Subset:
    """This rank's evaluation samples, every world_size-th one: no padding, so summed counts are exact (a
    ``DistributedSampler`` would repeat samples to even out the shards)."""
    return Subset(dataset, list(range(dist_utils.rank(), len(dataset), dist_utils.world_size())))  # type: ignore[arg-type]


def export(run_dir: str | Path, out_dir: str | Path, *, which: str = "best", weight_id: str | None = None) -> dict[str, str]:
    """A run folder -> a ``save_pretrained`` folder that ``occfeat.load("local-dir:OUT")`` reads; returns the sha256
    of each file. A fine-tuning run exports its whole network (``which``: ``"best"``, else the latest checkpoint); a
    pretraining run exports the network without heads (the auxiliary head is dropped and the untrained
    segmentation heads are not written: a load builds fresh ones and says so)."""
    from .models import BEVModel, BEVModelConfig
    from .zoo.publishing import save_pretrained

    info = read_run(run_dir)
    kind = info.get("kind", FINETUNE_KIND)  # fine-tuning runs before 0.13 wrote no kind
    if kind not in (FINETUNE_KIND, PRETRAIN_KIND):
        raise ConfigError(f"{run_dir}: run kind {kind!r} is not {FINETUNE_KIND!r} or {PRETRAIN_KIND!r}.")
    pretraining = kind == PRETRAIN_KIND
    state, weights = run_network_state(run_dir, "latest" if pretraining else which)
    with torch.device("meta"):
        model = BEVModel(BEVModelConfig.from_dict(info["model_config"]))
    model.load_state_dict(state, assign=True)
    if pretraining:
        provenance = {
            "source": PRETRAIN_KIND, "run": str(run_dir), "checkpoint": weights.parent.name,
            "pretrained_from": info["model"], "mode": info["recipe"]["mode"], "samples": info["samples"],
            "steps": info["steps"], "dataset": f"{info['dataroot']} ({info['version']}, split {info['split']})",
            "labels_read": False, "recipe": info["recipe"], "teacher": info["teacher"], **_backbone_init(info),
        }
        return save_pretrained(model, out_dir, weight_id=weight_id, provenance=provenance, parts=PRETRAINED_PARTS)
    provenance = {"source": FINETUNE_KIND, "run": str(run_dir), "weights": weights.name,
                  "fine_tuned_from": info["model"], "fraction": info["fraction"],
                  "train_samples": info["train_samples"], "steps": info["steps"], "recipe": info["recipe"],
                  **_backbone_init(info)}
    return save_pretrained(model, out_dir, weight_id=weight_id, provenance=provenance)


def _backbone_init(info: dict[str, Any]) -> dict[str, Any]:
    """The ImageNet weights the run's backbone started from, carried into the export (runs before 0.1 lack it)."""
    return {"backbone_init": info["backbone_init"]} if info.get("backbone_init") else {}


def initialisation_record(network: Any) -> dict[str, Any]:
    """What ``run.json`` says about the network a run starts from: the load report, and ``backbone_init``, the
    ImageNet weights its backbone was initialised from (here, or by the run that produced the loaded weights)."""
    return {"load_report": str(getattr(network, "load_report", "")) or None,
            "backbone_init": getattr(network, "provenance", {}).get("backbone_init")}


def report_initialisation(network: Any) -> None:
    """Print what the run starts from (the load report, also in ``run.json``), so that a user sees that pretrained
    weights loaded, and what was re-initialised, before the run spends its time."""
    report = getattr(network, "load_report", None)
    if report is not None:
        print(f"initial weights: {report}", flush=True)
