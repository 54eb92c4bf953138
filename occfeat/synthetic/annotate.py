"""Quantities of a ``sample_annotation`` measured on the sensor data as written: the Lidar points inside each box
and the fraction of each object the six cameras see.

Boxes here are nuScenes boxes: centre (3,), size (w, l, h), yaw; the length runs along the box's x axis.
"""

from __future__ import annotations

import numpy as np

from .render import CameraImage

# Points closer than this to a box face are dropped from the written cloud: a recount in float32 (as the devkit's
# LidarPointCloud does) then finds exactly the points counted here.
BOUNDARY_TOLERANCE = 0.005
DEPTH_TOLERANCE = 0.05


def _box_excess(points: np.ndarray, centre: np.ndarray, size: np.ndarray, yaw: float) -> np.ndarray:
    """max over the box axes of |coordinate| - half extent, for points (N, 3): negative inside the box."""
    c, s = np.cos(yaw), np.sin(yaw)
    d = points - centre
    x = c * d[:, 0] + s * d[:, 1]
    y = -s * d[:, 0] + c * d[:, 1]
    w, l, h = size
    return np.maximum(np.maximum(np.abs(x) - l / 2, np.abs(y) - w / 2), np.abs(d[:, 2]) - h / 2)


def points_in_boxes(points: np.ndarray, centres: np.ndarray, sizes: np.ndarray,
                    yaws: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which points (N, 3) lie inside which boxes (B, 3), (B, 3), (B,): inside (B, N) bool, and the points (N,)
    within ``BOUNDARY_TOLERANCE`` of a box's boundary, whose side a float32 recount could not tell."""
    inside = np.zeros((len(centres), len(points)), dtype=bool)
    ambiguous = np.zeros(len(points), dtype=bool)
    order = np.argsort(points[:, 0], kind="stable")
    xs = points[order, 0]
    for b in range(len(centres)):
        reach = np.linalg.norm(sizes[b]) / 2 + 1.0
        lo, hi = np.searchsorted(xs, [centres[b, 0] - reach, centres[b, 0] + reach])
        near = order[lo:hi]
        excess = _box_excess(points[near], centres[b], sizes[b], float(yaws[b]))
        inside[b, near] = excess < -BOUNDARY_TOLERANCE
        ambiguous[near] |= np.abs(excess) <= BOUNDARY_TOLERANCE
    return inside, ambiguous


def _surface_samples(per_edge: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Points (S, 3) on the unit cube [-1, 1]^3's faces, on a regular grid of each face, and their normals (S, 3)."""
    g = (np.arange(per_edge) + 0.5) / per_edge * 2 - 1
    a, b = (m.ravel() for m in np.meshgrid(g, g, indexing="ij"))
    points, normals = [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            p = np.zeros((len(a), 3))
            p[:, axis] = sign
            p[:, (axis + 1) % 3] = a
            p[:, (axis + 2) % 3] = b
            n = np.zeros_like(p)
            n[:, axis] = sign
            points.append(p)
            normals.append(n)
    return np.concatenate(points), np.concatenate(normals)


_SURFACE = _surface_samples()


def visible_fractions(owners: np.ndarray, boxes_per_camera: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      images: list[CameraImage], cam_to_local: list[np.ndarray],
                      intrinsics: list[np.ndarray]) -> np.ndarray:
    """Fraction (B,) of each object's box surface that faces some camera and that some camera sees unoccluded.

    Args:
        owners: (B,) the objects' indices, as in ``CameraImage.owner``.
        boxes_per_camera: per camera, the boxes at that camera's time in its local frame: centres (B, 3),
            sizes (B, 3) (w, l, h), yaws (B,).
        images, cam_to_local, intrinsics: per camera, the render, its (4, 4) pose and (3, 3) intrinsics.
    A surface point is seen where the pixel it projects to shows the object itself or shows something farther away
    (the box is a little larger than the object: a point of it in front of the background is not hidden).
    """
    unit_points, unit_normals = _SURFACE
    seen = np.zeros((len(owners), len(unit_points)), dtype=bool)
    facing = np.zeros_like(seen)
    for (centres, sizes, yaws), image, pose, k in zip(boxes_per_camera, images, cam_to_local, intrinsics):
        half = np.stack([sizes[:, 1], sizes[:, 0], sizes[:, 2]], axis=1) / 2  # (B, 3) along x, y, z
        c, s = np.cos(yaws)[:, None], np.sin(yaws)[:, None]
        local = unit_points[None] * half[:, None]
        points = np.stack([c * local[..., 0] - s * local[..., 1], s * local[..., 0] + c * local[..., 1],
                           local[..., 2]], axis=-1) + centres[:, None]
        normals = np.stack([c * unit_normals[None, :, 0] - s * unit_normals[None, :, 1],
                            s * unit_normals[None, :, 0] + c * unit_normals[None, :, 1],
                            np.broadcast_to(unit_normals[None, :, 2], c.shape[:1] + unit_normals.shape[:1])], axis=-1)
        front = ((pose[:3, 3] - points) * normals).sum(-1) > 0
        cam = (points - pose[:3, 3]) @ pose[:3, :3]  # (B, S, 3) camera frame
        z = cam[..., 2]
        safe_z = np.where(z > 0.1, z, 1.0)
        u = np.rint(k[0, 0] * cam[..., 0] / safe_z + k[0, 2]).astype(np.int64)
        v = np.rint(k[1, 1] * cam[..., 1] / safe_z + k[1, 2]).astype(np.int64)
        height, width = image.depth.shape
        inside = (z > 0.1) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        uu, vv = np.where(inside, u, 0), np.where(inside, v, 0)
        unoccluded = (image.owner[vv, uu] == owners[:, None]) | (image.depth[vv, uu] >= z - DEPTH_TOLERANCE)
        seen |= front & inside & unoccluded
        facing |= front
    return seen.sum(1) / np.maximum(facing.sum(1), 1)
