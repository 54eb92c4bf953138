"""Vectorised ray casting of the synthetic world: camera images (colour, depth, object id) and Lidar scans.

The world at one instant is a flat ground (z = 0, textured by ``Town.ground``) and a set of oriented boxes (parts),
held in a *local* frame (global minus an origin near the sensor) so that float32 keeps millimetres. Rays are only
tested against the boxes whose conservative footprint in the image (or in the Lidar's azimuth x elevation grid) covers
them: the (ray, box) pairs are enumerated rectangle by rectangle and slab-tested in chunks, and each ray keeps its
nearest hit (``scatter_reduce``). No Python loop runs over rays or pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .catalog import Material
from .rig import LIDAR_AZIMUTH_STEPS, LIDAR_ELEVATIONS_DEG, LIDAR_RANGE, lidar_directions, rigid_inverse
from .town import Ground, Town
from .traffic import ObjectStates

OBJECT_RADIUS = 65.0  # objects farther than this from the sensor are not drawn
SCENERY_RADIUS = 160.0  # buildings and trees are cheap to draw far away and fill the horizon
FOG_DISTANCE = 300.0
SHADOW_EXTENT, SHADOW_CELL = 90.0, 0.2  # the ground shadows are drawn within +-90 m of the frame's origin
PAIR_CHUNK = 1 << 21
SKY_HORIZON = torch.tensor([0.80, 0.86, 0.93])
SKY_ZENITH = torch.tensor([0.36, 0.56, 0.85])
SUN_COLOUR = torch.tensor([1.0, 0.97, 0.9])
AMBIENT, DIFFUSE = 0.45, 0.62

# Colour, relative noise amplitude and Lidar reflectivity (nuScenes intensities run 0-255) of each ground material.
_GROUND_LOOK = {
    Ground.GRASS: ((0.33, 0.46, 0.21), 0.45, 12.0),
    Ground.SIDEWALK: ((0.64, 0.62, 0.58), 0.1, 25.0),
    Ground.ASPHALT: ((0.29, 0.29, 0.31), 0.18, 6.0),
    Ground.WHITE: ((0.88, 0.88, 0.85), 0.08, 90.0),
    Ground.YELLOW: ((0.88, 0.7, 0.2), 0.08, 80.0),
    Ground.KERB: ((0.78, 0.77, 0.74), 0.06, 30.0),
    Ground.JOINT: ((0.52, 0.51, 0.48), 0.06, 20.0),
}
GROUND_COLOURS = torch.tensor([_GROUND_LOOK[g][0] for g in sorted(_GROUND_LOOK)])
GROUND_NOISE = torch.tensor([_GROUND_LOOK[g][1] for g in sorted(_GROUND_LOOK)])
GROUND_INTENSITY = torch.tensor([_GROUND_LOOK[g][2] for g in sorted(_GROUND_LOOK)])
# Lidar reflectivity of the part materials, in ``Material`` order.
PART_INTENSITY = torch.tensor([40.0, 8.0, 28.0, 100.0, 15.0, 120.0])


@dataclass
class Frame:
    """The boxes a sensor can see at one instant, in the local frame (global minus ``origin``): centres (P, 3),
    half extents (P, 3), yaw as cos/sin (P,), colours (P, 3), ``Material`` (P,), owner object index (P,) or -1."""

    town: Town
    origin: np.ndarray  # (2,) float64, global x, y of the local frame's origin
    centre: Tensor
    half: Tensor
    cos: Tensor
    sin: Tensor
    colour: Tensor
    material: Tensor
    owner: Tensor
    texture: Tensor  # (T, T) in [0, 1], the town's ground noise


def world_frame(town: Town, states: ObjectStates, origin: np.ndarray, texture: Tensor) -> Frame:
    """Gather the scenery and the objects near ``origin`` (global x, y) into a ``Frame``."""
    scenery = town.scenery
    reach = np.linalg.norm(scenery[:, 0:2] - origin, axis=1) - np.linalg.norm(scenery[:, 3:5], axis=1)
    blocks = [scenery[reach < SCENERY_RADIUS]]
    owners = [np.full(len(blocks[0]), -1)]
    near = np.flatnonzero(np.linalg.norm(states.xy - origin, axis=1) < OBJECT_RADIUS)
    for i in near:
        parts = states.models[i].parts
        c, s = math.cos(states.yaw[i]), math.sin(states.yaw[i])
        placed = np.empty((len(parts), 11))
        placed[:, 0] = states.xy[i, 0] + c * parts[:, 0] - s * parts[:, 1]
        placed[:, 1] = states.xy[i, 1] + s * parts[:, 0] + c * parts[:, 1]
        placed[:, 2:10] = parts[:, 2:10]
        placed[:, 10] = states.yaw[i]
        blocks.append(placed)
        owners.append(np.full(len(parts), i))
    parts = np.concatenate(blocks)
    parts[:, 0:2] -= origin
    t = torch.from_numpy(parts).float()
    return Frame(town, origin, t[:, 0:3].contiguous(), t[:, 3:6].contiguous(), t[:, 10].cos(), t[:, 10].sin(),
                 t[:, 6:9].contiguous(), t[:, 9].long(), torch.from_numpy(np.concatenate(owners)).long(), texture)


def ground_texture(seed: int, size: int = 256) -> Tensor:
    """Smooth value noise (size, size) in [0, 1]: three octaves, deterministic for a seed."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.zeros(size, size)
    for cells, weight in ((size, 0.35), (size // 4, 0.35), (size // 16, 0.3)):
        octave = torch.rand(1, 1, cells, cells, generator=g)
        noise += weight * F.interpolate(octave, size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return noise


def _sample_texture(texture: Tensor, x: Tensor, y: Tensor, cell: float) -> Tensor:
    size = texture.shape[0]
    i = torch.remainder(torch.floor(y / cell), size).long()
    j = torch.remainder(torch.floor(x / cell), size).long()
    return texture[i, j]


# --------------------------------------------------------------------------------------------------------------------
# Box corners and ray-box intersection

_CORNER_SIGNS = torch.tensor([[sx, sy, sz] for sx in (-1.0, 1.0) for sy in (-1.0, 1.0) for sz in (-1.0, 1.0)])
_EDGES = torch.tensor([[a, b] for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1])


def box_corners(frame: Frame) -> Tensor:
    """Corners (P, 8, 3) of every part, local frame."""
    local = frame.half[:, None, :] * _CORNER_SIGNS[None]
    x = frame.cos[:, None] * local[..., 0] - frame.sin[:, None] * local[..., 1]
    y = frame.sin[:, None] * local[..., 0] + frame.cos[:, None] * local[..., 1]
    return torch.stack([x, y, local[..., 2]], dim=-1) + frame.centre[:, None, :]


def _to_part(frame: Frame, vectors: Tensor, parts: Tensor) -> Tensor:
    """Rotate vectors (Q, 3) into the frames of ``parts`` (Q,) (inverse yaw)."""
    c, s = frame.cos[parts], frame.sin[parts]
    return torch.stack([c * vectors[:, 0] + s * vectors[:, 1], -s * vectors[:, 0] + c * vectors[:, 1],
                        vectors[:, 2]], dim=1)


def _slab(origin: Tensor, direction: Tensor, half: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Ray (Q, 3) against axis-aligned boxes centred at 0 with half extents (Q, 3): entry t, exit t, entry axis."""
    safe = torch.where(direction.abs() < 1e-9, torch.full_like(direction, 1e-9), direction)
    inv = 1.0 / safe
    t1 = (-half - origin) * inv
    t2 = (half - origin) * inv
    t_near, axis = torch.minimum(t1, t2).max(dim=1)
    t_far = torch.maximum(t1, t2).amin(dim=1)
    return t_near, t_far, axis


def cast(frame: Frame, origin: Tensor, directions: Tensor, pair_ray: Tensor, pair_part: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest box hit along each ray. origin (3,) local; directions (R, 3); candidate pairs (Q,), (Q,).

    Returns t (R,) (inf where no box is hit; distance in units of |direction|) and the part index (R,) or -1.
    """
    rays = directions.shape[0]
    best_t = torch.full((rays,), math.inf)
    best_part = torch.full((rays,), -1, dtype=torch.long)
    origin_in_part = _to_part(frame, origin[None, :] - frame.centre, torch.arange(len(frame.centre)))
    for start in range(0, len(pair_ray), PAIR_CHUNK):
        ray, part = pair_ray[start:start + PAIR_CHUNK], pair_part[start:start + PAIR_CHUNK]
        t_near, t_far, _ = _slab(origin_in_part[part], _to_part(frame, directions[ray], part), frame.half[part])
        t = torch.where((t_near <= t_far) & (t_near > 0), t_near, torch.full_like(t_near, math.inf))
        chunk_t = torch.full((rays,), math.inf).scatter_reduce(0, ray, t, "amin")
        winner = torch.isfinite(t) & (t == chunk_t[ray])
        chunk_part = torch.full((rays,), -1, dtype=torch.long).scatter_reduce(0, ray[winner], part[winner], "amax")
        better = chunk_t < best_t
        best_t = torch.where(better, chunk_t, best_t)
        best_part = torch.where(better, chunk_part, best_part)
    return best_t, best_part


def _pairs_from_rectangles(rows0: Tensor, rows1: Tensor, cols0: Tensor, cols1: Tensor,
                           width: int, wrap: bool) -> tuple[Tensor, Tensor]:
    """(ray, part) pairs for every part's rectangle [rows0, rows1] x [cols0, cols1] (inclusive) of a ray grid of
    ``width`` columns; columns wrap around when ``wrap`` (the Lidar's azimuth)."""
    n_rows = (rows1 - rows0 + 1).clamp(min=0)
    n_cols = (cols1 - cols0 + 1).clamp(min=0)
    area = n_rows * n_cols
    parts = torch.arange(len(area)).repeat_interleave(area)
    first = torch.cumsum(area, 0) - area
    k = torch.arange(int(area.sum())) - first.repeat_interleave(area)
    cols_of = n_cols.repeat_interleave(area)
    row = rows0[parts] + torch.div(k, cols_of, rounding_mode="floor")
    col = cols0[parts] + torch.remainder(k, cols_of)
    if wrap:
        col = torch.remainder(col, width)
    return row * width + col, parts


# --------------------------------------------------------------------------------------------------------------------
# Shading


def _hit_surface(frame: Frame, origin: Tensor, directions: Tensor, t: Tensor, part: Tensor) -> tuple[Tensor, Tensor]:
    """Normals (R, 3) (world axes) and hit points in part coordinates (R, 3) for rays that hit ``part`` at ``t``."""
    o = _to_part(frame, origin[None, :] - frame.centre[part], part)
    d = _to_part(frame, directions, part)
    _, _, axis = _slab(o, d, frame.half[part])
    local = o + t[:, None] * d
    normal_local = torch.zeros_like(local)
    normal_local.scatter_(1, axis[:, None], -torch.sign(d.gather(1, axis[:, None])))
    c, s = frame.cos[part], frame.sin[part]
    normal = torch.stack([c * normal_local[:, 0] - s * normal_local[:, 1],
                          s * normal_local[:, 0] + c * normal_local[:, 1], normal_local[:, 2]], dim=1)
    return normal, local


def _light(frame: Frame, normal: Tensor) -> Tensor:
    sun = torch.from_numpy(frame.town.sun).float()
    return AMBIENT + DIFFUSE * (normal @ sun).clamp(min=0.0)[:, None] * SUN_COLOUR


def _part_colour(frame: Frame, part: Tensor, normal: Tensor, local: Tensor) -> Tensor:
    """Base colour (R, 3) of the hit parts with their procedural patterns (windows, stripes, leaves)."""
    colour = frame.colour[part]
    material = frame.material[part]
    half = frame.half[part]
    height = local[:, 2] + frame.centre[part, 2]
    building = material == Material.BUILDING
    roof = building & (normal[:, 2] > 0.5)
    # Along a wall: the part's y on the faces whose normal is its x axis, and vice versa.
    on_x_face = local[:, 0].abs() * half[:, 1] > local[:, 1].abs() * half[:, 0]
    along = torch.where(on_x_face, local[:, 1] + half[:, 1], local[:, 0] + half[:, 0])
    floor, bay = torch.frac(height / 3.2), torch.frac(along / 3.0)
    window = building & ~roof & (height > 1.2) & (floor > 0.3) & (floor < 0.8) & (bay > 0.2) & (bay < 0.8)
    colour = torch.where(roof[:, None], torch.tensor([0.42, 0.41, 0.4]), colour)
    colour = torch.where(window[:, None], torch.tensor([0.17, 0.22, 0.3]), colour)
    stripes = (material == Material.STRIPES) & (torch.frac((local[:, 1] + half[:, 1]) / 0.5) > 0.5)
    colour = torch.where(stripes[:, None], torch.tensor([0.95, 0.95, 0.95]), colour)
    leaves = (material == Material.FOLIAGE)[:, None]
    if leaves.any():
        world = local + frame.centre[part]
        noise = _sample_texture(frame.texture, world[:, 0] + world[:, 2], world[:, 1] + world[:, 2], 0.15)
        colour = torch.where(leaves, colour * (0.7 + 0.6 * noise[:, None]), colour)
    glass = (material == Material.GLASS)[:, None]
    return torch.where(glass, colour + 0.08 + 0.25 * SKY_HORIZON * (normal[:, 2:3] > 0.5), colour)


def _ground(frame: Frame, points: Tensor) -> Tensor:
    """Ground material (R,) under local points (R, 3)."""
    x = points[:, 0] + float(frame.origin[0])
    y = points[:, 1] + float(frame.origin[1])
    return frame.town.ground(x, y)


def _sky(directions: Tensor) -> Tensor:
    up = (directions[:, 2] / directions.norm(dim=1)).clamp(min=0.0).sqrt()[:, None]
    return SKY_HORIZON * (1 - up) + SKY_ZENITH * up


def _ground_shadows(frame: Frame) -> Tensor:
    """Where the sun is hidden from the ground: (S, S) bool over ``SHADOW_EXTENT`` around the origin, row i at
    y = (i + 0.5) * cell - extent, column j at x likewise.

    A box's shadow on the ground is the convex hull of its corners projected along the sun, so the boxes are
    rasterised rather than ray cast (shadows on other boxes are left out).
    """
    size = int(2 * SHADOW_EXTENT / SHADOW_CELL)
    mask = np.zeros((size, size), dtype=np.uint8)
    sun = frame.town.sun
    corners = box_corners(frame).numpy().astype(np.float64)
    ground = corners[..., :2] - corners[..., 2:3] / sun[2] * sun[:2]  # (P, 8, 2)
    shift = 2  # sub-pixel precision of cv2's polygon filling
    pixels = np.rint((ground + SHADOW_EXTENT) / SHADOW_CELL * (1 << shift)).astype(np.int32)
    lo, hi = pixels.min(axis=1), pixels.max(axis=1)
    visible = np.flatnonzero((hi >= 0).all(1) & (lo < size << shift).all(1))
    for p in visible:
        cv2.fillConvexPoly(mask, cv2.convexHull(pixels[p]), 1, lineType=cv2.LINE_8, shift=shift)
    return torch.from_numpy(mask.astype(bool))


def _in_shadow(shadows: Tensor, points: Tensor) -> Tensor:
    """Look up local points (R, 3) on the ground in a ``_ground_shadows`` raster: (R,) bool."""
    size = shadows.shape[0]
    ij = torch.floor((points[:, :2] + SHADOW_EXTENT) / SHADOW_CELL).long()
    inside = ((ij >= 0) & (ij < size)).all(1)
    ij = ij.clamp(0, size - 1)
    return inside & shadows[ij[:, 1], ij[:, 0]]


SURFACE_SKY = -1
SURFACE_PART = 100  # box pixels: SURFACE_PART + the part's Material; ground pixels: their Ground value


@dataclass
class CameraImage:
    """A rendered camera: colour (H, W, 3) uint8, depth (H, W) float32 metres along the optical axis (inf: sky),
    owner (H, W) int64: index of the object seen (into the ``ObjectStates``), -1 for ground, scenery and sky,
    surface (H, W) int64: what each pixel shows, ``SURFACE_SKY``, a ``Ground`` value, or ``SURFACE_PART`` plus the
    ``Material`` of the box part hit."""

    rgb: np.ndarray
    depth: np.ndarray
    owner: np.ndarray
    surface: np.ndarray


def render_camera(frame: Frame, cam_to_local: np.ndarray, intrinsic: np.ndarray,
                  image_hw: tuple[int, int]) -> CameraImage:
    """Render one pinhole camera. cam_to_local (4, 4) float64 (camera axes: x right, y down, z forward);
    intrinsic (3, 3) in pixels, pixel centres at integers."""
    height, width = image_hw
    rotation = torch.from_numpy(cam_to_local[:3, :3]).float()
    origin = torch.from_numpy(cam_to_local[:3, 3]).float()
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32),
                          indexing="ij")
    fx, fy, cx, cy = (float(v) for v in (intrinsic[0, 0], intrinsic[1, 1], intrinsic[0, 2], intrinsic[1, 2]))
    rays_cam = torch.stack([(u - cx) / fx, (v - cy) / fy, torch.ones_like(u)], dim=-1).reshape(-1, 3)  # z = 1: t = depth
    directions = rays_cam @ rotation.T

    pair_ray, pair_part = _camera_pairs(frame, cam_to_local, intrinsic, image_hw)
    t_box, part = cast(frame, origin, directions, pair_ray, pair_part)
    t_ground = torch.where(directions[:, 2] < -1e-6, -origin[2] / directions[:, 2], torch.full_like(t_box, math.inf))
    on_box = t_box < t_ground
    depth = torch.minimum(t_box, t_ground)

    colour = _sky(directions)
    surface = torch.full(part.shape, SURFACE_SKY, dtype=torch.long)
    boxes = torch.nonzero(on_box)[:, 0]
    if len(boxes):
        normal, local = _hit_surface(frame, origin, directions[boxes], t_box[boxes], part[boxes])
        base = _part_colour(frame, part[boxes], normal, local)
        lamp = (frame.material[part[boxes]] == Material.LAMP)[:, None]
        colour[boxes] = torch.where(lamp, base, base * _light(frame, normal))
        surface[boxes] = SURFACE_PART + frame.material[part[boxes]]
    ground = torch.nonzero(~on_box & torch.isfinite(t_ground))[:, 0]
    if len(ground):
        points = origin + t_ground[ground, None] * directions[ground]
        material = _ground(frame, points)
        surface[ground] = material.long()
        noise = _sample_texture(frame.texture, points[:, 0] + float(frame.origin[0]),
                                points[:, 1] + float(frame.origin[1]), 0.2)
        base = GROUND_COLOURS[material] * (1 + GROUND_NOISE[material, None] * (noise[:, None] - 0.5))
        lit = _light(frame, torch.tensor([[0.0, 0.0, 1.0]]))
        colour[ground] = base * torch.where(_in_shadow(_ground_shadows(frame), points)[:, None], AMBIENT, lit)
    hit = torch.isfinite(depth)
    distance = depth[hit] * directions[hit].norm(dim=1)
    fog = torch.exp(-distance / FOG_DISTANCE)[:, None]
    colour[hit] = colour[hit] * fog + SKY_HORIZON * (1 - fog)

    owner = torch.full_like(part, -1)
    owner[boxes] = frame.owner[part[boxes]]
    rgb = (colour.clamp(0, 1) * 255 + 0.5).to(torch.uint8).reshape(height, width, 3)
    return CameraImage(rgb.numpy(), depth.reshape(height, width).numpy(), owner.reshape(height, width).numpy(),
                       surface.reshape(height, width).numpy())


def _camera_pairs(frame: Frame, cam_to_local: np.ndarray, intrinsic: np.ndarray,
                  image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Candidate (pixel, part) pairs: each part against the pixels of its projected bounding rectangle, the box
    clipped at a near plane first so that boxes reaching behind the camera are bounded correctly."""
    height, width = image_hw
    near = 0.05
    local_to_cam = torch.from_numpy(rigid_inverse(cam_to_local)).float()
    corners = box_corners(frame) @ local_to_cam[:3, :3].T + local_to_cam[:3, 3]  # (P, 8, 3)
    a, b = corners[:, _EDGES[:, 0]], corners[:, _EDGES[:, 1]]  # (P, 12, 3)
    crosses = (a[..., 2] - near) * (b[..., 2] - near) < 0
    alpha = ((near - a[..., 2]) / torch.where(crosses, b[..., 2] - a[..., 2], torch.ones_like(a[..., 2]))).clamp(0, 1)
    clipped = a + alpha[..., None] * (b - a)
    points = torch.cat([corners, clipped], dim=1)  # (P, 20, 3)
    valid = torch.cat([corners[..., 2] > near, crosses], dim=1)
    k = torch.from_numpy(intrinsic).float()
    z = points[..., 2].clamp(min=near)
    u = (k[0, 0] * points[..., 0] + k[0, 2] * z) / z
    v = (k[1, 1] * points[..., 1] + k[1, 2] * z) / z
    inf = torch.full_like(u, math.inf)
    u0 = torch.where(valid, u, inf).amin(1).clamp(-1, width)
    u1 = torch.where(valid, u, -inf).amax(1).clamp(-1, width)
    v0 = torch.where(valid, v, inf).amin(1).clamp(-1, height)
    v1 = torch.where(valid, v, -inf).amax(1).clamp(-1, height)
    seen = valid.any(1)
    cols0 = torch.ceil(u0).long().clamp(0, width - 1)
    cols1 = torch.floor(u1).long().clamp(-1, width - 1)
    rows0 = torch.ceil(v0).long().clamp(0, height - 1)
    rows1 = torch.floor(v1).long().clamp(-1, height - 1)
    rows1 = torch.where(seen, rows1, rows0 - 1)
    return _pairs_from_rectangles(rows0, rows1, cols0, cols1, width, wrap=False)


@dataclass
class LidarScan:
    """One Lidar turn: points (N, 3) float32 in the sensor frame, intensity (N,) and ring (N,) float32."""

    points: np.ndarray
    intensity: np.ndarray
    ring: np.ndarray


def scan_lidar(frame: Frame, sensor_to_local: np.ndarray, rng: np.random.Generator) -> LidarScan:
    """Cast every beam of one turn (32 x ``LIDAR_AZIMUTH_STEPS``) from a Lidar at ``sensor_to_local`` (4, 4), whose
    z axis must point up. Returns the hits within ``LIDAR_RANGE`` with 1 cm range noise."""
    directions_sensor = lidar_directions()
    rotation = torch.from_numpy(sensor_to_local[:3, :3]).float()
    origin = torch.from_numpy(sensor_to_local[:3, 3]).float()
    directions = directions_sensor @ rotation.T

    pair_ray, pair_part = _lidar_pairs(frame, sensor_to_local)
    t_box, part = cast(frame, origin, directions, pair_ray, pair_part)
    t_ground = torch.where(directions[:, 2] < -1e-6, -origin[2] / directions[:, 2], torch.full_like(t_box, math.inf))
    on_box = t_box < t_ground
    t = torch.minimum(t_box, t_ground)
    keep = torch.nonzero(t < LIDAR_RANGE)[:, 0]
    on_box, t, part = on_box[keep], t[keep], part[keep]

    intensity = torch.empty(len(keep))
    boxes = torch.nonzero(on_box)[:, 0]
    if len(boxes):
        normal, _ = _hit_surface(frame, origin, directions[keep[boxes]], t[boxes], part[boxes])
        incidence = (normal * directions[keep[boxes]]).sum(1).abs()
        intensity[boxes] = PART_INTENSITY[frame.material[part[boxes]]] * (0.4 + 0.6 * incidence)
    ground = torch.nonzero(~on_box)[:, 0]
    if len(ground):
        points = origin + t[ground, None] * directions[keep[ground]]
        incidence = directions[keep[ground], 2].abs()
        intensity[ground] = GROUND_INTENSITY[_ground(frame, points)] * (0.4 + 0.6 * incidence)
    noisy_t = t.numpy().astype(np.float64) + rng.normal(0.0, 0.01, len(keep))
    points = (directions_sensor[keep].numpy() * noisy_t[:, None]).astype(np.float32)
    return LidarScan(points, intensity.numpy().astype(np.float32),
                     (keep // LIDAR_AZIMUTH_STEPS).numpy().astype(np.float32))


def _lidar_pairs(frame: Frame, sensor_to_local: np.ndarray) -> tuple[Tensor, Tensor]:
    """Candidate (beam, part) pairs: each part against the beams of its conservative elevation interval and the
    azimuth steps its footprint spans, seen from the sensor."""
    local_to_sensor = torch.from_numpy(rigid_inverse(sensor_to_local)).float()
    corners = box_corners(frame) @ local_to_sensor[:3, :3].T + local_to_sensor[:3, 3]  # (P, 8, 3)
    sensor_local = torch.from_numpy(sensor_to_local[:3, 3]).float()
    # Horizontal distance from the sensor to each footprint (0 inside it), exact in the part's frame.
    o = _to_part(frame, sensor_local[None, :] - frame.centre, torch.arange(len(frame.centre)))
    outside = (o[:, :2].abs() - frame.half[:, :2]).clamp(min=0.0)
    r_min = outside.norm(dim=1)
    r_max = corners[..., :2].norm(dim=-1).amax(1)
    z_lo, z_hi = corners[..., 2].amin(1), corners[..., 2].amax(1)
    el_hi = torch.atan2(z_hi, torch.where(z_hi > 0, r_min, r_max))
    el_lo = torch.atan2(z_lo, torch.where(z_lo < 0, r_min, r_max))
    elevations = torch.tensor(np.radians(LIDAR_ELEVATIONS_DEG), dtype=torch.float32)
    rows0 = torch.searchsorted(elevations, el_lo - 1e-4)
    rows1 = torch.searchsorted(elevations, el_hi + 1e-4, right=True) - 1

    step = 2 * math.pi / LIDAR_AZIMUTH_STEPS
    centre = corners[..., :2].mean(1)
    mid = torch.atan2(centre[:, 1], centre[:, 0])
    rel = torch.atan2(corners[..., 1], corners[..., 0]) - mid[:, None]
    rel = torch.remainder(rel + math.pi, 2 * math.pi) - math.pi
    cols0 = torch.floor((mid + rel.amin(1)) / step).long() - 1
    cols1 = torch.ceil((mid + rel.amax(1)) / step).long() + 1
    around = r_min < 1e-3  # the sensor stands inside the footprint: every azimuth
    cols0 = torch.where(around, torch.zeros_like(cols0), cols0)
    cols1 = torch.where(around, torch.full_like(cols1, LIDAR_AZIMUTH_STEPS - 1), cols1)
    cols1 = torch.minimum(cols1, cols0 + LIDAR_AZIMUTH_STEPS - 1)
    rows1 = torch.where(r_min < LIDAR_RANGE, rows1, rows0 - 1)
    return _pairs_from_rectangles(rows0, rows1, cols0, cols1, LIDAR_AZIMUTH_STEPS, wrap=True)
