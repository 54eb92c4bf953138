"""``finetune``: a zoo model (or an architecture from scratch) trained on a labelled fraction of a nuScenes-format
dataroot with the shared engine, evaluated on the validation split, exportable to the zoo.

One command from a laptop CPU to many GPUs::

    occfeat finetune simplebev-tiny --dataroot data/world --version v1.0-synthetic --recipe cpu-tiny
    torchrun --standalone --nproc_per_node 8 -m occfeat finetune bevformer-enb0-occfeat \\
        --dataroot /data/nuscenes --fraction 0.01 --recipe nuscenes-224x480 --out runs/bevformer-1pct
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..data import Augmentation, NuScenesBEV, data_options, make_loader, save_subset
from ..data.labels import check_label_protocol
from ..engine import Trainer, TrainResult, distributed as dist_utils, seed_everything
from ..models import BEVModel
from ..models.compile import CompileOption, compile_model, compile_options, describe, is_compiled
from ..runs import RUN_FILE  # noqa: F401  (public here too)
from ..runs import FINETUNE_KIND, export, initialisation_record, report_initialisation, start_run, train_config
from ..zoo.loading import load_for_finetuning, training_load_kwargs  # their owner is the zoo
from .evaluation import evaluate_model, write_report
from .freezing import freeze, param_groups
from .losses import SegmentationLoss
from .recipes import FinetuneRecipe, get_recipe, schedule_steps

class _ModelWithLoss(nn.Module):
    """The network and its loss as one module, so DDP sees (and synchronises) the learned loss weights too. The
    network is ``network``, as in the pretrainer: checkpoints of both kinds of run hold it under the same prefix."""

    def __init__(self, network: BEVModel, loss: SegmentationLoss):
        super().__init__()
        self.network, self.loss = network, loss

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        outputs = self.network(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["bev_aug"])
        return self.loss(outputs, batch)


@dataclass
class FinetuneResult:
    model: BEVModel  # the trained network (its last step; the best one is best.safetensors in run_dir)
    train: TrainResult
    metrics: dict[str, float]
    run_dir: Path
    steps: int
    train_samples: int

    def summary(self) -> str:
        scores = ", ".join(f"{k} {v:.3f}" for k, v in self.metrics.items())
        return (f"finetune: {self.train_samples} labelled samples, {self.steps} steps{self.train.this_call()}; val "
                f"{scores}; run {self.run_dir}")


def finetune(
    model: str | BEVModel,
    *,
    dataroot: str | Path,
    out_dir: str | Path,
    version: str = "v1.0-trainval",
    train_split: str = "train",
    val_split: str = "val",
    fraction: float | None = None,
    count: int | None = None,
    subset: Sequence[str] | str | Path | None = None,
    recipe: str | FinetuneRecipe = "nuscenes-224x480",
    max_steps: int | None = None,
    val_samples: int | None = None,
    freeze_parts: Sequence[str] = (),
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    recipe_overrides: dict[str, Any] | None = None,
    load_kwargs: dict[str, Any] | None = None,
    compile: CompileOption = False,
    activation_checkpointing: bool = False,
    overwrite: bool = False,
) -> FinetuneResult:
    """Fine-tune ``model`` on a labelled subset and evaluate it; resumes the run in ``out_dir`` when it is this run.

    Args:
        model: a weight id/alias, ``hf-hub:...``, ``local-dir:...``, an architecture (from scratch), or a model.
        fraction / count / subset: the labelled subset of ``train_split`` (nested and seeded, see
            ``occfeat.data.splits``); the tokens used are written to ``out_dir/subset.json``.
        recipe: a name from ``RECIPES`` or a ``FinetuneRecipe``; ``recipe_overrides`` change single fields.
        max_steps: overrides the recipe's schedule rule (``schedule_steps``).
        val_samples: evaluate on the first N validation samples only (quick runs).
        freeze_parts: parts kept frozen (BatchNorm statistics too).
        compile: ``torch.compile`` the network (``True``: inductor, a backend name, or a dict of ``torch.compile``
            arguments; ``occfeat.models.compile.compile_model``), recorded in ``run.json``.
        activation_checkpointing: recompute the backbone stages and BEVFormer's layers in backward instead of keeping
            their activations (``BEVModel.set_activation_checkpointing``): same gradients, less memory, more time.
        overwrite: delete the run already in ``out_dir`` and start this one. Without it, a folder holding another
            run (any recorded field changed: model, fraction, recipe, ...) is a ``RunMismatchError``, raised before
            anything is written.
    """
    recipe = get_recipe(recipe, **(recipe_overrides or {})) if isinstance(recipe, str) else recipe
    check_label_protocol(recipe.label_protocol)  # before any download or load
    compile_options(compile)  # an unknown backend fails before any download or load
    # Before anything draws: the network (from scratch) and the heads a pretrained load re-initialises are part of
    # the run, so the seed must fix them too (the trainer seeds again, per rank, for the steps).
    seed_everything(seed)
    # The recipe's image size is the network's: a 448x800 recipe trains the network at 448x800 (recorded in run.json).
    network = load_for_finetuning(model, **training_load_kwargs(load_kwargs, recipe.image_size))
    config = network.config
    out = Path(out_dir)
    common = dict(**data_options(config), map_classes=config.map_classes, seed=seed,
                  label_protocol=recipe.label_protocol)
    train_set = NuScenesBEV(dataroot, version, train_split, augment=Augmentation().scaled_to(config.grid) if recipe.augment else None,
                            fraction=fraction, count=count, subset=subset, **common)
    val_set = NuScenesBEV(dataroot, version, val_split, nusc=train_set.nusc, **common)
    if val_samples is not None:
        val_set.truncate(val_samples)
    steps = max_steps or schedule_steps(recipe, len(train_set))
    world, per_process = dist_utils.split_global_batch(recipe.batch_size, len(train_set))

    if freeze_parts:
        freeze(network, list(freeze_parts), bn="eval")
    loss = SegmentationLoss(config.heads, visibility_filter=recipe.visibility_filter)
    wrapped = _ModelWithLoss(network, loss)
    config_of_run = train_config(recipe, out_dir=out, steps=steps, device=device, progress=progress, seed=seed,
                                 best_metric="vehicle_iou")

    def step_fn(module: nn.Module, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        return module(batch)

    def groups(module: nn.Module) -> list[dict[str, Any]]:
        return param_groups(module.network, recipe.lr, weight_decay=recipe.weight_decay,
                            part_lr_mult={"backbone": recipe.backbone_lr_mult}, extra_modules={"loss": module.loss})

    def evaluate(module: nn.Module) -> dict[str, float]:
        return evaluate_model(module.network, val_set, batch_size=max(1, per_process))

    trainer = Trainer(
        wrapped, step_fn,
        lambda: make_loader(train_set, per_process, shuffle=True, drop_last=True, seed=seed,
                            num_workers=recipe.num_workers),
        config_of_run, param_groups=groups, evaluate=evaluate, print_summary=False,  # finetune's line says it all
    )
    # In place, so the DDP wrapper calls the compiled network and checkpoints keep their keys; after the Trainer, which
    # resolves the device whose toolchain (C++ compiler, Triton) the backend needs.
    network.set_activation_checkpointing(activation_checkpointing)
    compile_model(network, compile, device=trainer.device)
    record = {
        "kind": FINETUNE_KIND, "model": model if isinstance(model, str) else config.arch, "architecture": config.arch,
        "model_config": config.to_dict(), "dataroot": str(dataroot), "version": version,
        "train_split": train_split, "val_split": val_split, "fraction": fraction, "count": count,
        "train_samples": len(train_set), "val_samples": len(val_set), "seed": seed, "steps": steps,
        "schedule_rule": "max(min_steps, ceil(epochs * samples / batch_size))", "recipe": recipe.to_dict(),
        "label_protocol": recipe.label_protocol,
        "freeze_parts": list(freeze_parts), "processes": world,
        "compile": describe(compile) if is_compiled(network) else False,  # False too when it fell back to eager
        "activation_checkpointing": bool(activation_checkpointing), **initialisation_record(network),
    }
    start_run(out, record, overwrite=overwrite)  # nothing is written to out before this check
    if dist_utils.is_main():
        save_subset(train_set.sample_tokens, out / "subset.json")
        report_initialisation(network)
    result = trainer.fit()
    metrics = evaluate_model(network, val_set, batch_size=max(1, per_process), pictures=4 if dist_utils.is_main() else 0,
                             picture_dir=out / "pictures")
    if dist_utils.is_main():
        write_report(metrics, out / "eval.json", model=str(model), split=val_split, samples=len(val_set), step=result.step,
                     label_protocol=recipe.label_protocol)
    summary = FinetuneResult(network, result, metrics, out, steps, len(train_set))
    if dist_utils.is_main():  # once per run, not once per torchrun process
        print(summary.summary(), flush=True)
    return summary


def export_run(run_dir: str | Path, out_dir: str | Path, *, which: str = "best") -> dict[str, str]:
    """A fine-tuned run -> a ``save_pretrained`` folder that ``occfeat.load("local-dir:...")`` reads
    (``occfeat.runs.export``). ``which``: ``"best"`` (the best evaluation's weights, falling back to the latest
    checkpoint) or ``"latest"``."""
    return export(run_dir, out_dir, which=which)
