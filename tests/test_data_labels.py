"""Label rasterisation and low-data subsets (no dataroot needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occfeat.data import load_subset, save_subset, select_subset
from occfeat.data.labels import LABEL_PROTOCOLS, VehicleBox, rasterize_vehicles, sample_map_mask
from occfeat.errors import ConfigError, InputError
from occfeat.models.geometry import BEVGrid, bev_augmentation_matrix


def box_corners(x, y, length, width, yaw_deg):
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    local = np.array([[length / 2, width / 2], [length / 2, -width / 2], [-length / 2, -width / 2], [-length / 2, width / 2]])
    return local @ np.array([[c, -s], [s, c]]).T + [x, y]


def test_cell_center_raster_area_matches_the_footprints():
    grid = BEVGrid()
    rng = np.random.default_rng(0)
    total_true = total_raster = 0.0
    for _ in range(40):  # cars, vans, buses at random places and headings
        length, width = rng.uniform(3.5, 12.0), rng.uniform(1.7, 2.6)
        box = VehicleBox(box_corners(*rng.uniform(-40, 40, 2), length, width, rng.uniform(0, 360)), visibility=4)
        area = rasterize_vehicles(grid, [box], protocol="cell-center")["vehicle"].sum() * grid.resolution**2
        assert area == pytest.approx(length * width, rel=0.15)  # one box: +- a row of cells
        total_true += length * width
        total_raster += area
    assert total_raster == pytest.approx(total_true, rel=0.05)


@pytest.mark.parametrize("protocol", LABEL_PROTOCOLS)
def test_vehicle_raster_orientation_front_is_up_left_is_left(protocol):
    grid = BEVGrid()
    ahead = rasterize_vehicles(grid, [VehicleBox(box_corners(20.0, 0.0, 4.0, 2.0, 0.0), 4)], protocol=protocol)["vehicle"][0]
    left = rasterize_vehicles(grid, [VehicleBox(box_corners(0.0, 20.0, 4.0, 2.0, 0.0), 4)], protocol=protocol)["vehicle"][0]
    rows, cols = np.nonzero(ahead)
    assert rows.max() < 100 and abs(cols.mean() - 99.5) < 1  # ahead of the car: above the centre, centred
    rows, cols = np.nonzero(left)
    assert cols.max() < 100 and abs(rows.mean() - 99.5) < 1  # to the left: left of the centre
    # A car pointing forward is taller (rows) than wide (cols) on the raster.
    rows, cols = np.nonzero(ahead)
    assert np.ptp(rows) > np.ptp(cols)


@pytest.mark.parametrize("protocol", LABEL_PROTOCOLS)
def test_low_visibility_vehicles_are_ignored_not_negative(protocol):
    grid = BEVGrid()
    seen = VehicleBox(box_corners(10.0, 5.0, 4.0, 2.0, 0.0), visibility=3)
    hidden = VehicleBox(box_corners(-15.0, -5.0, 4.0, 2.0, 0.0), visibility=1)
    labels = rasterize_vehicles(grid, [seen, hidden], protocol=protocol)
    vehicle, ignore = labels["vehicle"][0], labels["vehicle_ignore"][0]
    hidden_cells = rasterize_vehicles(grid, [hidden], protocol=protocol)["vehicle"][0] > 0
    seen_cells = rasterize_vehicles(grid, [seen], protocol=protocol)["vehicle"][0] > 0
    assert (vehicle[hidden_cells] == 1).all()  # filter off: a positive
    assert (ignore[hidden_cells] == 1).all()  # filter on: ignored, neither positive nor negative
    assert (ignore[seen_cells] == 0).all() and ignore.sum() == hidden_cells.sum()


def test_cell_center_center_and_offset_point_at_the_instance_centre():
    grid = BEVGrid()
    labels = rasterize_vehicles(grid, [VehicleBox(box_corners(10.0, 5.0, 4.0, 2.0, 20.0), 4)], protocol="cell-center")
    row, col = np.unravel_index(labels["center"][0].argmax(), grid.shape)
    expected_row, expected_col = grid.metric_to_cell(torch.tensor([10.0, 5.0])).tolist()
    assert abs(row - expected_row) <= 0.5 and abs(col - expected_col) <= 0.5
    rows, cols = np.nonzero(labels["vehicle"][0])
    targets = np.stack([rows, cols], 1) + labels["offset"][:, rows, cols].T
    np.testing.assert_allclose(targets, np.broadcast_to([expected_row, expected_col], targets.shape), atol=1e-4)


@pytest.mark.parametrize("protocol", LABEL_PROTOCOLS)
def test_bev_augmentation_moves_labels_like_coordinates(protocol):
    """Labels rasterised from boxes mapped by inverse(bev_aug) equal the plain labels read at raster cells mapped by
    bev_aug, which is what the network does with its coordinates."""
    grid = BEVGrid()
    box = box_corners(10.0, 5.0, 4.6, 1.9, 30.0)
    aug = bev_augmentation_matrix((3.0, -2.0), 0.0).double().numpy()  # whole cells: 6 rows, -4 cols
    inverse = np.linalg.inv(aug)
    moved = rasterize_vehicles(grid, [VehicleBox(box @ inverse[:2, :2].T + inverse[:2, 3], 4)], protocol=protocol)["vehicle"][0]
    plain = rasterize_vehicles(grid, [VehicleBox(box, 4)], protocol=protocol)["vehicle"][0]
    # cell (r, c) of the augmented raster is at ego bev_aug @ centre(r, c), i.e. plain cell (r - 6, c + 4).
    np.testing.assert_array_equal(moved[6:, :-4], plain[:-6, 4:])
    assert moved.sum() == plain.sum()


def test_map_lookup_follows_the_devkit_pixel_convention():
    mask = np.zeros((100, 200), np.uint8)  # 10 m x 20 m at 0.1 m
    mask[90:100, 0:50] = 255  # bottom-left corner of the image = low global y, low global x
    values = sample_map_mask(mask, np.array([[1.0, 0.5], [1.0, 9.5], [30.0, 0.5]]), 0.1)
    np.testing.assert_array_equal(values, [1.0, 0.0, 0.0])


def test_subsets_are_nested_and_reproducible(tmp_path):
    tokens = [f"token-{i:05d}" for i in range(2000)]
    one, ten, full = (select_subset(tokens, fraction=f, seed=7) for f in (0.01, 0.1, 1.0))
    assert (len(one), len(ten), len(full)) == (20, 200, 2000)
    assert set(one) <= set(ten) <= set(full)
    assert select_subset(tokens, fraction=0.1, seed=7) == ten
    assert select_subset(tokens, fraction=0.1, seed=8) != ten
    assert select_subset(tokens, count=20, seed=7) == one
    path = save_subset(ten, tmp_path / "subset.json")
    assert load_subset(path) == ten
    assert select_subset(tokens[:10], fraction=0.01) != []  # rounded up: never empty


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_the_unit_interval_is_a_typed_error(fraction):
    with pytest.raises(ConfigError, match="0 < fraction <= 1"):
        select_subset(["a", "b"], fraction=fraction)


def test_bad_subset_file_is_a_typed_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_subset(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(InputError, match="JSON list"):
        load_subset(tmp_path / "bad.json")


def test_bev_augmentation_scales_with_the_raster():
    from occfeat.data import Augmentation

    assert Augmentation().scaled_to(BEVGrid()) == Augmentation()
    small = Augmentation().scaled_to(BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=1.0))
    assert small.bev_translation_xy == pytest.approx((19.2, 12.8)) and small.bev_yaw_deg == 20.0
