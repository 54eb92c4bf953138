"""``TrainConfig``: every setting of a training run, checked on construction and saved in each checkpoint."""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from ..errors import ConfigError

_Recipe = TypeVar("_Recipe")


def replace_fields(recipe: _Recipe, changes: dict[str, Any]) -> _Recipe:
    """``dataclasses.replace`` for a recipe, where a misspelt field (``lambda_fet=0.25`` from a command line) is a
    ``ConfigError`` that names it and the close fields, not a ``TypeError`` from the constructor."""
    fields = [f.name for f in dataclasses.fields(recipe)]  # type: ignore[arg-type]
    unknown = [name for name in changes if name not in fields]
    if unknown:
        hints = "; ".join(f"{name!r}: did you mean {close[0]!r}?" for name in unknown
                          if (close := difflib.get_close_matches(name, fields, n=1)))
        raise ConfigError(f"{type(recipe).__name__} has no field {', '.join(map(repr, unknown))}"
                          f"{f' ({hints})' if hints else ''}; its fields: {', '.join(fields)}.")
    return dataclasses.replace(recipe, **changes)  # type: ignore[type-var]


PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
BEST_MODES = ("max", "min")


# AdamW + OneCycle as the BEV segmentation recipe sets them; the fine-tuning and pretraining recipes take these too.
DEFAULT_LR = 3e-4  # peak learning rate
DEFAULT_WEIGHT_DECAY = 1e-7
DEFAULT_WARMUP_FRACTION = 0.05
DEFAULT_GRAD_CLIP = 5.0


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run. Defaults follow the BEV segmentation recipe (``docs/bev-networks.md``, "Optimisation").

    A *step* is one optimizer update: ``grad_accum_steps`` micro-batches (per process). Give the run's length as
    ``max_steps`` or as ``epochs`` (passes over the training loader), not both.

    >>> TrainConfig(out_dir="runs/simplebev-10pct", epochs=100, precision="bf16")  # doctest: +SKIP
    """

    out_dir: str = "runs/train"
    max_steps: int | None = None
    epochs: int | None = None
    # optimisation: AdamW + OneCycle (linear warm-up over warmup_fraction of the steps, then linear decay)
    lr: float = DEFAULT_LR  # peak learning rate; a parameter group may set its own "lr"
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    warmup_fraction: float = DEFAULT_WARMUP_FRACTION
    grad_clip: float | None = DEFAULT_GRAD_CLIP  # max global gradient norm; None disables clipping
    grad_accum_steps: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast dtype; fp16 adds a GradScaler (CUDA only)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    find_unused_parameters: bool = False  # DDP: set when a step leaves some trainable parameters without gradient
    # checkpoints, evaluation, logging
    checkpoint_every: int = 1000  # steps; a checkpoint is also written at the end and on pre-emption
    keep_checkpoints: int = 1  # newest step checkpoints kept on disk
    resume: bool = True  # continue from the newest checkpoint in out_dir when there is one
    eval_every: int = 0  # steps between calls of the evaluator; 0: only at the end
    best_metric: str | None = None  # evaluator key that selects best.safetensors
    best_mode: Literal["max", "min"] = "max"
    log_every: int = 10  # steps between lines of metrics.jsonl (the last step is always logged)
    progress: bool = True  # tqdm bar on rank 0
    tensorboard: bool | None = None  # TensorBoard scalars under out_dir/tensorboard; None: when it is installed
    seed: int = 0

    def __post_init__(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(f"TrainConfig.{name}={getattr(self, name)!r}: {message}")

        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(
                f"TrainConfig: got max_steps={self.max_steps!r} and epochs={self.epochs!r}; give exactly one of them "
                "(the run's length in optimizer steps or in passes over the training data)."
            )
        for name in ("max_steps", "epochs"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                fail(name, "expected a positive integer.")
        for name in ("grad_accum_steps", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                fail(name, "expected a positive integer.")
        if self.eval_every < 0:
            fail("eval_every", "expected a number of steps >= 0 (0 evaluates only at the end).")
        if self.lr <= 0:
            fail("lr", "expected a positive learning rate, e.g. 3e-4.")
        if self.weight_decay < 0:
            fail("weight_decay", "expected a value >= 0.")
        if not 0 <= self.warmup_fraction < 1:
            fail("warmup_fraction", "expected a fraction of the steps in [0, 1), e.g. 0.05.")
        if self.grad_clip is not None and self.grad_clip <= 0:
            fail("grad_clip", "expected a positive norm, or None to disable clipping.")
        if self.precision not in PRECISIONS:
            fail("precision", f"choose from {list(PRECISIONS)}.")
        if self.device not in DEVICES:
            fail("device", f"choose from {list(DEVICES)}.")
        if self.best_mode not in BEST_MODES:
            fail("best_mode", f"choose from {list(BEST_MODES)}.")
