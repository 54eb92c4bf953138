"""The input pipeline a weight expects: resize + crop to its image size, ImageNet normalisation, intrinsics updated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..models.geometry import image_affine, update_intrinsics


@dataclass(frozen=True)
class CameraTransform:
    """Turns camera images at any size into what a model was trained on.

    >>> transform = get_weights("bevformer-enb0-occfeat").transforms()  # doctest: +SKIP
    >>> images, intrinsics = transform(raw_images, raw_intrinsics)  # (N, 3, 224, 480), (N, 3, 3)  # doctest: +SKIP
    """

    image_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, images: Tensor, intrinsics: Tensor) -> tuple[Tensor, Tensor]:
        """images (..., 3, H, W) uint8 (0-255) or float (0-1), intrinsics (..., 3, 3) of those images ->
        normalised float images (..., 3, h, w) at ``image_size`` and the matching intrinsics.

        Resize to the target width (or height, if the result would be too short), then crop the excess rows from
        the top (sky) and columns symmetrically: the standard nuScenes preprocessing.
        """
        if images.dim() < 3 or images.shape[-3] != 3:
            raise InputError(f"images: got shape {tuple(images.shape)}, expected (..., 3, H, W) RGB.")
        pixels = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        lead, (sh, sw) = pixels.shape[:-3], pixels.shape[-2:]
        th, tw = self.image_size
        scale = max(tw / sw, th / sh)
        new_h, new_w = max(th, round(sh * scale)), max(tw, round(sw * scale))
        resized = F.interpolate(pixels.reshape(-1, 3, sh, sw), size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
        crop_x, crop_y = (new_w - tw) // 2, new_h - th
        cropped = resized[..., crop_y : crop_y + th, crop_x : crop_x + tw]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        normalised = ((cropped - mean) / std).reshape(*lead, 3, th, tw)
        affine = image_affine((new_w / sw, new_h / sh), crop_xy=(float(crop_x), float(crop_y)))
        return normalised, update_intrinsics(intrinsics.double(), affine).to(intrinsics.dtype)
