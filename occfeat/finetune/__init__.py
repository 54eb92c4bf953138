"""Fine-tuning BEV segmentation: the loss, the dataset-level IoU metric, freezing parts and optimizer groups."""

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
]
