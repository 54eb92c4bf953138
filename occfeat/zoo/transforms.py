"""The input pipeline a weight expects, handed back with it (as open_clip and torchvision's weights API do): the
training dataset's own code (``occfeat.data.images``) with the network's image size and normalisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.images import image_transform, normalise, warp_image
from ..errors import InputError
from ..conventions.geometry import update_intrinsics


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

        Resize to the target width (or height, if the result would be too short; antialiased when shrinking), then
        crop the excess rows from the top (sky) and columns symmetrically: the standard nuScenes preprocessing,
        exactly as ``NuScenesBEV`` prepares evaluation images (uint8 input gives the same numbers).
        """
        if images.dim() < 3 or images.shape[-3] != 3:
            raise InputError(f"images: got shape {tuple(images.shape)}, expected (..., 3, H, W) RGB.")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise InputError(f"images: dtype {images.dtype}; expected uint8 (0-255) or float (0-1).")
        lead, source_hw = images.shape[:-3], tuple(images.shape[-2:])
        affine = image_transform(source_hw, self.image_size, None)
        arrays = images.reshape(-1, 3, *source_hw).permute(0, 2, 3, 1).cpu()
        arrays = arrays.numpy() if images.dtype == torch.uint8 else arrays.float().numpy()
        warped = np.stack([warp_image(np.ascontiguousarray(a), affine, self.image_size) for a in arrays])
        pixels = torch.from_numpy(warped).permute(0, 3, 1, 2)
        normalised = normalise(pixels, self.mean, self.std).reshape(*lead, 3, *self.image_size)
        return normalised.to(images.device), update_intrinsics(intrinsics.double(), torch.from_numpy(affine)).to(intrinsics.dtype)
