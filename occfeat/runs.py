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
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from .engine import TrainConfig, distributed as dist_utils
from .engine.checkpoint import run_network_state
from .errors import ConfigError
from .io import atomic_write

RUN_FILE = "run.json"
# What a pretraining run exports: the network without its heads (the segmentation heads were never trained).
PRETRAINED_PARTS = ("backbone", "neck", "view_transform", "decoder")
FINETUNE_KIND = "occfeat finetune"
PRETRAIN_KIND = "occfeat pretrain"


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
