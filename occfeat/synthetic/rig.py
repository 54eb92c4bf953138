"""The synthetic car's sensors: six cameras mounted as on the nuScenes car (``geometry._NUSCENES_MOUNTS``), a
32-beam spinning Lidar on the roof, their calibration records, and when each fires.

Rotations are quaternions (w, x, y, z) as in nuScenes; ``pose_matrix`` turns a record into a 4x4 with pyquaternion,
the library nuscenes-devkit uses, so the renderer and any reader of the dataroot apply the very same transform.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from pyquaternion import Quaternion

from ..conventions.geometry import (
    _NUSCENES_MOUNTS,
    _NUSCENES_PRINCIPAL,
    NUSCENES_CAMERAS,
    NUSCENES_IMAGE_HW,
    camera_to_ego_from_yaw,
    image_affine,
    update_intrinsics,
)

LIDAR_CHANNEL = "LIDAR_TOP"
LIDAR_TRANSLATION = (0.94, 0.0, 1.84)
LIDAR_YAW = -math.pi / 2  # the sensor's x axis points to the car's right, y forward
LIDAR_ELEVATIONS_DEG = np.linspace(-30.67, 10.67, 32)  # Velodyne HDL-32E; ring 0 is the lowest beam
LIDAR_AZIMUTH_STEPS = 1080
LIDAR_RANGE = 70.0
LIDAR_PERIOD_S = 0.05  # one turn; nuScenes' Lidar spins at 20 Hz
KEY_FRAME_PERIOD_S = 0.5  # nuScenes annotates at 2 Hz


@dataclass(frozen=True)
class Calibration:
    """One ``calibrated_sensor`` record: sensor -> ego translation, rotation (w, x, y, z), camera intrinsics."""

    channel: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]
    intrinsic: np.ndarray | None  # (3, 3) in pixels of the written image; None for the Lidar

    @property
    def modality(self) -> str:
        return "lidar" if self.intrinsic is None else "camera"

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 sensor -> ego."""
        return pose_matrix(self.translation, self.rotation)


def pose_matrix(translation: tuple[float, ...] | list[float] | np.ndarray,
                rotation: tuple[float, ...] | list[float] | np.ndarray) -> np.ndarray:
    """(4, 4) float64 rigid transform of a nuScenes record's translation (3,) and rotation (w, x, y, z)."""
    m = np.eye(4)
    m[:3, :3] = Quaternion(list(rotation)).rotation_matrix
    m[:3, 3] = np.asarray(translation, dtype=np.float64)
    return m


def rigid_inverse(matrix: np.ndarray) -> np.ndarray:
    """Inverse (4, 4) of a rigid transform (4, 4): rotation transposed, translation rotated back."""
    inverse = np.eye(4)
    inverse[:3, :3] = matrix[:3, :3].T
    inverse[:3, 3] = -matrix[:3, :3].T @ matrix[:3, 3]
    return inverse


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(w, x, y, z) of a rotation by ``yaw`` radians about z."""
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


def camera_calibrations(image_hw: tuple[int, int], rng: np.random.Generator) -> list[Calibration]:
    """The six cameras in ``NUSCENES_CAMERAS`` order, for images of ``image_hw`` scaled (not cropped) from 1600x900.

    Each mounting is jittered (2 cm, 0.4 degree), as real calibrations differ from car to car, so a reader has to use
    the records rather than a nominal rig.
    """
    height, width = image_hw
    scale = image_affine((width / NUSCENES_IMAGE_HW[1], height / NUSCENES_IMAGE_HW[0]))
    calibrations = []
    for channel in NUSCENES_CAMERAS:
        x, y, z, yaw, focal = _NUSCENES_MOUNTS[channel]
        position = np.array([x, y, z]) + rng.uniform(-0.02, 0.02, 3)
        cam_to_ego = camera_to_ego_from_yaw(position.tolist(), yaw + rng.uniform(-0.4, 0.4), rng.uniform(-0.4, 0.4))
        k = torch.tensor([[focal, 0.0, _NUSCENES_PRINCIPAL[0]], [0.0, focal, _NUSCENES_PRINCIPAL[1]],
                          [0.0, 0.0, 1.0]], dtype=torch.float64)
        intrinsic = update_intrinsics(k, scale).numpy()
        q = Quaternion(matrix=cam_to_ego[:3, :3].numpy())
        calibrations.append(Calibration(channel, tuple(float(v) for v in position), tuple(float(v) for v in q.q),
                                        intrinsic))
    return calibrations


def lidar_calibration() -> Calibration:
    return Calibration(LIDAR_CHANNEL, LIDAR_TRANSLATION, yaw_quaternion(LIDAR_YAW), None)


def camera_delay_s(channel: str) -> float:
    """When a camera fires relative to the Lidar key frame: as the spinning Lidar sweeps across its view (it turns
    clockwise, and is half-way round, behind the car, at +-25 ms)."""
    yaw = _NUSCENES_MOUNTS[channel][3]
    clockwise = (-yaw + 180.0) % 360.0 - 180.0
    return clockwise / 360.0 * LIDAR_PERIOD_S


@functools.lru_cache(maxsize=1)
def lidar_directions() -> torch.Tensor:
    """Unit ray directions (32 * LIDAR_AZIMUTH_STEPS, 3) in the Lidar frame, beam-major (ring, azimuth step).
    Cached: do not modify the result."""
    elevation = torch.tensor(np.radians(LIDAR_ELEVATIONS_DEG), dtype=torch.float32)
    azimuth = torch.arange(LIDAR_AZIMUTH_STEPS, dtype=torch.float32) * (2 * math.pi / LIDAR_AZIMUTH_STEPS)
    el, az = torch.meshgrid(elevation, azimuth, indexing="ij")
    return torch.stack([el.cos() * az.cos(), el.cos() * az.sin(), el.sin()], dim=-1).reshape(-1, 3)
