"""The conventions every layer shares, below ``models`` and ``data``: geometry (frames, the BEV raster, projection,
the image affine; ``geometry``), the image normalisation constants, the camera order and the nominal rig, and the
batch a network takes (``Batch``). Imports torch only: ``import occfeat.data`` does not import timm.
"""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

from .geometry import NUSCENES_CAMERAS, NUSCENES_IMAGE_HW, BEVGrid, nuscenes_camera_rig

# timm's ImageNet statistics: the default normalisation of every backbone (a model config may choose others).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


class Batch(TypedDict, total=False):
    """The batch dict ``NuScenesBEV`` + ``collate`` give and ``BEVModel.forward`` takes (B samples, N cameras,
    H x W network images, Hb x Wb raster cells). The network needs the first four; the rest are labels or targets."""

    images: Tensor  # (B, N, 3, H, W) float32, normalised with the model config's image_mean / image_std
    intrinsics: Tensor  # (B, N, 3, 3) in pixels of ``images``
    cam_to_ego: Tensor  # (B, N, 4, 4) camera -> ego of the LIDAR_TOP key frame
    bev_aug: Tensor  # (B, 4, 4) augmented BEV frame -> ego (identity at evaluation)
    vehicle: Tensor  # (B, 1, Hb, Wb) 0/1
    vehicle_ignore: Tensor  # (B, 1, Hb, Wb) 1 where the label is not scored (invisible vehicles)
    center: Tensor  # (B, 1, Hb, Wb) Gaussian centerness
    offset: Tensor  # (B, 2, Hb, Wb) cell -> instance centre, in cells
    map: Tensor  # (B, K, Hb, Wb) 0/1 per map class
    lidar: Tensor  # (B, P, 5) padded: ego x, y, z, intensity, sweep index
    sample_token: list  # B nuScenes sample tokens


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "NUSCENES_CAMERAS", "NUSCENES_IMAGE_HW", "BEVGrid", "Batch",
           "nuscenes_camera_rig"]
