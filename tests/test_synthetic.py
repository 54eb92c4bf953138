"""The synthetic world: a dataroot the real nuscenes-devkit reads, whose images, calibration, Lidar and annotations
agree with each other when checked through the devkit's records alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from nuscenes.utils.geometry_utils import points_in_box, view_points
from PIL import Image
from pyquaternion import Quaternion

from occfeat.synthetic import (
    SPLITS_FILENAME,
    generate_world,
    SEMANTIC_CLASSES,
    instance_mask_path,
    semantic_map_path,
    render_sample_png,
)
from occfeat.cli import EXIT_ERROR, main
from occfeat.errors import ConfigError
from occfeat.models.geometry import NUSCENES_CAMERAS

VERSION = "v1.0-synthetic"
IMAGE_HW = (90, 160)
SWEEPS = 2


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> NuScenes:
    root = tmp_path_factory.mktemp("synth")
    generate_world(root, scenes=2, samples_per_scene=3, image_hw=IMAGE_HW, seed=3, sweeps_per_sample=SWEEPS,
                   semantic_maps=True, progress=False)  # semantic maps imply the instance masks
    return NuScenes(VERSION, str(root), verbose=False)


def _to_sensor(nusc: NuScenes, sample_data_token: str, box):
    """A devkit Box moved from the global frame into a sensor's frame, through the ego pose at the sensor's time."""
    sd = nusc.get("sample_data", sample_data_token)
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    calibration = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    box.translate(-np.array(pose["translation"]))
    box.rotate(Quaternion(pose["rotation"]).inverse)
    box.translate(-np.array(calibration["translation"]))
    box.rotate(Quaternion(calibration["rotation"]).inverse)
    return box, calibration


def test_the_devkit_loads_every_table_and_the_world_splits(world: NuScenes):
    for table in world.table_names:
        assert len(getattr(world, table)) > 0, table
    assert [s["name"] for s in world.scene] == ["synth-0000", "synth-0001"]
    splits = json.loads((Path(world.dataroot) / VERSION / SPLITS_FILENAME).read_text())
    assert splits == {"train": ["synth-0000"], "val": ["synth-0001"]}
    assert len(world.sample) == 6 and all(len(s["data"]) == 7 for s in world.sample)
    categories = {a["category_name"] for a in world.sample_annotation}
    assert {"vehicle.car", "human.pedestrian.adult"} <= categories
    assert {a["visibility_token"] for a in world.sample_annotation} <= {"1", "2", "3", "4"}
    assert {"1", "4"} <= {a["visibility_token"] for a in world.sample_annotation}  # occlusion is measured
    path, boxes, intrinsic = world.get_sample_data(world.sample[0]["data"]["CAM_FRONT"])
    assert Image.open(path).size == (IMAGE_HW[1], IMAGE_HW[0]) and intrinsic.shape == (3, 3)


def test_instances_chain_their_annotations_across_samples(world: NuScenes):
    tracked = 0
    for instance in world.instance:
        chain = [world.get("sample_annotation", instance["first_annotation_token"])]
        while chain[-1]["next"]:
            chain.append(world.get("sample_annotation", chain[-1]["next"]))
        assert len(chain) == instance["nbr_annotations"]
        assert chain[-1]["token"] == instance["last_annotation_token"]
        times = [world.get("sample", a["sample_token"])["timestamp"] for a in chain]
        assert times == sorted(times) and all(a["instance_token"] == instance["token"] for a in chain)
        tracked += len(chain) > 1
    assert tracked > 0


def test_lidar_sweeps_chain_between_key_frames(world: NuScenes):
    sample = world.get("sample", world.scene[0]["first_sample_token"])
    sample = world.get("sample", sample["next"])
    key = world.get("sample_data", sample["data"]["LIDAR_TOP"])
    previous = [world.get("sample_data", key["prev"])]
    while not previous[-1]["is_key_frame"]:
        previous.append(world.get("sample_data", previous[-1]["prev"]))
    assert len(previous) == SWEEPS + 1  # the sweeps, then the previous key frame
    stamps = [key["timestamp"]] + [sd["timestamp"] for sd in previous]
    assert stamps == sorted(stamps, reverse=True)
    assert all(sd["filename"].startswith("sweeps/LIDAR_TOP/") for sd in previous[:-1])
    assert len({sd["ego_pose_token"] for sd in previous}) == len(previous)  # every sweep has its own pose
    points = LidarPointCloud.from_file(world.get_sample_data_path(previous[0]["token"])).points
    assert points.shape[0] == 4 and points.shape[1] > 5000


def test_projected_box_centres_land_on_their_vehicle_in_the_images(world: NuScenes):
    """Render and calibration agree: through the devkit's records only, the centre of every well visible vehicle
    projects onto pixels the renderer drew from that vehicle."""
    rows = {instance["token"]: i for i, instance in enumerate(world.instance)}
    hits, checked = 0, 0
    for sample in world.sample:
        for channel in NUSCENES_CAMERAS:
            token = sample["data"][channel]
            mask = np.array(Image.open(instance_mask_path(world.dataroot, world.get("sample_data", token)["filename"])))
            for ann_token in sample["anns"]:
                ann = world.get("sample_annotation", ann_token)
                if not ann["category_name"].startswith("vehicle.") or ann["visibility_token"] != "4":
                    continue
                box, calibration = _to_sensor(world, token, world.get_box(ann_token))
                if box.center[2] < 1.0:
                    continue
                u, v = view_points(box.center[:, None], np.array(calibration["camera_intrinsic"]), normalize=True)[:2]
                col, row = int(round(u[0])), int(round(v[0]))
                if not (0 <= row < IMAGE_HW[0] and 0 <= col < IMAGE_HW[1]):
                    continue
                checked += 1
                hits += rows[ann["instance_token"]] + 1 in mask[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2]
    assert checked > 20
    assert hits / checked > 0.9


def test_semantic_side_cars_align_with_the_rendered_objects(world: NuScenes):
    """A pixel of a rendered, annotated object carries that object's category in the class map and its instance in
    the instance mask; the stuff classes fall where a camera sees them (sky on top, road at the bottom)."""
    categories = [world.get("category", instance["category_token"])["name"] for instance in world.instance]
    checked, counts = 0, np.zeros(len(SEMANTIC_CLASSES), int)
    for sample in world.sample:
        for channel in NUSCENES_CAMERAS:
            filename = world.get("sample_data", sample["data"][channel])["filename"]
            classes = np.array(Image.open(semantic_map_path(world.dataroot, filename)))
            instances = np.array(Image.open(instance_mask_path(world.dataroot, filename))).astype(int)
            assert classes.dtype == np.uint8 and classes.shape == IMAGE_HW and classes.max() < len(SEMANTIC_CLASSES)
            seen = instances > 0
            names = np.array(SEMANTIC_CLASSES)[classes[seen]]
            np.testing.assert_array_equal(names, np.array(categories)[instances[seen] - 1])
            checked += int(seen.sum())
            counts += np.bincount(classes.ravel(), minlength=len(SEMANTIC_CLASSES))
            top, bottom = classes[: IMAGE_HW[0] // 10], classes[-IMAGE_HW[0] // 10 :]
            assert np.isin(np.array(SEMANTIC_CLASSES)[top], ["sky", "building", "structure", "vegetation"]).mean() > 0.5
            assert (np.array(SEMANTIC_CLASSES)[bottom] != "sky").all()
    assert checked > 1000
    present = {name for name, count in zip(SEMANTIC_CLASSES, counts) if count}
    assert {"sky", "road", "lane_marking", "building", "vehicle.car", "human.pedestrian.adult"} <= present


def test_num_lidar_pts_counts_the_key_frame_points_inside_each_box(world: NuScenes):
    counted = 0
    for sample in world.sample:
        lidar = world.get("sample_data", sample["data"]["LIDAR_TOP"])
        cloud = LidarPointCloud.from_file(world.get_sample_data_path(lidar["token"]))
        calibration = world.get("calibrated_sensor", lidar["calibrated_sensor_token"])
        pose = world.get("ego_pose", lidar["ego_pose_token"])
        cloud.rotate(Quaternion(calibration["rotation"]).rotation_matrix)
        cloud.translate(np.array(calibration["translation"]))
        cloud.rotate(Quaternion(pose["rotation"]).rotation_matrix)
        cloud.translate(np.array(pose["translation"]))
        for ann_token in sample["anns"]:
            expected = world.get("sample_annotation", ann_token)["num_lidar_pts"]
            assert points_in_box(world.get_box(ann_token), cloud.points[:3]).sum() == expected
            counted += expected
    assert counted > 1000


def test_the_map_is_the_drivable_area_the_traffic_uses(world: NuScenes):
    assert len(world.log) == 1  # both scenes drive through the same town
    mask = world.get("map", world.log[0]["map_token"])["mask"]
    poses = np.array([p["translation"] for p in world.ego_pose])
    assert (poses[:, :2] >= 0).all() and mask.is_on_mask(poses[:, 0], poses[:, 1]).all()

    def centres(keep) -> np.ndarray:
        return np.array([a["translation"][:2] for a in world.sample_annotation if keep(a)])

    moving = centres(lambda a: any(world.get("attribute", t)["name"] == "vehicle.moving" for t in a["attribute_tokens"]))
    walking = centres(lambda a: a["category_name"] == "human.pedestrian.adult")
    assert len(moving) and len(walking)
    assert mask.is_on_mask(moving[:, 0], moving[:, 1]).all()
    assert not mask.is_on_mask(walking[:, 0], walking[:, 1]).any()


def test_same_seed_writes_the_same_tables_and_another_seed_other_tables(tmp_path: Path):
    def tables(name: str, seed: int) -> dict[str, str]:
        generate_world(tmp_path / name, scenes=1, samples_per_scene=2, image_hw=(32, 48), seed=seed,
                       sweeps_per_sample=1, progress=False)
        return {p.name: p.read_text() for p in sorted((tmp_path / name / VERSION).glob("*.json"))}

    first = tables("a", seed=5)
    assert tables("b", seed=5) == first
    other = tables("c", seed=6)
    assert other["sample_annotation.json"] != first["sample_annotation.json"]
    assert other["category.json"] == first["category.json"]


@pytest.mark.parametrize(
    "arguments, match",
    [(dict(scenes=0), "scenes"), (dict(samples_per_scene=0), "samples_per_scene"), (dict(image_hw=(0, 64)), "image_hw"),
     (dict(sweeps_per_sample=-1), "sweeps_per_sample"), (dict(seed=-1), "seed"), (dict(version="../x"), "version")],
)
def test_bad_arguments_raise_config_errors_that_name_them(tmp_path: Path, arguments: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        generate_world(tmp_path, progress=False, **arguments)
    assert not (tmp_path / VERSION).exists()


def test_an_existing_world_is_replaced_only_when_asked(world: NuScenes, tmp_path: Path):
    with pytest.raises(ConfigError, match="overwrite"):
        generate_world(world.dataroot, progress=False)
    (tmp_path / VERSION).mkdir()
    with pytest.raises(ConfigError, match="not a synthetic world"):
        generate_world(tmp_path, overwrite=True, progress=False)


def test_the_synth_command_writes_a_world_and_its_picture(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main([str(a) for a in ("synth", tmp_path, "--scenes", 1, "--samples-per-scene", 1, "--image-size", "36x64",
                                  "--sweeps-per-sample", 0, "--png")]) == 0
    out = capsys.readouterr().out
    assert "1 samples" in out and "samples/s" in out
    picture = Image.open(tmp_path / "synth_sample.png")
    assert picture.width > 3 * 64 and picture.height >= 2 * 36
    assert main(["synth", str(tmp_path / "x"), "--image-size", "36by64"]) == EXIT_ERROR
    assert "image_size='36by64'" in capsys.readouterr().err


def test_render_sample_png_draws_cameras_and_the_bev(world: NuScenes, tmp_path: Path):
    path = render_sample_png(world.dataroot, VERSION, world.sample[1]["token"], tmp_path / "s.png", nusc=world)
    picture = np.array(Image.open(path))
    assert picture.shape[1] == 3 * IMAGE_HW[1] + 2 * IMAGE_HW[0] + 8
    bev = picture[20:, 3 * IMAGE_HW[1] + 8:]
    assert (np.abs(bev.astype(int) - [40, 110, 230]).sum(-1) == 0).any()  # a car, filled in its colour
    assert (np.abs(bev.astype(int) - [20, 20, 20]).sum(-1) == 0).any()  # the ego
