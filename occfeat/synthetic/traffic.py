"""What moves in a town during a scene: vehicles in lanes (car following and traffic lights), the ego car on a route
through the grid (straight on, or right at intersections), and pedestrians walking around blocks on the sidewalks.

Vehicles follow the Intelligent Driver Model along their lane, which is a ring: a vehicle that leaves the town at a
map edge re-enters at the other as a new instance (far outside every sensor's range). Lights cycle per intersection
(green, amber, all red, then the crossing direction), so crossing traffic never meets. The ego only turns right, which
crosses no oncoming lane, and never leaves the grid of roads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .catalog import CRUISE_SPEED, KINDS, MOVING_MIX, ObjectModel, draw_kind, sample_model
from .town import WALK_OFFSETS, Lane, Town, right_of

# Intelligent Driver Model: max acceleration, comfortable braking, jam distance, time headway.
IDM_A, IDM_B, IDM_S0, IDM_T = 1.5, 2.0, 2.0, 1.2
HARD_BRAKE = 4.5  # a vehicle that would need more than this to stop at an amber light drives on
GREEN_S, AMBER_S, ALL_RED_S = 14.0, 3.0, 2.0
LIGHT_PERIOD = 2 * (GREEN_S + AMBER_S + ALL_RED_S)
GREEN, AMBER, RED = 0, 1, 2
TURN_RADIUS = 6.0
TURN_SPEED = 4.5
EGO_LENGTH = 4.6
SIM_DT = 0.05
WARMUP_S = 25.0


# --------------------------------------------------------------------------------------------------------------------
# Paths


class Polyline:
    """A path through points (M, 2) with the heading (M,) at each point; ``closed`` paths wrap around."""

    def __init__(self, points: np.ndarray, yaws: np.ndarray, closed: bool = False) -> None:
        if closed:
            points = np.concatenate([points, points[:1]])
            yaws = np.concatenate([yaws, yaws[:1]])
        self.points = points
        self.yaws = np.unwrap(yaws)
        self.closed = closed
        self.cumulative = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])

    @property
    def length(self) -> float:
        return float(self.cumulative[-1])

    def pose(self, s: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Positions (..., 2) and yaws (...) at arc lengths s (...): linear between points, clamped at open ends."""
        s = np.asarray(s, dtype=np.float64)
        s = np.mod(s, self.length) if self.closed else np.clip(s, 0.0, self.length)
        i = np.clip(np.searchsorted(self.cumulative, s, side="right") - 1, 0, len(self.points) - 2)
        span = self.cumulative[i + 1] - self.cumulative[i]
        a = np.where(span > 0, (s - self.cumulative[i]) / np.where(span > 0, span, 1.0), 0.0)
        xy = self.points[i] * (1 - a)[..., None] + self.points[i + 1] * a[..., None]
        return xy, self.yaws[i] * (1 - a) + self.yaws[i + 1] * a


def _arc(centre: np.ndarray, start: np.ndarray, end: np.ndarray, radius: float, steps: int,
         clockwise: bool) -> tuple[np.ndarray, np.ndarray]:
    """Points (steps + 1, 2) and tangent yaws of a quarter circle from direction ``start`` to ``end`` (unit vectors
    from the centre)."""
    a0 = math.atan2(start[1], start[0])
    a1 = math.atan2(end[1], end[0])
    sweep = (a1 - a0 + math.pi) % (2 * math.pi) - math.pi
    angles = a0 + sweep * np.linspace(0.0, 1.0, steps + 1)
    points = centre + radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return points, angles + (-math.pi / 2 if clockwise else math.pi / 2)


# --------------------------------------------------------------------------------------------------------------------
# Lights and car following


def light_states(phases: np.ndarray, intersections: np.ndarray, axes: np.ndarray, t: float) -> np.ndarray:
    """GREEN / AMBER / RED for traffic along ``axes`` (M,) at ``intersections`` (M,) at time t."""
    u = np.mod(t + phases[intersections] + axes * (LIGHT_PERIOD / 2), LIGHT_PERIOD)
    return np.where(u < GREEN_S, GREEN, np.where(u < GREEN_S + AMBER_S, AMBER, RED))


def must_stop(state: np.ndarray, distance: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether a vehicle ``distance`` metres before a stop line (negative: past it) treats the line as a wall."""
    can_stop = (distance > v**2 / (2 * HARD_BRAKE)) | (v < 1.0)
    return (state != GREEN) & (distance > -0.5) & can_stop


def idm_acceleration(v: np.ndarray, v0: np.ndarray, gap: np.ndarray, v_leader: np.ndarray) -> np.ndarray:
    dv = v - v_leader
    s_star = IDM_S0 + np.maximum(0.0, v * IDM_T + v * dv / (2 * math.sqrt(IDM_A * IDM_B)))
    acc = IDM_A * (1 - (v / v0) ** 4 - (s_star / np.maximum(gap, 0.1)) ** 2)
    return np.clip(acc, -9.0, IDM_A)


# --------------------------------------------------------------------------------------------------------------------
# The ego's route


@dataclass
class _Piece:
    """A stretch of route: straight along ``lane`` (lane coordinate ``lane_s`` at route coordinate ``start``), or a
    right turn from ``lane`` to ``next_lane`` (then ``lane_s`` is where it leaves ``lane``, ``next_s`` where it joins
    ``next_lane``)."""

    start: float
    end: float
    lane: int
    lane_s: float
    next_lane: int = -1
    next_s: float = 0.0

    @property
    def is_turn(self) -> bool:
        return self.next_lane >= 0


@dataclass
class Route:
    """The ego's path: geometry, pieces, and the stop lines it passes (route coordinate, intersection, axis)."""

    path: Polyline
    pieces: list[_Piece]
    stops: np.ndarray  # (S,)
    stop_intersections: np.ndarray  # (S,) int
    stop_axes: np.ndarray  # (S,) int

    def piece_at(self, r: float) -> _Piece:
        for piece in self.pieces:
            if r < piece.end:
                return piece
        return self.pieces[-1]

    def lane_positions(self, r: float) -> list[tuple[int, float]]:
        """(lane, lane coordinate) of the ego at route coordinate r, for the vehicles behind it: its lane, or while
        turning both the lane it leaves and the lane it joins."""
        piece = self.piece_at(r)
        if not piece.is_turn:
            return [(piece.lane, piece.lane_s + r - piece.start)]
        return [(piece.lane, piece.lane_s + r - piece.start), (piece.next_lane, piece.next_s - (piece.end - r))]


def _crossings_ahead(town: Town, lane: Lane, s: float) -> list[tuple[float, int, int]]:
    """(s of the crossing road's centre line, intersection index, stop index) for every crossing whose stop line
    is ahead of s on the lane, nearest first."""
    out = []
    for k, (stop, inter) in enumerate(zip(lane.stops, lane.intersections)):
        x, y = town.intersections[inter]
        s_cross = float(lane.coordinate(np.array([x, y])))
        if stop > s:
            out.append((s_cross, inter, k))
    return sorted(out)


def _lane_of(town: Town, road: int, heading: np.ndarray) -> int:
    """The rightmost lane of ``road`` that drives along ``heading``."""
    best = [i for i, lane in enumerate(town.lanes) if lane.road == road and np.allclose(lane.heading, heading)]
    return max(best, key=lambda i: town.lanes[i].index)


def _crossing_road(town: Town, lane: Lane, intersection: int) -> int:
    x, y = town.intersections[intersection]
    offset = x if lane.axis == 0 else y
    return next(i for i in town.roads_along(1 - lane.axis) if abs(town.roads[i].offset - offset) < 1e-6)


def _start_lane(town: Town, rng: np.random.Generator) -> tuple[int, float]:
    """A rightmost lane and a start coordinate between two intersections of the grid, never on a perimeter road
    driven anticlockwise (from there a right turn would leave the grid)."""
    candidates = []
    for i, lane in enumerate(town.lanes):
        road = town.roads[lane.road]
        along = town.roads_along(road.axis)
        first, last = along[0], along[-1]
        if lane.index != town.roads[lane.road].lanes - 1:
            continue
        # Anticlockwise on the perimeter: heading +x on the bottom road, -x on the top, +y on the right, -y on the left.
        ccw = (road.axis == 0 and ((lane.direction > 0 and lane.road == first) or
                                   (lane.direction < 0 and lane.road == last))) or \
              (road.axis == 1 and ((lane.direction > 0 and lane.road == last) or
                                   (lane.direction < 0 and lane.road == first)))
        if not ccw:
            candidates.append(i)
    lane_id = int(candidates[rng.integers(len(candidates))])
    lane = town.lanes[lane_id]
    crossings = _crossings_ahead(town, lane, -1e9)
    k = int(rng.integers(len(crossings) - 1))
    (s0, i0, _), (s1, i1, _) = crossings[k], crossings[k + 1]
    h0 = town.roads[_crossing_road(town, lane, i0)].half_width
    h1 = town.roads[_crossing_road(town, lane, i1)].half_width
    lo, hi = s0 + h0 + 8.0, s1 - h1 - 30.0
    return lane_id, float(rng.uniform(lo, max(hi, lo + 1.0)))


def build_route(town: Town, rng: np.random.Generator, length: float, turn_probability: float = 0.4) -> Route:
    """A route of at least ``length`` metres from a random start; straight on or right at each intersection, right
    where straight on would leave the grid."""
    lane_id, s = _start_lane(town, rng)
    points: list[np.ndarray] = []
    yaws: list[np.ndarray] = []
    pieces: list[_Piece] = []
    stops, stop_inters, stop_axes = [], [], []
    r = 0.0
    piece_start_s = s
    while True:
        lane = town.lanes[lane_id]
        ahead = _crossings_ahead(town, lane, s)
        turn_at = None
        for n, (s_cross, inter, k) in enumerate(ahead):
            stops.append(r + lane.stops[k] - s)
            stop_inters.append(inter)
            stop_axes.append(lane.axis)
            # Turn where the grid ends, at random, or where the route is long enough (it then ends after the turn).
            if n == len(ahead) - 1 or rng.random() < turn_probability or r + s_cross - s > length:
                turn_at = (s_cross, inter)
                break
        assert turn_at is not None  # the last crossing of a grid road always turns
        s_cross, inter = turn_at
        road = _crossing_road(town, lane, inter)
        next_id = _lane_of(town, road, right_of(lane.heading))
        next_lane = town.lanes[next_id]
        # The lane lines meet at X; a quarter circle of radius R joins them, tangent at X - R h and X + R h'.
        cross = np.empty(2)
        cross[lane.axis] = next_lane.origin[lane.axis]
        cross[1 - lane.axis] = lane.origin[1 - lane.axis]
        leave_s = float(lane.coordinate(cross)) - TURN_RADIUS
        join_s = float(next_lane.coordinate(cross)) + TURN_RADIUS
        straight = leave_s - piece_start_s
        pieces.append(_Piece(r, r + straight, lane_id, piece_start_s))
        points.append(lane.point(np.array([piece_start_s, leave_s])))
        yaws.append(np.full(2, lane.yaw))
        r += straight
        turn = TURN_RADIUS * math.pi / 2
        pieces.append(_Piece(r, r + turn, lane_id, leave_s, next_id, join_s))
        centre = cross - TURN_RADIUS * lane.heading + TURN_RADIUS * next_lane.heading
        arc_points, arc_yaws = _arc(centre, -next_lane.heading, lane.heading, TURN_RADIUS, 16, clockwise=True)
        points.append(arc_points[1:-1])
        yaws.append(arc_yaws[1:-1])
        r += turn
        lane_id, s, piece_start_s = next_id, join_s, join_s
        if r > length:
            break
    lane = town.lanes[lane_id]
    tail = 60.0
    pieces.append(_Piece(r, r + tail, lane_id, s))
    points.append(lane.point(np.array([s, s + tail])))
    yaws.append(np.full(2, lane.yaw))
    path = Polyline(np.concatenate(points), np.concatenate(yaws))
    return Route(path, pieces, np.array(stops), np.array(stop_inters, dtype=int), np.array(stop_axes, dtype=int))


# --------------------------------------------------------------------------------------------------------------------
# Pedestrians


def _walkway(block: tuple[float, float, float, float], offset: float, corner: float = 1.5) -> Polyline:
    """The anticlockwise loop ``offset`` metres in from the kerbs of a block, corners rounded."""
    x0, x1, y0, y1 = block[0] + offset, block[1] - offset, block[2] + offset, block[3] - offset
    points, yaws = [], []
    corners = [((x1 - corner, y0 + corner), -math.pi / 2), ((x1 - corner, y1 - corner), 0.0),
               ((x0 + corner, y1 - corner), math.pi / 2), ((x0 + corner, y0 + corner), math.pi)]
    for (cx, cy), a0 in corners:
        angles = a0 + np.linspace(0.0, math.pi / 2, 5)
        points.append(np.stack([cx + corner * np.cos(angles), cy + corner * np.sin(angles)], axis=1))
        yaws.append(angles + math.pi / 2)
    return Polyline(np.concatenate(points), np.concatenate(yaws), closed=True)


@dataclass
class _Walkers:
    path: Polyline
    start: np.ndarray  # (N,) arc length at t = 0
    speed: float  # signed: negative walks clockwise
    yaw_offset: np.ndarray  # (N,) added to the path heading (standing people face anywhere)
    models: list[ObjectModel]


def _pedestrians(town: Town, rng: np.random.Generator) -> list[_Walkers]:
    """Two walking slots (one each way, each at one speed so nobody walks through anybody) and one of people
    standing near the buildings, on every inner block."""
    groups = []
    for block in town.inner_blocks:
        for slot, offset in enumerate(WALK_OFFSETS):
            path = _walkway(block, offset)
            speed = (1.3, -1.15, 0.0)[slot]
            spacing = rng.uniform(18.0, 40.0) if speed else rng.uniform(35.0, 60.0)
            count = int(path.length / spacing)
            if count == 0:
                continue
            start = (np.arange(count) + rng.uniform(0.0, 0.5, count)) * (path.length / count)
            facing = np.zeros(count) if speed else rng.uniform(-math.pi, math.pi, count)
            if speed < 0:
                facing += math.pi
            models = [sample_model(KINDS["pedestrian"], rng, walking=speed != 0) for _ in range(count)]
            groups.append(_Walkers(path, start, speed, facing, models))
    return groups


# --------------------------------------------------------------------------------------------------------------------
# The simulation


@dataclass
class ObjectStates:
    """Every annotated object of a scene at one time. Index order is fixed for the whole scene."""

    keys: list[str]  # identity: a new key means a new instance
    models: list[ObjectModel]
    xy: np.ndarray  # (N, 2) position of each object's frame origin
    yaw: np.ndarray  # (N,)
    attributes: list[str | None]


class Motion:
    """A simulated scene: ``objects_at(t)`` and ``ego_at(t)`` for any t in [t_begin, t_end] (seconds)."""

    def __init__(self, town: Town, rng: np.random.Generator, t_begin: float, t_end: float) -> None:
        self.town = town
        self.t_begin = t_begin - 3.0  # the ego joins the traffic a little before the first frame
        self.route = build_route(town, rng, length=(t_end - self.t_begin) * 14.0 + 40.0)
        self.ego_v0 = float(rng.uniform(9.0, 12.0))
        self.phases = rng.uniform(0.0, LIGHT_PERIOD, len(town.intersections))
        # Green at the ego's first intersection when it gets there: a short scene should be a drive, not a wait.
        arrival = self.t_begin + self.route.stops[0] / self.ego_v0
        axis, first = self.route.stop_axes[0], self.route.stop_intersections[0]
        self.phases[first] = np.mod(0.3 * GREEN_S - arrival - axis * LIGHT_PERIOD / 2, LIGHT_PERIOD)
        self._init_vehicles(rng)
        self.walkers = _pedestrians(town, rng)
        self._lane_stops()
        for t in np.arange(self.t_begin - WARMUP_S, self.t_begin - 1e-9, SIM_DT * 2):
            self._step(t, SIM_DT * 2, ego=False)
        self._insert_ego()
        steps = int(math.ceil((t_end - self.t_begin) / SIM_DT)) + 2
        self.record_s = np.zeros((steps + 1, self.n))
        self.record_v = np.zeros((steps + 1, self.n))
        self.record_gen = np.zeros((steps + 1, self.n), dtype=int)
        self.record_r = np.zeros(steps + 1)
        for k in range(steps + 1):
            if k:
                self._step(self.t_begin + (k - 1) * SIM_DT, SIM_DT, ego=True)
            self.record_s[k], self.record_v[k], self.record_gen[k] = self.s, self.v, self.gen
            self.record_r[k] = self.ego_r

    # ----------------------------------------------------------------------------------------------------------- setup

    def _init_vehicles(self, rng: np.random.Generator) -> None:
        lanes, s, v0, length, models = [], [], [], [], []
        for lane_id, lane in enumerate(self.town.lanes):
            outer = lane.index == self.town.roads[lane.road].lanes - 1
            t = rng.uniform(0.0, 20.0)
            while True:
                kind = draw_kind(MOVING_MIX, rng)
                while kind.name == "bicycle" and not outer:  # cyclists keep to the rightmost lane
                    kind = draw_kind(MOVING_MIX, rng)
                model = sample_model(kind, rng, with_rider=True)
                t += model.size[1] / 2
                if t + model.size[1] / 2 > lane.length:
                    break
                lanes.append(lane_id)
                s.append(t)
                v0.append(rng.uniform(*CRUISE_SPEED[kind.name]))
                length.append(model.size[1])
                models.append(model)
                t += model.size[1] / 2 + rng.uniform(10.0, 50.0)
        self.n = len(lanes)
        self.lane = np.array(lanes, dtype=int)
        self.s = np.array(s)
        self.v0 = np.array(v0)
        self.v = self.v0 * 0.5
        self.length = np.array(length)
        self.models = models
        self.gen = np.zeros(self.n, dtype=int)
        self.active = np.ones(self.n, dtype=bool)
        self.lane_length = np.array([lane.length for lane in self.town.lanes])
        self.ego_r = 0.0  # route coordinate and speed of the ego, once it is inserted
        self.ego_v = 0.0

    def _lane_stops(self) -> None:
        """All stop lines as one array sorted by (lane, s), for a vectorised look-up of the next one."""
        rows = [(i, s, inter, lane.axis) for i, lane in enumerate(self.town.lanes)
                for s, inter in zip(lane.stops, lane.intersections)]
        rows.sort()
        self.stop_lane = np.array([r[0] for r in rows])
        self.stop_s = np.array([r[1] for r in rows])
        self.stop_inter = np.array([r[2] for r in rows], dtype=int)
        self.stop_axis = np.array([r[3] for r in rows], dtype=int)
        self._stop_key = self.stop_lane * 1e5 + self.stop_s

    def _insert_ego(self) -> None:
        """Clear a gap around the ego's start and put it there, a little below its cruise speed."""
        first = self.route.pieces[0]
        clear = (self.lane == first.lane) & (self.s > first.lane_s - 35.0) & (self.s < first.lane_s + 25.0)
        # Nor does the ego spend its scene behind a cyclist: none ride on the lanes of its route.
        route_lanes = [piece.lane for piece in self.route.pieces]
        cyclists = np.array([m.kind.name == "bicycle" for m in self.models]) & np.isin(self.lane, route_lanes)
        self.active &= ~(clear | cyclists)
        self.ego_r = 0.0
        self.ego_v = 0.7 * self.ego_v0

    # ------------------------------------------------------------------------------------------------------------ step

    def _step(self, t: float, dt: float, ego: bool) -> None:
        lanes, s, v, length = self.lane[self.active], self.s[self.active], self.v[self.active], self.length[self.active]
        n = len(lanes)
        if ego:
            entries = self.route.lane_positions(self.ego_r)
            lanes = np.concatenate([lanes, [e[0] for e in entries]])
            s = np.concatenate([s, [e[1] for e in entries]])
            v = np.concatenate([v, [self.ego_v] * len(entries)])
            length = np.concatenate([length, [EGO_LENGTH] * len(entries)])
        gap, v_lead = self._leaders(lanes, s, v, length)
        gap, v_lead = gap[:n], v_lead[:n]
        front = s[:n] + length[:n] / 2
        stop_gap = self._stop_gap(lanes[:n], front, v[:n], t)
        wall = stop_gap < gap
        gap = np.where(wall, stop_gap, gap)
        v_lead = np.where(wall, 0.0, v_lead)
        acc = idm_acceleration(v[:n], self.v0[self.active], gap, v_lead)
        v_new = np.maximum(0.0, v[:n] + acc * dt)
        s_new = s[:n] + v_new * dt
        wrapped = s_new >= self.lane_length[lanes[:n]]
        s_new = np.where(wrapped, s_new - self.lane_length[lanes[:n]], s_new)
        self.v[self.active] = v_new
        self.s[self.active] = s_new
        self.gen[self.active] += wrapped
        if ego:
            self._step_ego(t, dt)

    def _leaders(self, lanes: np.ndarray, s: np.ndarray, v: np.ndarray,
                 length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bumper-to-bumper gap to, and speed of, the next vehicle in the same (ring) lane."""
        order = np.lexsort((s, lanes))
        sl, ss = lanes[order], s[order]
        nxt = np.arange(1, len(order) + 1)
        group_end = np.append(sl[1:] != sl[:-1], True)
        group_start_idx = np.maximum.accumulate(np.where(np.append(True, sl[1:] != sl[:-1]), np.arange(len(sl)), 0))
        nxt = np.where(group_end, group_start_idx, nxt)
        ahead = ss[nxt] - ss
        ahead = np.where(ahead <= 0, ahead + self.lane_length[sl], ahead)
        gap_sorted = ahead - (length[order][nxt] + length[order]) / 2
        gap = np.empty_like(gap_sorted)
        v_lead = np.empty_like(gap_sorted)
        gap[order] = gap_sorted
        v_lead[order] = v[order][nxt]
        return gap, v_lead

    def _stop_gap(self, lanes: np.ndarray, front: np.ndarray, v: np.ndarray, t: float) -> np.ndarray:
        """Distance to the next stop line that the vehicle must stop at, or inf."""
        i = np.searchsorted(self._stop_key, lanes * 1e5 + front - 0.5)
        valid = i < len(self.stop_s)
        i = np.minimum(i, len(self.stop_s) - 1)
        valid &= self.stop_lane[i] == lanes
        distance = self.stop_s[i] - front
        state = light_states(self.phases, self.stop_inter[i], self.stop_axis[i], t)
        return np.where(valid & must_stop(state, distance, v), distance, np.inf)

    def _step_ego(self, t: float, dt: float) -> None:
        r, v = self.ego_r, self.ego_v
        gap, v_lead = np.inf, 0.0
        # Vehicles ahead on the lanes of the route.
        for piece in self.route.pieces:
            if piece.is_turn or piece.end < r or piece.start > r + 120.0:
                continue
            on = self.active & (self.lane == piece.lane)
            rc = piece.start + (self.s - piece.lane_s)
            # Only vehicles on the stretch the route uses: not those queueing on the cross road before a turn.
            on &= (rc > r) & (rc + self.length / 2 > piece.start) & (rc < piece.end + self.length)
            if on.any():
                g = rc[on] - r - (self.length[on] + EGO_LENGTH) / 2
                k = int(np.argmin(g))
                if g[k] < gap:
                    gap, v_lead = float(g[k]), float(self.v[on][k])
        # Stop lines.
        front = r + EGO_LENGTH / 2
        distance = self.route.stops - front
        state = light_states(self.phases, self.route.stop_intersections, self.route.stop_axes, t)
        walls = must_stop(state, distance, np.full_like(distance, v))
        if walls.any() and distance[walls].min() < gap:
            gap, v_lead = float(distance[walls].min()), 0.0
        # Slow down for turns ahead.
        v0 = self.ego_v0
        for piece in self.route.pieces:
            if piece.is_turn and piece.end > r:
                d = max(piece.start - r, 0.0)
                v0 = min(v0, math.sqrt(TURN_SPEED**2 + 2 * 1.2 * d))
        acc = float(idm_acceleration(np.array([v]), np.array([v0]), np.array([gap]), np.array([v_lead]))[0])
        self.ego_v = max(0.0, v + acc * dt)
        self.ego_r = r + self.ego_v * dt

    # ----------------------------------------------------------------------------------------------------------- query

    def _sample(self, t: float) -> tuple[int, float]:
        position = (t - self.t_begin) / SIM_DT
        k = int(np.clip(math.floor(position), 0, len(self.record_r) - 2))
        return k, float(np.clip(position - k, 0.0, 1.0))

    def ego_at(self, t: float) -> tuple[np.ndarray, float]:
        """Ego position (2,) and yaw at time t."""
        k, a = self._sample(t)
        r = self.record_r[k] * (1 - a) + self.record_r[k + 1] * a
        xy, yaw = self.route.path.pose(r)
        return xy, float(yaw)

    def objects_at(self, t: float) -> ObjectStates:
        """Parked objects, vehicles in lanes, pedestrians: keys, models, poses and attributes at time t."""
        placed = self.town.placed
        keys = [f"static/{i}" for i in range(len(placed))]
        models = [p.model for p in placed]
        xy = [np.array([[p.x, p.y] for p in placed]).reshape(-1, 2)]
        yaw = [np.array([p.yaw for p in placed])]
        attributes = [p.attribute for p in placed]

        k, a = self._sample(t)
        length = self.lane_length[self.lane]
        s0, s1, gen = self.record_s[k], self.record_s[k + 1], self.record_gen[k]
        s = s0 * (1 - a) + np.where(self.record_gen[k + 1] > gen, s1 + length, s1) * a
        gen = gen + (s >= length)
        s = np.mod(s, length)
        moving = self.record_v[k + 1] > 0.3
        active = np.flatnonzero(self.active)
        lanes = [self.town.lanes[i] for i in self.lane[active]]
        keys += [f"vehicle/{i}/{gen[i]}" for i in active]
        models += [self.models[i] for i in active]
        xy.append(np.array([lane.point(s[i]) for lane, i in zip(lanes, active)]).reshape(-1, 2))
        yaw.append(np.array([lane.yaw for lane in lanes]))
        attributes += ["cycle.with_rider" if self.models[i].kind.is_cycle else
                       "vehicle.moving" if moving[i] else "vehicle.stopped" for i in active]

        for g, group in enumerate(self.walkers):
            position, heading = group.path.pose(group.start + group.speed * t)
            keys += [f"pedestrian/{g}/{i}" for i in range(len(group.models))]
            models += group.models
            xy.append(position)
            yaw.append(heading + group.yaw_offset)
            attributes += ["pedestrian.moving" if group.speed else "pedestrian.standing"] * len(group.models)
        return ObjectStates(keys, models, np.concatenate(xy), np.concatenate(yaw), attributes)
