"""OccFeat's pretraining targets, built on the batch's device from the Lidar points and the teacher's feature maps.

Occupancy
    The occupancy grid is the BEV raster of the network (x, y) with its own heights: z in [-1.0, 5.4) m at 0.4 m
    (16 bins) by default (``occupancy_grid``). A voxel is occupied when at least one aggregated Lidar point falls in
    it. Points are given in the ego frame; the grid lives in the (augmented) raster frame, so the points are first
    mapped with ``inverse(bev_aug)``. Cell membership is half-open on the metric axes: ``x in [x_min, x_max)``,
    ``y in [y_min, y_max)``, ``z in [z_min, z_max)``, through ``BEVGrid.metric_to_cell`` (cell centres at integers;
    rows and columns run against x and y, so a point belongs to cell ``ceil(continuous - 0.5)``) and
    ``floor((z - z_min) / z_resolution)``.

Feature targets
    The centre of every occupied voxel is mapped to the ego frame with ``bev_aug`` and projected into every camera
    (``geometry.project_to_cameras``: visible when depth > 1e-3 m and inside the image). In each camera that sees it,
    the teacher's patch-feature map is sampled bilinearly at the same unit image coordinates (the teacher's map
    covers the whole image, see ``teacher.py``) with border padding, i.e. ``grid_sample(align_corners=False,
    padding_mode="border")``; the target is the mean over those cameras. Voxels seen by no camera get no target
    (``seen`` is False) and are not distilled.

Nothing here is dense over the feature dimension: the samples of all (voxel, camera) pairs are summed by one
``embedding_bag`` straight into the (K, D) targets.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import InputError
from ..conventions.geometry import BEVGrid, pixels_to_unit, project_to_cameras, transform_points
from ..models.ops import average_over_cameras

# The paper's grid is not published; ours (docs/method.md): the 200x200 raster, 16 heights of 0.4 m from 1 m below the
# ego origin (the rear axle, ~0.5 m above the road) to 5.4 m, which covers cars, trucks, buses and most buildings'
# lower floors.
OCCUPANCY_Z_RANGE = (-1.0, 5.4)
OCCUPANCY_Z_RESOLUTION = 0.4


def occupancy_grid(
    bev_grid: BEVGrid, z_range: tuple[float, float] = OCCUPANCY_Z_RANGE, z_resolution: float = OCCUPANCY_Z_RESOLUTION
) -> BEVGrid:
    """The network's raster with the occupancy heights: (Z, H, W) = (``num_heights``, *``shape``)."""
    return dataclasses.replace(bev_grid, z_range=tuple(z_range), z_resolution=z_resolution)


class Targets(NamedTuple):
    """Targets of one batch.

    occupancy: (B, Z, H, W) bool.
    occupied_index: (K,) flat indices of the occupied voxels into the (B, Z, H, W) grid, ascending.
    seen: (K,) bool, the occupied voxel is seen by at least one camera (it is distilled).
    features: (K, D) float32 teacher features (zeros where not ``seen``), or None without teacher maps.
    """

    occupancy: Tensor
    occupied_index: Tensor
    seen: Tensor
    features: Tensor | None

    @property
    def distilled_index(self) -> Tensor:
        """(K_seen,) flat indices of the distilled voxels."""
        return self.occupied_index[self.seen]

    @property
    def distilled_features(self) -> Tensor | None:
        return None if self.features is None else self.features[self.seen]


def voxelize(points: Tensor, valid: Tensor | None, bev_aug: Tensor | None, grid: BEVGrid) -> Tensor:
    """Occupancy (B, Z, H, W) bool of ego-frame points.

    Args:
        points: (B, P, >=3) ego (x, y, z, ...), padded; ``valid`` (B, P) marks real points (None: all are).
        bev_aug: (B, 4, 4) raster -> ego transforms (None: identity).
        grid: the occupancy grid (``occupancy_grid``).
    """
    if points.dim() != 3 or points.shape[-1] < 3:
        raise InputError(f"points: got shape {tuple(points.shape)}, expected (B, P, >=3) ego (x, y, z, ...).")
    b, p = points.shape[:2]
    (h, w), num_z = grid.shape, grid.num_heights
    # float64: a bin boundary must not move with the device or the precision of the batch.
    xyz = points[..., :3].double()
    if bev_aug is not None:
        xyz = transform_points(torch.linalg.inv(bev_aug.double()), xyz)
    # ceil(c - 0.5), not floor(c + 0.5): the raster's axes are flipped, and a cell is half-open on the *metric* axis.
    row_col = torch.ceil(grid.metric_to_cell(xyz[..., :2]) - 0.5)
    z_bin = torch.floor((xyz[..., 2] - grid.z_range[0]) / grid.z_resolution)
    row, col = row_col[..., 0], row_col[..., 1]
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w) & (z_bin >= 0) & (z_bin < num_z)
    if valid is not None:
        inside &= valid
    batch_index = torch.arange(b, device=points.device).view(b, 1).expand(b, p)
    flat = ((batch_index * num_z + z_bin.long()) * h + row.long()) * w + col.long()
    occupancy = torch.zeros(b * num_z * h * w, dtype=torch.bool, device=points.device)
    occupancy[flat[inside]] = True
    return occupancy.view(b, num_z, h, w)


def unravel_voxel_index(voxel_index: Tensor, grid: BEVGrid) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flat indices into a (B, Z, H, W) grid -> (sample, z bin, row, col), each like ``voxel_index``."""
    num_z, (h, w) = grid.num_heights, grid.shape
    col = voxel_index % w
    row = torch.div(voxel_index, w, rounding_mode="floor") % h
    z_bin = torch.div(voxel_index, h * w, rounding_mode="floor") % num_z
    return torch.div(voxel_index, num_z * h * w, rounding_mode="floor"), z_bin, row, col


def voxel_centers_of(voxel_index: Tensor, grid: BEVGrid) -> Tensor:
    """(K, 3) metric centres, in the raster frame, of the voxels at flat indices into a (B, Z, H, W) grid (float32:
    a centre is never near a bin boundary, and 1e-6 relative error is far below a teacher patch)."""
    _, z_bin, row, col = unravel_voxel_index(voxel_index, grid)
    xy = grid.cell_to_metric(torch.stack([row, col], dim=-1).float())
    z = grid.z_range[0] + (z_bin.float() + 0.5) * grid.z_resolution
    return torch.cat([xy, z[:, None]], dim=-1)


def sample_teacher_features(
    voxel_index: Tensor,
    teacher_maps: Tensor,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    bev_aug: Tensor | None,
    grid: BEVGrid,
    image_hw: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Teacher features at voxel centres, averaged over the cameras that see them.

    Args:
        voxel_index: (K,) flat indices into the (B, Z, H, W) grid, ascending (as ``nonzero`` gives them).
        teacher_maps: (B, N, D, h, w) patch features of each camera's whole image.
        intrinsics, cam_to_ego: (B, N, 3, 3), (B, N, 4, 4) for the network's image of size ``image_hw``.
        bev_aug: (B, 4, 4) raster -> ego (None: identity).
    Returns:
        features (K, D) float32 (zeros for unseen voxels) and seen (K,) bool.
    """
    b, n, d, fh, fw = teacher_maps.shape
    sample_of = unravel_voxel_index(voxel_index, grid)[0]
    centers = voxel_centers_of(voxel_index, grid)  # projected in float32, like the network's own geometry
    table = teacher_maps.detach().float().permute(0, 1, 3, 4, 2).reshape(b * n * fh * fw, d)  # one row per patch
    units, bags, maps = [], [], []
    first = 0  # the flat voxel index of sample i's first voxel
    for i in range(b):  # B is a few samples per process; each has its own number of occupied voxels
        xyz = centers[sample_of == i]
        if bev_aug is not None:
            xyz = transform_points(bev_aug[i].float(), xyz)
        projection = project_to_cameras(xyz[None], intrinsics[i : i + 1].float(), cam_to_ego[i : i + 1].float(), image_hw)
        voxel, camera = projection.visible[0].T.nonzero(as_tuple=True)  # voxel-major: a voxel's cameras are consecutive
        units.append(pixels_to_unit(projection.pixels[0, camera, voxel], image_hw))  # (pairs, 2)
        bags.append(first + voxel)
        maps.append(i * n + camera)
        first += len(xyz)
    features, seen_by = average_over_cameras(table, (fh, fw), torch.cat(units), torch.cat(bags), torch.cat(maps),
                                             len(voxel_index), padding="border")
    return features, seen_by > 0


def build_targets(
    points: Tensor,
    valid: Tensor | None,
    grid: BEVGrid,
    *,
    bev_aug: Tensor | None = None,
    teacher_maps: Tensor | None = None,
    intrinsics: Tensor | None = None,
    cam_to_ego: Tensor | None = None,
    image_hw: tuple[int, int] | None = None,
) -> Targets:
    """Occupancy and (with ``teacher_maps``) feature targets of a batch; see the module docstring."""
    occupancy = voxelize(points, valid, bev_aug, grid)
    occupied_index = occupancy.view(-1).nonzero().squeeze(1)
    if teacher_maps is None:
        return Targets(occupancy, occupied_index, torch.ones_like(occupied_index, dtype=torch.bool), None)
    if intrinsics is None or cam_to_ego is None or image_hw is None:
        raise InputError("build_targets: teacher_maps need the cameras' intrinsics, cam_to_ego and image_hw.")
    features, seen = sample_teacher_features(occupied_index, teacher_maps, intrinsics, cam_to_ego, bev_aug, grid, image_hw)
    return Targets(occupancy, occupied_index, seen, features)
