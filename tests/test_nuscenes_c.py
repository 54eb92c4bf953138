"""nuScenes-C through ``NuScenesBEV`` and ``occfeat evaluate``: the released folders, on-the-fly corruption on the
source image before the resize, RR / mRR tables, typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import hsv_to_rgb, rgb_to_hsv
from PIL import Image, ImageOps

from occfeat.cli import EXIT_ERROR, main
from occfeat.data import NuScenesBEV
from occfeat.data.corruptions import CORRUPTIONS, SEVERITIES, SEVERITY_NAMES, apply_corruption
from occfeat.data.nuscenes import image_transform, read_rgb, warp_image, Augmentation
from occfeat.errors import ConfigError, InputError
from occfeat.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from occfeat.models.geometry import NUSCENES_CAMERAS, BEVGrid

GRID = BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=1.0)
SIZE = (56, 120)  # the network's images: the world's 90 x 160 sources shrink 1.33x (and are cropped)


@pytest.fixture(scope="module")
def clean(synthetic_world):
    return NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "val", image_size=SIZE, grid=GRID)


def dataset(world, clean, **kwargs):
    return NuScenesBEV(world.dataroot, world.version, "val", image_size=SIZE, grid=GRID, nusc=clean.nusc, **kwargs)


def pixels(item: dict) -> np.ndarray:
    """The item's images back in 8-bit levels (N, H, W, 3), float."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((item["images"] * std + mean) * 255.0).permute(0, 2, 3, 1).numpy()


def sources(data: NuScenesBEV, index: int) -> list[np.ndarray]:
    sample = data.nusc.get("sample", data.sample_tokens[index])
    return [read_rgb(data.dataroot / data.nusc.get("sample_data", sample["data"][c])["filename"]) for c in NUSCENES_CAMERAS]


def network_images(images: list[np.ndarray]) -> np.ndarray:
    """What the dataset's evaluation resize and crop make of source images (N, H, W, 3)."""
    return np.stack([warp_image(i, image_transform(i.shape[:2], SIZE, None, Augmentation()), SIZE) for i in images])


def write_released_copy(world, clean: NuScenesBEV, root: Path, name: str, severity: int) -> dict[str, np.ndarray]:
    """A nuScenes-C-layout folder for the world's val key frames: <root>/<name>/<easy|mid|hard>/<CAM>/<file>, each a
    JPEG (quality 95, as released) of a pattern unlike the clean image. Returns {file name: the decoded pixels}."""
    written = {}
    rng = np.random.default_rng(0)
    for token in clean.sample_tokens:
        sample = clean.nusc.get("sample", token)
        for camera in NUSCENES_CAMERAS:
            relative = Path(clean.nusc.get("sample_data", sample["data"][camera])["filename"])
            source = read_rgb(world.dataroot / relative)
            path = root / name / SEVERITY_NAMES[severity - 1] / relative.parent.name / relative.name
            path.parent.mkdir(parents=True, exist_ok=True)
            pattern = (255 - source) // 2 + rng.integers(0, 60, source.shape, dtype=np.uint8)
            Image.fromarray(pattern).save(path, quality=95)
            written[relative.name] = read_rgb(path)
    return written


def test_released_folders_are_read_instead_of_the_clean_images(synthetic_world, clean, tmp_path):
    written = write_released_copy(synthetic_world, clean, tmp_path, "Snow", 2)
    released = dataset(synthetic_world, clean, corruption=("Snow", 2), corruption_root=tmp_path)
    for index in range(len(released)):
        item = released[index]
        sample = released.nusc.get("sample", item["sample_token"])
        files = [Path(released.nusc.get("sample_data", sample["data"][c])["filename"]).name for c in NUSCENES_CAMERAS]
        expected = network_images([written[f] for f in files]).astype(np.float32)
        np.testing.assert_allclose(pixels(item), expected, atol=1e-3)  # exactly those images, after the resize
        torch.testing.assert_close(item["vehicle"], clean[index]["vehicle"])  # labels untouched


def test_on_the_fly_corruption_happens_on_the_source_before_the_resize(synthetic_world, clean):
    blurred = dataset(synthetic_world, clean, corruption=("MotionBlur", 3))
    item = blurred[0]
    before = network_images(apply_corruption(sources(clean, 0), "MotionBlur", 3, sample_key=item["sample_token"]))
    np.testing.assert_allclose(pixels(item), before.astype(np.float32), atol=1e-3)
    # Resizing first and blurring the small image with the same pixel kernel is a different (stronger) corruption.
    after = np.stack(apply_corruption(list(network_images(sources(clean, 0))), "MotionBlur", 3,
                                      sample_key=item["sample_token"]))
    assert np.abs(after.astype(float) - before).mean() > 2.0  # 3.5 levels on this world (the blur itself: 15)


def test_brightness_and_color_quant_equal_direct_implementations_at_the_source_resolution(synthetic_world, clean):
    def brightness(image):  # imagecorruptions' definition through matplotlib's HSV, on RoboBEV's BGR order
        hsv = rgb_to_hsv(image[..., ::-1] / 255.0)
        hsv[..., 2] = np.clip(hsv[..., 2] + 0.4, 0.0, 1.0)  # mid = level 4
        return np.ascontiguousarray((np.clip(hsv_to_rgb(hsv), 0.0, 1.0) * 255.0).astype(np.uint8)[..., ::-1])

    def posterize(image):  # RoboBEV's definition: PIL, 3 bits at mid
        return np.asarray(ImageOps.posterize(Image.fromarray(image), 3))

    for name, direct in (("Brightness", brightness), ("ColorQuant", posterize)):
        item = dataset(synthetic_world, clean, corruption=(name, 2))[1]
        expected = network_images([direct(image) for image in sources(clean, 1)])
        np.testing.assert_allclose(pixels(item), expected.astype(np.float32), atol=1e-3, err_msg=name)


def test_every_corruption_and_severity_is_deterministic_and_differs_from_clean(synthetic_world, clean):
    reference = clean[0]["images"]
    for name in CORRUPTIONS:
        for severity in SEVERITIES:
            first = dataset(synthetic_world, clean, corruption=(name, severity), seed=4)[0]["images"]
            again = dataset(synthetic_world, clean, corruption=(name, severity), seed=4)[0]["images"]
            assert torch.equal(first, again), (name, severity)
            if name == "FrameLost":  # may spare every camera of one sample: look at several
                others = [dataset(synthetic_world, clean, corruption=(name, severity), seed=4)[i]["images"]
                          for i in range(len(clean))]
                assert any(not torch.equal(o, clean[i]["images"]) for i, o in enumerate(others))
            else:
                assert not torch.equal(first, reference), (name, severity)


def test_bad_corruption_arguments_are_typed_errors(synthetic_world, clean, tmp_path):
    with pytest.raises(ConfigError, match="'Rain' is unknown"):
        dataset(synthetic_world, clean, corruption=("Rain", 1))
    with pytest.raises(ConfigError, match="severity 4"):
        dataset(synthetic_world, clean, corruption=("Fog", 4))
    with pytest.raises(ConfigError, match="give corruption=\\(name, severity\\) too"):
        dataset(synthetic_world, clean, corruption_root=tmp_path)
    with pytest.raises(InputError, match="does not exist.*<root>/<Corruption>/<easy\\|mid\\|hard>"):
        dataset(synthetic_world, clean, corruption=("Fog", 1), corruption_root=tmp_path / "nowhere")
    (tmp_path / "Fog" / "easy" / "CAM_FRONT").mkdir(parents=True)
    with pytest.raises(InputError, match="lacks the camera folder\\(s\\) \\['CAM_FRONT_LEFT'"):
        dataset(synthetic_world, clean, corruption=("Fog", 1), corruption_root=tmp_path)
    for camera in NUSCENES_CAMERAS:
        (tmp_path / "Fog" / "easy" / camera).mkdir(parents=True, exist_ok=True)
    incomplete = dataset(synthetic_world, clean, corruption=("Fog", 1), corruption_root=tmp_path)
    with pytest.raises(InputError, match="missing nuScenes-C file .*Fog/easy/CAM_FRONT_LEFT/.*RoboBEV"):
        incomplete[0]


def test_cli_evaluate_all_corruptions_prints_rr_and_mrr(synthetic_world, tmp_path, capsys):
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version, "--device", "cpu"]
    assert main(["evaluate", "simplebev-tiny", *data, "--split", "val", "--samples", "1", "--batch-size", "1",
                 "--out", str(tmp_path), "--corruption", "all"]) == 0
    printed = capsys.readouterr().out
    assert "| Corruption | easy (1) | mid (2) | hard (3) | mean | RR (%) |" in printed
    assert "| mRR (8 of 8 corruptions) |" in printed and "vehicle_iou (%)" in printed
    assert "map_iou/drivable_area (%)" in printed and "nuScenes-C: vehicle_iou mRR" in printed
    report = json.loads((tmp_path / "eval.json").read_text())
    robustness = report["metrics"]["robustness"]
    assert set(robustness["map_iou/drivable_area"]["RR"]) == set(CORRUPTIONS)
    clean_map = report["metrics"]["clean"]["map_iou/drivable_area"]
    fog = [report["metrics"][f"Fog/{s}"]["map_iou/drivable_area"] for s in SEVERITIES]
    assert robustness["map_iou/drivable_area"]["RR"]["Fog"] == pytest.approx(np.mean(fog) / clean_map)
    assert report["label_protocol"] == "lss" and report["corruption_source"] == "regenerated on the fly"
    assert (tmp_path / "corruptions.md").read_text().count("| mRR (8 of 8 corruptions) |") == 2
    with Image.open(tmp_path / "corruptions.png") as grid:  # CAM_FRONT under each of the 8 x 3, the clean one first
        assert grid.width >= 4 * SIZE[1] and grid.height >= 8 * SIZE[0]


def test_cli_evaluate_rejects_bad_corruption_input_with_the_fix(synthetic_world, tmp_path, capsys):
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version]
    assert main(["evaluate", "simplebev-tiny", *data, "--corruption", "Rain", "--out", str(tmp_path)]) == EXIT_ERROR
    assert "'Rain' is unknown" in capsys.readouterr().err
    assert main(["evaluate", "simplebev-tiny", *data, "--severity", "2", "--out", str(tmp_path)]) == EXIT_ERROR
    assert "--severity needs --corruption" in capsys.readouterr().err
    assert main(["evaluate", "simplebev-tiny", *data, "--corruption", "Fog", "--severity", "1",
                 "--corruption-root", str(tmp_path / "none"), "--out", str(tmp_path)]) == EXIT_ERROR
    assert "corruption_root" in capsys.readouterr().err
    assert main(["evaluate", "simplebev-tiny", *data, "--corruption", "all", "Fog", "--out", str(tmp_path)]) == EXIT_ERROR
    assert "give 'all' alone" in capsys.readouterr().err
    # A released copy with one corruption only: the table run fails on the missing ones before evaluating anything.
    for camera in NUSCENES_CAMERAS:
        for severity in SEVERITY_NAMES:
            (tmp_path / "released" / "Fog" / severity / camera).mkdir(parents=True, exist_ok=True)
    assert main(["evaluate", "simplebev-tiny", *data, "--corruption", "all", "--corruption-root",
                 str(tmp_path / "released"), "--out", str(tmp_path / "eval")]) == EXIT_ERROR
    assert "CameraCrash/easy lacks the camera folder(s)" in capsys.readouterr().err
    assert not (tmp_path / "eval" / "eval.json").exists()


def test_finetune_rejects_an_unknown_label_protocol_before_loading(synthetic_world, tmp_path, capsys):
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version, "--device", "cpu"]
    assert main(["finetune", "simplebev-tiny.not-a-weight", *data, "--out", str(tmp_path), "--recipe", "cpu-tiny",
                 "--label-protocol", "centre"]) == EXIT_ERROR
    assert "label_protocol='centre' is unknown" in capsys.readouterr().err  # not the unknown weight id
