"""``pretrain``: OccFeat self-supervised pretraining of a BEV network on a nuScenes-format dataroot (no labels read),
on the shared engine; ``export_pretrain_run`` turns the run into zoo weights.

One command from a laptop CPU to a cluster::

    occfeat pretrain simplebev-tiny --dataroot data/world --version v1.0-synthetic --recipe cpu-tiny --out runs/pt
    torchrun --standalone --nproc_per_node 8 -m occfeat pretrain bevformer-enb0 --dataroot /data/nuscenes \\
        --recipe occfeat-nuscenes --pretrained-backbone --teacher-weights dinov2_vits14.safetensors --out runs/bevformer-occfeat
    occfeat export runs/bevformer-occfeat --out weights/bevformer-enb0.occfeat-nuscenes
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from ..progress import progress_bar

from ..data import Augmentation, NuScenesBEV, collate, data_options, make_loader
from ..engine import Trainer, TrainResult, distributed as dist_utils
from ..engine.data import move_to_device
from ..errors import ConfigError
from ..models import BEVModel
from ..models.compile import CompileOption, compile_model, compile_options, describe, is_compiled
from ..runs import (  # noqa: F401  (RUN_FILE and PRETRAINED_PARTS: public here too)
    PRETRAIN_KIND, PRETRAINED_PARTS, RUN_FILE, export, initialisation_record, rank_shard, report_initialisation,
    start_run, train_config,
)
from .losses import occupancy_counts
from .model import OccFeatPretrainer
from .recipes import PretrainRecipe, get_recipe
from .teacher import STAND_IN_TEACHER, Teacher, TeacherCache, WithTeacherFeatures, build_teacher, teacher_maps_for

RUN_KIND = PRETRAIN_KIND  # the run.json kind; RUN_FILE and PRETRAINED_PARTS are occfeat.runs' (imported here too)


def default_cache_dir() -> Path:
    """``$OCCFEAT_TEACHER_CACHE``, else ``~/.cache/occfeat/teacher-features``: shared by runs on one machine."""
    return Path(os.environ.get("OCCFEAT_TEACHER_CACHE", Path.home() / ".cache" / "occfeat" / "teacher-features"))


@dataclass
class PretrainResult:
    pretrainer: OccFeatPretrainer  # the network (``.network``) with its auxiliary head, at the last step
    train: TrainResult
    metrics: dict[str, float]  # held-out evaluation at the end (``evaluate_pretraining``)
    run_dir: Path
    steps: int
    samples: int

    def summary(self) -> str:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in self.metrics.items())
        return (f"pretrain ({self.pretrainer.mode}): {self.samples} samples, {self.steps} steps{self.train.this_call()}; "
                f"held-out {scores}; run {self.run_dir}")


@torch.no_grad()
def evaluate_pretraining(
    pretrainer: OccFeatPretrainer,
    dataset: Any,
    *,
    teacher: Teacher | None = None,
    cache: TeacherCache | None = None,
    batch_size: int = 2,
    progress: bool = False,
) -> dict[str, float]:
    """Held-out scores of the auxiliary head over the whole ``dataset`` (sharded over DDP ranks and summed).

    ``occupancy_iou`` (p > 0.5) against the Lidar occupancy, with the trivial predictors beside it:
    ``occupancy_iou_all_occupied`` (every voxel occupied: IoU = the occupied fraction; all-empty scores 0);
    ``loss_occ`` / ``loss_feat`` as in training (means over batches); ``feature_cosine``, the cosine similarity of
    predicted and teacher features averaged over every distilled voxel, with two references fitted to the same
    voxels (upper bounds of what such predictors reach): ``feature_cosine_constant``, the best single feature for
    every voxel, and, for a teacher that knows each patch's class (the stand-in's ``class_shares``),
    ``feature_cosine_class``, the best feature per class (the voxel's class: the most common one in the patches it
    projects to). The best constant for a set of unit targets is their normalised sum, reaching |sum| / count.
    """
    uses_features = pretrainer.loss.uses_features
    if uses_features and teacher is None:
        raise ConfigError(f"evaluate_pretraining: mode {pretrainer.mode!r} distils features; pass the teacher.")
    device = next(pretrainer.parameters()).device
    was_training = pretrainer.training
    pretrainer.eval()
    names = ["batches", "intersection", "union", "occupied", "voxels", "loss_occ", "loss_feat", "cosine_sum", "distilled"]
    totals = dict.fromkeys(names, 0.0)
    knows_classes = uses_features and hasattr(teacher, "class_shares")
    # Per class (one row for a teacher that knows no classes), the sum of the unit target features.
    unit_sums = torch.zeros(len(teacher.class_embedding) if knows_classes else 1,
                            teacher.spec.feature_dim if uses_features else 1, dtype=torch.float64, device=device)
    loader = DataLoader(rank_shard(dataset), batch_size=batch_size, collate_fn=collate)
    for batch in progress_bar(loader, desc="evaluate", unit="batch", disable=not progress or not dist_utils.is_main(), leave=False):
        batch = move_to_device(batch, device)
        maps = teacher_maps_for(batch, teacher, cache) if uses_features else None
        targets = pretrainer.targets(batch, maps)
        outputs = pretrainer.predict(batch, targets)
        _, metrics = pretrainer.loss(outputs, targets)
        totals["batches"] += 1
        totals["loss_occ"] += metrics.get("loss_occ", 0.0)
        totals["loss_feat"] += metrics.get("loss_feat", 0.0)
        if uses_features and outputs["features"].shape[0]:
            cosine = F.cosine_similarity(outputs["features"].float(), targets.distilled_features, dim=1)
            totals["cosine_sum"] += cosine.sum().item()
            totals["distilled"] += cosine.numel()
            classes = torch.zeros(cosine.numel(), dtype=torch.long, device=device)
            if knows_classes:  # the class shares, sampled at the voxels exactly as the targets are
                classes = pretrainer.targets(batch, teacher.class_shares(batch["semantic"])).distilled_features.argmax(1)
            unit_sums.index_add_(0, classes, F.normalize(targets.distilled_features.double(), dim=1))
        if "occupancy" in outputs:
            counts = occupancy_counts(outputs["occupancy"], targets.occupancy).tolist()
            for name, value in zip(("intersection", "union", "occupied", "voxels"), counts):
                totals[name] += value
    pretrainer.train(was_training)
    summed = torch.tensor([totals[n] for n in names], dtype=torch.float64, device=device)
    if dist_utils.is_distributed():
        torch.distributed.all_reduce(summed)
        torch.distributed.all_reduce(unit_sums)
    totals = dict(zip(names, summed.tolist()))
    batches = max(totals["batches"], 1.0)
    scores: dict[str, float] = {}
    if pretrainer.loss.uses_occupancy:
        scores["occupancy_iou"] = totals["intersection"] / max(totals["union"], 1.0)
        scores["occupancy_iou_all_occupied"] = totals["occupied"] / max(totals["voxels"], 1.0)
        scores["loss_occ"] = totals["loss_occ"] / batches
    if uses_features:
        scores["loss_feat"] = totals["loss_feat"] / batches
        scores["feature_cosine"] = totals["cosine_sum"] / max(totals["distilled"], 1.0)
        scores["feature_cosine_constant"] = unit_sums.sum(0).norm().item() / max(totals["distilled"], 1.0)
        if knows_classes:
            scores["feature_cosine_class"] = unit_sums.norm(dim=1).sum().item() / max(totals["distilled"], 1.0)
    return scores


def pretrain(
    model: str | BEVModel,
    *,
    dataroot: str | Path,
    out_dir: str | Path,
    version: str = "v1.0-trainval",
    split: str = "train",
    val_split: str | None = "val",
    recipe: str | PretrainRecipe = "occfeat-nuscenes",
    mode: str | None = None,
    max_steps: int | None = None,
    val_samples: int | None = None,
    teacher_weights: str | None = None,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    pictures: bool = True,
    recipe_overrides: dict[str, Any] | None = None,
    load_kwargs: dict[str, Any] | None = None,
    compile: CompileOption = False,
    activation_checkpointing: bool = False,
    overwrite: bool = False,
) -> PretrainResult:
    """OccFeat-pretrain ``model`` on every key frame of ``split`` (images and Lidar; no labels are read); resumes
    the run in ``out_dir`` when it is this run.

    Args:
        model: an architecture (random init, the usual case), a weight id, ``local-dir:`` / ``hf-hub:``, or a model.
        recipe: a name from ``RECIPES`` or a ``PretrainRecipe``; ``mode``, ``teacher_weights`` and
            ``recipe_overrides`` change single fields (all recorded in ``out_dir/run.json``).
        max_steps: overrides the recipe's ``epochs``.
        val_split / val_samples: held-out key frames for the head's occupancy IoU (None: no evaluation).
        cache_dir: the teacher-feature cache (default ``default_cache_dir()``).
        pictures: write the PCA and occupancy pictures to ``out_dir/pictures`` at the end.
        compile: ``torch.compile`` the training step's module, the network with its head and loss (``True``:
            inductor, a backend name, or a dict of ``torch.compile`` arguments; ``occfeat.models.compile``), recorded
            in ``run.json``. Evaluation and pictures call the pretrainer's methods and run eagerly.
        activation_checkpointing: recompute the backbone stages and BEVFormer's layers in backward instead of keeping
            their activations (``BEVModel.set_activation_checkpointing``): same gradients, less memory, more time.
        overwrite: delete the run already in ``out_dir`` and start this one. Without it, a folder holding another
            run (any recorded field changed: mode, recipe, model, ...) is a ``RunMismatchError``, raised before
            anything is written.
    """
    from ..zoo.loading import load_for_finetuning, training_load_kwargs

    compile_options(compile)  # an unknown backend fails before any download or load

    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    changes = {**(recipe_overrides or {}), **({"mode": mode} if mode else {}),
               **({"teacher_weights": teacher_weights} if teacher_weights else {})}
    recipe = recipe.replace(**changes) if changes else recipe
    torch.manual_seed(seed)  # the network's and the head's initialisation: the same in every process and run
    # The recipe's image size is the network's (recorded in run.json's model_config).
    network = load_for_finetuning(model, **training_load_kwargs(load_kwargs, recipe.image_size))
    config = network.config
    if config.raster_frame != "ego":  # the occupancy and feature targets are built in the ego raster
        raise ConfigError(f"pretraining {config.arch}: its raster is in a camera's frame (raster_frame="
                          f"{config.raster_frame!r}, Simple-BEV's converted weights); OccFeat pretrains ego-frame "
                          "networks. Pretrain the architecture itself, e.g. occfeat pretrain simplebev-r101.")
    out = Path(out_dir)
    augment = Augmentation(zoom=(1.0, 1.0), rotation_deg=0.0, crop_jitter=0.0).scaled_to(config.grid) if recipe.bev_augment else None
    uses_features = recipe.mode in ("occfeat", "distillation")
    stand_in = uses_features and recipe.teacher == STAND_IN_TEACHER  # reads the generated world's side-car maps
    common = dict(**data_options(config), lidar_sweeps=recipe.lidar_sweeps, labels=False, seed=seed,
                  semantic_maps=stand_in)
    train_set = NuScenesBEV(dataroot, version, split, augment=augment, **common)
    val_set = None
    if val_split is not None:
        val_set = NuScenesBEV(dataroot, version, val_split, nusc=train_set.nusc, **common)
        if val_samples is not None:
            val_set.truncate(val_samples)

    teacher = cache = None
    if uses_features:
        teacher = build_teacher(recipe.teacher, image_size=config.image_size, weights=recipe.teacher_weights,
                                image_mean=config.image_mean, image_std=config.image_std, cameras=train_set.cameras)
        if recipe.cache_teacher:
            spec = dataclasses.replace(teacher.spec, dataset=f"{train_set.dataroot.resolve()}:{version}")
            cache = TeacherCache(cache_dir or default_cache_dir(), spec)
    pretrainer = OccFeatPretrainer(
        network, mode=recipe.mode, feature_dim=teacher.spec.feature_dim if teacher else 384, c3d=recipe.c3d,
        z_range=recipe.z_range, z_resolution=recipe.z_resolution, lambda_feat=recipe.lambda_feat,
        pos_weight=recipe.pos_weight, feature_branch=recipe.feature_branch,
    )

    steps = max_steps or recipe.steps(len(train_set))
    world, per_process = dist_utils.split_global_batch(recipe.batch_size, len(train_set))
    config_of_run = train_config(recipe, out_dir=out, steps=steps, device=device, progress=progress, seed=seed)
    wrap = (lambda dataset: WithTeacherFeatures(dataset, cache)) if cache is not None else (lambda dataset: dataset)

    def step_fn(module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        maps = teacher_maps_for(batch, teacher, cache) if teacher is not None else None
        return module(batch, maps)

    evaluations: dict[int, dict[str, float]] = {}  # by step: the trainer's final evaluation is the run's result

    def evaluate(module: nn.Module) -> dict[str, float]:
        assert val_set is not None
        scores = evaluate_pretraining(module, wrap(val_set), teacher=teacher, cache=cache, batch_size=max(1, per_process))
        evaluations[trainer.step] = scores
        return scores

    trainer = Trainer(
        pretrainer, step_fn,
        lambda: make_loader(wrap(train_set), per_process, shuffle=recipe.shuffle, drop_last=True, seed=seed,
                            num_workers=recipe.num_workers),
        config_of_run, evaluate=evaluate if val_set is not None else None, print_summary=False,  # pretrain's line
    )
    if teacher is not None:
        teacher.to(trainer.device)
    # The pretrainer, not its network: the step calls network.forward_features, which compiling the network's calls
    # would leave eager. In place (DDP calls it, checkpoints keep their keys), on the device the Trainer resolved.
    network.set_activation_checkpointing(activation_checkpointing)
    compile_model(pretrainer, compile, device=trainer.device)
    record = {
        "kind": RUN_KIND, "model": model if isinstance(model, str) else config.arch, "architecture": config.arch,
        "model_config": config.to_dict(), "dataroot": str(dataroot), "version": version, "split": split,
        "val_split": val_split, "samples": len(train_set), "val_samples": len(val_set) if val_set else 0,
        "seed": seed, "steps": steps, "schedule_rule": "ceil(epochs * samples / (batch_size * grad_accum_steps))",
        "recipe": recipe.to_dict(), "teacher": teacher.spec.to_dict() if teacher else None,
        "teacher_role": (f"{STAND_IN_TEACHER}: a stand-in for DINOv2 on generated worlds, not OccFeat's teacher"
                         if stand_in else None if teacher is None else
                         "a random-weight ViT: a control without pretrained features, not OccFeat's teacher"
                         if str(teacher.spec.weights).startswith("random") else "OccFeat's image teacher"),
        "teacher_cache": str(cache.folder) if cache else None, "processes": world, "labels_read": False,
        "compile": describe(compile) if is_compiled(pretrainer) else False,  # False too when it fell back to eager
        "activation_checkpointing": bool(activation_checkpointing), **initialisation_record(network),
    }
    start_run(out, record, overwrite=overwrite)  # nothing is written to out before this check
    if dist_utils.is_main():
        report_initialisation(network)
    result = trainer.fit()
    metrics: dict[str, float] = {}
    if val_set is not None:  # evaluated at the last step already, unless the run was resumed after it or pre-empted
        metrics = evaluations.get(result.step) or evaluate(pretrainer)
    if dist_utils.is_main():
        (out / "eval.json").write_text(json.dumps({"step": result.step, "split": val_split, "metrics": metrics}, indent=2) + "\n")
        if pictures:  # held-out key frames when there are some
            from .pictures import save_pretraining_pictures

            shown = val_set if val_set is not None else train_set
            save_pretraining_pictures(pretrainer, wrap(shown), out / "pictures", teacher=teacher, cache=cache)
    summary = PretrainResult(pretrainer, result, metrics, out, steps, len(train_set))
    if dist_utils.is_main():
        print(summary.summary(), flush=True)
    return summary


def is_pretrain_run(run_dir: str | Path) -> bool:
    path = Path(run_dir) / RUN_FILE
    return path.is_file() and json.loads(path.read_text()).get("kind") == RUN_KIND


def export_pretrain_run(run_dir: str | Path, out_dir: str | Path, *, weight_id: str | None = None) -> dict[str, str]:
    """A pretraining run -> a ``save_pretrained`` folder of the BEV network without any head (neither the auxiliary
    head nor the untrained segmentation heads): ``occfeat.load("local-dir:OUT")`` builds fresh heads and reports
    them as re-initialised. ``config.json`` records the run's recipe, teacher and provenance (``occfeat.runs.export``)."""
    if not is_pretrain_run(run_dir):
        raise ConfigError(f"{run_dir} is not an `occfeat pretrain` run (no {RUN_FILE} with kind {RUN_KIND!r}).")
    return export(run_dir, out_dir, weight_id=weight_id)
