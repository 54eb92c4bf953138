"""nuScenes-C (Xie et al., "RoboBEV", 2023): the eight camera corruptions as the benchmark made them, and its metrics.

nuScenes-C is a released set of corrupted copies of the nuScenes val key-frame images. RoboBEV wrote it by running
each corruption on every **source image at its own resolution (1600 x 900)**, as 8-bit pixels, then saving JPEGs with
the original file names (``<root>/<Corruption>/<easy|mid|hard>/<CAM_X>/<file>.jpg``). occfeat reads those folders
(``NuScenesBEV(corruption=..., corruption_root=...)``) and, where they are absent (a synthetic world, or a machine
without the download), regenerates the corruptions on the fly with the same definitions, applied at the same place:
to the source image, before the network's resize and crop.

The definitions are RoboBEV's (``corruptions/project/mmdet3d_plugin/corruptions.py``) and, where RoboBEV calls it,
``imagecorruptions``' (``corruptions.py``), written anew here in numpy (the PyPI release of ``imagecorruptions`` no
longer installs against current scikit-image). Each nuScenes-C severity is one of those libraries' 1-5 levels
(RoboBEV ``docs/CREATE.md``):

| Corruption  | easy / mid / hard level | what it does (parameters easy / mid / hard)                                   |
| ----------- | ----------------------- | ----------------------------------------------------------------------------- |
| CameraCrash | 2 / 4 / 5               | that many cameras drawn with replacement, black for the whole split           |
| FrameLost   | 2 / 4 / 5               | each camera of each sample black with p = 2/6, 4/6, 5/6                      |
| MotionBlur  | 2 / 4 / 5               | one-sided Gaussian line blur, (radius, sigma) = (15, 5), (15, 12), (20, 15) px, angle U(-45, 45) deg |
| ColorQuant  | 1 / 2 / 3               | ``PIL.ImageOps.posterize`` to 4 / 3 / 2 bits                                  |
| Brightness  | 2 / 4 / 5               | HSV value + 0.2 / 0.4 / 0.5, clipped                                          |
| LowLight    | 2 / 3 / 4               | min-max stretch to [0, c] with gamma 2, c = 0.40 / 0.30 / 0.20; Poisson noise at 120 / 50 / 30 photons; Gaussian noise sigma 0.018 / 0.026 / 0.038 |
| Fog         | 2 / 4 / 5               | plasma-fractal haze, (strength, wibble decay) = (2.0, 2), (2.5, 1.5), (3.0, 1.4) |
| Snow        | 1 / 2 / 3               | ``imagecorruptions.snow`` at its levels 1 / 2 / 3                             |

Every step keeps the libraries' arithmetic where it decides pixel values: float64 in [0, 1], and the final cast to
8 bits truncates (``np.uint8``), as ``imagecorruptions.corrupt`` and RoboBEV do. RoboBEV ran on mmcv's BGR arrays;
only Snow depends on the channel order (its grey term is ``cv2.COLOR_RGB2GRAY`` applied to a BGR array, i.e.
0.299 B + 0.587 G + 0.114 R), and occfeat computes it that way.

With the same random draws, the six pixel corruptions give the same bytes as an independent transcription of the
reference code on 1600 x 900 images (a check made outside the test suite, during review). What still differs from
the released files, and why:

- **Randomness.** RoboBEV drew from numpy's global generator in loader order, so its draws cannot be replayed. Here
  every draw comes from a generator seeded by a stable hash of (seed, corruption, severity, sample key, camera): the
  same inputs give bit-identical images in every process and worker. CameraCrash draws its cameras once per
  (seed, severity) for the whole split, like RoboBEV's one draw per severity (with ``seed=0`` the cameras are
  ``blanked_cameras("CameraCrash", s)``); FrameLost draws per (seed, sample).
- **JPEG.** The released images were re-encoded as JPEG (OpenCV's default quality 95); on-the-fly images are not.
- **LowLight on a constant image**, where RoboBEV's min-max stretch divides by zero: here it maps to 0.

Metrics (RoboBEV ``docs/RESULTS.md``, with IoU in place of NDS): per corruption the resilience rate
``RR = mean over severities / clean``, and ``mRR`` = the mean RR over the corruptions (all eight for the benchmark's).

Example, one sample's six source images (uint8, (900, 1600, 3) each, ``NUSCENES_CAMERAS`` order)::

    foggy = apply_corruption(images, "Fog", 3, sample_key=sample_token)
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from ..conventions.geometry import NUSCENES_CAMERAS

# RoboBEV's order (the columns of its result tables).
CORRUPTIONS: tuple[str, ...] = (
    "CameraCrash",
    "FrameLost",
    "ColorQuant",
    "MotionBlur",
    "Brightness",
    "LowLight",
    "Fog",
    "Snow",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3)
SEVERITY_NAMES: tuple[str, ...] = ("easy", "mid", "hard")  # also the folder names of the released set
NUSCENES_C_DOWNLOAD = "https://github.com/Daniel-xsy/RoboBEV (docs/DATA_PREPARE.md: the nuScenes-C download)"

# The imagecorruptions / RoboBEV level (1-5) behind each nuScenes-C severity (RoboBEV docs/CREATE.md).
BENCHMARK_LEVELS: dict[str, tuple[int, int, int]] = {
    "CameraCrash": (2, 4, 5),
    "FrameLost": (2, 4, 5),
    "MotionBlur": (2, 4, 5),
    "ColorQuant": (1, 2, 3),
    "Brightness": (2, 4, 5),
    "LowLight": (2, 3, 4),
    "Fog": (2, 4, 5),
    "Snow": (1, 2, 3),
}

SampleKey = str | int

# Parameters per nuScenes-C severity (index severity - 1), i.e. the libraries' tables read at BENCHMARK_LEVELS.
_MOTION_BLUR = ((15, 5.0), (15, 12.0), (20, 15.0))  # imagecorruptions motion_blur (radius, sigma), levels 2/4/5
_BRIGHTNESS = (0.2, 0.4, 0.5)  # imagecorruptions brightness, levels 2/4/5
_COLOR_QUANT_BITS = (4, 3, 2)  # RoboBEV: bits = 5 - level, levels 1/2/3
_LOWLIGHT_TOP = (0.40, 0.30, 0.20)  # RoboBEV low_light: [0.6, 0.5, 0.4, 0.3, 0.2][level], levels 2/3/4
_LOWLIGHT_PHOTONS = (120.0, 50.0, 30.0)  # 10 * [60, 25, 12, 5, 3][level]
_LOWLIGHT_SIGMA = (0.018, 0.026, 0.038)  # 0.1 * [.08, .12, .18, .26, .38][level]
_FOG = ((2.0, 2.0), (2.5, 1.5), (3.0, 1.4))  # imagecorruptions fog (strength, wibble decay), levels 2/4/5
# imagecorruptions snow, levels 1/2/3: (mean, std of the flake field, zoom, threshold, blur radius, blur sigma,
# weight of the image against its whitened version)
_SNOW = (
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
)
_CAMERA_CRASH_DRAWS = (2, 4, 5)  # cameras drawn with replacement
_FRAME_LOST_PROBABILITY = (2 / 6, 4 / 6, 5 / 6)

_CAMERA_FAILURES = ("CameraCrash", "FrameLost")


def check_corruption(name: str, severity: int) -> int:
    """Index 0..2 of ``severity`` for corruption ``name``, or a ``ConfigError`` naming the valid choices."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"corruption {name!r} is unknown; choose one of {list(CORRUPTIONS)} (nuScenes-C's eight).")
    if severity not in SEVERITIES:
        choices = ", ".join(f"{s} ({label})" for s, label in zip(SEVERITIES, SEVERITY_NAMES))
        raise ConfigError(f"severity {severity!r} of {name} is unknown; choose one of {choices}.")
    return SEVERITIES.index(severity)


def _rng(*key: object) -> np.random.Generator:
    """A numpy generator seeded by a stable hash of ``key`` (the same in every process, unlike the salted ``hash``)."""
    digest = hashlib.blake2b("|".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def blanked_cameras(
    name: str, severity: int, *, seed: int = 0, sample_key: SampleKey = 0, num_cameras: int = len(NUSCENES_CAMERAS)
) -> list[int]:
    """Sorted indices (into ``NUSCENES_CAMERAS`` order) of the cameras ``name`` at ``severity`` turns black in the
    sample ``sample_key``: CameraCrash and FrameLost; ``[]`` for the other corruptions.

    CameraCrash draws its cameras once per (seed, severity), with replacement as RoboBEV does, so the same cameras
    are dead in every sample of the split and ``sample_key`` is not used; FrameLost draws each camera per sample.

    >>> [NUSCENES_CAMERAS[i] for i in blanked_cameras("CameraCrash", 1)]  # doctest: +SKIP
    ['CAM_FRONT', 'CAM_BACK_LEFT']
    """
    level = check_corruption(name, severity)
    if name == "CameraCrash":
        drawn = _rng(seed, name, severity).choice(num_cameras, size=_CAMERA_CRASH_DRAWS[level], replace=True)
        return sorted(set(drawn.tolist()))
    if name == "FrameLost":
        lost = _rng(seed, name, severity, sample_key).random(num_cameras) < _FRAME_LOST_PROBABILITY[level]
        return np.flatnonzero(lost).tolist()
    return []


# --------------------------------------------------------------------------------------------------------------------
# Pixel corruptions: one (H, W, 3) uint8 RGB image -> float64 (H, W, 3) in [0, 255] (truncated to uint8 by the caller)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """The libraries' final cast: clip to [0, 255] and truncate, as ``np.uint8(float_array)`` does."""
    return np.clip(x, 0.0, 255.0).astype(np.uint8)


def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] -> HSV in [0, 1], the usual hexcone formulas (hue 0 where the pixel is grey)."""
    value = x.max(axis=-1)
    delta = value - x.min(axis=-1)
    grey = delta == 0
    safe = np.where(grey, 1.0, delta)
    saturation = np.where(grey, 0.0, delta / np.where(value > 0, value, 1.0))
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    hue = np.where(b == value, 4.0 + (r - g) / safe, 0.0)
    hue = np.where(g == value, 2.0 + (b - r) / safe, hue)
    hue = np.where(r == value, (g - b) / safe, hue)  # red wins ties, then green, then blue
    hue = np.where(grey, 0.0, (hue / 6.0) % 1.0)
    return np.stack([hue, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """The inverse of ``_rgb_to_hsv``."""
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = np.floor(hue * 6.0)
    fraction = hue * 6.0 - sector
    p = value * (1.0 - saturation)
    q = value * (1.0 - fraction * saturation)
    t = value * (1.0 - (1.0 - fraction) * saturation)
    choices = [(value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q)]
    index = sector.astype(np.int64) % 6
    return np.stack([np.choose(index, [c[channel] for c in choices]) for channel in range(3)], axis=-1)


def _brightness(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    # imagecorruptions: the HSV value + c, clipped; hue and saturation kept. Computed in the BGR order RoboBEV's
    # arrays had: the round trip is the same function in any channel order, but its float rounding is not.
    hsv = _rgb_to_hsv(image[..., ::-1] / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + _BRIGHTNESS[level], 0.0, 1.0)
    return (np.clip(_hsv_to_rgb(hsv), 0.0, 1.0) * 255.0)[..., ::-1]


def _color_quant(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    # PIL.ImageOps.posterize: keep the top bits of each 8-bit channel.
    mask = (0xFF << (8 - _COLOR_QUANT_BITS[level])) & 0xFF
    return (image & np.uint8(mask)).astype(np.float64)


def _low_light(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    # RoboBEV: a min-max stretch of the image to [0, c] with gamma 2, then Poisson (shot) and Gaussian (read) noise.
    x = image / 255.0
    low, high = x.min(), x.max()
    span = high - low
    stretched = (((x - low) / span) ** 2.0 if span > 0 else np.zeros_like(x)) * _LOWLIGHT_TOP[level]
    photons = _LOWLIGHT_PHOTONS[level]
    shot = np.clip(rng.poisson(stretched * photons) / photons, 0.0, 1.0)
    noisy = np.clip(shot + rng.normal(scale=_LOWLIGHT_SIGMA[level], size=x.shape), 0.0, 1.0)
    return noisy * 255.0


def _line_blur(x: np.ndarray, radius: int, sigma: float, angle_deg: float) -> np.ndarray:
    """imagecorruptions' motion blur of an (H, W[, C]) array: the sum over ``2 radius + 1`` taps of the image shifted
    along the direction ``angle_deg`` by one more pixel per tap, weighted by a one-sided Gaussian of ``sigma``; the
    shifts replicate the border."""
    width = 2 * radius + 1
    # The Gaussian density, then normalised: dividing by sqrt(2 pi) sigma first changes the float sum by one ulp,
    # enough to move a flat 255 to 254 after the truncating cast; this order is the definition's, bit for bit.
    density = np.exp(-(np.arange(width) ** 2) / (2.0 * sigma**2)) / (np.sqrt(2.0 * np.pi) * sigma)
    weights = density / density.sum()
    # The end point of the line, width pixels away, and the per-tap shift rounded as the definition rounds it.
    end_y, end_x = width * np.sin(np.deg2rad(angle_deg)), width * np.cos(np.deg2rad(angle_deg))
    length = math.hypot(end_y, end_x)
    rows, cols = x.shape[:2]
    shifts = []
    for tap in range(width):
        dy = -math.ceil(tap * end_y / length - 0.5)
        dx = -math.ceil(tap * end_x / length - 0.5)
        if abs(dy) >= rows or abs(dx) >= cols:  # the motion left the image: the remaining taps are dropped
            break
        shifts.append((dy, dx))
    pad = max(max(abs(dy), abs(dx)) for dy, dx in shifts)
    padding = ((pad, pad), (pad, pad)) + ((0, 0),) * (x.ndim - 2)
    padded = np.pad(x, padding, mode="edge")
    blurred = np.zeros(x.shape, np.float64)
    for weight, (dy, dx) in zip(weights, shifts):  # output (r, c) reads input (r - dy, c - dx), clamped
        blurred += weight * padded[pad - dy : pad - dy + rows, pad - dx : pad - dx + cols]
    return blurred


def _motion_blur(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    radius, sigma = _MOTION_BLUR[level]
    return _line_blur(image.astype(np.float64), radius, sigma, rng.uniform(-45.0, 45.0))


def _plasma_fractal(size: int, wibble_decay: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size) in [0, 1]: the diamond-square height map of imagecorruptions' fog (``size`` a power of two,
    periodic, corner 0, displacement ``wibble * U(-wibble, wibble)`` with wibble 100 divided by ``wibble_decay`` at
    every halving of the step)."""
    field = np.empty((size, size), np.float64)
    field[0, 0] = 0.0
    step, wibble = size, 100.0

    def displaced(mean_of_four: np.ndarray) -> np.ndarray:
        return mean_of_four / 4.0 + wibble * rng.uniform(-wibble, wibble, mean_of_four.shape)

    while step >= 2:
        half = step // 2
        corners = field[0:size:step, 0:size:step]
        # Square step: the centre of every square from its four corners.
        around = corners + np.roll(corners, -1, axis=0)
        around = around + np.roll(around, -1, axis=1)
        field[half:size:step, half:size:step] = displaced(around)
        # Diamond step: the edge midpoints from the two corners and two centres around each.
        centres = field[half:size:step, half:size:step]
        top = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        field[0:size:step, half:size:step] = displaced(top)
        left = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        field[half:size:step, 0:size:step] = displaced(left)
        step //= 2
        wibble /= wibble_decay
    field -= field.min()
    return field / field.max()


def _fog(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = _FOG[level]
    rows, cols = image.shape[:2]
    size = 1 << (max(rows, cols, 3) - 1).bit_length()  # the next power of two of the longest side
    x = image / 255.0
    peak = x.max()
    hazy = x + strength * _plasma_fractal(size, decay, rng)[:rows, :cols, None]
    return np.clip(hazy * peak / (peak + strength), 0.0, 1.0) * 255.0


def _clipped_zoom(field: np.ndarray, factor: float) -> np.ndarray:
    """imagecorruptions' ``clipped_zoom`` of a 2-D field: the centred 1/factor crop, zoomed back by ``factor`` with
    linear interpolation (``scipy.ndimage.zoom``, order 1); the result may exceed the input by a pixel or two."""
    from scipy.ndimage import zoom

    rows, cols = field.shape
    crop_rows, crop_cols = math.ceil(rows / factor), math.ceil(cols / factor)
    top, left = (rows - crop_rows) // 2, (cols - crop_cols) // 2
    return zoom(field[top : top + crop_rows, left : left + crop_cols], factor, order=1)


def _snow(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    mean, std, zoom_factor, threshold, radius, sigma, keep = _SNOW[level]
    rows, cols = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    flakes = _clipped_zoom(rng.normal(loc=mean, scale=std, size=(rows, cols)), zoom_factor)
    flakes[flakes < threshold] = 0.0
    flakes = _line_blur(np.clip(flakes, 0.0, 1.0), radius, sigma, rng.uniform(-135.0, -45.0))
    flakes = (np.round(flakes * 255.0).astype(np.uint8) / 255.0)[:rows, :cols, None]
    # The released set ran on BGR arrays: cv2's RGB2GRAY weights fell on (B, G, R).
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(x[..., ::-1]), cv2.COLOR_RGB2GRAY)[..., None]
    whitened = keep * x + (1.0 - keep) * np.maximum(x, grey * 1.5 + 0.5)
    return np.clip(whitened + flakes + np.rot90(flakes, k=2), 0.0, 1.0) * 255.0


_PIXEL_CORRUPTIONS = {
    "ColorQuant": _color_quant,
    "MotionBlur": _motion_blur,
    "Brightness": _brightness,
    "LowLight": _low_light,
    "Fog": _fog,
    "Snow": _snow,
}


# --------------------------------------------------------------------------------------------------------------------
# Public API


def _check_image(image: object, where: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(
            f"{where}: expected an 8-bit RGB source image, a uint8 array (H, W, 3), got {got}. nuScenes-C corrupts the "
            "images as read from disk (np.asarray(PIL.Image.open(path).convert('RGB'))), before any resize."
        )
    return image


def corrupt_image(image: np.ndarray, name: str, severity: int, *, seed: int = 0, key: SampleKey = 0) -> np.ndarray:
    """One camera's source image (H, W, 3) uint8 RGB corrupted by a pixel corruption (every one but CameraCrash and
    FrameLost, which act on a sample's set of cameras: see ``apply_corruption``). Deterministic in (seed, key)."""
    level = check_corruption(name, severity)
    if name in _CAMERA_FAILURES:
        raise ConfigError(f"{name} blanks whole cameras of a sample: use apply_corruption on the sample's images.")
    _check_image(image, "image")
    return _to_uint8(_PIXEL_CORRUPTIONS[name](image, level, _rng(seed, name, severity, key)))


def apply_corruption(
    images: Sequence[np.ndarray] | np.ndarray, name: str, severity: int, *, seed: int = 0, sample_key: SampleKey = 0
) -> list[np.ndarray]:
    """Corrupt one sample's camera images with ``name`` (one of ``CORRUPTIONS``) at ``severity`` (1, 2 or 3).

    ``images``: the sample's source images in ``NUSCENES_CAMERAS`` order, each (H, W, 3) uint8 RGB at the resolution
    it was recorded at (a list, or an (N, H, W, 3) array). Returns a list of uint8 images of the same shapes.
    Deterministic in (seed, sample_key): camera ``i`` of a pixel corruption draws from (seed, name, severity,
    sample_key, i). Cameras that CameraCrash and FrameLost leave alone are returned unchanged.
    """
    check_corruption(name, severity)
    images = [_check_image(image, f"images[{i}]") for i, image in enumerate(images)]
    if name in _CAMERA_FAILURES:
        dead = set(blanked_cameras(name, severity, seed=seed, sample_key=sample_key, num_cameras=len(images)))
        return [np.zeros_like(image) if i in dead else image for i, image in enumerate(images)]
    return [corrupt_image(image, name, severity, seed=seed, key=f"{sample_key}|{i}") for i, image in enumerate(images)]


# --------------------------------------------------------------------------------------------------------------------
# Metrics and tables


def resilience(
    scores: Mapping[tuple[str, int], float], clean: float
) -> tuple[dict[str, float], float]:
    """RoboBEV's resilience: ``RR[c] = mean over the severities of c / clean`` per corruption present in ``scores``
    ((corruption, severity) -> metric), and ``mRR`` = the mean RR over those corruptions.

    The benchmark's RR averages all three severities and its mRR all eight corruptions; over fewer, the numbers are
    partial (``corruption_table`` marks them). An RR is NaN when ``clean`` is 0 or NaN, or when a score is NaN (a
    class absent from the evaluated samples); ``mRR`` is the mean of the finite RRs (NaN when there is none)."""
    per_corruption: dict[str, list[float]] = {}
    for (name, severity), value in scores.items():
        check_corruption(name, severity)
        per_corruption.setdefault(name, []).append(value)
    rates = {
        name: (sum(values) / len(values) / clean if clean else float("nan"))
        for name in CORRUPTIONS
        if (values := per_corruption.get(name))
    }
    finite = [rate for rate in rates.values() if math.isfinite(rate)]
    return rates, (sum(finite) / len(finite) if finite else float("nan"))


def corruption_table(results: Mapping[tuple[str, int], float], *, clean: float | None = None, digits: int = 1) -> str:
    """A markdown table of a metric per (corruption, severity): a row per corruption present in ``results``, in
    ``CORRUPTIONS`` order; a column per severity and their mean ("-" where missing); with ``clean``, the clean score
    and the resilience rate RR (%) per row (marked "*" when over fewer than the three severities), and mRR (%) on a
    last row, naming over how many corruptions with a finite RR (the benchmark's mRR needs all eight).

    >>> print(corruption_table({("Fog", 1): 30.0, ("Fog", 2): 25.0, ("Fog", 3): 20.0}, clean=40.0))
    | Corruption | easy (1) | mid (2) | hard (3) | mean | RR (%) |
    | --- | ---: | ---: | ---: | ---: | ---: |
    | Clean | 40.0 | | | | |
    | Fog | 30.0 | 25.0 | 20.0 | 25.0 | 62.5 |
    | mRR (1 of 8 corruptions) | | | | | 62.5 |
    """
    for name, severity in results:
        check_corruption(name, severity)
    header = " | ".join(f"{label} ({s})" for label, s in zip(SEVERITY_NAMES, SEVERITIES))
    extra = " RR (%) |" if clean is not None else ""
    lines = [f"| Corruption | {header} | mean |{extra}", "| --- |" + " ---: |" * (len(SEVERITIES) + 1 + bool(extra))]
    rates, mean_rate = resilience(results, clean) if clean is not None else ({}, float("nan"))
    blanks = " |" * (len(SEVERITIES) + bool(extra))
    if clean is not None:
        lines.append(f"| Clean | {clean:.{digits}f} |{blanks}")
    partial = False
    for name in CORRUPTIONS:
        values = [results.get((name, severity)) for severity in SEVERITIES]
        present = [v for v in values if v is not None]
        if not present:
            continue
        cells = ["-" if v is None else f"{v:.{digits}f}" for v in values]
        cells.append(f"{sum(present) / len(present):.{digits}f}")
        if clean is not None:
            mark = "*" if len(present) < len(SEVERITIES) else ""
            partial |= bool(mark)
            cells.append(f"{100.0 * rates[name]:.{digits}f}{mark}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if clean is not None and rates:
        counted = sum(math.isfinite(rate) for rate in rates.values())
        lines.append(f"| mRR ({counted} of {len(CORRUPTIONS)} corruptions) |{' |' * (len(SEVERITIES) + 1)} "
                     f"{100.0 * mean_rate:.{digits}f} |")
    if partial:
        lines += ["", "\\* RR over the severities evaluated; the benchmark's averages all three."]
    return "\n".join(lines)
