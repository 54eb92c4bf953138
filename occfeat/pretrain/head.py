"""The auxiliary pretraining head: BEV features -> 3D volume -> occupancy logits and voxel features.

::

    bev (B, C, H, W)
      -> 3x3 conv + norm + ReLU -> 1x1 conv to c3d * Z channels -> view (B, c3d, Z, H, W)   "unsplatting"
      -> 3x3x3 conv + norm + ReLU                                                       the 3D layer
      -> occupancy: 1x1x1 conv to 1 channel -> (B, Z, H, W) logits
      -> features:  a linear c3d -> D applied to the volume's rows at the distilled voxels only -> (K, D)

``feature_branch="separate"`` gives the feature output its own unsplatting and 3D layer (the same layers, separately
weighted), so the two losses share only the BEV network; ``"shared"`` (the default, our reading of the paper's single
head) feeds both outputs from one volume.

The norms are instance norms, as in the rest of occfeat's BEV layers: no statistics that depend on the per-process
batch, so one process and several DDP processes train the same head. The unsplatting is the inverse of SimpleBEV's height compression (which folds (C, Z) into channels). The feature
output is a per-voxel linear map, so evaluating it at K gathered voxels is exactly what a dense 1x1x1 conv would give
there, without the dense (B, D, Z, H, W) volume: 2.5 GB at D = 384 on the 200x200x16 grid, per sample.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError
from ..conventions.geometry import BEVGrid
from ..models.layers import conv_norm_act

MODES = ("occfeat", "occupancy", "distillation")
FEATURE_BRANCHES = ("shared", "separate")


class OccFeatHead(nn.Module):
    """Args:
        bev_channels: C of the BEV feature map (``BEVModelConfig.bev_channels``).
        grid: the occupancy grid (``targets.occupancy_grid``): (Z, H, W) of the volume; H, W must be the BEV map's.
        c3d: channels per voxel of the volume.
        feature_dim: D of the teacher; None builds no feature output (occupancy-only pretraining).
        occupancy: build the occupancy output (False for distillation-only pretraining).
        feature_branch: ``"shared"``: both outputs read one volume; ``"separate"``: the feature output has its own
            unsplatting and 3D layer (``feature_unsplat``, ``feature_volume``), so the losses meet only in the network.
    """

    def __init__(self, bev_channels: int, grid: BEVGrid, *, c3d: int = 32, feature_dim: int | None = 384,
                 occupancy: bool = True, feature_branch: str = "shared"):
        super().__init__()
        if feature_dim is None and not occupancy:
            raise ConfigError("OccFeatHead: build at least one output (occupancy=True or a feature_dim).")
        if feature_branch not in FEATURE_BRANCHES:
            raise ConfigError(f"OccFeatHead: feature_branch={feature_branch!r}; choose from {list(FEATURE_BRANCHES)}.")
        self.grid, self.c3d = grid, c3d
        self.num_z = grid.num_heights
        self.unsplat, self.volume = self._volume_layers(bev_channels)
        self.occupancy = nn.Conv3d(c3d, 1, 1) if occupancy else None
        self.features = nn.Linear(c3d, feature_dim) if feature_dim is not None else None
        self.feature_unsplat = self.feature_volume = None
        if feature_branch == "separate" and occupancy and feature_dim is not None:
            self.feature_unsplat, self.feature_volume = self._volume_layers(bev_channels)

    def _volume_layers(self, bev_channels: int) -> tuple[nn.Module, nn.Module]:
        """The unsplatting (BEV -> c3d x Z channels) and the 3D layer over the (c3d, Z, H, W) volume."""
        unsplat = nn.Sequential(conv_norm_act(bev_channels, bev_channels, 3), nn.Conv2d(bev_channels, self.c3d * self.num_z, 1))
        volume = nn.Sequential(nn.Conv3d(self.c3d, self.c3d, 3, padding=1, bias=False), nn.InstanceNorm3d(self.c3d),
                               nn.ReLU(inplace=True))
        return unsplat, volume

    def _volume(self, bev: Tensor, unsplat: nn.Module, volume: nn.Module) -> Tensor:
        b, _, h, w = bev.shape
        return volume(unsplat(bev).view(b, self.c3d, self.num_z, h, w))

    def forward(self, bev: Tensor, distilled_index: Tensor | None = None) -> dict[str, Tensor]:
        """Args:
            bev: (B, C, H, W) BEV features.
            distilled_index: (K,) flat indices into (B, Z, H, W) of the voxels whose features are wanted.
        Returns:
            ``occupancy`` (B, Z, H, W) logits and/or ``features`` (K, D).
        """
        b, _, h, w = bev.shape
        if (h, w) != self.grid.shape:
            raise ConfigError(
                f"OccFeatHead: BEV map is {h}x{w} but the occupancy grid is {self.grid.shape[0]}x{self.grid.shape[1]}; "
                "build the head with the network's raster (targets.occupancy_grid(model.config.grid))."
            )
        volume = self._volume(bev, self.unsplat, self.volume)
        outputs: dict[str, Tensor] = {}
        if self.occupancy is not None:
            outputs["occupancy"] = self.occupancy(volume).squeeze(1)
        if self.features is not None and distilled_index is not None:
            if self.feature_unsplat is not None:
                volume = self._volume(bev, self.feature_unsplat, self.feature_volume)
            # (B, c3d, Z, H, W) -> one row of c3d numbers per voxel, then only the K wanted rows.
            rows = volume.permute(0, 2, 3, 4, 1).reshape(-1, self.c3d)
            outputs["features"] = self.features(rows.index_select(0, distilled_index))
        return outputs
