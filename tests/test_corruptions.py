"""nuScenes-C camera corruptions: determinism, ranges, severity order, which cameras are blanked, typed errors."""

from __future__ import annotations

import pytest
import torch

from occfeat.data.corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    apply_corruption,
    blanked_cameras,
    corrupt_normalised,
    corruption_table,
)
from occfeat.errors import ConfigError, InputError
from occfeat.models.backbones import IMAGENET_MEAN, IMAGENET_STD

RANDOM_PIXEL_CORRUPTIONS = ("LowLight", "Snow", "MotionBlur")
DRAW_FREE_CORRUPTIONS = ("Brightness", "Fog", "ColorQuant")
CAMERA_FAILURES = ("CameraCrash", "FrameLost")


def street_cameras(num_cameras: int = 6, height: int = 64, width: int = 128) -> torch.Tensor:
    """(N, 3, H, W) 8-bit levels in [0.05, 0.95]: a diagonal gradient with dark poles and a checkered facade band,
    tinted per camera, so blur and quantisation have edges and gradients to act on and no two cameras are equal."""
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    gray = 0.2 + 0.3 * (1 - rows / height) + 0.3 * cols / width
    gray = gray - 0.3 * (((cols // 6) % 4 == 0) & (rows > height // 3)).float()
    band = (rows > 0.4 * height) & (rows < 0.6 * height)
    gray = gray + 0.15 * (band & ((rows // 3 + cols // 3) % 2 == 0)).float()
    tint = torch.tensor([[1.0, 0.9, 0.8], [0.8, 1.0, 0.9], [0.9, 0.8, 1.0]])
    camera, channel = torch.arange(num_cameras)[:, None], torch.arange(3)[None, :]
    images = gray * tint[(camera + channel) % 3, channel][..., None, None]  # (N, 3, H, W)
    return torch.round(images.clamp(0.05, 0.95) * 255) / 255


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_keeps_shape_dtype_and_the_unit_range(name, dtype):
    images = street_cameras().to(dtype)
    for severity in SEVERITIES:
        out = apply_corruption(images, name, severity, sample_key="sample")
        assert out.shape == images.shape and out.dtype == dtype
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_and_sample_give_bit_identical_images(name):
    images = street_cameras()
    first = apply_corruption(images, name, 2, seed=3, sample_key="token-1")
    again = apply_corruption(images.clone(), name, 2, seed=3, sample_key="token-1")
    assert torch.equal(first, again)


@pytest.mark.parametrize("name", RANDOM_PIXEL_CORRUPTIONS)
def test_random_corruptions_change_with_the_seed_and_the_sample(name):
    images = street_cameras()
    reference = apply_corruption(images, name, 2, seed=0, sample_key="a")
    assert not torch.equal(reference, apply_corruption(images, name, 2, seed=1, sample_key="a"))
    assert not torch.equal(reference, apply_corruption(images, name, 2, seed=0, sample_key="b"))


@pytest.mark.parametrize("name", CAMERA_FAILURES)
def test_camera_failures_blank_other_cameras_for_other_seeds_and_samples(name):
    by_seed = {tuple(blanked_cameras(name, 2, seed=seed)) for seed in range(20)}
    by_sample = {tuple(blanked_cameras(name, 2, sample_key=f"token-{i}")) for i in range(20)}
    assert len(by_seed) > 1 and len(by_sample) > 1


@pytest.mark.parametrize("name", DRAW_FREE_CORRUPTIONS)
def test_brightness_fog_and_color_quant_draw_nothing(name):
    images = street_cameras()
    other_draw = apply_corruption(images, name, 3, seed=1, sample_key=9)
    assert torch.equal(apply_corruption(images, name, 3, seed=0), other_draw)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_mean_change_grows_strictly_with_severity(name):
    images = street_cameras()
    keys = [f"token-{i}" for i in range(8)]  # FrameLost's blanked count is random: average over samples
    change = [
        sum((apply_corruption(images, name, severity, sample_key=key) - images).abs().mean().item() for key in keys)
        for severity in SEVERITIES
    ]
    assert change[0] > 0 and change[0] < change[1] < change[2], change


@pytest.mark.parametrize("name", CAMERA_FAILURES)
def test_harder_severities_blank_a_superset_of_the_cameras(name):
    for key in range(50):
        easy, mid, hard = (set(blanked_cameras(name, severity, sample_key=key)) for severity in SEVERITIES)
        assert easy <= mid <= hard


@pytest.mark.parametrize("severity, count", [(1, 2), (2, 3), (3, 4)])
def test_camera_crash_blanks_exactly_the_named_cameras(severity, count):
    images = street_cameras()
    for key in ("scene-0103", "scene-0916", 7):
        named = blanked_cameras("CameraCrash", severity, seed=5, sample_key=key)
        out = apply_corruption(images, "CameraCrash", severity, seed=5, sample_key=key)
        assert len(named) == count
        for camera in range(images.shape[0]):
            if camera in named:
                assert (out[camera] == 0).all()
            else:
                assert torch.equal(out[camera], images[camera])


def test_frame_lost_blanks_whole_cameras_at_the_documented_rate():
    images = street_cameras()
    for key in range(20):
        out = apply_corruption(images, "FrameLost", 2, sample_key=key)
        blanked = [camera for camera in range(6) if (out[camera] == 0).all()]
        assert blanked == blanked_cameras("FrameLost", 2, sample_key=key)
        for camera in set(range(6)) - set(blanked):
            assert torch.equal(out[camera], images[camera])
    for severity, probability in zip(SEVERITIES, (2 / 6, 4 / 6, 5 / 6)):
        lost = sum(len(blanked_cameras("FrameLost", severity, sample_key=key)) for key in range(500))
        assert abs(lost / (500 * 6) - probability) < 0.03


def test_pixel_corruptions_blank_no_camera():
    assert all(blanked_cameras(name, 3) == [] for name in CORRUPTIONS if name not in CAMERA_FAILURES)


def test_brightness_lifts_the_value_and_keeps_hue_and_saturation():
    images = torch.tensor([0.2, 0.4, 0.1]).view(1, 3, 1, 1).expand(6, 3, 4, 4)
    out = apply_corruption(images, "Brightness", 2)  # value 0.4 + 0.4
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.4, 0.8, 0.2]))


def test_low_light_darkens_and_adds_noise():
    images = torch.full((6, 3, 32, 64), 0.6)
    out = apply_corruption(images, "LowLight", 2)
    assert out.mean() < 0.5 * images.mean()
    assert out.std() > 0.01


def test_fog_thickens_toward_the_horizon():
    images = torch.full((6, 3, 64, 128), 0.2)
    lift = (apply_corruption(images, "Fog", 1) - images)[0, 0, :, 0]  # per row
    assert (lift[1:] <= lift[:-1]).all() and lift[0] > 2 * lift[-1] > 0
    assert torch.equal(lift[0], lift[20])  # above the horizon: the 50 m haze


def test_motion_blur_keeps_flat_images_and_smears_edges():
    flat = torch.full((6, 3, 32, 256), 0.3)
    torch.testing.assert_close(apply_corruption(flat, "MotionBlur", 3), flat)
    edge = torch.zeros(6, 3, 32, 256)
    edge[..., 128:] = 1.0
    smeared = apply_corruption(edge, "MotionBlur", 3)[..., 16, :]
    assert ((smeared > 0.05) & (smeared < 0.95)).sum(dim=-1).min() >= 2


def test_color_quant_keeps_two_to_the_bits_levels():
    images = street_cameras()
    for severity, bits in zip(SEVERITIES, (4, 3, 2)):
        assert apply_corruption(images, "ColorQuant", severity).unique().numel() <= 2**bits


def test_snow_adds_more_bright_flakes_with_severity():
    dark = torch.full((6, 3, 64, 128), 0.1)
    flaked = [(apply_corruption(dark, "Snow", severity) > 0.5).float().mean().item() for severity in SEVERITIES]
    assert 0 < flaked[0] < flaked[1] < flaked[2]


def test_a_batch_equals_its_samples_corrupted_one_by_one():
    batch = torch.stack([street_cameras(), street_cameras().flip(-1)])
    out = apply_corruption(batch, "Snow", 2, sample_key=["a", "b"])
    assert out.shape == batch.shape
    for sample, key in zip(range(2), ["a", "b"]):
        assert torch.equal(out[sample], apply_corruption(batch[sample], "Snow", 2, sample_key=key))
    shared = apply_corruption(batch, "CameraCrash", 2, sample_key="a")  # one key: one draw for the whole batch
    assert torch.equal(shared[1], apply_corruption(batch[1], "CameraCrash", 2, sample_key="a"))
    with pytest.raises(InputError, match="one key per sample"):
        apply_corruption(batch, "Snow", 2, sample_key=["a"])


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_corrupt_normalised_corrupts_the_raw_images(name):
    images = street_cameras()
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = corrupt_normalised((images - mean) / std, name, 3, sample_key="token")
    expected = (apply_corruption(images, name, 3, sample_key="token") - mean) / std
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


def test_corrupt_normalised_blanks_cameras_to_normalised_black():
    images = (street_cameras() - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = corrupt_normalised(images, "CameraCrash", 1)
    black = (-torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)).view(3, 1, 1).expand(3, 64, 128)
    for camera in blanked_cameras("CameraCrash", 1):
        torch.testing.assert_close(out[camera], black)


def test_unknown_corruption_or_severity_is_a_config_error_naming_the_choices():
    images = street_cameras()
    with pytest.raises(ConfigError, match="'Rain' is unknown.*'Brightness'.*'FrameLost'"):
        apply_corruption(images, "Rain", 1)
    for severity in (0, 4):
        with pytest.raises(ConfigError, match=r"choose one of 1 \(easy\), 2 \(mid\), 3 \(hard\)"):
            apply_corruption(images, "Fog", severity)
    with pytest.raises(ConfigError, match="unknown"):
        blanked_cameras("camera_crash", 1)


@pytest.mark.parametrize(
    "images", [torch.zeros(6, 3, 8, 8, dtype=torch.uint8), torch.zeros(6, 4, 8, 8), torch.zeros(3, 8, 8)]
)
def test_images_that_are_not_float_rgb_cameras_are_an_input_error(images):
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        apply_corruption(images, "Fog", 1)


def test_corruption_table_has_a_row_per_corruption_and_a_mean_column():
    results = {("Fog", 1): 30.0, ("Fog", 2): 25.0, ("Fog", 3): 20.0, ("Brightness", 1): 33.0}
    lines = corruption_table(results).splitlines()
    assert lines[0] == "| Corruption | easy (1) | mid (2) | hard (3) | mean |"
    assert lines[2:] == ["| Brightness | 33.0 | - | - | 33.0 |", "| Fog | 30.0 | 25.0 | 20.0 | 25.0 |"]
    with pytest.raises(ConfigError, match="severity 5"):
        corruption_table({("Fog", 5): 1.0})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_cuda_matches_cpu_where_nothing_is_drawn_on_the_device(name):
    images = street_cameras()
    on_cuda = apply_corruption(images.cuda(), name, 3, sample_key="token")
    assert torch.equal(on_cuda, apply_corruption(images.cuda(), name, 3, sample_key="token"))
    assert on_cuda.min() >= 0 and on_cuda.max() <= 1
    if name not in RANDOM_PIXEL_CORRUPTIONS:
        torch.testing.assert_close(on_cuda.cpu(), apply_corruption(images, name, 3, sample_key="token"))
