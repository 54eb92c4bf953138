"""What the synthetic world is made of: the nuScenes taxonomy it writes, and the shape, size and colour of every kind
of object in it.

Every object is a union of *parts*: oriented boxes that share the object's yaw. A part array is (P, 10) float64,
columns ``PART_COLUMNS``, in the object's own frame (metres, x forward along the length, y left, z up, z = 0 on the
ground). The annotated box of an object is the bounding box of its parts, grown by ``ANNOTATION_MARGIN`` on every side.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

PART_COLUMNS = ("cx", "cy", "cz", "hx", "hy", "hz", "r", "g", "b", "material")

# Lidar returns from an object's surface lie this far inside its annotated box, never on its faces, so that a count
# of the points inside a box does not depend on the float rounding of whoever recounts it.
ANNOTATION_MARGIN = 0.02


class Material(IntEnum):
    """How a part is shaded (render.py) and how strongly it reflects the Lidar."""

    PAINT = 0
    GLASS = 1
    BUILDING = 2  # walls with a grid of windows, a grey roof
    STRIPES = 3  # red and white, along the part's y
    FOLIAGE = 4
    LAMP = 5  # emits: not shaded


# --------------------------------------------------------------------------------------------------------------------
# nuScenes taxonomy (the names and descriptions of the real tables; the synthetic world uses a subset)

NUSCENES_CATEGORIES: tuple[tuple[str, str], ...] = (
    ("human.pedestrian.adult", "Adult subcategory."),
    ("human.pedestrian.child", "Child subcategory."),
    ("human.pedestrian.wheelchair", "Wheelchairs."),
    ("human.pedestrian.stroller", "Strollers."),
    ("human.pedestrian.personal_mobility", "A small electric or self-propelled vehicle."),
    ("human.pedestrian.police_officer", "Police officer."),
    ("human.pedestrian.construction_worker", "Construction worker."),
    ("animal", "All animals."),
    ("vehicle.car", "Vehicle designed primarily for personal use."),
    ("vehicle.motorcycle", "Gasoline or electric powered 2-wheeled vehicle."),
    ("vehicle.bicycle", "Human or electric powered 2-wheeled vehicle."),
    ("vehicle.bus.bendy", "Bendy bus subcategory."),
    ("vehicle.bus.rigid", "Rigid bus subcategory."),
    ("vehicle.truck", "Vehicles primarily designed to haul cargo."),
    ("vehicle.construction", "Vehicles primarily designed for construction."),
    ("vehicle.emergency.ambulance", "All types of ambulances."),
    ("vehicle.emergency.police", "All types of police vehicles."),
    ("vehicle.trailer", "Any vehicle trailer."),
    ("movable_object.barrier", "Temporary road barrier placed in the scene."),
    ("movable_object.trafficcone", "All types of traffic cone."),
    ("movable_object.pushable_pullable", "Objects that a pedestrian may push or pull."),
    ("movable_object.debris", "Movable object that is left on the driveable surface."),
    ("static_object.bicycle_rack", "Area or device intended to park or secure the bicycles in a row."),
)

NUSCENES_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("vehicle.moving", "Vehicle is moving."),
    ("vehicle.stopped", "Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move."),
    ("vehicle.parked", "Vehicle is stationary (usually for longer duration) with no immediate intent to move."),
    ("cycle.with_rider", "There is a rider on the bicycle or motorcycle."),
    ("cycle.without_rider", "There is NO rider on the bicycle or motorcycle."),
    ("pedestrian.sitting_lying_down", "The human is sitting or lying down."),
    ("pedestrian.standing", "The human is standing."),
    ("pedestrian.moving", "The human is moving."),
)

# token, level, lower bound of the visible fraction (the token's bin is [bound, next bound)).
NUSCENES_VISIBILITY: tuple[tuple[str, str, float], ...] = (
    ("1", "v0-40", 0.0),
    ("2", "v40-60", 0.4),
    ("3", "v60-80", 0.6),
    ("4", "v80-100", 0.8),
)


def visibility_token(visible_fraction: float) -> str:
    """The nuScenes visibility token ('1'..'4') of a visible fraction in [0, 1]."""
    token = NUSCENES_VISIBILITY[0][0]
    for candidate, _, lower in NUSCENES_VISIBILITY:
        if visible_fraction >= lower:
            token = candidate
    return token


# --------------------------------------------------------------------------------------------------------------------
# Object kinds


@dataclass(frozen=True)
class ObjectKind:
    """A kind of object: nuScenes category, size ranges (w, l, h) in metres, body colours (RGB in [0, 1])."""

    name: str
    category: str
    width: tuple[float, float]
    length: tuple[float, float]
    height: tuple[float, float]
    colours: tuple[tuple[float, float, float], ...]
    shape: str  # key of _SHAPES

    @property
    def is_cycle(self) -> bool:
        return self.category in ("vehicle.bicycle", "vehicle.motorcycle")


_CAR_PAINT = (
    (0.92, 0.92, 0.9), (0.08, 0.08, 0.09), (0.62, 0.63, 0.65), (0.38, 0.39, 0.41), (0.1, 0.15, 0.35),
    (0.7, 0.08, 0.07), (0.15, 0.35, 0.7), (0.12, 0.3, 0.18), (0.72, 0.65, 0.5), (0.85, 0.55, 0.1),
)
_CLOTHES = (
    (0.1, 0.1, 0.12), (0.2, 0.25, 0.45), (0.6, 0.1, 0.1), (0.85, 0.85, 0.8), (0.3, 0.45, 0.3), (0.75, 0.6, 0.3),
    (0.45, 0.2, 0.5), (0.9, 0.45, 0.1),
)

KINDS: dict[str, ObjectKind] = {
    kind.name: kind
    for kind in (
        ObjectKind("car", "vehicle.car", (1.75, 2.05), (4.1, 4.9), (1.45, 1.8), _CAR_PAINT, "car"),
        ObjectKind("police", "vehicle.emergency.police", (1.85, 2.0), (4.8, 5.1), (1.55, 1.7),
                   ((0.06, 0.08, 0.2), (0.95, 0.95, 0.95)), "police"),
        ObjectKind("ambulance", "vehicle.emergency.ambulance", (2.1, 2.4), (5.8, 6.6), (2.6, 2.9),
                   ((0.97, 0.97, 0.95),), "ambulance"),
        ObjectKind("truck", "vehicle.truck", (2.3, 2.55), (6.5, 9.5), (2.9, 3.6),
                   ((0.8, 0.1, 0.1), (0.15, 0.3, 0.65), (0.95, 0.95, 0.95), (0.95, 0.75, 0.1), (0.2, 0.45, 0.25)),
                   "truck"),
        ObjectKind("construction", "vehicle.construction", (2.3, 2.6), (5.5, 7.0), (2.8, 3.3),
                   ((0.95, 0.7, 0.05), (0.95, 0.45, 0.05)), "construction"),
        ObjectKind("bus", "vehicle.bus.rigid", (2.55, 2.9), (10.5, 12.5), (3.1, 3.6),
                   ((0.8, 0.12, 0.1), (0.1, 0.35, 0.75), (0.95, 0.8, 0.1), (0.2, 0.55, 0.3)), "bus"),
        ObjectKind("trailer", "vehicle.trailer", (2.4, 2.6), (7.0, 12.0), (3.2, 3.8),
                   ((0.9, 0.9, 0.9), (0.7, 0.72, 0.75), (0.65, 0.15, 0.12), (0.2, 0.3, 0.55)), "trailer"),
        ObjectKind("motorcycle", "vehicle.motorcycle", (0.75, 0.9), (2.0, 2.3), (1.1, 1.2),
                   ((0.08, 0.08, 0.08), (0.75, 0.1, 0.1), (0.15, 0.3, 0.75), (0.95, 0.55, 0.05)), "motorcycle"),
        ObjectKind("bicycle", "vehicle.bicycle", (0.55, 0.65), (1.65, 1.8), (1.0, 1.1),
                   ((0.1, 0.1, 0.1), (0.1, 0.5, 0.75), (0.8, 0.15, 0.15), (0.2, 0.6, 0.25)), "bicycle"),
        ObjectKind("pedestrian", "human.pedestrian.adult", (0.55, 0.68), (0.5, 0.75), (1.6, 1.9), _CLOTHES,
                   "pedestrian"),
        ObjectKind("barrier", "movable_object.barrier", (1.8, 2.6), (0.4, 0.55), (0.9, 1.1),
                   ((0.85, 0.1, 0.08),), "barrier"),
        ObjectKind("cone", "movable_object.trafficcone", (0.35, 0.45), (0.35, 0.45), (0.7, 1.0),
                   ((0.98, 0.4, 0.05),), "cone"),
    )
}

# Mixtures (kind name -> weight) of the vehicles that drive, that park, and of the movable objects.
MOVING_MIX = {"car": 0.74, "truck": 0.07, "bus": 0.05, "motorcycle": 0.05, "bicycle": 0.04, "police": 0.04,
              "ambulance": 0.01}
# No bus parks: at up to 2.9 m it is wider than a parking strip and would stick into the lane.
PARKED_MIX = {"car": 0.79, "truck": 0.05, "trailer": 0.04, "police": 0.03, "ambulance": 0.01, "construction": 0.03,
              "motorcycle": 0.05}
# Desired speed (m/s) of each driving kind.
CRUISE_SPEED = {"car": (9.0, 13.0), "police": (10.0, 13.5), "ambulance": (10.0, 13.0), "truck": (8.0, 11.0),
                "bus": (7.5, 10.0), "motorcycle": (10.0, 13.5), "bicycle": (4.0, 6.0)}


@dataclass(frozen=True)
class ObjectModel:
    """One object's parts (P, 10) in its own frame, and its annotated box: ``box_centre`` (3,) in the object frame
    and ``size`` (w, l, h)."""

    kind: ObjectKind
    parts: np.ndarray
    box_centre: np.ndarray
    size: tuple[float, float, float]


def sample_model(kind: ObjectKind, rng: np.random.Generator, *, with_rider: bool = True,
                 walking: bool = True) -> ObjectModel:
    """Draw one object of ``kind``: size uniform in its ranges, a colour from its palette, parts from its shape."""
    w, l, h = (float(rng.uniform(*r)) for r in (kind.width, kind.length, kind.height))
    colour = np.asarray(kind.colours[rng.integers(len(kind.colours))], dtype=np.float64)
    builder = _SHAPES[kind.shape]
    if kind.is_cycle:
        parts = builder(w, l, h, colour, rng, with_rider)
    elif kind.shape == "pedestrian":
        parts = builder(w, l, h, colour, rng, walking)
    else:
        parts = builder(w, l, h, colour, rng)
    return model_from_parts(kind, parts)


def model_from_parts(kind: ObjectKind, parts: np.ndarray) -> ObjectModel:
    """Wrap parts (P, 10) into a model whose annotated box is their bounding box grown by ``ANNOTATION_MARGIN``."""
    lo = (parts[:, 0:3] - parts[:, 3:6]).min(axis=0) - ANNOTATION_MARGIN
    hi = (parts[:, 0:3] + parts[:, 3:6]).max(axis=0) + ANNOTATION_MARGIN
    extent = hi - lo
    return ObjectModel(kind, parts, (lo + hi) / 2.0, (float(extent[1]), float(extent[0]), float(extent[2])))


# --------------------------------------------------------------------------------------------------------------------
# Shapes: (w, l, h, colour, rng, ...) -> parts (P, 10)

_TYRE = np.array([0.06, 0.06, 0.07])
_GLASS = np.array([0.13, 0.17, 0.22])
_CHASSIS = np.array([0.16, 0.16, 0.17])
_HEADLIGHT = np.array([0.95, 0.93, 0.8])
_TAILLIGHT = np.array([0.8, 0.05, 0.05])
_SKIN = ((0.87, 0.7, 0.58), (0.6, 0.42, 0.3), (0.38, 0.26, 0.18))


def box(x: tuple[float, float], y: tuple[float, float], z: tuple[float, float], colour: np.ndarray | tuple,
        material: Material = Material.PAINT) -> np.ndarray:
    """One part (10,) spanning the intervals ``x``, ``y``, ``z`` of the object frame."""
    c = np.asarray(colour, dtype=np.float64)
    return np.array([(x[0] + x[1]) / 2, (y[0] + y[1]) / 2, (z[0] + z[1]) / 2,
                     (x[1] - x[0]) / 2, (y[1] - y[0]) / 2, (z[1] - z[0]) / 2, c[0], c[1], c[2], float(material)])


def _wheels(axles: list[float], w: float, radius: float, inset: float = 0.02, tread: float = 0.24) -> list[np.ndarray]:
    return [box((a - radius, a + radius), (s * (w / 2 - inset - tread), s * (w / 2 - inset))[:: s], (0.0, 2 * radius),
                _TYRE) for a in axles for s in (1, -1)]


def _head_lights(l: float, w: float, z: tuple[float, float]) -> list[np.ndarray]:
    """Two lamps 5 cm deep at the front (x = l/2), which the body must leave free."""
    return [box((l / 2 - 0.05, l / 2), (s * (w / 2 - 0.45), s * (w / 2 - 0.1))[:: s], z, _HEADLIGHT, Material.LAMP)
            for s in (1, -1)]


def _tail_lights(x: float, w: float, z: tuple[float, float]) -> list[np.ndarray]:
    """Two lamps 5 cm deep at the back (from x forwards)."""
    return [box((x, x + 0.05), (s * (w / 2 - 0.45), s * (w / 2 - 0.1))[:: s], z, _TAILLIGHT, Material.LAMP)
            for s in (1, -1)]


def _car(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator,
         roof_h: float | None = None) -> np.ndarray:
    top = h if roof_h is None else roof_h
    belt = 0.6 * top
    parts = _wheels([l / 2 - 0.85, -l / 2 + 0.85], w, 0.33)
    parts.append(box((-l / 2 + 0.04, l / 2 - 0.04), (-w / 2, w / 2), (0.3, belt), colour))
    parts.append(box((-0.3 * l, 0.17 * l), (-0.46 * w, 0.46 * w), (belt, 0.93 * top), _GLASS, Material.GLASS))
    parts.append(box((-0.28 * l, 0.13 * l), (-0.44 * w, 0.44 * w), (0.93 * top, top), colour))
    parts += _head_lights(l, w, (0.5 * belt, 0.75 * belt)) + _tail_lights(-l / 2, w, (0.5 * belt, 0.75 * belt))
    return np.stack(parts)


def _police(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bar = 0.1
    parts = list(_car(w, l, h, colour, rng, roof_h=h - bar))
    parts.append(box((-0.05 * l, 0.05 * l), (0.0, 0.35 * w), (h - bar, h), (0.9, 0.1, 0.1), Material.LAMP))
    parts.append(box((-0.05 * l, 0.05 * l), (-0.35 * w, 0.0), (h - bar, h), (0.1, 0.2, 0.95), Material.LAMP))
    return np.stack(parts)


def _truck_like(w: float, l: float, h: float, cab_colour: np.ndarray, cargo_colour: np.ndarray, cab_len: float,
                cab_h: float, axles: list[float], radius: float) -> list[np.ndarray]:
    parts = _wheels(axles, w, radius)
    parts.append(box((-l / 2 + 0.2, l / 2 - 0.3), (-w / 2 + 0.3, w / 2 - 0.3), (0.5, 2 * radius + 0.05), _CHASSIS))
    cab_x0 = l / 2 - cab_len
    parts.append(box((cab_x0, l / 2 - 0.05), (-w / 2 + 0.02, w / 2 - 0.02), (0.55, cab_h), cab_colour))
    parts.append(box((l / 2 - 0.6 * cab_len, l / 2), (-w / 2, w / 2), (0.58 * cab_h, 0.85 * cab_h), _GLASS,
                     Material.GLASS))
    parts.append(box((-l / 2 + 0.05, cab_x0 - 0.15), (-w / 2, w / 2), (2 * radius + 0.05, h), cargo_colour))
    return parts + _head_lights(l, w, (0.75, 0.95)) + _tail_lights(-l / 2, w, (1.1, 1.3))


def _truck(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cargo = np.array([(0.92, 0.92, 0.9), (0.6, 0.62, 0.64), (0.35, 0.36, 0.4)][rng.integers(3)])
    axles = [l / 2 - 1.3, -l / 2 + 1.4] + ([-l / 2 + 2.5] if l > 8.0 else [])
    return np.stack(_truck_like(w, l, h, colour, cargo, 2.2, min(h, 2.9), axles, 0.5))


def _construction(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    axles = [l / 2 - 1.2, -l / 2 + 1.3]
    return np.stack(_truck_like(w, l, h, colour, np.array([0.3, 0.28, 0.25]), 2.0, h, axles, 0.6))


def _ambulance(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = _truck_like(w, l, h - 0.12, colour, colour, 1.7, 0.78 * (h - 0.12), [l / 2 - 1.1, -l / 2 + 1.2], 0.36)
    parts.append(box((-l / 2 + 0.1, l / 2 - 2.0), (-w / 2 - 0.02, w / 2 + 0.02), (0.45 * h, 0.55 * h), (0.85, 0.1, 0.1)))
    parts.append(box((-l / 2 + 0.3, -l / 2 + 1.0), (-0.3 * w, 0.3 * w), (h - 0.12, h), (0.9, 0.1, 0.1), Material.LAMP))
    return np.stack(parts)


def _bus(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = _wheels([l / 2 - 2.6, -l / 2 + 3.0], w, 0.5)
    parts.append(box((-l / 2 + 0.05, l / 2 - 0.05), (-w / 2, w / 2), (0.35, 0.42 * h), colour))
    parts.append(box((-l / 2 + 0.05, l / 2), (-w / 2, w / 2), (0.42 * h, 0.82 * h), _GLASS, Material.GLASS))
    parts.append(box((-l / 2 + 0.05, l / 2 - 0.05), (-w / 2, w / 2), (0.82 * h, h), colour))
    parts += _head_lights(l, w, (0.55, 0.75)) + _tail_lights(-l / 2, w, (0.55, 0.75))
    return np.stack(parts)


def _trailer(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    parts = _wheels([-l / 2 + 1.3, -l / 2 + 2.4], w, 0.5)
    parts.append(box((-l / 2 + 0.3, l / 2 - 1.5), (-w / 2 + 0.3, w / 2 - 0.3), (0.5, 1.15), _CHASSIS))
    parts.append(box((l / 2 - 1.5, l / 2), (-0.15, 0.15), (0.55, 0.75), _CHASSIS))  # tow bar
    parts.append(box((-l / 2 + 0.05, l / 2 - 1.5), (-w / 2, w / 2), (1.15, h), colour))
    return np.stack(parts + _tail_lights(-l / 2, w, (1.2, 1.4)))


def _rider(rng: np.random.Generator, seat_z: float, x: float) -> list[np.ndarray]:
    jacket = _CLOTHES[rng.integers(len(_CLOTHES))]
    return [
        box((x - 0.2, x + 0.2), (-0.2, 0.2), (seat_z, seat_z + 0.6), jacket),
        box((x - 0.1, x + 0.12), (-0.12, 0.12), (seat_z + 0.6, seat_z + 0.85), _SKIN[rng.integers(len(_SKIN))]),
    ]


def _motorcycle(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator,
                with_rider: bool) -> np.ndarray:
    parts = [
        box((l / 2 - 0.64, l / 2), (-0.07, 0.07), (0.0, 0.64), _TYRE),
        box((-l / 2, -l / 2 + 0.64), (-0.07, 0.07), (0.0, 0.64), _TYRE),
        box((-0.35 * l, 0.3 * l), (-0.18, 0.18), (0.3, 0.85), colour),
        box((0.25 * l, 0.3 * l), (-w / 2, w / 2), (h - 0.1, h), _CHASSIS),
    ]
    if with_rider:
        parts += _rider(rng, 0.8, -0.05)
    return np.stack(parts)


def _bicycle(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator,
             with_rider: bool) -> np.ndarray:
    parts = [
        box((l / 2 - 0.68, l / 2), (-0.04, 0.04), (0.0, 0.68), _TYRE),
        box((-l / 2, -l / 2 + 0.68), (-0.04, 0.04), (0.0, 0.68), _TYRE),
        box((-0.3 * l, 0.3 * l), (-0.07, 0.07), (0.3, 0.92), colour),
        box((0.27 * l, 0.32 * l), (-w / 2, w / 2), (h - 0.08, h), _CHASSIS),
    ]
    if with_rider:
        parts.append(box((-0.12, 0.12), (-0.16, 0.16), (0.45, 0.95), _CLOTHES[rng.integers(len(_CLOTHES))]))
        parts += _rider(rng, 0.95, -0.1)
    return np.stack(parts)


def _pedestrian(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator,
                walking: bool) -> np.ndarray:
    trousers = _CLOTHES[rng.integers(len(_CLOTHES))]
    stride = l / 2 if walking else 0.14
    neck = 0.83 * h
    return np.stack([
        box((-stride, stride), (-0.17, 0.17), (0.0, 0.5 * h), trousers),
        box((-0.15, 0.15), (-w / 2, w / 2), (0.5 * h, neck), colour),
        box((-0.1, 0.11), (-0.1, 0.1), (neck, h), _SKIN[rng.integers(len(_SKIN))]),
    ])


def _barrier(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    grey = (0.55, 0.55, 0.55)
    return np.stack([
        box((-l / 2, l / 2), (w / 2 - 0.45, w / 2 - 0.05), (0.0, 0.25), grey),
        box((-l / 2, l / 2), (-w / 2 + 0.05, -w / 2 + 0.45), (0.0, 0.25), grey),
        box((-0.08, 0.08), (-w / 2, w / 2), (0.25, h), colour, Material.STRIPES),
    ])


def _cone(w: float, l: float, h: float, colour: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.stack([
        box((-l / 2, l / 2), (-w / 2, w / 2), (0.0, 0.04), (0.15, 0.15, 0.15)),
        box((-0.13, 0.13), (-0.13, 0.13), (0.04, 0.45 * h), colour),
        box((-0.1, 0.1), (-0.1, 0.1), (0.45 * h, 0.65 * h), (0.95, 0.95, 0.95)),
        box((-0.07, 0.07), (-0.07, 0.07), (0.65 * h, h), colour),
    ])


_SHAPES = {
    "car": _car, "police": _police, "ambulance": _ambulance, "truck": _truck, "construction": _construction,
    "bus": _bus, "trailer": _trailer, "motorcycle": _motorcycle, "bicycle": _bicycle, "pedestrian": _pedestrian,
    "barrier": _barrier, "cone": _cone,
}


def draw_kind(mix: dict[str, float], rng: np.random.Generator) -> ObjectKind:
    """A kind drawn from a mixture (kind name -> weight)."""
    names = list(mix)
    weights = np.array([mix[n] for n in names])
    return KINDS[names[rng.choice(len(names), p=weights / weights.sum())]]
