"""BEV labels rasterised on occfeat's raster: vehicle occupancy with visibility, centerness, offsets, map layers.

All functions take geometry already expressed in the *augmented BEV frame* (see ``occfeat.conventions.geometry``): the
caller maps boxes with ``inverse(bev_aug)`` and map lookups with ``bev_aug``, so labels and network coordinates
always agree.

Vehicle label protocols (``LABEL_PROTOCOLS``):

``"lss"`` (the default): the raster published nuScenes BEV-segmentation numbers use: Lift-Splat-Shoot's
    ``get_binimg`` bit for bit (the codebases of Simple-BEV, PointBeV and so OccFeat descend from it), in PointBeV's
    yaw-only ego frame (LSS rotates by the full ego pose: centimetres apart) with PointBeV's visibility rule (PointBeV
    fills with ``fillConvexPoly`` on the transposed raster, 1.7 % of vehicle cells apart). Each bottom corner (x, y)
    becomes the index pair
    ``np.round((p - (x_min, y_min)) / res)`` (``(p - bx + dx / 2) / dx`` with ``bx`` the first cell centre), the
    polygon is filled with ``cv2.fillPoly`` on an image whose rows are x indices and columns y indices (points given
    as (col, row) = (y index, x index)), and the image is flipped on both axes so that forward is up and left is
    left. ``fillPoly`` also paints every cell the outline touches: about 1.36x a car's footprint at 0.5 m, and a
    half-cell shift (0.25 m forward and left) against the cell centres, both part of the benchmark.
``"cell-center"``: a cell is a vehicle when its centre lies inside the footprint (area equal to the footprint's on
    average). Not the benchmark's label: numbers trained or evaluated with it do not compare with the literature.

Both protocols share the rest, as PointBeV writes it: boxes are painted in annotation order into one instance raster
(a later box overwrites an earlier one), each cell takes the visibility token of the box that painted it last, the
background is valid, and with the visibility filter a painted cell whose token is below ``min_visibility`` (2) is
ignored (neither positive nor negative). Centerness and offsets come from the same instance raster.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ConfigError
from ..conventions.geometry import BEVGrid

CENTER_SIGMA_CELLS = 3.0
LABEL_PROTOCOLS: tuple[str, ...] = ("lss", "cell-center")
DEFAULT_LABEL_PROTOCOL = "lss"


def check_label_protocol(protocol: str) -> str:
    """``protocol`` if it is one of ``LABEL_PROTOCOLS``, else a ``ConfigError`` naming the choices."""
    if protocol not in LABEL_PROTOCOLS:
        raise ConfigError(
            f"label_protocol={protocol!r} is unknown; choose {LABEL_PROTOCOLS[0]!r} (the literature's cv2.fillPoly "
            f"raster, comparable with published numbers) or one of {list(LABEL_PROTOCOLS[1:])}."
        )
    return protocol


@dataclass(frozen=True)
class VehicleBox:
    """A vehicle footprint in the augmented BEV frame: 4 bottom corners (x, y) in metres, and its visibility token."""

    corners_xy: np.ndarray  # (4, 2)
    visibility: int  # nuScenes visibility token 1..4 (0-40, 40-60, 60-80, 80-100 % visible)


def to_cells(grid: BEVGrid, xy: np.ndarray) -> np.ndarray:
    """Metric (..., 2) (x, y) -> continuous raster (..., 2) (col, row), cell centres at integers (cv2's convention)."""
    m = grid.ego_to_cell_matrix().numpy()
    return xy @ m[:2, :2].T + m[:2, 2]


def lss_indices(grid: BEVGrid, xy: np.ndarray) -> np.ndarray:
    """Metric (..., 2) (x, y) -> continuous LSS raster indices (..., 2) (x index, y index) = (p - min) / res, before
    the flips: index i is the cell whose centre is at ``min + (i + 0.5) * res``, so a corner's rounded index is the
    cell edge nearest to it."""
    origin = np.array([grid.x_range[0], grid.y_range[0]])
    return (xy - origin) / grid.resolution


def _lss_to_raster(grid: BEVGrid, index_xy: np.ndarray) -> np.ndarray:
    """Continuous LSS (x index, y index) (..., 2) -> (row, col) on occfeat's raster: the two flips."""
    h, w = grid.shape
    return np.stack([(h - 1) - index_xy[..., 0], (w - 1) - index_xy[..., 1]], axis=-1)


def _paint_lss(grid: BEVGrid, boxes: list[VehicleBox]) -> np.ndarray:
    """(H, W) int32 instance raster of the ``"lss"`` protocol: 1 + box index, later boxes on top."""
    h, w = grid.shape
    painted = np.zeros((h, w), np.int32)  # rows: x index, columns: y index (before the flips)
    for index, box in enumerate(boxes, start=1):
        corners = np.round(lss_indices(grid, np.asarray(box.corners_xy, np.float64))).astype(np.int32)
        cv2.fillPoly(painted, [corners[:, ::-1].copy()], index)  # cv2 points are (col, row) = (y index, x index)
    return np.ascontiguousarray(painted[::-1, ::-1])


def cells_inside(grid: BEVGrid, corners_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the cells whose centre lies inside a convex footprint (4, 2) metric (x, y): the
    ``"cell-center"`` protocol (a 4.6 m x 1.9 m car covers 35 cells of 0.5 m, not the ~48 of ``"lss"``)."""
    h, w = grid.shape
    cells = to_cells(grid, corners_xy)  # (4, 2) (col, row)
    lo = np.clip(np.floor(cells.min(axis=0)).astype(int), 0, [w - 1, h - 1])
    hi = np.clip(np.ceil(cells.max(axis=0)).astype(int), 0, [w - 1, h - 1])
    cols, rows = np.meshgrid(np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1))
    points = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float64)
    edges = np.roll(cells, -1, axis=0) - cells  # (4, 2)
    cross = edges[None, :, 0] * (points[:, None, 1] - cells[None, :, 1]) - edges[None, :, 1] * (
        points[:, None, 0] - cells[None, :, 0]
    )  # (K, 4): the side of each edge the point is on
    inside = (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)
    return rows.ravel()[inside], cols.ravel()[inside]


def _paint_cell_center(grid: BEVGrid, boxes: list[VehicleBox]) -> np.ndarray:
    """(H, W) int32 instance raster of the ``"cell-center"`` protocol: 1 + box index, later boxes on top."""
    painted = np.zeros(grid.shape, np.int32)
    for index, box in enumerate(boxes, start=1):
        rows, cols = cells_inside(grid, box.corners_xy)
        painted[rows, cols] = index
    return painted


def box_centers(grid: BEVGrid, boxes: list[VehicleBox], protocol: str = DEFAULT_LABEL_PROTOCOL) -> np.ndarray:
    """(K, 2) continuous (row, col) of each box's centre (mean of its corners) in the frame its protocol paints in."""
    if not boxes:
        return np.zeros((0, 2))
    corners = np.stack([np.asarray(b.corners_xy, np.float64) for b in boxes])  # (K, 4, 2)
    if check_label_protocol(protocol) == "lss":
        return _lss_to_raster(grid, lss_indices(grid, corners).mean(axis=1))
    return to_cells(grid, corners).mean(axis=1)[:, ::-1]


def rasterize_vehicles(
    grid: BEVGrid, boxes: list[VehicleBox], min_visibility: int = 2, protocol: str = DEFAULT_LABEL_PROTOCOL
) -> dict[str, np.ndarray]:
    """Vehicle labels on the (H, W) raster, with ``protocol`` one of ``LABEL_PROTOCOLS`` (module docstring).

    Returns float32 arrays:
        ``vehicle`` (1, H, W): 1 on every painted cell (the "no visibility filter" target);
        ``vehicle_ignore`` (1, H, W): 1 on painted cells whose last painter has a visibility token below
            ``min_visibility``: with the standard filter these are neither positives nor negatives
            (target = vehicle * (1 - ignore), weight = 1 - ignore);
        ``center`` (1, H, W): Gaussian (sigma 3 cells) around each box centre, max over boxes;
        ``offset`` (2, H, W): (row, col) vector in cells from each vehicle cell to the centre of the box owning it,
            0 elsewhere.
    """
    paint = {"lss": _paint_lss, "cell-center": _paint_cell_center}[check_label_protocol(protocol)]
    h, w = grid.shape
    instance = paint(grid, boxes)
    tokens = np.array([min_visibility, *(int(b.visibility) for b in boxes)])  # index 0: background, valid
    centers = np.concatenate([np.zeros((1, 2)), box_centers(grid, boxes, protocol)]).astype(np.float32)
    vehicle = (instance > 0).astype(np.float32)
    ignore = vehicle * (tokens[instance] < min_visibility)

    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    center = np.zeros((h, w), np.float32)
    for row, col in centers[1:]:
        gaussian = np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2.0 * CENTER_SIGMA_CELLS**2))
        np.maximum(center, gaussian, out=center)
    owner = centers[instance]  # (H, W, 2)
    offset = np.stack([owner[..., 0] - rows, owner[..., 1] - cols]) * vehicle

    return {
        "vehicle": vehicle[None],
        "vehicle_ignore": ignore.astype(np.float32)[None],
        "center": center[None],
        "offset": offset.astype(np.float32),
    }


def sample_map_mask(mask: np.ndarray, global_xy: np.ndarray, resolution: float) -> np.ndarray:
    """Nearest-pixel lookup of a nuScenes map mask (``MapMask`` convention: px = x / res, py = H - y / res) at global
    (..., 2) points; 1.0 where the mask is set, 0.0 elsewhere and outside the map."""
    px = np.round(global_xy[..., 0] / resolution).astype(np.int64)
    py = np.round(mask.shape[0] - global_xy[..., 1] / resolution).astype(np.int64)
    inside = (px >= 0) & (px < mask.shape[1]) & (py >= 0) & (py < mask.shape[0])
    values = np.zeros(global_xy.shape[:-1], np.float32)
    values[inside] = mask[py[inside], px[inside]] > 0
    return values
