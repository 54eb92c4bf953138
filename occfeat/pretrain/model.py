"""``OccFeatPretrainer``: the BEV network, the auxiliary head and the loss as one module (what DDP wraps).

The teacher stays outside: it is frozen, so DDP has nothing to synchronise in it and checkpoints need not carry its
weights; the training step computes (or loads from the cache) its feature maps and passes them in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..models import BEVModel
from .head import OccFeatHead
from .losses import OccFeatLoss
from .targets import OCCUPANCY_Z_RANGE, OCCUPANCY_Z_RESOLUTION, Targets, build_targets, occupancy_grid


class OccFeatPretrainer(nn.Module):
    """Args:
        network: the BEV network being pretrained. Its segmentation heads are frozen (the pretraining never reaches
            them, and DDP must not wait for their gradients); export drops them with the auxiliary head.
        mode, lambda_feat, pos_weight: see ``OccFeatLoss``.
        feature_dim: D of the teacher (ignored in mode "occupancy").
        c3d, z_range, z_resolution: the head's volume and the occupancy grid above the network's raster.
        feature_branch: ``"shared"`` or ``"separate"`` head layers for the feature output (``OccFeatHead``).
    """

    def __init__(
        self,
        network: BEVModel,
        *,
        mode: str = "occfeat",
        feature_dim: int = 384,
        c3d: int = 32,
        z_range: tuple[float, float] = OCCUPANCY_Z_RANGE,
        z_resolution: float = OCCUPANCY_Z_RESOLUTION,
        lambda_feat: float = 1.0,
        pos_weight: float | None = None,
        feature_branch: str = "shared",
    ):
        super().__init__()
        self.network = network
        self.network.heads.requires_grad_(False)
        self.grid = occupancy_grid(network.config.grid, z_range, z_resolution)
        self.loss = OccFeatLoss(mode, lambda_feat, pos_weight)
        self.head = OccFeatHead(
            network.config.bev_channels, self.grid, c3d=c3d,
            feature_dim=feature_dim if self.loss.uses_features else None, occupancy=self.loss.uses_occupancy,
            feature_branch=feature_branch,
        )

    @property
    def mode(self) -> str:
        return self.loss.mode

    def targets(self, batch: dict[str, Any], teacher_maps: Tensor | None) -> Targets:
        return build_targets(
            batch["lidar"], batch.get("lidar_valid"), self.grid, bev_aug=batch["bev_aug"],
            teacher_maps=teacher_maps if self.loss.uses_features else None, intrinsics=batch["intrinsics"],
            cam_to_ego=batch["cam_to_ego"], image_hw=tuple(batch["images"].shape[-2:]),
        )

    def predict(self, batch: dict[str, Any], targets: Targets) -> dict[str, Tensor]:
        bev = self.network.forward_features(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["bev_aug"])
        return self.head(bev, targets.distilled_index)

    def forward(self, batch: dict[str, Any], teacher_maps: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
        """The loss of a batch (``images``, ``intrinsics``, ``cam_to_ego``, ``bev_aug``, ``lidar``, ``lidar_valid``)
        and the floats to log."""
        with torch.no_grad():
            targets = self.targets(batch, teacher_maps)
        return self.loss(self.predict(batch, targets), targets)
