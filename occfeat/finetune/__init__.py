"""Fine-tuning BEV segmentation: ``finetune`` (the training run), the loss, the dataset-level IoU metric, freezing
parts and optimizer groups."""

from typing import Any

from .._callable import make_callable

from .freezing import BN_MODES, NO_WEIGHT_DECAY, freeze, param_groups, unfreeze
from .losses import LOSS_COEFFICIENTS, SegmentationLoss
from .metrics import IoUMeter, confusion_counts

__all__ = [
    "BN_MODES",
    "LOSS_COEFFICIENTS",
    "NO_WEIGHT_DECAY",
    "IoUMeter",
    "SegmentationLoss",
    "confusion_counts",
    "freeze",
    "param_groups",
    "unfreeze",
    "finetune",
    "FinetuneResult",
    "export_run",
]

# The training run loads lazily: it imports the data pipeline and the zoo, which import parts of this package.
_TRAINING = ("finetune", "FinetuneResult", "export_run")


def __getattr__(name: str) -> Any:
    if name in _TRAINING:
        from . import training

        return getattr(training, name)
    raise AttributeError(f"module 'occfeat.finetune' has no attribute {name!r}")


make_callable(__name__, "finetune")  # occfeat.finetune(...) runs a fine-tuning: occfeat.finetune.training.finetune
