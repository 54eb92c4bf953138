"""OccFeat's losses: BCE occupancy over the whole grid, ``1 - cos`` distillation at the distilled voxels.

    L = L_occ + lambda * L_feat            mode "occfeat"
    L = L_occ                              mode "occupancy"      (the paper's occupancy-only ablation)
    L = L_feat                             mode "distillation"   (features at Lidar-occupied voxels, no occupancy output)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .head import MODES
from .targets import Targets


class OccFeatLoss(nn.Module):
    """Args:
        mode: "occfeat", "occupancy" or "distillation".
        lambda_feat: weight of the distillation loss in mode "occfeat".
        pos_weight: BCE weight of occupied voxels (None: 1); occupied voxels are a few percent of the grid.
    """

    def __init__(self, mode: str = "occfeat", lambda_feat: float = 1.0, pos_weight: float | None = None):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"mode={mode!r}: choose from {list(MODES)}.")
        if lambda_feat < 0:
            raise ConfigError(f"lambda_feat={lambda_feat}: expected a weight >= 0.")
        if pos_weight is not None and pos_weight <= 0:
            raise ConfigError(f"pos_weight={pos_weight}: expected a positive weight, or None.")
        self.mode, self.lambda_feat, self.pos_weight = mode, lambda_feat, pos_weight

    @property
    def uses_occupancy(self) -> bool:
        return self.mode in ("occfeat", "occupancy")

    @property
    def uses_features(self) -> bool:
        return self.mode in ("occfeat", "distillation")

    def forward(self, outputs: dict[str, Tensor], targets: Targets) -> tuple[Tensor, dict[str, float]]:
        """Returns the total loss and floats to log: ``loss_occ`` / ``loss_feat`` (per mode), ``occupied`` (the
        fraction of occupied voxels) and ``distilled`` (distilled voxels per sample)."""
        metrics: dict[str, float] = {"occupied": targets.occupancy.float().mean().item()}
        total = None
        if self.uses_occupancy:
            logits = outputs["occupancy"].float()
            pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
            loss_occ = F.binary_cross_entropy_with_logits(logits, targets.occupancy.float(), pos_weight=pos_weight)
            metrics["loss_occ"] = loss_occ.item()
            total = loss_occ
        if self.uses_features:
            predicted, target = outputs["features"].float(), targets.distilled_features
            if predicted.shape[0] == 0 or target is None:
                loss_feat = predicted.sum() * 0.0  # no distilled voxel in this batch: a zero that keeps the graph
            else:
                loss_feat = (1.0 - F.cosine_similarity(predicted, target, dim=1)).mean()
            metrics["loss_feat"] = loss_feat.item()
            metrics["distilled"] = predicted.shape[0] / targets.occupancy.shape[0]
            total = loss_feat if total is None else total + self.lambda_feat * loss_feat
        assert total is not None
        return total, metrics


@torch.no_grad()
def occupancy_counts(logits: Tensor, occupancy: Tensor) -> Tensor:
    """(intersection, union, target occupied, voxels) of thresholded logits (p > 0.5) against the target, as a
    float64 tensor that sums over batches and ranks."""
    predicted = logits > 0
    return torch.stack([
        (predicted & occupancy).sum(), (predicted | occupancy).sum(), occupancy.sum(),
        torch.tensor(occupancy.numel(), device=occupancy.device),
    ]).double()
