"""SimpleBEV: parameter-free bilinear lifting of camera features onto a 3D voxel grid, then height compression."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .geometry import BEVGrid, pixels_to_grid, project_to_cameras, transform_points
from .layers import conv_norm_act


class BilinearLifting(nn.Module):
    """The view transform of SimpleBEV: camera features (B, N, C, Hf, Wf) -> BEV features (B, C, H, W).

    Every voxel centre is projected into every camera and the feature map is sampled there bilinearly; the voxel
    takes the mean over the cameras that see it (zero when none does). The Z heights are then folded into channels
    and compressed back to C by a 3x3 conv + InstanceNorm + GELU.
    """

    def __init__(self, grid: BEVGrid, channels: int = 128):
        super().__init__()
        self.grid = grid
        self.compress = conv_norm_act(channels * grid.num_heights, channels, 3, nn.GELU)

    def lift(
        self, features: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor, image_hw: tuple[int, int]
    ) -> Tensor:
        """(B, N, C, Hf, Wf) -> the lifted volume (B, C, Z, H, W)."""
        b, n, c = features.shape[:3]
        num_z, (h, w) = self.grid.num_heights, self.grid.shape
        voxels = self.grid.voxel_centers(device=features.device).view(1, -1, 3)  # (1, Z*H*W, 3) float32
        points = transform_points(bev_aug.float(), voxels)
        projection = project_to_cameras(points, intrinsics.float(), cam_to_ego.float(), image_hw)
        grid = pixels_to_grid(projection.pixels, image_hw)  # (B, N, P, 2)
        # One camera at a time: peak memory is one camera's samples (B, C, P), not N of them.
        total = features.new_zeros(b, c, voxels.shape[1])
        for cam in range(n):
            sampled = F.grid_sample(
                features[:, cam], grid[:, cam, None].to(features.dtype), mode="bilinear", align_corners=False
            )[:, :, 0]  # (B, C, P)
            total = total + sampled * projection.visible[:, cam, None].to(sampled.dtype)
        count = projection.visible.sum(dim=1, keepdim=True).clamp(min=1).to(total.dtype)  # (B, 1, P)
        return (total / count).view(b, c, num_z, h, w)

    def forward(
        self, features: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor, image_hw: tuple[int, int]
    ) -> Tensor:
        volume = self.lift(features, intrinsics, cam_to_ego, bev_aug, image_hw)
        return self.compress(rearrange(volume, "b c z h w -> b (c z) h w"))
