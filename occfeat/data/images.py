"""The camera-image input pipeline: one for training, evaluation and ``WeightSpec.transforms()``.

A raw camera image becomes a network image in three steps, each owned here:

1. ``image_transform``: the (3, 3) pixel map, ``occfeat.conventions.geometry.resize_crop_for`` (resize to the network
   width, crop the sky rows and the side columns), with random zoom, rotation and crop shift when augmenting.
2. ``warp_image``: the pixels. When the map shrinks the image (nuScenes' 1600x900 to 480 wide is 3.3x), PIL's
   antialiased bilinear resize (what LSS and PointBeV resize with; torch's ``interpolate(antialias=True)``) takes the
   image to the map's scale first, and the residual map (crop, rotation, sub-pixel remainder; a scale near 1) is
   applied with bilinear interpolation. A bilinear warp alone would sample one pixel in 3.3 and alias. Maps of ids
   (class, instance) are sampled at the nearest pixel, never averaged.
3. ``normalise``: 0-255 to the model's ``image_mean`` / ``image_std`` (the model config's, not a constant).

The intrinsics follow the full map (``update_intrinsics``), whatever the warp does internally.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..errors import ConfigError
from ..conventions.geometry import image_affine, resize_crop_for

if TYPE_CHECKING:
    from .nuscenes import Augmentation

_SHRINK_TOLERANCE = 1e-6  # scales within this of 1 are warped directly
# Network image sizes by name (recipes name them): (H, W).
IMAGE_PRESETS: dict[str, tuple[int, int]] = {"224x480": (224, 480), "448x800": (448, 800), "112x240": (112, 240)}


def image_size_of(value: "tuple[int, int] | Sequence[int] | str") -> tuple[int, int]:
    """A network image size, (H, W) or ``"HxW"`` (the presets of ``IMAGE_PRESETS`` are such names), as (H, W); a
    typed error otherwise."""
    if isinstance(value, str):
        height, _, width = value.partition("x")
        if not (height.isdigit() and width.isdigit()):
            raise ConfigError(f"image_size={value!r}: expected 'HxW' (e.g. one of the presets {list(IMAGE_PRESETS)}) "
                              "or (H, W).")
        value = (int(height), int(width))
    size = tuple(int(v) for v in value)
    if len(size) != 2 or min(size) < 1:
        raise ConfigError(f"image_size={tuple(value)!r}: expected (H, W) with positive integers, or a preset name.")
    return size  # type: ignore[return-value]


def image_transform(
    source_hw: tuple[int, int], target_hw: tuple[int, int], rng: np.random.Generator | None,
    augment: "Augmentation | None" = None,
) -> np.ndarray:
    """(3, 3) float64 pixel map from a source image to the network image (``resize_crop_for``); with ``rng`` and
    ``augment``, a random zoom, rotation about the centre and sideways crop shift."""
    if rng is None or augment is None:
        return resize_crop_for(source_hw, target_hw).numpy()
    zoom = rng.uniform(*augment.zoom)
    rotation = rng.uniform(-augment.rotation_deg, augment.rotation_deg)
    shift = rng.uniform(-augment.crop_jitter, augment.crop_jitter) * target_hw[1]
    return resize_crop_for(source_hw, target_hw, zoom=zoom, rotation_deg=rotation, crop_shift_x=shift).numpy()


def warp_image(image: np.ndarray, affine: np.ndarray, target_hw: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """The network image (H, W[, C]) from a source image and its (3, 3) pixel map (``image_transform``): area resize
    to the map's scale when it shrinks, then the residual map, bilinear (see the module docstring). ``nearest`` for
    maps of ids, which must not be interpolated."""
    size = (int(target_hw[1]), int(target_hw[0]))
    if nearest:
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            image = image.astype(np.float32)
        return cv2.warpAffine(image, affine[:2], size, flags=cv2.INTER_NEAREST)
    scale = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
    if scale < 1.0 - _SHRINK_TOLERANCE:
        height, width = image.shape[:2]
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = _antialiased_resize(image, (new_h, new_w))
        # The resize moves pixel u to s * (u + 0.5) - 0.5, which is image_affine's convention: remove it from the map.
        affine = affine @ np.linalg.inv(image_affine((new_w / width, new_h / height)).numpy())
    return cv2.warpAffine(image, affine[:2], size, flags=cv2.INTER_LINEAR)


def _antialiased_resize(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """PIL's antialiased bilinear resize (a triangle filter as wide as the scale), as torch implements it, on an
    (H, W[, C]) uint8 or float32 array; same dtype back."""
    image = np.ascontiguousarray(image) if image.flags.writeable else image.copy()  # decoded files are read-only
    pixels = torch.from_numpy(image)
    planes = pixels.permute(2, 0, 1) if pixels.dim() == 3 else pixels[None]
    resized = F.interpolate(planes[None], size=size_hw, mode="bilinear", antialias=True, align_corners=False)[0]
    out = resized.permute(1, 2, 0) if pixels.dim() == 3 else resized[0]
    return np.ascontiguousarray(out.numpy())


def normalise(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(..., 3, H, W) uint8 0-255 (or float 0-1) -> float32 normalised with the model's ``mean`` / ``std``."""
    values = pixels.float().div_(255.0) if pixels.dtype == torch.uint8 else pixels.float()
    shape = (3, 1, 1)
    return (values - torch.tensor(mean, dtype=torch.float32).view(shape)) / torch.tensor(std, dtype=torch.float32).view(shape)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB, as every path of occfeat reads camera images."""
    return np.asarray(Image.open(path).convert("RGB"))
