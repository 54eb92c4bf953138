"""The town: a grid of two-way roads with lanes, parking strips, sidewalks and blocks of buildings and trees, plus
everything that stands still in it (street lights, parked vehicles, parked bicycles, cones and barriers).

Global frame: metres, x east, y north, z up, ground at z = 0. The town spans [0, extent_x] x [0, extent_y] (the extent
of its map image). Traffic drives on the right. A road's cross-section, from its centre line outwards on each side:
``lanes`` travel lanes of ``LANE_WIDTH``, a parking strip of ``PARKING_WIDTH`` (the drivable area ends here, at the
kerb), then a sidewalk of ``SIDEWALK_WIDTH``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import torch
from torch import Tensor

from .catalog import KINDS, PARKED_MIX, Material, ObjectModel, box, draw_kind, sample_model

LANE_WIDTH = 3.5
PARKING_WIDTH = 2.5
SIDEWALK_WIDTH = 3.5
MAP_RESOLUTION = 0.1  # metres per pixel of the map image, as nuscenes-devkit's MapMask expects
MARGIN = 85.0  # from the outermost road to the map edge: farther than any sensor sees from a road of the grid
ROADS_PER_AXIS = 4
# Lateral places on a sidewalk, measured from the kerb: street lights, parked bicycles, and the walking slots.
POLE_OFFSET = 0.4
BIKE_OFFSET = 0.65
WALK_OFFSETS = (1.35, 2.1, 2.85)
STOP_LINE = 4.2  # distance of a stop line before the kerb line of the crossing road (a crossing lies in between)


class Ground(IntEnum):
    GRASS = 0
    SIDEWALK = 1
    ASPHALT = 2
    WHITE = 3
    YELLOW = 4
    KERB = 5
    JOINT = 6


@dataclass(frozen=True)
class Road:
    """A straight two-way road across the whole town: ``axis`` 0 runs along x (at y = ``offset``), 1 along y."""

    axis: int
    offset: float
    lanes: int  # per direction

    @property
    def half_width(self) -> float:
        """Centre line to kerb: the half-width of the drivable area."""
        return self.lanes * LANE_WIDTH + PARKING_WIDTH


def right_of(heading: np.ndarray) -> np.ndarray:
    """The unit vector to the right of a 2D heading (x, y) -> (y, -x)."""
    return np.array([heading[1], -heading[0]])


@dataclass(frozen=True)
class Lane:
    """One travel lane, as a line s -> origin + s * heading, s in [0, length]. ``stops`` (S,) are the s of its stop
    lines (where a front bumper halts), ``intersections`` (S,) the index of the intersection each one guards."""

    road: int
    direction: int  # +1 along the road's axis, -1 against it
    index: int  # 0 next to the centre line
    origin: np.ndarray
    heading: np.ndarray
    length: float
    stops: np.ndarray
    intersections: np.ndarray

    @property
    def axis(self) -> int:
        return 0 if abs(self.heading[0]) > 0.5 else 1

    @property
    def yaw(self) -> float:
        return math.atan2(self.heading[1], self.heading[0])

    def point(self, s: np.ndarray | float) -> np.ndarray:
        """Positions (..., 2) at s (...)."""
        return self.origin + np.asarray(s, dtype=np.float64)[..., None] * self.heading

    def coordinate(self, point: np.ndarray) -> np.ndarray:
        """s of the projection of points (..., 2) on the lane line."""
        return (np.asarray(point) - self.origin) @ self.heading


@dataclass(frozen=True)
class Placed:
    """An annotated object that does not move: its model, pose (x, y, yaw) and nuScenes attribute (or None)."""

    model: ObjectModel
    x: float
    y: float
    yaw: float
    attribute: str | None


@dataclass
class Town:
    """Layout, scenery and static objects of one town. ``scenery`` (P, 11) holds the un-annotated parts (buildings,
    trees, street lights) in global coordinates: the columns of ``catalog.PART_COLUMNS``, then the yaw."""

    name: str
    extent: tuple[float, float]
    roads: list[Road]
    lanes: list[Lane] = field(default_factory=list)
    intersections: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (I, 2) centres
    blocks: list[tuple[float, float, float, float]] = field(default_factory=list)  # (x0, x1, y0, y1) kerb to kerb
    inner_blocks: list[tuple[float, float, float, float]] = field(default_factory=list)
    scenery: np.ndarray = field(default_factory=lambda: np.zeros((0, 11)))
    placed: list[Placed] = field(default_factory=list)
    sun: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.4, 0.866]))  # unit vector towards the sun
    texture_seed: int = 0

    def roads_along(self, axis: int) -> list[int]:
        """Indices of the roads that run along ``axis``, sorted by offset."""
        return sorted((i for i, r in enumerate(self.roads) if r.axis == axis), key=lambda i: self.roads[i].offset)

    def _nearest_road(self, axis: int, lateral: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For points at ``lateral`` (N,) across the roads along ``axis``: signed distance to the nearest one's centre
        line, its half-width and its lanes per direction, each (N,)."""
        roads = [self.roads[i] for i in self.roads_along(axis)]
        offsets = torch.tensor([r.offset for r in roads], dtype=lateral.dtype, device=lateral.device)
        half = torch.tensor([r.half_width for r in roads], dtype=lateral.dtype, device=lateral.device)
        lanes = torch.tensor([float(r.lanes) for r in roads], dtype=lateral.dtype, device=lateral.device)
        i = torch.bucketize(lateral, (offsets[1:] + offsets[:-1]) / 2)
        return lateral - offsets[i], half[i], lanes[i]

    def ground(self, x: Tensor, y: Tensor) -> Tensor:
        """Ground material (``Ground``) at global points x, y (N,) float32 -> (N,) int64."""
        # Roads along x sit at fixed y: y is their lateral coordinate, and the nearest road along y is the crossing.
        d0, half0, lanes0 = self._nearest_road(0, y)
        d1, half1, lanes1 = self._nearest_road(1, x)
        beyond0, beyond1 = d0.abs() - half0, d1.abs() - half1  # metres beyond each road's kerb (< 0: on it)
        kerb = torch.minimum(beyond0, beyond1)
        joint = (torch.frac(x / 1.2) < 0.04) | (torch.frac(y / 1.2) < 0.04)

        def code(g: Ground) -> Tensor:
            return torch.tensor(float(g))

        material = torch.where(kerb < 0.25, code(Ground.KERB),
                               torch.where(kerb < SIDEWALK_WIDTH,
                                           torch.where(joint, code(Ground.JOINT), code(Ground.SIDEWALK)),
                                           code(Ground.GRASS)))
        material = torch.where(kerb < 0, code(Ground.ASPHALT), material)
        # Markings only where exactly one road covers the point (not inside intersections).
        marks0 = self._markings(d0, x, lanes0, half0, beyond1, d1, axis=0)
        marks1 = self._markings(d1, y, lanes1, half1, beyond0, d0, axis=1)
        material = torch.where((beyond0 < 0) & (beyond1 >= 0) & (marks0 >= 0), marks0, material)
        material = torch.where((beyond1 < 0) & (beyond0 >= 0) & (marks1 >= 0), marks1, material)
        return material.long()

    @staticmethod
    def _markings(e: Tensor, along: Tensor, lanes: Tensor, half: Tensor, q: Tensor, to_cross: Tensor,
                  axis: int) -> Tensor:
        """Marking material (or -1) at lateral offset ``e`` from a road's centre line, ``q`` metres before the kerb
        line of the nearest crossing road, ``to_cross`` = along - crossing centre."""
        ae = e.abs()
        travel = lanes * LANE_WIDTH
        centre = (ae > 0.08) & (ae < 0.2) & (q > 3.6)
        divider = (lanes > 1) & ((ae - LANE_WIDTH).abs() < 0.075) & (torch.remainder(along, 10.0) < 3.5) & (q > 3.6)
        edge = ((ae - travel).abs() < 0.08) & (q > 0.0)
        zebra = (q > 0.5) & (q < 3.5) & (ae < half - 0.3) & (torch.remainder(e, 1.0) < 0.5)
        # Lanes on the side where e < 0 (axis 0) or e > 0 (axis 1) drive towards +axis; a stop line is painted on
        # the lanes that approach the crossing.
        direction = torch.sign(e) * (-1.0 if axis == 0 else 1.0)
        approaching = direction * to_cross < 0
        stop = (q > STOP_LINE - 0.4) & (q < STOP_LINE) & approaching & (ae > 0.2) & (ae < travel)
        white = torch.where(edge | divider | zebra | stop, float(Ground.WHITE), -1.0)
        return torch.where(centre, float(Ground.YELLOW), white)

    def drivable_mask(self) -> np.ndarray:
        """The drivable area as a (H, W) uint8 image in nuscenes-devkit MapMask's convention: pixel (row, col) is at
        x = col * res, y = (H - row) * res; 255 on roads, 0 elsewhere."""
        width = int(math.ceil(self.extent[0] / MAP_RESOLUTION)) + 1
        height = int(math.ceil(self.extent[1] / MAP_RESOLUTION)) + 1
        xs = np.arange(width) * MAP_RESOLUTION
        ys = (height - np.arange(height)) * MAP_RESOLUTION
        cols = np.zeros(width, dtype=bool)
        rows = np.zeros(height, dtype=bool)
        for road in self.roads:
            if road.axis == 0:
                rows |= np.abs(ys - road.offset) < road.half_width
            else:
                cols |= np.abs(xs - road.offset) < road.half_width
        return np.logical_or.outer(rows, cols).astype(np.uint8) * np.uint8(255)


# --------------------------------------------------------------------------------------------------------------------
# Building a town


def build_town(name: str, rng: np.random.Generator) -> Town:
    """A random town: ``ROADS_PER_AXIS`` roads each way, 70-105 m apart, 1 or 2 lanes per direction."""
    roads = []
    extent = []
    for axis in (0, 1):
        offsets = MARGIN + np.concatenate([[0.0], np.cumsum(rng.uniform(70.0, 105.0, ROADS_PER_AXIS - 1))])
        roads += [Road(axis, float(o), int(rng.choice([1, 2], p=[0.65, 0.35]))) for o in offsets]
        extent.append(float(offsets[-1] + MARGIN))
    # Along-x roads sit at fixed y, so the extent in y comes from axis 0's offsets.
    town = Town(name, (extent[1], extent[0]), roads)
    elevation = math.radians(rng.uniform(30.0, 60.0))
    azimuth = rng.uniform(0.0, 2 * math.pi)
    town.sun = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                         math.sin(elevation)])
    town.texture_seed = int(rng.integers(2**31))
    _add_lanes(town)
    _add_blocks(town)
    scenery = [_buildings_and_trees(block, town, rng) for block in town.blocks]
    scenery.append(_street_lights(town, rng))
    town.scenery = np.concatenate([s for s in scenery if len(s)], axis=0)
    town.placed = _parked(town, rng) + _parked_bicycles(town, rng)
    return town


def _add_lanes(town: Town) -> None:
    inter_index = {}
    for n, (i, j) in enumerate((i, j) for i in town.roads_along(0) for j in town.roads_along(1)):
        inter_index[(i, j)] = inter_index[(j, i)] = n
    town.intersections = np.array(
        [[town.roads[j].offset, town.roads[i].offset] for i in town.roads_along(0) for j in town.roads_along(1)]
    )
    for r, road in enumerate(town.roads):
        length = town.extent[road.axis]
        axis_vec = np.eye(2)[road.axis]
        centre = np.array([0.0, road.offset]) if road.axis == 0 else np.array([road.offset, 0.0])
        for direction in (1, -1):
            heading = axis_vec * direction
            start = centre + (0.0 if direction > 0 else length) * axis_vec
            crossings = town.roads_along(1 - road.axis)
            for k in range(road.lanes):
                origin = start + (LANE_WIDTH / 2 + LANE_WIDTH * k) * right_of(heading)
                s_cross = np.array([(town.roads[c].offset - origin[road.axis]) * direction for c in crossings])
                stops = s_cross - np.array([town.roads[c].half_width for c in crossings]) - STOP_LINE
                order = np.argsort(stops)
                town.lanes.append(Lane(r, direction, k, origin, heading, length, stops[order],
                                       np.array([inter_index[(r, crossings[o])] for o in order])))


def _kerb_intervals(town: Town, axis: int) -> list[tuple[float, float]]:
    """Intervals along ``axis`` between the kerbs of the roads that cross it (the map edges close the ends)."""
    edges = [0.0]
    for i in town.roads_along(1 - axis):
        road = town.roads[i]
        edges += [road.offset - road.half_width, road.offset + road.half_width]
    edges.append(town.extent[axis])
    return [(edges[k], edges[k + 1]) for k in range(0, len(edges), 2)]


def _add_blocks(town: Town) -> None:
    xs, ys = _kerb_intervals(town, 0), _kerb_intervals(town, 1)
    for a, (x0, x1) in enumerate(xs):
        for b, (y0, y1) in enumerate(ys):
            town.blocks.append((x0, x1, y0, y1))
            if 0 < a < len(xs) - 1 and 0 < b < len(ys) - 1:
                town.inner_blocks.append((x0, x1, y0, y1))


_WALLS = ((0.72, 0.42, 0.33), (0.85, 0.8, 0.68), (0.6, 0.6, 0.6), (0.9, 0.9, 0.88), (0.65, 0.52, 0.4),
          (0.45, 0.55, 0.65), (0.8, 0.72, 0.55), (0.5, 0.35, 0.3))


def _with_yaw(parts: np.ndarray, yaw: float = 0.0) -> np.ndarray:
    return np.concatenate([parts, np.full((len(parts), 1), yaw)], axis=1)


def _buildings_and_trees(block: tuple[float, float, float, float], town: Town,
                         rng: np.random.Generator) -> np.ndarray:
    """Buildings set back from the sidewalks along the block's edges, trees in the space left."""
    x0, x1, y0, y1 = block
    inset = SIDEWALK_WIDTH + 1.0
    zone = (x0 + inset, x1 - inset, y0 + inset, y1 - inset)
    if zone[1] - zone[0] < 6.0 or zone[3] - zone[2] < 6.0:
        return np.zeros((0, 11))
    footprints: list[tuple[float, float, float, float]] = []

    def free(f: tuple[float, float, float, float], clearance: float) -> bool:
        inside = f[0] >= zone[0] and f[1] <= zone[1] and f[2] >= zone[2] and f[3] <= zone[3]
        return inside and all(f[1] + clearance <= g[0] or g[1] + clearance <= f[0] or f[3] + clearance <= g[2]
                              or g[3] + clearance <= f[2] for g in footprints)

    parts = []
    # Walk along each edge of the zone placing buildings whose front faces the street.
    for side in range(4):
        along_axis = 0 if side < 2 else 1
        lo, hi = (zone[0], zone[1]) if along_axis == 0 else (zone[2], zone[3])
        t = lo + rng.uniform(0.0, 4.0)
        while t < hi:
            frontage, depth = rng.uniform(8.0, 24.0), rng.uniform(8.0, 18.0)
            setback = rng.uniform(0.0, 2.5)
            a0, a1 = t, min(t + frontage, hi)
            if side == 0:
                f = (a0, a1, zone[2] + setback, zone[2] + setback + depth)
            elif side == 1:
                f = (a0, a1, zone[3] - setback - depth, zone[3] - setback)
            elif side == 2:
                f = (zone[0] + setback, zone[0] + setback + depth, a0, a1)
            else:
                f = (zone[1] - setback - depth, zone[1] - setback, a0, a1)
            if a1 - a0 > 5.0 and free(f, 1.0):
                footprints.append(f)
                tall = rng.random() < 0.15
                height = rng.uniform(15.0, 35.0) if tall else rng.uniform(4.0, 13.0)
                colour = np.array(_WALLS[rng.integers(len(_WALLS))]) * rng.uniform(0.85, 1.1)
                parts.append(box((f[0], f[1]), (f[2], f[3]), (0.0, height), np.clip(colour, 0, 1), Material.BUILDING))
            t = a1 + rng.uniform(0.0, 5.0)
    area = (zone[1] - zone[0]) * (zone[3] - zone[2])
    for _ in range(int(area / 250)):
        cx, cy = rng.uniform(zone[0] + 2.5, zone[1] - 2.5), rng.uniform(zone[2] + 2.5, zone[3] - 2.5)
        crown = rng.uniform(1.3, 2.3)
        if not free((cx - crown, cx + crown, cy - crown, cy + crown), 0.5):
            continue
        footprints.append((cx - crown, cx + crown, cy - crown, cy + crown))
        top = rng.uniform(5.0, 8.0)
        green = np.array([0.18, 0.38, 0.14]) * rng.uniform(0.8, 1.2)
        parts.append(box((cx - 0.15, cx + 0.15), (cy - 0.15, cy + 0.15), (0.0, 2.4), (0.35, 0.25, 0.15)))
        parts.append(box((cx - crown, cx + crown), (cy - crown, cy + crown), (2.2, top), green, Material.FOLIAGE))
    return _with_yaw(np.stack(parts)) if parts else np.zeros((0, 11))


def _kerb_frame(road: Road, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along-axis unit vector, outward normal of the ``side`` (+1 or -1) of a road, and a point of its centre line."""
    along = np.eye(2)[road.axis]
    normal = np.eye(2)[1 - road.axis] * side
    centre = np.array([0.0, road.offset]) if road.axis == 0 else np.array([road.offset, 0.0])
    return along, normal, centre


def _free_stretches(town: Town, road: Road, clearance: float) -> list[tuple[float, float]]:
    """Intervals along a road that keep ``clearance`` metres away from the kerb lines of the crossing roads."""
    stretches = []
    for lo, hi in _kerb_intervals(town, road.axis):
        lo = lo + (clearance if lo > 0.0 else 2.0)
        hi = hi - (clearance if hi < town.extent[road.axis] else 2.0)
        if hi > lo:
            stretches.append((lo, hi))
    return stretches


def _street_lights(town: Town, rng: np.random.Generator) -> np.ndarray:
    parts = []
    for road in town.roads:
        for side in (1, -1):
            along, normal, centre = _kerb_frame(road, side)
            for lo, hi in _free_stretches(town, road, 1.5):
                for t in np.arange(lo + rng.uniform(2.0, 10.0), hi, 28.0):
                    base = centre + along * t + normal * (road.half_width + POLE_OFFSET)
                    tip = base - normal * 2.0  # the arm reaches over the parking strip
                    parts.append(box((base[0] - 0.1, base[0] + 0.1), (base[1] - 0.1, base[1] + 0.1), (0.0, 7.0),
                                     (0.35, 0.36, 0.38)))
                    lo_xy, hi_xy = np.minimum(base, tip), np.maximum(base, tip)
                    parts.append(box((lo_xy[0] - 0.06, hi_xy[0] + 0.06), (lo_xy[1] - 0.06, hi_xy[1] + 0.06),
                                     (6.85, 6.97), (0.35, 0.36, 0.38)))
                    parts.append(box((tip[0] - 0.25, tip[0] + 0.25), (tip[1] - 0.25, tip[1] + 0.25), (6.7, 6.85),
                                     (1.0, 0.95, 0.75), Material.LAMP))
    return _with_yaw(np.stack(parts))


def _parked(town: Town, rng: np.random.Generator) -> list[Placed]:
    """Vehicles parked nose to tail in the parking strips, and the odd cluster of cones or barriers."""
    placed = []
    for road in town.roads:
        for side in (1, -1):
            along, normal, centre = _kerb_frame(road, side)
            # The parking strip on this side serves the lanes that drive with the kerb on their right.
            heading = along if np.allclose(right_of(along), normal) else -along
            yaw = math.atan2(heading[1], heading[0])
            lateral = road.half_width - PARKING_WIDTH / 2
            for lo, hi in _free_stretches(town, road, 9.0):
                t = lo + rng.uniform(0.0, 6.0)
                while t < hi:
                    roll = rng.random()
                    if roll < 0.22:
                        t += rng.uniform(5.0, 25.0)
                        continue
                    if roll < 0.26:
                        t = _work_zone(placed, rng, centre, along, normal, lateral, yaw, t, hi)
                        continue
                    model = sample_model(draw_kind(PARKED_MIX, rng), rng, with_rider=False)
                    length = model.size[1]
                    if t + length > hi:
                        break
                    mid = t + length / 2
                    # A little askew and off-centre: at most 15 cm off the strip's centre line at either end.
                    skew = rng.uniform(-0.1, 0.1) / length
                    xy = centre + along * mid + normal * (lateral + rng.uniform(-0.1, 0.1))
                    xy -= _rotate(model.box_centre[:2], yaw + skew)  # the annotated box, not the origin, on the spot
                    placed.append(Placed(model, float(xy[0]), float(xy[1]), yaw + skew, _parked_attribute(model)))
                    t += length + rng.uniform(0.8, 3.0)
    return placed


def _parked_attribute(model: ObjectModel) -> str:
    return "cycle.without_rider" if model.kind.is_cycle else "vehicle.parked"


def _work_zone(placed: list[Placed], rng: np.random.Generator, centre: np.ndarray, along: np.ndarray,
               normal: np.ndarray, lateral: float, yaw: float, t: float, hi: float) -> float:
    """A row of cones or barriers along the outer edge of the parking strip; returns where the next thing may go."""
    barriers = rng.random() < 0.4
    count = int(rng.integers(2, 5))
    step = 2.8 if barriers else 2.0
    for i in range(count):
        position = t + 1.0 + i * step
        if position + 1.5 > hi:
            break
        kind = KINDS["barrier" if barriers else "cone"]
        model = sample_model(kind, rng)
        # A barrier's width (its long side) runs along the road.
        object_yaw = yaw + (math.pi / 2 if barriers else rng.uniform(0, math.pi / 2))
        xy = centre + along * position + normal * (lateral - PARKING_WIDTH / 2 + 0.5)
        xy -= _rotate(model.box_centre[:2], object_yaw)
        placed.append(Placed(model, float(xy[0]), float(xy[1]), object_yaw, None))
    return t + count * step + 3.0


def _parked_bicycles(town: Town, rng: np.random.Generator) -> list[Placed]:
    """Bicycles parked on the sidewalk in small groups, half-way between street lights."""
    placed = []
    for road in town.roads:
        for side in (1, -1):
            along, normal, centre = _kerb_frame(road, side)
            for lo, hi in _free_stretches(town, road, 1.5):
                for t in np.arange(lo + 16.0, hi - 8.0, 28.0):
                    if rng.random() > 0.15:
                        continue
                    for i in range(int(rng.integers(1, 4))):
                        model = sample_model(KINDS["bicycle"], rng, with_rider=False)
                        yaw = math.atan2(along[1], along[0]) + (math.pi if rng.random() < 0.5 else 0.0)
                        xy = centre + along * (t + 2.0 * i) + normal * (road.half_width + BIKE_OFFSET)
                        xy -= _rotate(model.box_centre[:2], yaw)
                        placed.append(Placed(model, float(xy[0]), float(xy[1]), yaw, "cycle.without_rider"))
    return placed


def _rotate(xy: np.ndarray, yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c * xy[0] - s * xy[1], s * xy[0] + c * xy[1]])
