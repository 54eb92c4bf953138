"""Fine-tuning recipes and the low-data protocol.

A recipe is data: optimisation, image size, augmentation, schedule rule. ``schedule_steps`` turns a recipe and a
training-set size into a number of optimiser steps, the same rule for every label fraction:

    steps = max(min_steps, ceil(epochs * samples / batch_size))

With the nuScenes recipe (100 epochs at batch 12, at least 5 000 steps) that is 234 k steps at 100 % of the labels
(28 130 samples), 23.4 k at 10 % and 5 000 at 1 % (282 samples, about 210 passes): a smaller subset gets more passes
but not fewer than ``min_steps`` updates, because a schedule that shrinks with the data under-trains the 1 % setting
(its OneCycle would barely warm up). The steps used are recorded with the run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..data.labels import DEFAULT_LABEL_PROTOCOL
from ..engine.config import DEFAULT_GRAD_CLIP, replace_fields, DEFAULT_LR, DEFAULT_WARMUP_FRACTION, DEFAULT_WEIGHT_DECAY
from ..errors import UnknownNameError


@dataclass(frozen=True)
class FinetuneRecipe:
    name: str
    image_size: str  # a preset of occfeat.data.IMAGE_PRESETS
    batch_size: int  # global batch (split across DDP ranks)
    lr: float = DEFAULT_LR
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    warmup_fraction: float = DEFAULT_WARMUP_FRACTION
    grad_clip: float = DEFAULT_GRAD_CLIP
    epochs: float = 100.0
    min_steps: int = 5000
    precision: str = "bf16"  # on CUDA; the CPU runs fp32
    augment: bool = True
    visibility_filter: bool = True
    label_protocol: str = DEFAULT_LABEL_PROTOCOL  # the vehicle raster (occfeat.data.labels): "lss", the literature's
    backbone_lr_mult: float = 1.0
    eval_every: int = 5000
    checkpoint_every: int = 1000  # steps; the engine also checkpoints at the end and on pre-emption
    num_workers: int = 6

    def replace(self, **changes: object) -> "FinetuneRecipe":
        return replace_fields(self, changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


RECIPES: dict[str, FinetuneRecipe] = {
    # The usual nuScenes recipe (docs/bev-networks.md): several GPUs, batch 12 at 224x480.
    "nuscenes-224x480": FinetuneRecipe("nuscenes-224x480", image_size="224x480", batch_size=12),
    # Simple-BEV's high-resolution setting: batch 4 fits a 24-40 GB GPU with SimpleBEV-R101.
    "nuscenes-448x800": FinetuneRecipe("nuscenes-448x800", image_size="448x800", batch_size=4, min_steps=10000),
    # The tiny architectures on a generated world, on a laptop CPU: minutes, not days.
    "cpu-tiny": FinetuneRecipe(
        "cpu-tiny", image_size="112x240", batch_size=2, lr=1e-3, epochs=20.0, min_steps=60, precision="fp32",
        eval_every=50, checkpoint_every=100, num_workers=0,
    ),
}


def get_recipe(name: str, **overrides: object) -> FinetuneRecipe:
    if name not in RECIPES:
        raise UnknownNameError(f"unknown fine-tuning recipe {name!r}; recipes: {sorted(RECIPES)}.")
    return RECIPES[name].replace(**overrides) if overrides else RECIPES[name]


def schedule_steps(recipe: FinetuneRecipe, num_samples: int) -> int:
    """Optimiser steps for a training set of ``num_samples`` (see the module docstring)."""
    return max(recipe.min_steps, math.ceil(recipe.epochs * num_samples / recipe.batch_size))
