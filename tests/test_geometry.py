"""The spatial conventions: raster, projection (against nuscenes-devkit), intrinsics updates, grid normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from nuscenes.utils.geometry_utils import view_points
from pyquaternion import Quaternion

from occfeat.errors import ConfigError
from occfeat.models.geometry import (
    NUSCENES_CAMERAS,
    BEVGrid,
    bev_augmentation_matrix,
    image_affine,
    nuscenes_camera_rig,
    pixels_to_grid,
    project_to_cameras,
    resize_crop_for,
    transform_points,
    update_intrinsics,
)


def test_raster_reads_like_a_map_with_the_car_driving_up():
    grid = BEVGrid()
    assert grid.shape == (200, 200)
    centres = grid.cell_centers()
    # Row 0 is the far front (+x), column 0 the far left (+y).
    torch.testing.assert_close(centres[0, 0], torch.tensor([49.75, 49.75]))
    torch.testing.assert_close(centres[-1, -1], torch.tensor([-49.75, -49.75]))
    assert centres[0, 100, 0] > centres[199, 100, 0]  # x decreases down the rows
    assert centres[100, 0, 1] > centres[100, 199, 1]  # y decreases along the columns
    # metric_to_cell inverts cell_to_metric, and a point just ahead-left of the car lands up-left of the centre.
    row_col = torch.rand(50, 2) * 199
    torch.testing.assert_close(grid.metric_to_cell(grid.cell_to_metric(row_col)), row_col)
    row, col = grid.metric_to_cell(torch.tensor([1.0, 1.0])).tolist()
    assert row < 99.5 and col < 99.5


def test_voxel_centers_cover_the_published_heights():
    grid = BEVGrid()
    voxels = grid.voxel_centers()
    assert voxels.shape == (8, 200, 200, 3)
    torch.testing.assert_close(grid.heights(), torch.tensor([-3.375 + 1.25 * i for i in range(8)]))
    torch.testing.assert_close(voxels[3, 5, 7], torch.tensor([*grid.cell_centers()[5, 7].tolist(), -3.375 + 3 * 1.25]))


def test_grid_rejects_ranges_that_are_not_whole_cells():
    with pytest.raises(ConfigError, match="x_range"):
        BEVGrid(x_range=(-50.0, 50.3))


def random_rigid(rng: np.random.Generator) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Quaternion(rng.standard_normal(4)).normalised.rotation_matrix
    m[:3, 3] = rng.uniform(-3, 3, 3)
    return m


def test_projection_agrees_with_nuscenes_view_points():
    rng = np.random.default_rng(0)
    b, n, p = 2, 3, 500
    image_hw = (90, 160)
    cam_to_ego = np.stack([[random_rigid(rng) for _ in range(n)] for _ in range(b)])
    intrinsics = np.zeros((b, n, 3, 3))
    intrinsics[..., 0, 0] = rng.uniform(50, 200, (b, n))
    intrinsics[..., 1, 1] = rng.uniform(50, 200, (b, n))
    intrinsics[..., 0, 2] = rng.uniform(60, 100, (b, n))
    intrinsics[..., 1, 2] = rng.uniform(30, 60, (b, n))
    intrinsics[..., 2, 2] = 1.0
    points = rng.uniform(-20, 20, (b, p, 3))

    got = project_to_cameras(
        torch.from_numpy(points), torch.from_numpy(intrinsics), torch.from_numpy(cam_to_ego), image_hw
    )
    checked = 0
    for bi in range(b):
        for ni in range(n):
            ego_to_cam = np.linalg.inv(cam_to_ego[bi, ni])
            in_cam = (ego_to_cam[:3, :3] @ points[bi].T) + ego_to_cam[:3, 3:4]  # (3, P)
            depth = in_cam[2]
            pixels = view_points(in_cam, intrinsics[bi, ni], normalize=True)[:2].T  # (P, 2)
            front = depth > 0.1
            np.testing.assert_allclose(got.depth[bi, ni].numpy(), depth, atol=1e-9)
            np.testing.assert_allclose(got.pixels[bi, ni].numpy()[front], pixels[front], rtol=1e-9, atol=1e-7)
            inside = (pixels[:, 0] >= -0.5) & (pixels[:, 0] < 159.5) & (pixels[:, 1] >= -0.5) & (pixels[:, 1] < 89.5)
            np.testing.assert_array_equal(got.visible[bi, ni].numpy(), (depth > 1e-3) & inside)
            checked += int(front.sum())
    assert checked > 500
    assert got.visible.any() and not got.visible.all()


def test_points_behind_a_camera_are_never_visible():
    intrinsics, cam_to_ego = nuscenes_camera_rig((224, 480))
    front = NUSCENES_CAMERAS.index("CAM_FRONT")
    # Points straight behind CAM_FRONT on its optical axis: their mirror image would be the image centre.
    behind = torch.tensor([[[-5.0, 0.02, 1.51], [-30.0, 0.02, 1.51]]])
    projection = project_to_cameras(behind, intrinsics[None], cam_to_ego[None], (224, 480))
    assert not projection.visible[0, front].any()
    ahead = torch.tensor([[[20.0, 0.02, 1.51]]])
    projection = project_to_cameras(ahead, intrinsics[None], cam_to_ego[None], (224, 480))
    assert projection.visible[0, front, 0]
    u, v = projection.pixels[0, front, 0].tolist()
    k = intrinsics[front]
    assert abs(u - k[0, 2]) < 1.0 and abs(v - k[1, 2]) < 1.0  # on the optical axis -> the principal point


def test_nuscenes_rig_sees_all_around_the_car():
    grid = BEVGrid()
    intrinsics, cam_to_ego = nuscenes_camera_rig((224, 480))
    ring = torch.tensor([[[20 * math.cos(a), 20 * math.sin(a), 0.0] for a in np.linspace(0, 2 * math.pi, 360)]])
    seen = project_to_cameras(ring, intrinsics[None], cam_to_ego[None], (224, 480)).visible[0].any(dim=0)
    assert seen.all(), "the six nominal cameras must cover a 20 m ring around the car"
    assert grid.shape == (200, 200)


def test_pixels_to_grid_addresses_pixel_centres_for_grid_sample():
    image = torch.arange(6 * 10, dtype=torch.float32).view(1, 1, 6, 10)
    pixels = torch.tensor([[0.0, 0.0], [9.0, 5.0], [3.0, 2.0], [4.5, 1.0]])
    samples = F.grid_sample(image, pixels_to_grid(pixels, (6, 10)).view(1, 1, -1, 2), align_corners=False)
    torch.testing.assert_close(samples.flatten(), torch.tensor([0.0, 59.0, 23.0, 14.5]))


def test_a_stride_8_feature_map_is_addressed_by_the_same_normalised_coordinates():
    # A feature map that is the 8x8 average pool of the image has, at the centre of each 8x8 block, the block mean.
    image = torch.randn(1, 1, 32, 64)
    feature = F.avg_pool2d(image, 8)
    block_centres = torch.tensor([[8 * j + 3.5, 8 * i + 3.5] for i in range(4) for j in range(8)])
    samples = F.grid_sample(feature, pixels_to_grid(block_centres, (32, 64)).view(1, 1, -1, 2), align_corners=False)
    torch.testing.assert_close(samples.flatten(), feature.flatten())


@pytest.mark.parametrize(
    "affine",
    [
        image_affine(0.3),
        image_affine((0.5, 0.4), crop_xy=(10.0, 25.0)),
        image_affine(1.05, crop_xy=(3.0, 4.0), rotation_deg=2.5, rotation_center=(240.0, 112.0)),
        resize_crop_for((900, 1600), (224, 480)),
    ],
)
def test_intrinsics_update_keeps_a_3d_point_on_the_same_content(affine):
    intrinsics, cam_to_ego = nuscenes_camera_rig((900, 1600))
    points = torch.tensor([[[15.0, 2.0, 0.5], [8.0, -1.0, 1.0], [30.0, 4.0, -1.0]]])
    before = project_to_cameras(points, intrinsics[None], cam_to_ego[None], (900, 1600))
    after = project_to_cameras(points, update_intrinsics(intrinsics, affine)[None], cam_to_ego[None], (900, 1600))
    # The new pixel of the point is exactly where the image warp sends its old pixel.
    moved = before.pixels.double() @ affine[:2, :2].T + affine[:2, 2]
    in_front = before.depth > 0.1
    assert in_front.sum() >= 3
    torch.testing.assert_close(after.pixels.double()[in_front], moved[in_front], atol=1e-3, rtol=0)


def test_resize_moves_image_edges_not_the_first_pixel_centre():
    affine = image_affine(0.5)
    corners = torch.tensor([[-0.5, -0.5, 1.0], [99.5, 49.5, 1.0]], dtype=torch.float64)
    torch.testing.assert_close((corners @ affine.T)[:, :2], torch.tensor([[-0.5, -0.5], [49.5, 24.5]], dtype=torch.float64))


def test_resize_crop_for_gives_the_standard_224x480_crop():
    affine = resize_crop_for((900, 1600), (224, 480))
    assert affine[0, 0] == pytest.approx(0.3)
    # 900 * 0.3 = 270 rows, 46 cropped from the top (sky); the bottom row stays the bottom row.
    bottom = torch.tensor([0.0, 899.5, 1.0], dtype=torch.float64) @ affine.T
    assert bottom[1].item() == pytest.approx(223.5)


def test_bev_augmentation_matrix_rotates_then_translates():
    m = bev_augmentation_matrix((2.0, -1.0), 90.0)
    point = transform_points(m, torch.tensor([[1.0, 0.0, 0.5]]))
    torch.testing.assert_close(point, torch.tensor([[2.0, 0.0, 0.5]]), atol=1e-6, rtol=0)
