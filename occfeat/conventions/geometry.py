"""Geometry: the one owner of every spatial convention in occfeat.

Frames
    Ego frame of the LIDAR_TOP key frame: metres, x forward, y left, z up.
    Camera frame: x right, y down, z forward (OpenCV).
    ``cam_to_ego``: (..., 4, 4) rigid transforms, camera -> ego.
    ``intrinsics``: (..., 3, 3) in pixels of the image tensor actually given to the network.

Pixels
    OpenCV convention: the *centre* of the top-left pixel is (0, 0), so an image of width W spans u in [-0.5, W - 0.5).
    ``pixels_to_unit`` maps that span onto [0, 1) (what deformable attention takes) and ``pixels_to_grid`` onto [-1, 1)
    (what ``grid_sample(align_corners=False)`` takes). Because a stride-s feature map covers exactly the same extent
    as the image, the same normalised coordinates address any feature map of the image.

BEV raster
    ``BEVGrid``: x, y in [-50, 50) m at 0.5 m -> 200 x 200 cells. Row 0 is the far front (+x), column 0 the far left
    (+y): the raster reads like a map with the car driving up. ``BEVGrid.ego_to_cell_matrix`` is the single
    metric <-> cell mapping (cell centres at integer (col, row)); everything else derives from it.

BEV augmentation
    ``bev_aug`` is a (B, 4, 4) rigid transform from the *augmented BEV frame* (the frame of the raster, the queries and
    the labels) to the ego frame (the frame the cameras are calibrated in). Voxel / query coordinates are mapped with
    ``bev_aug`` before projection; labels are rasterised after mapping the boxes with its inverse.

Raster frames
    A network's raster lies in the ego frame (``raster_frame="ego"``, occfeat's own) or, as in Simple-BEV, in the frame
    of one camera of the batch (``"camera"``). ``raster_to_ego`` is the one place either becomes a (B, 4, 4) transform
    from the (augmented) raster frame to ego; the networks and the labels both go through it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence, TypeVar

import torch
from torch import Tensor

from ..errors import ConfigError, InputError

__all__ = [
    "NUSCENES_CAMERAS", "NUSCENES_IMAGE_HW", "BEVGrid", "Projection", "transform_points", "project_to_cameras",
    "pixels_to_unit", "pixels_to_grid", "image_affine", "update_intrinsics", "resize_crop_for",
    "bev_augmentation_matrix", "random_bev_augmentation", "raster_to_ego", "SIMPLE_BEV_RASTER_TO_CAMERA", "invert_affine", "camera_to_ego_from_yaw", "nuscenes_camera_rig",
]

T = TypeVar("T")

# nuScenes camera order used everywhere in occfeat (data, models, pictures).
NUSCENES_CAMERAS: tuple[str, ...] = (
    "CAM_FRONT_LEFT",
    "CAM_FRONT",
    "CAM_FRONT_RIGHT",
    "CAM_BACK_LEFT",
    "CAM_BACK",
    "CAM_BACK_RIGHT",
)


def _check_range(name: str, lo_hi: Sequence[float], step: float) -> int:
    lo, hi = float(lo_hi[0]), float(lo_hi[1])
    if not hi > lo:
        raise ConfigError(f"BEVGrid.{name} must be (low, high) with high > low, got {tuple(lo_hi)}.")
    if step <= 0:
        raise ConfigError(f"BEVGrid resolution for {name} must be > 0, got {step}.")
    cells = (hi - lo) / step
    if abs(cells - round(cells)) > 1e-6:
        raise ConfigError(
            f"BEVGrid.{name}={tuple(lo_hi)} is not a whole number of cells of {step} m ({cells:.4f} cells); "
            "pick a range that is a multiple of the resolution."
        )
    return int(round(cells))


@dataclass(frozen=True)
class BEVGrid:
    """The BEV raster (x, y) and the heights (z) of the 3D grid above it, in the ego frame, metres.

    >>> grid = BEVGrid()
    >>> grid.shape, grid.num_heights
    ((200, 200), 8)
    """

    x_range: tuple[float, float] = (-50.0, 50.0)
    y_range: tuple[float, float] = (-50.0, 50.0)
    resolution: float = 0.5
    z_range: tuple[float, float] = (-4.0, 6.0)
    z_resolution: float = 1.25

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass hashable and comparable.
        for name in ("x_range", "y_range", "z_range"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        _check_range("x_range", self.x_range, self.resolution)
        _check_range("y_range", self.y_range, self.resolution)
        _check_range("z_range", self.z_range, self.z_resolution)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (rows along x, columns along y)."""
        return (
            _check_range("x_range", self.x_range, self.resolution),
            _check_range("y_range", self.y_range, self.resolution),
        )

    @property
    def num_heights(self) -> int:
        return _check_range("z_range", self.z_range, self.z_resolution)

    def heights(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Centres of the z bins, (Z,), bottom to top."""
        z = torch.arange(self.num_heights, device=device, dtype=dtype)
        return self.z_range[0] + (z + 0.5) * self.z_resolution

    def ego_to_cell_matrix(self) -> Tensor:
        """(3, 3) affine taking ego (x, y, 1) to raster (col, row, 1), cell centres at integers (float64).

        col = (y_max - y) / res - 0.5, row = (x_max - x) / res - 0.5. This is the only place the mapping is written.
        """
        r = self.resolution
        return torch.tensor(
            [
                [0.0, -1.0 / r, self.y_range[1] / r - 0.5],
                [-1.0 / r, 0.0, self.x_range[1] / r - 0.5],
                [0.0, 0.0, 1.0],
            ],
            dtype=torch.float64,
        )

    def metric_to_cell(self, xy: Tensor) -> Tensor:
        """Ego (..., 2) metric (x, y) -> continuous raster (..., 2) (row, col); integer values are cell centres."""
        m = self.ego_to_cell_matrix().to(device=xy.device, dtype=xy.dtype)
        col_row = xy @ m[:2, :2].T + m[:2, 2]
        return col_row.flip(-1)

    def cell_to_metric(self, row_col: Tensor) -> Tensor:
        """Raster (..., 2) (row, col), continuous -> ego (..., 2) metric (x, y)."""
        m = invert_affine(self.ego_to_cell_matrix()).to(device=row_col.device, dtype=row_col.dtype)
        return row_col.flip(-1) @ m[:2, :2].T + m[:2, 2]

    def cell_centers(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Metric (x, y) of every cell centre, (H, W, 2)."""
        h, w = self.shape
        rows = torch.arange(h, device=device, dtype=dtype)
        cols = torch.arange(w, device=device, dtype=dtype)
        row_col = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)
        return self.cell_to_metric(row_col)

    def voxel_centers(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Metric (x, y, z) of every voxel centre, (Z, H, W, 3)."""
        xy = self.cell_centers(device, dtype)
        z = self.heights(device, dtype)
        num_z, (h, w) = z.shape[0], self.shape
        return torch.cat([xy.expand(num_z, h, w, 2), z.view(num_z, 1, 1, 1).expand(num_z, h, w, 1)], dim=-1)

    def reference_points_xy(self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """Cell centres of the raster in unit image coordinates, **(x, y) = (col, row) order**, (H*W, 2) in (0, 1).

        This is what deformable self-attention over a (H, W) query map takes (x indexes the width).
        """
        h, w = self.shape
        rows = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
        cols = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
        yy, xx = torch.meshgrid(rows, cols, indexing="ij")
        return torch.stack([xx, yy], dim=-1).reshape(h * w, 2)


# --------------------------------------------------------------------------------------------------------------------
# Rigid transforms and camera projection


def _full_precision(fn: Callable[..., T]) -> Callable[..., T]:
    """Run geometry with autocast off: in bf16 a coordinate of 50 m is off by up to 0.25 m, half a BEV cell."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        if torch.compiler.is_exporting():  # a program runs in the dtype it was traced in (no autocast region)
            return fn(*args, **kwargs)
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)

    return wrapper


def invert_affine(matrix: Tensor) -> Tensor:
    """The inverse of (..., D, D) affine maps (D = 3 or 4: a linear block A and a translation t, last row 0 ... 0 1):
    [A^-1, -A^-1 t]. A^-1 is the adjugate over the determinant, written in element-wise ops, so that the same code
    runs in ``torch.export`` / ONNX programs (which have no ``linalg.inv``); as exact as ``linalg.inv`` for any
    invertible A (rigid or not)."""
    d = matrix.shape[-1]
    a, t = matrix[..., : d - 1, : d - 1], matrix[..., : d - 1, d - 1 :]
    if d == 4:  # 3x3 block: cofactors by cyclic indices
        rows = []
        for i in range(3):
            rows.append(torch.stack([
                a[..., (j + 1) % 3, (i + 1) % 3] * a[..., (j + 2) % 3, (i + 2) % 3]
                - a[..., (j + 1) % 3, (i + 2) % 3] * a[..., (j + 2) % 3, (i + 1) % 3] for j in range(3)], dim=-1))
        adjugate = torch.stack(rows, dim=-2)  # adjugate[i, j] = cofactor[j, i]
        determinant = (a[..., 0, :] * adjugate[..., :, 0]).sum(-1)
    elif d == 3:  # 2x2 block
        adjugate = torch.stack([torch.stack([a[..., 1, 1], -a[..., 0, 1]], -1),
                                torch.stack([-a[..., 1, 0], a[..., 0, 0]], -1)], -2)
        determinant = a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]
    else:
        raise InputError(f"invert_affine: (..., {d}, {d}) matrices; expected 3x3 or 4x4 affine maps.")
    inverse = adjugate / determinant[..., None, None]
    top = torch.cat([inverse, -inverse @ t], dim=-1)
    return torch.cat([top, matrix[..., d - 1 :, :]], dim=-2)


@_full_precision
def transform_points(matrix: Tensor, points: Tensor) -> Tensor:
    """Apply (..., 4, 4) rigid/affine transforms to (..., P, 3) points (batch dims broadcast)."""
    return points @ matrix[..., :3, :3].transpose(-1, -2) + matrix[..., None, :3, 3]


class Projection(NamedTuple):
    """Points projected into cameras. Shapes (B, N, P, 2), (B, N, P), (B, N, P)."""

    pixels: Tensor  # (u, v), pixel-centre convention
    depth: Tensor  # camera-frame z, metres
    visible: Tensor  # depth > min_depth and inside the image


@_full_precision
def project_to_cameras(
    points: Tensor,
    intrinsics: Tensor,
    cam_to_ego: Tensor,
    image_hw: tuple[int, int],
    min_depth: float = 1e-3,
) -> Projection:
    """Project ego-frame points into every camera.

    Args:
        points: (B, P, 3) ego frame.
        intrinsics: (B, N, 3, 3) pixels of the network's image.
        cam_to_ego: (B, N, 4, 4).
        image_hw: (H, W) of the image the intrinsics refer to.
    Returns:
        ``Projection`` with pixels (B, N, P, 2), depth (B, N, P), visible (B, N, P) bool.
    """
    ego_to_cam = invert_affine(cam_to_ego)  # (B, N, 4, 4); exact for non-rigid inputs too
    cam = transform_points(ego_to_cam, points[:, None])  # (B, N, P, 3)
    depth = cam[..., 2]
    # Divide by a clamped depth so that points behind the camera give finite (but invisible) pixels.
    uvw = cam @ intrinsics.transpose(-1, -2)
    pixels = uvw[..., :2] / uvw[..., 2:3].clamp(min=min_depth)
    h, w = image_hw
    u, v = pixels.unbind(-1)
    visible = (depth > min_depth) & (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return Projection(pixels, depth, visible)


def pixels_to_unit(pixels: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Pixel (u, v) -> unit (x, y) in [0, 1) over the image extent (deformable-attention sampling locations)."""
    h, w = image_hw
    scale = pixels.new_tensor([1.0 / w, 1.0 / h])
    return (pixels + 0.5) * scale


def pixels_to_grid(pixels: Tensor, image_hw: tuple[int, int]) -> Tensor:
    """Pixel (u, v) -> [-1, 1) coordinates for ``grid_sample(align_corners=False)`` on any feature map of the image."""
    return pixels_to_unit(pixels, image_hw) * 2.0 - 1.0


# --------------------------------------------------------------------------------------------------------------------
# Image-plane affine maps and the intrinsics that follow them


def image_affine(
    scale: float | tuple[float, float] = 1.0,
    crop_xy: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    rotation_center: tuple[float, float] | None = None,
) -> Tensor:
    """(3, 3) float64 map of pixel coordinates for "resize by ``scale``, rotate about ``rotation_center`` (output
    pixels), then crop starting at ``crop_xy``", in the pixel-centre convention.

    A resize by s moves pixel u to s * (u + 0.5) - 0.5: the image *edges* scale, not the first pixel's centre.
    Warp an image with ``cv2.warpAffine(img, A[:2], out_wh)`` and update its intrinsics with ``update_intrinsics``.
    """
    sx, sy = (scale, scale) if isinstance(scale, (int, float)) else scale
    resize = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    rotate = torch.eye(3, dtype=torch.float64)
    if rotation_deg:
        cx, cy = rotation_center if rotation_center is not None else (0.0, 0.0)
        c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
        to_c = torch.tensor([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
        rot = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        rotate = torch.linalg.inv(to_c) @ rot @ to_c
    crop = torch.tensor([[1.0, 0.0, -crop_xy[0]], [0.0, 1.0, -crop_xy[1]], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return crop @ rotate @ resize


def update_intrinsics(intrinsics: Tensor, affine: Tensor) -> Tensor:
    """Intrinsics (..., 3, 3) of an image after the pixel map ``affine`` (3, 3) (see ``image_affine``)."""
    return affine.to(intrinsics) @ intrinsics


def resize_crop_for(
    source_hw: tuple[int, int],
    target_hw: tuple[int, int],
    *,
    zoom: float = 1.0,
    rotation_deg: float = 0.0,
    crop_shift_x: float = 0.0,
) -> Tensor:
    """The standard nuScenes preprocessing as an ``image_affine``: scale to the target width (or height, if the
    scaled image would be too short), then crop the excess rows from the top (sky) and columns symmetrically.

    The one owner of that map: the dataset (``occfeat.data.images.image_transform`` draws ``zoom``, ``rotation_deg``
    (about the scaled image's centre) and ``crop_shift_x`` (pixels) for training augmentation), the zoo's
    ``WeightSpec.transforms()`` and the nominal rig all use it."""
    (sh, sw), (th, tw) = source_hw, target_hw
    scale = max(tw / sw, th / sh) * zoom
    crop_x = (sw * scale - tw) / 2.0 + crop_shift_x
    crop_y = sh * scale - th
    center = (sw * scale / 2.0, sh * scale / 2.0)
    return image_affine(scale, crop_xy=(crop_x, crop_y), rotation_deg=rotation_deg, rotation_center=center)


# --------------------------------------------------------------------------------------------------------------------
# BEV augmentation


def bev_augmentation_matrix(translation_xy: tuple[float, float] = (0.0, 0.0), yaw_deg: float = 0.0) -> Tensor:
    """(4, 4) float32 ``bev_aug``: rotation by ``yaw_deg`` about z, then translation, mapping the augmented BEV frame
    to the ego frame (see the module docstring)."""
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    m = torch.eye(4)
    m[:2, :2] = torch.tensor([[c, -s], [s, c]])
    m[0, 3], m[1, 3] = float(translation_xy[0]), float(translation_xy[1])
    return m


def random_bev_augmentation(
    generator: torch.Generator | None = None,
    max_translation_xy: tuple[float, float] = (30.0, 20.0),
    max_yaw_deg: float = 20.0,
) -> Tensor:
    """A ``bev_aug`` drawn uniformly in +-translation and +-yaw (the usual training recipe)."""
    u = torch.rand(3, generator=generator, dtype=torch.float64) * 2.0 - 1.0
    return bev_augmentation_matrix(
        (float(u[0]) * max_translation_xy[0], float(u[1]) * max_translation_xy[1]), float(u[2]) * max_yaw_deg
    )


# --------------------------------------------------------------------------------------------------------------------
# Raster frames

# Simple-BEV's memory (Z, Y, X) is camera 0's frame: rows along the camera's z (forward) from behind to ahead, columns
# along its x (right), heights along its y (down). In occfeat's raster convention (row = (x_max - x) / res - 0.5,
# col = (y_max - y) / res - 0.5, heights bottom to top along z) that is the rotation raster (x, y, z) -> camera
# (-y, z, -x): raster x = -z_cam, y = -x_cam, z = y_cam. With occfeat's default grid (x, y in [-50, 50) at 0.5 m,
# z in [-4, 6) at 1.25 m) every voxel centre then equals Simple-BEV's at the same (row, col, height) index, its
# scene_centroid's 1 m shift of y included.
SIMPLE_BEV_RASTER_TO_CAMERA = torch.tensor(
    [[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64
)


@_full_precision
def raster_to_ego(bev_aug: Tensor, cam_to_ego: Tensor, frame: str = "ego", camera: int = 0) -> Tensor:
    """(B, 4, 4) transform from a network's (augmented) raster frame to the ego frame.

    Args:
        bev_aug: (B, 4, 4) the BEV augmentation (identity at evaluation), applied in the raster frame.
        cam_to_ego: (B, N, 4, 4) the batch's cameras.
        frame: "ego" (the raster is the ego frame) or "camera" (Simple-BEV's: the raster is camera ``camera``'s frame,
            axes as in ``SIMPLE_BEV_RASTER_TO_CAMERA``).
        camera: the camera of the batch that defines a "camera" raster.
    """
    if frame == "ego":
        return bev_aug
    if frame != "camera":
        raise ConfigError(f"raster frame {frame!r}: expected 'ego' or 'camera'.")
    if not 0 <= camera < cam_to_ego.shape[1]:
        raise InputError(f"raster camera {camera}: the batch has {cam_to_ego.shape[1]} cameras (0 .. "
                         f"{cam_to_ego.shape[1] - 1}); the raster is defined in that camera's frame.")
    dtype = torch.promote_types(cam_to_ego.dtype, bev_aug.dtype)
    axes = SIMPLE_BEV_RASTER_TO_CAMERA.to(device=cam_to_ego.device, dtype=dtype)
    return cam_to_ego[:, camera].to(dtype) @ axes @ bev_aug.to(dtype)


# --------------------------------------------------------------------------------------------------------------------
# A nominal nuScenes camera rig, for tests, benchmarks and the synthetic world

# Mounting of the six cameras on the nuScenes car: ego (x, y, z) in metres, yaw in degrees (0 = looking forward,
# positive = to the left) and focal length in pixels at 1600x900 (CAM_BACK has the wide ~110 degree lens). Rounded from
# the published calibration.
_NUSCENES_MOUNTS: dict[str, tuple[float, float, float, float, float]] = {
    "CAM_FRONT_LEFT": (1.52, 0.49, 1.51, 55.0, 1266.0),
    "CAM_FRONT": (1.70, 0.02, 1.51, 0.0, 1266.0),
    "CAM_FRONT_RIGHT": (1.50, -0.49, 1.52, -55.0, 1266.0),
    "CAM_BACK_LEFT": (1.04, 0.48, 1.56, 110.0, 1266.0),
    "CAM_BACK": (0.03, 0.01, 1.57, 180.0, 809.0),
    "CAM_BACK_RIGHT": (1.03, -0.48, 1.56, -110.0, 1266.0),
}
NUSCENES_IMAGE_HW: tuple[int, int] = (900, 1600)
_NUSCENES_PRINCIPAL = (816.0, 491.0)


def camera_to_ego_from_yaw(position: Sequence[float], yaw_deg: float, pitch_deg: float = 0.0) -> Tensor:
    """(4, 4) float64 camera -> ego for a camera at ``position`` looking along ``yaw_deg`` (pitch positive = down)."""
    # Camera axes (x right, y down, z forward) expressed in the ego frame for yaw = pitch = 0.
    base = torch.tensor([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]], dtype=torch.float64)
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    yaw = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    cp, sp = math.cos(math.radians(pitch_deg)), math.sin(math.radians(pitch_deg))
    pitch = torch.tensor([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]], dtype=torch.float64)
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = yaw @ pitch @ base
    m[:3, 3] = torch.tensor([float(p) for p in position], dtype=torch.float64)
    return m


def nuscenes_camera_rig(
    image_hw: tuple[int, int] = NUSCENES_IMAGE_HW, cameras: Sequence[str] = NUSCENES_CAMERAS
) -> tuple[Tensor, Tensor]:
    """Nominal nuScenes intrinsics (N, 3, 3) and cam_to_ego (N, 4, 4), float32, for images resized and cropped from
    1600x900 to ``image_hw`` as in ``resize_crop_for``."""
    unknown = [c for c in cameras if c not in _NUSCENES_MOUNTS]
    if unknown:
        raise InputError(f"cameras: unknown nuScenes camera(s) {unknown}; known: {list(_NUSCENES_MOUNTS)}.")
    to_image = resize_crop_for(NUSCENES_IMAGE_HW, image_hw)
    intrinsics, poses = [], []
    for camera in cameras:
        x, y, z, yaw, focal = _NUSCENES_MOUNTS[camera]
        k = torch.tensor([[focal, 0.0, _NUSCENES_PRINCIPAL[0]], [0.0, focal, _NUSCENES_PRINCIPAL[1]], [0.0, 0.0, 1.0]])
        intrinsics.append(update_intrinsics(k.double(), to_image))
        poses.append(camera_to_ego_from_yaw((x, y, z), yaw))
    return torch.stack(intrinsics).float(), torch.stack(poses).float()
