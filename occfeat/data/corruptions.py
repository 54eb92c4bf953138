"""nuScenes-C camera corruptions (Xie et al., "RoboBEV", 2023), applied on the fly in pure PyTorch.

nuScenes-C corrupts the six camera images of each sample with eight corruptions at three severities (easy, mid,
hard). Here each one is a function of one sample's images (N, 3, H, W) in [0, 1], before ImageNet normalisation,
so that evaluation can corrupt the dataset's tensors as they come (``corrupt_normalised``).

Models, then their parameters (W is the image width, so a corruption looks the same at every resolution):

- Brightness: lift HSV value, clipped at 1; hue and saturation kept.
- LowLight: ``dark = gain * x^2`` (an under-exposed sensor crushes the shadows), then shot noise
  ``Poisson(photons * dark) / photons`` and Gaussian read noise.
- Fog: Koschmieder's law ``x t + 0.8 (1 - t)``, transmission ``t = 0.02 ** (d / V)`` for visibility V and row depth d.
- Snow: whiten toward 0.9, then screen-blend bright flakes streaked by their fall (within 30 deg of vertical).
- MotionBlur: a centred line kernel per camera, angle uniform in (-45, 45) deg, as one depthwise convolution.
- ColorQuant: posterise, keeping the top bits of each 8-bit channel (``PIL.ImageOps.posterize``).
- CameraCrash: that many distinct cameras output black. FrameLost: each camera independently black.

| Corruption  | Parameter                                | easy (1) | mid (2)  | hard (3) |
| ----------- | ---------------------------------------- | -------- | -------- | -------- |
| Brightness  | value lift                               | +0.2     | +0.4     | +0.5     |
| LowLight    | gain                                     | 0.4      | 0.3      | 0.2      |
|             | photons of a white pixel (shot noise)    | 120      | 50       | 30       |
|             | read noise sigma                         | 0.018    | 0.026    | 0.038    |
| Fog         | visibility V                             | 200 m    | 100 m    | 50 m     |
| Snow        | whitening                                | 0.15     | 0.25     | 0.35     |
|             | flake cells (0.7 % W wide) with a flake  | 1.5 %    | 3 %      | 6 %      |
|             | streak length                            | 0.8 % W  | 1.2 % W  | 1.6 % W  |
| MotionBlur  | line length                              | 0.67 % W | 1.49 % W | 1.89 % W |
| ColorQuant  | bits per channel                         | 4        | 3        | 2        |
| CameraCrash | cameras blanked                          | 2        | 3        | 4        |
| FrameLost   | probability that a camera is blanked     | 1/3      | 2/3      | 5/6      |

Where the numbers come from. nuScenes-C runs ``imagecorruptions`` (and RoboBEV's own functions) at its "easy / mid /
hard" = severities 2/4/5 (Brightness, MotionBlur, Fog, CameraCrash, FrameLost), 1/2/3 (ColorQuant, Snow), 2/3/4
(LowLight) on the 1600 x 900 originals.

- Brightness, LowLight, ColorQuant, FrameLost take those values as they are. LowLight drops RoboBEV's per-image
  min/max stretch, so the corruption does not depend on the image's content.
- MotionBlur: ``imagecorruptions`` blurs along a one-sided Gaussian (radius/sigma 15/5, 15/12, 20/15 px at 1600 px);
  the uniform centred line with the same spread is 10.7 / 23.8 / 30.2 px long at 1600 px. Centred, because a
  one-sided kernel also shifts the image by up to 11 px, which a BEV network would read as a calibration error.
- CameraCrash: RoboBEV draws 2/4/5 cameras *with* replacement, i.e. 1.8 / 3.1 / 3.6 distinct cameras on average;
  we blank that many, rounded, as fixed counts, so every sample of a severity loses the same number of views.
- Fog: the atmospheric scattering model instead of a plasma fractal, with meteorological visibility V (the distance
  at which contrast falls to 2 %) halving per severity. Depth d per row is that of a flat road seen from the nominal
  nuScenes camera (1.5 m high, focal 0.79 W, horizon 0.256 W above the bottom row; ``occfeat.models.geometry``),
  capped at 50 m, the edge of the BEV raster: the fog thickens toward the horizon, and rows above it (buildings,
  the tops of vehicles) get the 50 m haze. The mean transmission over a 448 x 800 image is 0.55 / 0.35 / 0.20,
  against the uniform contrast factor 1/3, 2/7, 1/4 of ``imagecorruptions``' fog at nuScenes-C's severities.
- Snow: ``imagecorruptions``' recipe (whitening, then bright motion-blurred flakes) with explicit parameters that
  all grow with severity (its own zoom and threshold do not).

Randomness (LowLight's noise, Snow's flakes, MotionBlur's angle, the cameras CameraCrash and FrameLost blank) comes
from a ``torch.Generator`` seeded by a stable hash of (seed, corruption, sample_key): the same inputs give bit-identical
outputs on the same device. Severity is left out of the hash on purpose: all severities of a sample share one draw,
so a harder severity is the same event made worse, not another one (the easy flakes plus more, the same blur angle,
the easy severity's blanked cameras plus more), and no sample gets milder with severity by the luck of the draw.
Brightness, Fog and ColorQuant draw nothing. Camera choices are drawn on the CPU, the same whatever the device.

Example, with the dataset's normalised images (N, 3, H, W) of the sample with token ``token``::

    corrupted = corrupt_normalised(sample["images"], "Snow", 2, sample_key=token)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError
from ..models.backbones import IMAGENET_MEAN, IMAGENET_STD
from ..models.geometry import NUSCENES_CAMERAS

CORRUPTIONS: tuple[str, ...] = (
    "Brightness",
    "LowLight",
    "Fog",
    "Snow",
    "MotionBlur",
    "ColorQuant",
    "CameraCrash",
    "FrameLost",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3)
SEVERITY_NAMES: tuple[str, ...] = ("easy", "mid", "hard")

SampleKey = str | int

# Per-severity parameters, indexed by severity - 1 (see the table in the module docstring).
_BRIGHTNESS_LIFT = (0.2, 0.4, 0.5)
_LOWLIGHT_GAIN = (0.4, 0.3, 0.2)
_LOWLIGHT_PHOTONS = (120.0, 50.0, 30.0)  # photon count of a white pixel after darkening: lower = more shot noise
_LOWLIGHT_READ_NOISE = (0.018, 0.026, 0.038)
_FOG_VISIBILITY_M = (200.0, 100.0, 50.0)
_SNOW_WHITENING = (0.15, 0.25, 0.35)
_SNOW_DENSITY = (0.015, 0.03, 0.06)
_SNOW_STREAK = (0.008, 0.012, 0.016)  # fraction of the width: snow falls slowly, short streaks
_MOTION_BLUR_LENGTH = (0.0067, 0.0149, 0.0189)  # fraction of the width
_COLOR_QUANT_BITS = (4, 3, 2)
_CAMERA_CRASH_COUNT = (2, 3, 4)
_FRAME_LOST_PROBABILITY = (2 / 6, 4 / 6, 5 / 6)

# Fog: Koschmieder's law and the flat-road depth of each row, from the nominal nuScenes rig.
_FOG_AIRLIGHT = 0.8
_VISIBILITY_CONTRAST = 0.02  # meteorological visibility: the distance at which contrast falls to 2 %
_CAMERA_HEIGHT_M = 1.5
_FOCAL_PER_WIDTH = 0.79  # 1266 px / 1600 px
_HORIZON_ABOVE_BOTTOM_PER_WIDTH = 0.256  # (900 - 491) px / 1600 px: the horizon of a level camera sits at c_y
_FAR_M = 50.0  # the BEV raster reaches 50 m: nothing farther matters to the network

# Snow
_SNOW_SKY = 0.9
_SNOW_FLAKE_SIZE = 0.007  # fraction of the width: 3 px at 480 px, 11 px at 1600 px
_SNOW_FALL_SPREAD = math.radians(30.0)  # streaks within 30 deg of vertical (wind, ego motion)

_CAMERA_FAILURES = ("CameraCrash", "FrameLost")


def _level(name: str, severity: int) -> int:
    """Index 0..2 of ``severity`` for ``name``, or a ``ConfigError`` naming the valid choices."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"corruption {name!r} is unknown; choose one of {list(CORRUPTIONS)}.")
    if severity not in SEVERITIES:
        choices = ", ".join(f"{s} ({label})" for s, label in zip(SEVERITIES, SEVERITY_NAMES))
        raise ConfigError(f"severity {severity!r} of {name} is unknown; choose one of {choices}.")
    return SEVERITIES.index(severity)


def _stable_seed(seed: int, name: str, sample_key: SampleKey) -> int:
    """A 63-bit seed from (seed, name, sample_key), the same in every process (unlike the salted ``hash``)."""
    digest = hashlib.blake2b(f"{seed}|{name}|{sample_key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _generator(seed: int, name: str, sample_key: SampleKey, device: torch.device | str) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(_stable_seed(seed, name, sample_key))
    return generator


def blanked_cameras(
    name: str, severity: int, *, seed: int = 0, sample_key: SampleKey = 0, num_cameras: int = len(NUSCENES_CAMERAS)
) -> list[int]:
    """Sorted indices (into ``NUSCENES_CAMERAS`` order) of the cameras that ``name`` at ``severity`` turns black in
    this sample: CameraCrash and FrameLost; ``[]`` for the other corruptions. ``apply_corruption`` blanks exactly these.

    A harder severity blanks a superset of an easier one's cameras. Pass the scene name as ``sample_key`` for
    CameraCrash to keep the same cameras dead through a scene, as a real crash would.

    >>> [NUSCENES_CAMERAS[i] for i in blanked_cameras("CameraCrash", 1, sample_key="scene-0103")]
    ['CAM_FRONT', 'CAM_BACK_LEFT']
    """
    level = _level(name, severity)
    if name not in _CAMERA_FAILURES:
        return []
    generator = _generator(seed, name, sample_key, "cpu")
    if name == "CameraCrash":
        order = torch.randperm(num_cameras, generator=generator)
        return sorted(order[: _CAMERA_CRASH_COUNT[level]].tolist())
    lost = torch.rand(num_cameras, generator=generator) < _FRAME_LOST_PROBABILITY[level]
    return lost.nonzero().flatten().tolist()


# --------------------------------------------------------------------------------------------------------------------
# Pixel corruptions: (N, 3, H, W) float32 in [0, 1], severity index, generator on the images' device -> (N, 3, H, W)


def _brightness(x: Tensor, level: int, generator: torch.Generator) -> Tensor:
    value = x.amax(dim=1, keepdim=True)  # HSV V, (N, 1, H, W)
    lifted = (value + _BRIGHTNESS_LIFT[level]).clamp(max=1.0)
    # With hue and saturation fixed every channel is proportional to V; black has no hue and turns grey.
    return torch.where(value > 0, x * (lifted / value.clamp(min=1e-12)), lifted)


def _low_light(x: Tensor, level: int, generator: torch.Generator) -> Tensor:
    # The square crushes the shadows as an under-exposed sensor's response does; the noise is that of few photons.
    dark = _LOWLIGHT_GAIN[level] * x.square()
    photons = _LOWLIGHT_PHOTONS[level]
    shot = torch.poisson(dark * photons, generator=generator) / photons
    read = torch.randn(x.shape, generator=generator, device=x.device) * _LOWLIGHT_READ_NOISE[level]
    return shot + read


def _row_depth(height: int, width: int, device: torch.device) -> Tensor:
    """(H, 1) metres: how far along a flat road each image row looks from the nominal nuScenes camera, at most
    ``_FAR_M`` (rows at or above the horizon)."""
    rows = torch.arange(height, device=device, dtype=torch.float32) + 0.5  # pixel centres
    horizon = height - _HORIZON_ABOVE_BOTTOM_PER_WIDTH * width
    below_horizon = (rows - horizon).clamp(min=1e-6)
    depth = _CAMERA_HEIGHT_M * _FOCAL_PER_WIDTH * width / below_horizon
    return depth.clamp(max=_FAR_M).unsqueeze(1)


def _fog(x: Tensor, level: int, generator: torch.Generator) -> Tensor:
    depth = _row_depth(x.shape[-2], x.shape[-1], x.device)
    transmission = _VISIBILITY_CONTRAST ** (depth / _FOG_VISIBILITY_M[level])
    return x * transmission + _FOG_AIRLIGHT * (1.0 - transmission)


def _line_kernels(length_px: float, angle: Tensor) -> Tensor:
    """(N, K, K) kernels summing to 1: a line ``length_px`` long centred on the middle tap, at ``angle`` (N,)
    radians (x right, y down). Points along the line are splatted with bilinear weights, so a sub-pixel length
    blurs a little rather than not at all."""
    size = 2 * math.ceil(length_px / 2) + 1
    along = torch.linspace(-length_px / 2, length_px / 2, 4 * size + 1, device=angle.device)  # (S,)
    taps = torch.arange(size, device=angle.device) - size // 2  # (K,)
    x = along * angle.cos()[:, None]  # (N, S)
    y = along * angle.sin()[:, None]
    weight_x = (1.0 - (x[..., None] - taps).abs()).clamp(min=0.0)  # (N, S, K)
    weight_y = (1.0 - (y[..., None] - taps).abs()).clamp(min=0.0)
    kernels = torch.einsum("nsi,nsj->nij", weight_y, weight_x)
    return kernels / kernels.sum(dim=(1, 2), keepdim=True)


def _line_blur(x: Tensor, length_px: float, angle: Tensor) -> Tensor:
    """(N, C, H, W) blurred along a centred line per camera (angle (N,) radians), as one depthwise convolution."""
    n, c, h, w = x.shape
    kernels = _line_kernels(length_px, angle).repeat_interleave(c, dim=0).unsqueeze(1)  # (N * C, 1, K, K)
    pad = kernels.shape[-1] // 2
    # Replicate the border: zero padding would darken a frame of width `pad` around every image.
    padded = F.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="replicate")
    return F.conv2d(padded, kernels, groups=n * c).reshape(n, c, h, w)


def _motion_blur(x: Tensor, level: int, generator: torch.Generator) -> Tensor:
    # imagecorruptions' range: within 45 deg of horizontal, where most of a driving car's image motion is.
    angle = (torch.rand(x.shape[0], generator=generator, device=x.device) - 0.5) * (math.pi / 2)
    return _line_blur(x, _MOTION_BLUR_LENGTH[level] * x.shape[-1], angle)


def _snow(x: Tensor, level: int, generator: torch.Generator) -> Tensor:
    n, _, h, w = x.shape
    cell = max(1, round(_SNOW_FLAKE_SIZE * w))
    grid = (n, 1, math.ceil(h / cell), math.ceil(w / cell))
    # The same draws at every severity: a harder one keeps the easier one's flakes and adds more.
    chance = torch.rand(grid, generator=generator, device=x.device)
    brightness = 0.5 + 0.5 * torch.rand(grid, generator=generator, device=x.device)
    angle = math.pi / 2 + (torch.rand(n, generator=generator, device=x.device) - 0.5) * (2 * _SNOW_FALL_SPREAD)
    flakes = torch.where(chance < _SNOW_DENSITY[level], brightness, torch.zeros_like(brightness))
    flakes = F.interpolate(flakes, size=(grid[2] * cell, grid[3] * cell), mode="bilinear")[..., :h, :w]
    streak_px = _SNOW_STREAK[level] * w
    # A streak spreads its flake's light over its length: scale back so that a lone streak keeps the flake's brightness.
    streaks = (_line_blur(flakes, streak_px, angle) * max(1.0, streak_px / cell)).clamp(max=1.0)
    whitened = x + _SNOW_WHITENING[level] * (_SNOW_SKY - x)
    return 1.0 - (1.0 - whitened) * (1.0 - streaks)  # screen blend: flakes only add light


def _color_quant(x: Tensor, level: int, generator: torch.Generator) -> Tensor:
    # PIL.ImageOps.posterize on the 8-bit image: truncate each channel to its top bits.
    step = 2 ** (8 - _COLOR_QUANT_BITS[level])
    return torch.floor(torch.round(x * 255.0) / step) * step / 255.0


_PIXEL_CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "Brightness": _brightness,
    "LowLight": _low_light,
    "Fog": _fog,
    "Snow": _snow,
    "MotionBlur": _motion_blur,
    "ColorQuant": _color_quant,
}


# --------------------------------------------------------------------------------------------------------------------
# Public API


def _check_images(images: Tensor) -> None:
    if not torch.is_tensor(images) or not images.is_floating_point():
        got = images.dtype if torch.is_tensor(images) else type(images).__name__
        raise InputError(f"images: expected a float tensor (N, 3, H, W) or (B, N, 3, H, W) in [0, 1], got {got}.")
    if images.dim() not in (4, 5) or images.shape[-3] != 3:
        raise InputError(
            f"images: expected shape (N, 3, H, W) or (B, N, 3, H, W) (RGB cameras), got {tuple(images.shape)}."
        )


def _sample_keys(sample_key: SampleKey | Sequence[SampleKey], batch: int) -> list[SampleKey]:
    if isinstance(sample_key, (str, int)):
        return [sample_key] * batch
    keys = list(sample_key)
    if len(keys) != batch:
        raise InputError(f"sample_key: {len(keys)} keys for a batch of {batch} samples; pass one key per sample.")
    return keys


def apply_corruption(
    images: Tensor, name: str, severity: int, *, seed: int = 0, sample_key: SampleKey | Sequence[SampleKey] = 0
) -> Tensor:
    """Corrupt one sample's camera images with ``name`` (one of ``CORRUPTIONS``) at ``severity`` (1, 2 or 3).

    ``images``: (N, 3, H, W) float RGB in [0, 1], cameras in ``NUSCENES_CAMERAS`` order, or a batch
    (B, N, 3, H, W); then ``sample_key`` is one key per sample (e.g. the sample tokens), or one key for all of them
    (the same draw for every sample). Returns the same shape and dtype, in [0, 1]. Deterministic in
    (seed, sample_key); cameras that CameraCrash and FrameLost leave alone are returned bit for bit.

    >>> foggy = apply_corruption(torch.rand(6, 3, 224, 480), "Fog", 3)
    """
    level = _level(name, severity)
    _check_images(images)
    if images.dim() == 5:
        keys = _sample_keys(sample_key, images.shape[0])
        return torch.stack(
            [apply_corruption(one, name, severity, seed=seed, sample_key=key) for one, key in zip(images, keys)]
        )
    if not isinstance(sample_key, (str, int)):
        raise InputError(f"sample_key: one key (str or int) for one sample's images (N, 3, H, W), got {sample_key!r}.")
    if name in _CAMERA_FAILURES:
        blanked = blanked_cameras(name, severity, seed=seed, sample_key=sample_key, num_cameras=images.shape[0])
        out = images.clone()
        out[blanked] = 0.0
        return out
    generator = _generator(seed, name, sample_key, images.device)
    corrupted = _PIXEL_CORRUPTIONS[name](images.float(), level, generator)
    return corrupted.clamp(0.0, 1.0).to(images.dtype)


def corrupt_normalised(
    images_normalised: Tensor,
    name: str,
    severity: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    seed: int = 0,
    sample_key: SampleKey | Sequence[SampleKey] = 0,
) -> Tensor:
    """``apply_corruption`` for network-normalised images (..., 3, H, W), as ``NuScenesBEV`` yields them:
    un-normalise with (``mean``, ``std``), corrupt, normalise again. Same shape and dtype."""
    _check_images(images_normalised)
    mean_t = torch.as_tensor(mean, dtype=images_normalised.dtype, device=images_normalised.device).view(3, 1, 1)
    std_t = torch.as_tensor(std, dtype=images_normalised.dtype, device=images_normalised.device).view(3, 1, 1)
    # Clamp only removes the rounding error of normalising and un-normalising.
    images = (images_normalised * std_t + mean_t).clamp(0.0, 1.0)
    corrupted = apply_corruption(images, name, severity, seed=seed, sample_key=sample_key)
    return (corrupted - mean_t) / std_t


def corruption_table(results: Mapping[tuple[str, int], float], *, digits: int = 1) -> str:
    """A markdown table of a metric per (corruption, severity): a row per corruption present in ``results``, in
    ``CORRUPTIONS`` order; a column per severity and their mean (over the severities present; "-" where missing).

    >>> print(corruption_table({("Fog", 1): 30.0, ("Fog", 2): 25.0, ("Fog", 3): 20.0}))
    | Corruption | easy (1) | mid (2) | hard (3) | mean |
    | --- | ---: | ---: | ---: | ---: |
    | Fog | 30.0 | 25.0 | 20.0 | 25.0 |
    """
    for name, severity in results:
        _level(name, severity)
    header = " | ".join(f"{label} ({s})" for label, s in zip(SEVERITY_NAMES, SEVERITIES))
    lines = [f"| Corruption | {header} | mean |", "| --- |" + " ---: |" * (len(SEVERITIES) + 1)]
    for name in CORRUPTIONS:
        values = [results.get((name, severity)) for severity in SEVERITIES]
        present = [v for v in values if v is not None]
        if not present:
            continue
        cells = ["-" if v is None else f"{v:.{digits}f}" for v in values]
        cells.append(f"{sum(present) / len(present):.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
