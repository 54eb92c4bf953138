"""NuScenesBEV over a generated world, read through the real nuscenes-devkit."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from occfeat.data import Augmentation, NuScenesBEV, make_loader, select_subset
from occfeat.data.nuscenes import EGO_CAR_XY
from occfeat.errors import ConfigError, InputError
from occfeat.models.geometry import BEVGrid, pixels_to_grid, project_to_cameras, transform_points

GRID = BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=0.5)


@pytest.fixture(scope="module")
def dataset(synthetic_world):
    return NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", image_size="112x240", grid=GRID)


def test_items_have_the_documented_shapes(dataset):
    item = dataset[0]
    h, w = GRID.shape
    assert item["images"].shape == (6, 3, 112, 240)
    assert item["intrinsics"].shape == (6, 3, 3) and item["cam_to_ego"].shape == (6, 4, 4)
    assert torch.equal(item["bev_aug"], torch.eye(4))
    for key, channels in (("vehicle", 1), ("vehicle_ignore", 1), ("center", 1), ("offset", 2), ("map", 1)):
        assert item[key].shape == (channels, h, w), key
    assert item["vehicle"].sum() > 0, "the world has vehicles around the ego car"
    assert 0 < item["map"].mean() < 1, "roads cover part of the raster"
    assert isinstance(item["sample_token"], str)


def test_splits_partition_the_world(synthetic_world, dataset):
    train = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "train", image_size="112x240", grid=GRID)
    val = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "val", image_size="112x240", grid=GRID)
    assert set(train.sample_tokens).isdisjoint(val.sample_tokens)
    assert sorted(train.sample_tokens + val.sample_tokens) == sorted(dataset.sample_tokens)


def test_fraction_subsets_are_nested_in_the_dataset(synthetic_world, dataset):
    small = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", fraction=0.34, seed=3, nusc=dataset.nusc)
    assert small.sample_tokens == select_subset(dataset.sample_tokens, fraction=0.34, seed=3)
    assert set(small.sample_tokens) < set(dataset.sample_tokens)


def sample_colours(item, points_ego):
    """RGB (normalised) of each ego point in the first camera that sees it, and the visibility mask."""
    projection = project_to_cameras(points_ego[None], item["intrinsics"][None], item["cam_to_ego"][None], (112, 240))
    grid = pixels_to_grid(projection.pixels[0], (112, 240))  # (N, P, 2)
    colours = F.grid_sample(item["images"], grid[:, :, None], align_corners=False)[..., 0]  # (N, 3, P)
    return colours, projection.visible[0]


def test_image_augmentation_keeps_a_3d_point_on_the_same_content(synthetic_world, dataset):
    augmented = NuScenesBEV(
        synthetic_world.dataroot, synthetic_world.version, "all", image_size="112x240", grid=GRID,
        augment=Augmentation(bev_translation_xy=(0.0, 0.0), bev_yaw_deg=0.0), nusc=dataset.nusc,
    )
    plain, warped = dataset[1], augmented[1]
    assert not torch.allclose(plain["intrinsics"], warped["intrinsics"])
    rng = np.random.default_rng(0)
    points = torch.from_numpy(np.c_[rng.uniform(-30, 30, (4000, 2)), rng.uniform(0.0, 2.0, 4000)]).float()
    before, seen_before = sample_colours(plain, points)
    after, seen_after = sample_colours(warped, points)
    both = seen_before & seen_after
    # Stay two pixels away from the borders, where zero padding and resampling differ.
    assert both.sum() > 500
    difference = (before - after).abs().mean(dim=1)[both]
    shuffled = (before - after[..., torch.randperm(after.shape[-1])]).abs().mean(dim=1)[both]
    assert difference.median() < 0.25 * shuffled.median()


def test_bev_augmentation_of_labels_matches_the_coordinates(synthetic_world, dataset):
    # Cell-centre labels, whose cells are the coordinates' cells: the "lss" raster sits half a cell off them, and its
    # behaviour under augmentation is checked against the reference implementation in test_label_protocol.py.
    common = dict(image_size="112x240", grid=GRID, nusc=dataset.nusc, label_protocol="cell-center")
    plain = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", **common)[2]
    moved = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", augment=Augmentation(), seed=1,
                        **common)[2]
    assert not torch.equal(moved["bev_aug"], torch.eye(4))
    # Each augmented-raster cell, sent to ego with bev_aug, must read the plain raster's label there.
    centres = GRID.cell_centers().view(-1, 2)
    ego = transform_points(moved["bev_aug"], torch.cat([centres, torch.zeros(len(centres), 1)], 1))[:, :2]
    row_col = GRID.metric_to_cell(ego).round().long()
    h, w = GRID.shape
    inside = (row_col >= 0).all(1) & (row_col[:, 0] < h) & (row_col[:, 1] < w)
    for key in ("vehicle", "map"):
        expected = plain[key][0][row_col[inside, 0], row_col[inside, 1]]
        got = moved[key][0].reshape(-1)[inside]
        positives = (expected > 0) | (got > 0)
        assert positives.sum() > 20, key
        agreement = (expected[positives] == got[positives]).float().mean()
        assert agreement > 0.85, (key, float(agreement))


def test_lidar_sweeps_in_the_key_frame_ego_frame_without_the_car(synthetic_world, dataset):
    lidar = NuScenesBEV(
        synthetic_world.dataroot, synthetic_world.version, "all", image_size="112x240", grid=GRID,
        lidar_sweeps=3, nusc=dataset.nusc,
    )
    item = lidar[2]  # not the first frame of its scene: it has earlier sweeps
    points = item["lidar"]
    assert points.shape[1] == 5 and len(points) > 1000
    assert set(points[:, 4].unique().tolist()) == {0.0, 1.0, 2.0}
    (x0, x1), (y0, y1) = EGO_CAR_XY
    on_car = (points[:, 0] > x0) & (points[:, 0] < x1) & (points[:, 1] > y0) & (points[:, 1] < y1)
    # The key-frame sweep has nothing on the car; earlier sweeps legitimately see the ground the car now stands on.
    assert not on_car[points[:, 4] == 0].any()
    assert on_car[points[:, 4] > 0].any()
    # A flat world: the ground returns of every sweep sit at the same height in the key-frame ego frame.
    ground = [points[(points[:, 4] == s) & (points[:, 2] < 0.3)][:, 2].median() for s in range(3)]
    assert max(ground) - min(ground) < 0.05


def test_loader_batches_are_the_same_with_and_without_workers(synthetic_world, dataset):
    train = NuScenesBEV(
        synthetic_world.dataroot, synthetic_world.version, "all", image_size="112x240", grid=GRID,
        augment=Augmentation(), lidar_sweeps=2, nusc=dataset.nusc,
    )
    batches = []
    for workers in (0, 2):
        loader = make_loader(train, batch_size=2, shuffle=True, num_workers=workers, seed=5)
        batches.append(next(iter(loader)))
    a, b = batches
    assert a["sample_token"] == b["sample_token"]
    for key in ("images", "bev_aug", "vehicle", "lidar", "lidar_valid"):
        assert torch.equal(a[key], b[key]), key
    assert a["images"].shape == (2, 6, 3, 112, 240) and a["lidar"].dim() == 3


# ---- typed errors ---------------------------------------------------------------------------------------------------


def test_missing_dataroot_and_version_are_named(tmp_path, synthetic_world):
    with pytest.raises(InputError, match="does not exist.*occfeat synth"):
        NuScenesBEV(tmp_path / "nowhere", "v1.0-mini", "train")
    with pytest.raises(InputError, match=f"version folder .*v1.0-mini does not exist.*{synthetic_world.version}"):
        NuScenesBEV(synthetic_world.dataroot, "v1.0-mini", "train")


def test_unknown_split_and_bad_fraction_are_named(synthetic_world, dataset):
    with pytest.raises(InputError, match="unknown split 'training'"):
        NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "training", nusc=dataset.nusc)
    with pytest.raises(ConfigError, match="0 < fraction <= 1"):
        NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", fraction=1.5, nusc=dataset.nusc)


def test_missing_image_or_lidar_file_is_named(tmp_path, synthetic_world):
    root = tmp_path / "copy"
    shutil.copytree(synthetic_world.dataroot, root)
    data = NuScenesBEV(root, synthetic_world.version, "all", image_size="112x240", grid=GRID, lidar_sweeps=1)
    sample = data.nusc.get("sample", data.sample_tokens[0])
    image = root / data.nusc.get("sample_data", sample["data"]["CAM_BACK"])["filename"]
    lidar = root / data.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["filename"]
    image.unlink()
    with pytest.raises(InputError, match=f"missing file {image}"):
        data[0]
    shutil.copy(next((root / "samples" / "CAM_FRONT").iterdir()), image)
    lidar.unlink()
    with pytest.raises(InputError, match=f"missing file {lidar}"):
        data[0]


def test_cell_center_vehicle_raster_matches_the_annotated_footprints(synthetic_world, dataset):
    wide = BEVGrid(x_range=(-60.0, 60.0), y_range=(-60.0, 60.0), resolution=0.5)  # every annotation (<= 55 m) fits
    data = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", image_size="112x240", grid=wide,
                       nusc=dataset.nusc, label_protocol="cell-center")
    footprint = raster = 0.0
    for index in range(len(data)):
        item = data[index]
        sample = data.nusc.get("sample", data.sample_tokens[index])
        sizes = [data.nusc.get("sample_annotation", a)["size"] for a in sample["anns"]
                 if data.nusc.get("sample_annotation", a)["category_name"].startswith("vehicle.")]
        footprint += sum(w * l for w, l, _ in sizes)
        raster += float(item["vehicle"].sum()) * wide.resolution**2
        assert ((item["vehicle_ignore"] > 0) <= (item["vehicle"] > 0)).all(), "ignored cells are vehicle cells"
    assert footprint > 100.0
    assert raster == pytest.approx(footprint, rel=0.05)


def write_map_expansion(path, location, crossing_xy, divider_xy):
    """A minimal nuScenes map expansion (v1.3 schema): one pedestrian crossing polygon and one lane divider line."""
    nodes = [{"token": f"n{i}", "x": float(x), "y": float(y)} for i, (x, y) in enumerate([*crossing_xy, *divider_xy])]
    layers = {name: [] for name in ("drivable_area", "road_segment", "road_block", "lane", "walkway", "stop_line",
                                    "carpark_area", "road_divider", "traffic_light", "lane_connector")}
    document = {
        "version": "1.3", "canvas_edge": [3000.0, 3000.0], "node": nodes,
        "polygon": [{"token": "p0", "exterior_node_tokens": [f"n{i}" for i in range(len(crossing_xy))], "holes": []}],
        "line": [{"token": "l0", "node_tokens": [f"n{i}" for i in range(len(crossing_xy), len(nodes))]}],
        **layers,
        "ped_crossing": [{"token": "c0", "polygon_token": "p0", "road_segment_token": None}],
        "lane_divider": [{"token": "d0", "line_token": "l0", "lane_divider_segments": []}],
        "arcline_path_3": {}, "connectivity": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))


def test_map_expansion_layers_are_rasterised_in_the_ego_frame(tmp_path, synthetic_world):
    root = tmp_path / "with-expansion"
    shutil.copytree(synthetic_world.dataroot, root)
    logs_path = root / synthetic_world.version / "log.json"
    logs = json.loads(logs_path.read_text())
    for log in logs:
        log["location"] = "boston-seaport"  # the devkit knows only the four nuScenes map names
    logs_path.write_text(json.dumps(logs))
    plain = NuScenesBEV(root, synthetic_world.version, "all", image_size="112x240", grid=GRID)
    to_global = np.linalg.inv(plain._global_to_ego(plain.nusc.get("sample", plain.sample_tokens[0])))
    # In the first sample's ego frame: a 4 m x 8 m crossing 10 m ahead, a 20 m divider 5 m to the left.
    crossing = [(8.0, -4.0), (12.0, -4.0), (12.0, 4.0), (8.0, 4.0)]
    divider = [(-10.0, 5.1), (10.0, 5.1)]
    to_global_xy = lambda pts: [tuple(to_global[:2, :2] @ np.array(p) + to_global[:2, 3]) for p in pts]  # noqa: E731
    write_map_expansion(root / "maps" / "expansion" / "boston-seaport.json", "boston-seaport",
                        to_global_xy(crossing), to_global_xy(divider))
    data = NuScenesBEV(root, synthetic_world.version, "all", image_size="112x240", grid=GRID,
                       map_classes=("drivable_area", "ped_crossing", "lane_divider"), nusc=plain.nusc)
    layers = data[0]["map"]
    assert layers.shape == (3, *GRID.shape)
    crossing_cells = layers[1].nonzero().float()
    assert layers[1].sum() * GRID.resolution**2 == pytest.approx(32.0, rel=0.1)
    torch.testing.assert_close(crossing_cells.mean(0), GRID.metric_to_cell(torch.tensor([10.0, 0.0])), atol=0.6, rtol=0)
    divider_rows, divider_cols = layers[2].nonzero().unbind(1)
    assert layers[2].sum() == pytest.approx(20.0 / GRID.resolution, rel=0.15)
    assert divider_cols.float().mean() == pytest.approx(float(GRID.metric_to_cell(torch.tensor([0.0, 5.1]))[1]), abs=0.6)


def test_missing_map_expansion_is_named(synthetic_world, dataset):
    with pytest.raises(InputError, match="map expansion.*expansion"):
        NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", map_classes=("lane_divider",),
                    nusc=dataset.nusc)
