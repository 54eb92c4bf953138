"""nuScenes-C corruptions as RoboBEV defines them, on 8-bit source images: determinism, the documented parameters,
independent references (PIL posterize, matplotlib's HSV), RR / mRR, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image, ImageOps

from occfeat.data.corruptions import (
    BENCHMARK_LEVELS,
    CORRUPTIONS,
    SEVERITIES,
    _line_blur,
    _plasma_fractal,
    apply_corruption,
    blanked_cameras,
    corrupt_image,
    corruption_table,
    resilience,
)
from occfeat.errors import ConfigError, InputError

PIXEL_CORRUPTIONS = tuple(name for name in CORRUPTIONS if name not in ("CameraCrash", "FrameLost"))
RANDOM_PIXEL_CORRUPTIONS = ("LowLight", "Snow", "MotionBlur", "Fog")


def street_cameras(num_cameras: int = 6, height: int = 72, width: int = 128, seed: int = 0) -> list[np.ndarray]:
    """(H, W, 3) uint8 images: a sky-to-road gradient, dark poles, a checkered facade band and some texture, tinted per
    camera, so blurs, haze and quantisation have edges and gradients to act on and no two cameras are equal."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    gray = 0.2 + 0.3 * (1 - rows / height) + 0.3 * cols / width
    gray = gray - 0.3 * (((cols // 6) % 4 == 0) & (rows > height // 3))
    gray = gray + 0.15 * (((rows > 0.4 * height) & (rows < 0.6 * height)) & ((rows // 3 + cols // 3) % 2 == 0))
    images = []
    for camera in range(num_cameras):
        tint = np.roll([1.0, 0.9, 0.8], camera)
        noisy = gray[..., None] * tint + rng.normal(scale=0.02, size=(height, width, 3))
        images.append(np.round(np.clip(noisy, 0.05, 0.95) * 255).astype(np.uint8))
    return images


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_is_deterministic_keeps_uint8_and_changes_the_images(name):
    images = street_cameras()
    for severity in SEVERITIES:
        keys = [f"token-{i}" for i in range(4)]  # FrameLost may spare every camera of one sample
        outs = [apply_corruption(images, name, severity, seed=3, sample_key=key) for key in keys]
        again = [apply_corruption([im.copy() for im in images], name, severity, seed=3, sample_key=key) for key in keys]
        for out, repeat in zip(outs, again):
            assert all(o.dtype == np.uint8 and o.shape == i.shape for o, i in zip(out, images))
            assert all(np.array_equal(o, r) for o, r in zip(out, repeat)), "same (seed, sample): same bits"
        assert any(not np.array_equal(o, i) for out in outs for o, i in zip(out, images)), (name, severity)


@pytest.mark.parametrize("name", RANDOM_PIXEL_CORRUPTIONS)
def test_random_corruptions_draw_per_seed_sample_and_camera(name):
    images = street_cameras()
    reference = apply_corruption(images, name, 2, seed=0, sample_key="a")
    assert not np.array_equal(reference[0], apply_corruption(images, name, 2, seed=1, sample_key="a")[0])
    assert not np.array_equal(reference[0], apply_corruption(images, name, 2, seed=0, sample_key="b")[0])
    same = [images[0]] * 2
    first, second = apply_corruption(same, name, 2, sample_key="a")
    assert not np.array_equal(first, second), "each camera has its own draw"


@pytest.mark.parametrize("name", ("Brightness", "ColorQuant"))
def test_brightness_and_color_quant_draw_nothing(name):
    images = street_cameras()
    a = apply_corruption(images, name, 3, seed=0, sample_key="a")
    b = apply_corruption(images, name, 3, seed=9, sample_key="b")
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("severity, bits", list(zip(SEVERITIES, (4, 3, 2))))
def test_color_quant_is_pil_posterize(severity, bits):
    for image in street_cameras(2):
        expected = np.asarray(ImageOps.posterize(Image.fromarray(image), bits))
        np.testing.assert_array_equal(corrupt_image(image, "ColorQuant", severity), expected)


@pytest.mark.parametrize("severity, lift", list(zip(SEVERITIES, (0.2, 0.4, 0.5))))
def test_brightness_is_the_hsv_value_lift_of_imagecorruptions(severity, lift):
    image = street_cameras(1)[0].copy()
    image[:4, :4] = 0  # black: no hue, turns grey
    bgr = image[..., ::-1] / 255.0  # the channel order RoboBEV's arrays had
    hsv = rgb_to_hsv(bgr)
    hsv[..., 2] = np.clip(hsv[..., 2] + lift, 0.0, 1.0)
    expected = (np.clip(hsv_to_rgb(hsv), 0.0, 1.0) * 255.0).astype(np.uint8)[..., ::-1]  # the truncating cast
    got = corrupt_image(image, "Brightness", severity)
    np.testing.assert_array_equal(got, expected)
    assert (got[:4, :4] == int(lift * 255)).all()


def test_motion_blur_is_a_one_sided_gaussian_line():
    dot = np.zeros((9, 41))
    dot[4, 20] = 1.0
    blurred = _line_blur(dot, radius=3, sigma=2.0, angle_deg=0.0)
    weights = np.exp(-(np.arange(7) ** 2) / 8.0)
    weights /= weights.sum()
    # Tap i reads the image i pixels to its right: the dot smears i pixels to the left with weight w_i.
    np.testing.assert_allclose(blurred[4, 14:21][::-1], weights)
    assert blurred.sum() == pytest.approx(1.0) and blurred[[0, 1, 2, 3, 5, 6, 7, 8]].max() == 0
    # Borders replicate, so no dark frame: a saturated flat stays within one level of 255 at every severity. Exactly
    # 255 or 254 depends on the last bit of the weights' float sum, which numpy's SIMD summation makes CPU-dependent
    # (255 on some of our machines, 254 on others), before the definition's truncating cast.
    flat = np.full((48, 96, 3), 255, np.uint8)
    for severity in SEVERITIES:
        assert corrupt_image(flat, "MotionBlur", severity).min() >= 254
    assert np.abs(corrupt_image(np.full((48, 96, 3), 120, np.uint8), "MotionBlur", 3).astype(int) - 120).max() <= 1
    # As defined, taps that would shift farther than the image is wide are dropped, and their weight with them.
    narrow = np.full((16, 32, 3), 120, np.uint8)
    assert corrupt_image(narrow, "MotionBlur", 3).max() < 120


def test_low_light_stretches_darkens_and_adds_noise():
    image = street_cameras(1)[0]
    out = [corrupt_image(image, "LowLight", severity).astype(float) for severity in SEVERITIES]
    assert out[0].mean() < 0.5 * image.mean() and out[0].std() > 2.0
    assert out[0].mean() > out[1].mean() > out[2].mean()  # stretched to 0.40, 0.30, 0.20 of full scale
    constant = np.full((40, 40, 3), 77, np.uint8)  # the stretch's 0 / 0: black plus read noise, no NaN
    assert corrupt_image(constant, "LowLight", 1).mean() < 10


def test_fog_plasma_fractal_spans_the_unit_interval_and_hazes_the_image():
    field = _plasma_fractal(64, 2.0, np.random.default_rng(0))
    assert field.shape == (64, 64) and field.min() == 0.0 and field.max() == 1.0
    image = street_cameras(1)[0]
    fogged = [corrupt_image(image, "Fog", severity).astype(float) for severity in SEVERITIES]
    assert all(f.std() < image.std() for f in fogged)  # haze lowers the contrast


def test_snow_grey_term_weighs_the_channels_as_bgr():
    # imagecorruptions' grey term, computed on RoboBEV's BGR arrays, weighs blue 0.299 and red 0.114: the green
    # channel of a blue image is whitened more than that of a red one.
    red, blue = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = blue[..., 2] = 200
    g_red = np.median(corrupt_image(red, "Snow", 1, key="k")[..., 1])
    g_blue = np.median(corrupt_image(blue, "Snow", 1, key="k")[..., 1])
    # keep 0.8: G = 0.2 * (grey * 1.5 + 0.5) before the flakes, grey = 0.114 or 0.299 of 200 / 255
    assert g_red == pytest.approx(255 * 0.2 * (0.114 * 200 / 255 * 1.5 + 0.5), abs=1.5)
    assert g_blue == pytest.approx(255 * 0.2 * (0.299 * 200 / 255 * 1.5 + 0.5), abs=1.5)


@pytest.mark.parametrize("severity, draws", list(zip(SEVERITIES, (2, 4, 5))))
def test_camera_crash_draws_with_replacement_once_for_the_split(severity, draws):
    images = street_cameras()
    cameras = blanked_cameras("CameraCrash", severity, seed=5)
    for key in ("token-1", "token-2", 7):
        assert blanked_cameras("CameraCrash", severity, seed=5, sample_key=key) == cameras  # the whole split
        out = apply_corruption(images, "CameraCrash", severity, seed=5, sample_key=key)
        for camera, (o, i) in enumerate(zip(out, images)):
            assert (o == 0).all() if camera in cameras else np.array_equal(o, i)
    distinct = [len(blanked_cameras("CameraCrash", severity, seed=seed)) for seed in range(400)]
    assert max(distinct) <= draws
    assert np.mean(distinct) == pytest.approx(6 * (1 - (5 / 6) ** draws), abs=0.15)  # with replacement


def test_frame_lost_blanks_each_camera_per_sample_at_the_documented_rate():
    for severity, probability in zip(SEVERITIES, (2 / 6, 4 / 6, 5 / 6)):
        lost = sum(len(blanked_cameras("FrameLost", severity, sample_key=key)) for key in range(500))
        assert abs(lost / (500 * 6) - probability) < 0.03
    assert len({tuple(blanked_cameras("FrameLost", 2, sample_key=key)) for key in range(20)}) > 1
    assert all(blanked_cameras(name, 3) == [] for name in PIXEL_CORRUPTIONS)


def test_severities_are_the_benchmark_levels():
    assert BENCHMARK_LEVELS["LowLight"] == (2, 3, 4) and BENCHMARK_LEVELS["Snow"] == (1, 2, 3)
    assert set(BENCHMARK_LEVELS) == set(CORRUPTIONS) and len(CORRUPTIONS) == 8


def test_bad_names_severities_and_images_are_typed_errors():
    images = street_cameras(2)
    with pytest.raises(ConfigError, match="'Rain' is unknown"):
        apply_corruption(images, "Rain", 1)
    for severity in (0, 4, 5):
        with pytest.raises(ConfigError, match="severity .* 1 \\(easy\\), 2 \\(mid\\), 3 \\(hard\\)"):
            apply_corruption(images, "Fog", severity)
    with pytest.raises(InputError, match="uint8 array \\(H, W, 3\\)"):
        apply_corruption([images[0].astype(np.float32) / 255], "Fog", 1)
    with pytest.raises(ConfigError, match="apply_corruption"):
        corrupt_image(images[0], "FrameLost", 1)


def test_resilience_rate_and_its_mean():
    scores = {("Fog", 1): 30.0, ("Fog", 2): 20.0, ("Fog", 3): 10.0, ("Snow", 1): 40.0, ("Snow", 2): 40.0,
              ("Snow", 3): 40.0}
    rates, mean_rate = resilience(scores, clean=40.0)
    assert rates == {"Fog": pytest.approx(0.5), "Snow": pytest.approx(1.0)}
    assert mean_rate == pytest.approx(0.75)
    lines = corruption_table(scores, clean=40.0).splitlines()
    assert lines[0] == "| Corruption | easy (1) | mid (2) | hard (3) | mean | RR (%) |"
    assert lines[3] == "| Fog | 30.0 | 20.0 | 10.0 | 20.0 | 50.0 |"
    assert lines[-1] == "| mRR (2 of 8 corruptions) | | | | | 75.0 |"
    with pytest.raises(ConfigError):
        corruption_table({("Fog", 5): 1.0})
