"""The literature's vehicle raster ("lss"): hand-placed boxes with their fillPoly rasters written out, and parity with an
independent implementation (devkit ``Box`` + ``cv2.fillPoly``) on a generated world, with and without BEV
augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from occfeat.data import Augmentation, NuScenesBEV
from occfeat.data.labels import LABEL_PROTOCOLS, VehicleBox, rasterize_vehicles
from occfeat.errors import ConfigError
from occfeat.models.geometry import BEVGrid

# 8 x 8 cells of 1 m: x (forward) and y (left) in [-4, 4). LSS index i of a coordinate p is round(p + 4).
SMALL = BEVGrid(x_range=(-4.0, 4.0), y_range=(-4.0, 4.0), resolution=1.0)


def rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x1, y1], [x1, y0], [x0, y0], [x0, y1]])


def drawing(labels: dict[str, np.ndarray]) -> list[str]:
    """The raster as text, row 0 on top: '.' background, '#' vehicle, 'x' vehicle ignored by the visibility filter."""
    vehicle, ignore = labels["vehicle"][0], labels["vehicle_ignore"][0]
    return ["".join("x" if i else "#" if v else "." for v, i in zip(*rows)) for rows in zip(vehicle, ignore)]


@pytest.mark.parametrize(
    ("boxes", "expected"),
    [
        pytest.param(  # x 0.3..2.6 -> indices 4..7 -> rows 3..0; y -1.2..0.7 -> indices 3..5 -> columns 4..2
            [VehicleBox(rect(0.3, 2.6, -1.2, 0.7), 4)],
            ["..###...", "..###...", "..###...", "..###...", "........", "........", "........", "........"],
            id="axis-aligned: every cell the outline touches",
        ),
        pytest.param(  # corners round to (x, y) indices (6, 4), (4, 3), (2, 4), (4, 6)
            [VehicleBox(np.array([[2.2, 0.3], [0.2, -1.2], [-1.8, 0.3], [0.2, 1.8]]), 4)],
            ["........", "...#....", "..###...", ".####...", "..###...", "...#....", "........", "........"],
            id="rotated",
        ),
        pytest.param(  # x -1.5..0.5 -> 2.5, 4.5 -> 2, 4 and y 0.5..1.5 -> 4.5, 5.5 -> 4, 6: np.round, half to even
            [VehicleBox(rect(-1.5, 0.5, 0.5, 1.5), 4)],
            ["........", "........", "........", ".###....", ".###....", ".###....", "........", "........"],
            id="corners on cell boundaries",
        ),
        pytest.param(  # x 2.2..6 -> indices 6..10, y -5..-3.2 -> -1..1: clipped to the raster
            [VehicleBox(rect(2.2, 6.0, -5.0, -3.2), 4)],
            ["......##", "......##", "........", "........", "........", "........", "........", "........"],
            id="partly outside the grid",
        ),
        pytest.param(  # a hidden box (visibility 1), then a visible one painted over part of it
            [VehicleBox(rect(-3.2, 0.4, -2.6, -0.4), 1), VehicleBox(rect(-1.4, 2.3, -1.3, 1.2), 3)],
            ["........", "..###...", "..###...", "..###xx.", "..###xx.", "...xxxx.", "...xxxx.", "........"],
            id="overlap: the visible box painted last wins",
        ),
        pytest.param(  # the same two boxes in the other order: the hidden one covers the overlap
            [VehicleBox(rect(-1.4, 2.3, -1.3, 1.2), 3), VehicleBox(rect(-3.2, 0.4, -2.6, -0.4), 1)],
            ["........", "..###...", "..###...", "..#xxxx.", "..#xxxx.", "...xxxx.", "...xxxx.", "........"],
            id="overlap: the hidden box painted last wins",
        ),
    ],
)
def test_lss_raster_of_hand_placed_boxes(boxes, expected):
    assert drawing(rasterize_vehicles(SMALL, boxes)) == expected


def test_lss_raster_puts_forward_up_and_left_left():
    grid = BEVGrid()
    ahead = rasterize_vehicles(grid, [VehicleBox(rect(18.0, 22.0, -1.0, 1.0), 4)])["vehicle"][0]
    left = rasterize_vehicles(grid, [VehicleBox(rect(-2.0, 2.0, 19.0, 21.0), 4)])["vehicle"][0]
    # x 18..22 m -> LSS indices 136..144 -> rows 63..55 (above the centre); y -1..1 m -> 98..102 -> columns 101..97.
    rows, cols = np.nonzero(ahead)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (55, 63, 97, 101)
    # y 19..21 m -> indices 138..142 -> columns 61..57 (left of the centre); x -2..2 m -> rows 103..95.
    rows, cols = np.nonzero(left)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (95, 103, 57, 61)


def test_lss_paints_more_than_the_footprint_and_cell_center_about_the_footprint():
    grid = BEVGrid()
    rng = np.random.default_rng(0)
    footprint, areas = 0.0, {protocol: 0.0 for protocol in LABEL_PROTOCOLS}
    for _ in range(40):
        length, width, yaw = rng.uniform(3.8, 5.2), rng.uniform(1.7, 2.1), rng.uniform(0, 2 * np.pi)
        local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * [length / 2, width / 2]
        rotation = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        box = VehicleBox(local @ rotation.T + rng.uniform(-40, 40, 2), 4)
        footprint += length * width
        for protocol in LABEL_PROTOCOLS:
            areas[protocol] += rasterize_vehicles(grid, [box], protocol=protocol)["vehicle"].sum() * 0.25
    assert areas["cell-center"] == pytest.approx(footprint, rel=0.05)
    assert 1.25 < areas["lss"] / footprint < 1.5  # docs/bev-networks.md: about 1.36x for a car at 0.5 m


def test_center_and_offset_come_from_the_same_instance_raster():
    labels = rasterize_vehicles(SMALL, [VehicleBox(rect(0.3, 2.6, -1.2, 0.7), 4)])
    # Centre of the corners in LSS indices: x (4.3 + 6.6) / 2 = 5.45, y (2.8 + 4.7) / 2 = 3.75 -> row 1.55, col 3.25.
    rows, cols = np.nonzero(labels["vehicle"][0])
    targets = np.stack([rows, cols], 1) + labels["offset"][:, rows, cols].T
    np.testing.assert_allclose(targets, np.broadcast_to([1.55, 3.25], targets.shape), atol=1e-5)
    assert np.unravel_index(labels["center"][0].argmax(), SMALL.shape) == (2, 3)
    assert (labels["offset"][:, labels["vehicle"][0] == 0] == 0).all()


def test_unknown_label_protocol_is_a_typed_error(synthetic_world):
    with pytest.raises(ConfigError, match="label_protocol='centre'.*'lss'"):
        rasterize_vehicles(SMALL, [], protocol="centre")
    with pytest.raises(ConfigError, match="label_protocol"):
        NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", label_protocol="fillpoly")


# --------------------------------------------------------------------------------------------------------------------
# Parity with an independent implementation of the protocol on a generated world


def reference_rasters(nusc, sample_token: str, grid: BEVGrid, bev_aug: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vehicle, ignore) as LSS / PointBeV write them: devkit boxes moved into the yaw-only ego frame of LIDAR_TOP
    (then by inverse(bev_aug)), corners ``round((p - bx + dx / 2) / dx)``, (y, x) swapped for cv2, fillPoly of the
    visibility tokens over a 255 background in annotation order, then the flips."""
    sample = nusc.get("sample", sample_token)
    pose = nusc.get("ego_pose", nusc.get("sample_data", sample["data"]["LIDAR_TOP"])["ego_pose_token"])
    yaw = Quaternion(pose["rotation"]).yaw_pitch_roll[0]
    dx = np.array([grid.resolution, grid.resolution])
    bx = np.array([grid.x_range[0], grid.y_range[0]]) + dx / 2
    h, w = grid.shape
    visibility = np.full((h, w), 255, np.uint8)
    to_raster = np.linalg.inv(bev_aug)
    for token in sample["anns"]:
        ann = nusc.get("sample_annotation", token)
        if ann["category_name"].split(".")[0] != "vehicle":
            continue
        box = Box(ann["translation"], ann["size"], Quaternion(ann["rotation"]))
        box.translate(-np.array(pose["translation"]))
        box.rotate(Quaternion(axis=[0, 0, 1], angle=yaw).inverse)
        corners = to_raster[:3, :3] @ box.bottom_corners() + to_raster[:3, 3:4]
        points = np.round((corners[:2].T - bx + dx / 2.0) / dx).astype(np.int32)
        points[:, [1, 0]] = points[:, [0, 1]]
        cv2.fillPoly(visibility, [points], int(ann["visibility_token"]))
    visibility = np.flip(visibility, (0, 1))
    vehicle = visibility != 255
    return vehicle, vehicle & (visibility < 2)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


@pytest.mark.parametrize("grid", [BEVGrid(), BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=1.0)],
                         ids=["200x200@0.5m", "64x64@1m"])
@pytest.mark.parametrize("augment", [False, True], ids=["plain", "bev-augmented"])
def test_default_raster_equals_the_independent_implementation(synthetic_world, grid, augment):
    data = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", image_size=(32, 64), grid=grid,
                       augment=Augmentation().scaled_to(grid) if augment else None, seed=3)
    positives = ignored = 0
    for index in range(len(data)):
        item = data[index]
        vehicle, ignore = reference_rasters(data.nusc, data.sample_tokens[index], grid, item["bev_aug"].double().numpy())
        ours = item["vehicle"][0].numpy() > 0
        assert iou(ours, vehicle) >= 0.99, index
        ours_ignore = item["vehicle_ignore"][0].numpy() > 0
        assert iou(ours_ignore, ignore) >= 0.99 if ignore.any() else not ours_ignore.any()
        positives += int(vehicle.sum())
        ignored += int(ignore.sum())
    assert positives > 100 and ignored > 0  # the world has vehicles, some hidden, on the raster to compare
