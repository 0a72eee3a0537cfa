"""Scenario of one synthetic scene: road layout, ego motion, actors and static structures.

Everything here lives in the global frame (x east, y north, z up, metres; yaw counter-clockwise
from +x in radians; time in seconds from the scene's first key frame). The ground is the plane
z = 0. Traffic drives on the right.

Road: a centreline of piecewise-constant curvature with 20 m linear transitions (straights and
arcs of radius 60-400 m), ``n_lanes`` lanes of 3.5 m per direction, then a 1.5 m bike lane, an
optional 2.5 m parking strip and a 4 m sidewalk on each side. A point is addressed by arc length
``s`` along the centreline and signed lateral offset ``d`` (positive to the left).

Actors move along the road: ``s(t) = s0 + vs * t`` at constant lateral offset ``d0`` and a yaw
offset relative to the road heading (0 with the traffic, pi against it, +-pi/2 across). Vehicles
in one lane move as a platoon at the lane speed, so they never run into each other.

Population (sizes jittered +-8 % around the nuScenes class means):

* lanes: platoons of cars, trucks (some towing trailers), buses (15 % bendy), motorcycles and
  construction vehicles at 3-15 m/s (15 % of the other lanes jammed: ``vehicle.stopped``); the
  ego's lane moves at the ego's mean speed with the ego in a gap;
* bike lanes: cyclists (and some motorcycles) at 3-6 m/s with the traffic;
* parking strips: parked cars, trucks, trailers, motorcycles, bicycles (``vehicle.parked`` /
  ``cycle.without_rider``);
* sidewalks: pedestrians walking (0.9-1.7 m/s), standing or sitting, parked bicycles;
* construction zones (75 % / 30 % of scenes have a first / second one): a line of barriers, a
  taper of cones, a construction vehicle, construction workers; stray cones and barriers at kerbs;
* structures (not annotated): street-light poles, buildings or walls per side, sometimes a median
  guard rail; walls and rails also mirror radar returns;
* radar scatterers (not annotated, no LiDAR geometry): fixed sub-box-scale point scatterers of
  the static environment that dominate a real ARS 408's output (:func:`make_scatterers`): kerb
  stones and drain grates along the kerbs, street furniture (sign posts, bollards, bins,
  hydrants, bike racks) at the kerb side of the sidewalk, fences / hedges / gates at its back and
  vegetation (bushes, trees) beyond it where no buildings stand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from radardistill_ros.conventions import CLASS_NAMES

LANE_WIDTH = 3.5  #: [m]
BIKE_LANE = 1.5  #: [m]
PARKING_STRIP = 2.5  #: [m]
SIDEWALK = 4.0  #: [m]
ROAD_DS = 0.5  #: centreline sampling step [m]

#: Box kinds beyond the 10 detection classes (indices 0-9 are CLASS_NAMES).
KIND_BUILDING, KIND_WALL, KIND_POLE, KIND_GUARDRAIL = 10, 11, 12, 13
STRUCTURE_KINDS = (KIND_BUILDING, KIND_WALL, KIND_POLE, KIND_GUARDRAIL)

#: nuScenes mean box size per detection class, (w, l, h) [m] (l along the heading).
MEAN_SIZE_WLH: dict[str, tuple[float, float, float]] = {
    "car": (1.95, 4.62, 1.73),
    "truck": (2.51, 6.93, 2.84),
    "construction_vehicle": (2.85, 6.37, 3.19),
    "bus": (2.94, 10.5, 3.47),
    "trailer": (2.90, 12.29, 3.87),
    "barrier": (2.53, 0.50, 0.98),
    "motorcycle": (0.77, 2.11, 1.47),
    "bicycle": (0.60, 1.70, 1.28),
    "pedestrian": (0.67, 0.73, 1.77),
    "traffic_cone": (0.41, 0.41, 1.07),
}

# Attribute modes of an actor (mapped to nuScenes attribute names by the writer).
MOVING, STOPPED, PARKED, WITH_RIDER, WITHOUT_RIDER, PED_MOVING, PED_STANDING, PED_SITTING, NO_ATTR = range(9)
ATTRIBUTE_NAMES: dict[int, str | None] = {
    MOVING: "vehicle.moving", STOPPED: "vehicle.stopped", PARKED: "vehicle.parked",
    WITH_RIDER: "cycle.with_rider", WITHOUT_RIDER: "cycle.without_rider",
    PED_MOVING: "pedestrian.moving", PED_STANDING: "pedestrian.standing",
    PED_SITTING: "pedestrian.sitting_lying_down", NO_ATTR: None,
}


@dataclass
class Road:
    """Sampled centreline: arc length ``s`` [m], position ``xy`` [m], heading [rad] (unwrapped)."""

    s: np.ndarray
    xy: np.ndarray
    heading: np.ndarray
    n_lanes: int
    parking: tuple[bool, bool]  # (right side, left side)

    def edge(self, side: int) -> float:
        """|d| of the outer edge of the carriageway (incl. bike lane and parking) on a side (-1/+1)."""
        park = self.parking[0] if side < 0 else self.parking[1]
        return self.n_lanes * LANE_WIDTH + BIKE_LANE + (PARKING_STRIP if park else 0.0)

    def frame(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centreline point ``(..., 2)`` [m] and heading ``(...)`` [rad] at arc length ``s``."""
        s = np.asarray(s, dtype=np.float64)
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        h = np.interp(s, self.s, self.heading)
        return np.stack([x, y], axis=-1), h

    def to_global(self, s: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global xy ``(..., 2)`` [m] and road heading [rad] of road coordinates (s, d)."""
        c, h = self.frame(s)
        d = np.asarray(d, dtype=np.float64)
        normal = np.stack([-np.sin(h), np.cos(h)], axis=-1)
        return c + d[..., None] * normal, h


@dataclass
class Ego:
    """Ego motion along the road at lateral offset ``d`` with speed v(t) = v0 + dv sin(2 pi t / P + phi)."""

    road: Road
    d: float
    s0: float
    v0: float
    dv: float
    period: float
    phase: float

    def s(self, t: np.ndarray) -> np.ndarray:
        """Arc length [m] at time t [s]."""
        t = np.asarray(t, dtype=np.float64)
        w = 2.0 * np.pi / self.period
        return self.s0 + self.v0 * t - self.dv / w * (np.cos(w * t + self.phase) - np.cos(self.phase))

    def pose(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global position ``(..., 2)`` [m] of the ego frame origin (rear axle) and yaw [rad] at t [s]."""
        s = self.s(t)
        return self.road.to_global(s, np.full_like(s, self.d))

    def velocity(self, t: float, dt: float = 1e-3) -> tuple[np.ndarray, float]:
        """Global velocity (vx, vy) [m/s] and yaw rate [rad/s] at t [s] (central differences)."""
        xy, yaw = self.pose(np.array([t - dt, t + dt]))
        return (xy[1] - xy[0]) / (2 * dt), float(yaw[1] - yaw[0]) / (2 * dt)


@dataclass
class Actors:
    """Movable objects of the 10 detection classes, one row each (road coordinates, see module doc)."""

    cls: np.ndarray  # (N,) int index into CLASS_NAMES
    category: list[str]  # nuScenes category name
    attr: np.ndarray  # (N,) attribute mode (MOVING, ...)
    wlh: np.ndarray  # (N, 3) size [m]
    s0: np.ndarray  # (N,) arc length at t = 0 [m]
    d0: np.ndarray  # (N,) lateral offset [m]
    vs: np.ndarray  # (N,) signed speed along the road [m/s]
    yaw_off: np.ndarray  # (N,) yaw relative to the road heading [rad]
    refl: np.ndarray  # (N,) LiDAR reflectivity of the surface, 0-255

    def __len__(self) -> int:
        return len(self.cls)

    def pose(self, road: Road, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Global centre xy ``(N, 2)`` [m] and yaw ``(N,)`` [rad] at time t [s]."""
        xy, h = road.to_global(self.s0 + self.vs * t, self.d0)
        return xy, h + self.yaw_off

    def velocity(self, road: Road, t: float, dt: float = 1e-3) -> np.ndarray:
        """Global velocity ``(N, 2)`` [m/s] at time t [s] (central differences of :meth:`pose`)."""
        a, _ = self.pose(road, t - dt)
        b, _ = self.pose(road, t + dt)
        return (b - a) / (2 * dt)


@dataclass
class Structures:
    """Static unannotated boxes (buildings, walls, poles, guard rails), global frame."""

    kind: np.ndarray  # (M,) KIND_*
    xy: np.ndarray  # (M, 2) centre [m]
    yaw: np.ndarray  # (M,) [rad]
    wlh: np.ndarray  # (M, 3) [m]
    refl: np.ndarray  # (M,) LiDAR reflectivity 0-255
    styles: tuple[str, str] = ("open", "open")  # roadside style per side (right, left)


@dataclass
class Scatterers:
    """Fixed radar point scatterers of the static environment (global frame, see :func:`make_scatterers`)."""

    xy: np.ndarray  # (S, 2) [m]
    rcs: np.ndarray  # (S,) mean radar cross-section [dBsm]
    p_detect: np.ndarray  # (S,) detection probability per sweep at short range, on boresight
    spread: np.ndarray  # (S,) std [m] of the detected position (extended clutter has no fixed phase centre)

    def __len__(self) -> int:
        return len(self.rcs)


def _no_scatterers() -> Scatterers:
    return Scatterers(xy=np.zeros((0, 2)), rcs=np.zeros(0), p_detect=np.zeros(0), spread=np.zeros(0))


@dataclass
class Scenario:
    """One scene: road, ego, actors, structures and which sides have a continuous wall/rail."""

    road: Road
    ego: Ego
    actors: Actors
    structures: Structures
    wall_lines: list[float] = field(default_factory=list)  # lateral offsets d [m] of reflecting lines
    scatterers: Scatterers = field(default_factory=_no_scatterers)  # radar-only static scatterers

    def boxes_at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """All boxes at time t [s]: centre xyz ``(K, 3)``, yaw ``(K,)``, wlh ``(K, 3)``, kind ``(K,)``.

        Actors first (rows 0..N-1, in :class:`Actors` order), then structures.
        """
        axy, ayaw = self.actors.pose(self.road, t)
        st = self.structures
        xy = np.concatenate([axy, st.xy])
        z = np.concatenate([self.actors.wlh[:, 2], st.wlh[:, 2]]) / 2.0
        return (np.column_stack([xy, z]), np.concatenate([ayaw, st.yaw]),
                np.concatenate([self.actors.wlh, st.wlh]), np.concatenate([self.actors.cls, st.kind]))

    def refl(self) -> np.ndarray:
        """LiDAR reflectivity of every box, in :meth:`boxes_at` order."""
        return np.concatenate([self.actors.refl, self.structures.refl])


def _make_road(rng: np.random.Generator, s_lo: float, s_hi: float, origin: np.ndarray) -> Road:
    s = np.arange(s_lo, s_hi + ROAD_DS, ROAD_DS)
    # Piecewise-constant curvature segments with linear transitions.
    kappa_knots_s = [s_lo]
    kappa_knots_k = [0.0]
    pos = s_lo
    while pos < s_hi:
        length = rng.uniform(60.0, 160.0)
        k = 0.0 if rng.random() < 0.5 else rng.choice([-1.0, 1.0]) / rng.uniform(60.0, 400.0)
        kappa_knots_s += [pos + 20.0, pos + length]
        kappa_knots_k += [k, k]
        pos += length
    kappa = np.interp(s, kappa_knots_s, kappa_knots_k)
    heading0 = rng.uniform(-np.pi, np.pi)
    heading = heading0 + np.concatenate([[0.0], np.cumsum(0.5 * (kappa[1:] + kappa[:-1]) * ROAD_DS)])
    # Put s = 0 at the origin.
    i0 = int(np.argmin(np.abs(s)))
    heading += heading0 - heading[i0]
    dxy = np.stack([np.cos(heading), np.sin(heading)], axis=1) * ROAD_DS
    xy = np.concatenate([[[0.0, 0.0]], np.cumsum(0.5 * (dxy[1:] + dxy[:-1]), axis=0)])
    xy = xy - xy[i0] + origin
    n_lanes = int(rng.choice([1, 2], p=[0.45, 0.55]))
    parking = (bool(rng.random() < 0.6), bool(rng.random() < 0.5))
    return Road(s=s, xy=xy, heading=heading, n_lanes=n_lanes, parking=parking)


class _ActorList:
    """Accumulates actor rows before they become an :class:`Actors`."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[tuple] = []

    def size(self, cls: str, category: str, scale: float = 0.08) -> tuple[float, float, float]:
        """Box size (w, l, h) [m] jittered around the class mean (relative std ``scale``)."""
        w, l, h = MEAN_SIZE_WLH[cls]
        if category == "vehicle.bus.bendy":
            l = 18.0
        if category == "human.pedestrian.child":
            w, l, h = 0.5, 0.5, 1.2
        f = 1.0 + scale * np.clip(self.rng.standard_normal(3), -2.0, 2.0)
        return (w * f[0], l * f[1], h * f[2])

    def add(self, cls: str, category: str, attr: int, s0: float, d0: float, vs: float, yaw_off: float,
            scale: float = 0.08, wlh: tuple[float, float, float] | None = None) -> float:
        """Add an actor (size from :meth:`size` unless given); returns its length l [m]."""
        if wlh is None:
            wlh = self.size(cls, category, scale)
        refl = {
            "car": self.rng.uniform(10, 60), "truck": self.rng.uniform(20, 60),
            "bus": self.rng.uniform(20, 60),
            "trailer": self.rng.uniform(20, 50), "construction_vehicle": self.rng.uniform(40, 80),
            "motorcycle": 35.0, "bicycle": 20.0, "pedestrian": self.rng.uniform(8, 30),
            "barrier": self.rng.uniform(40, 70), "traffic_cone": self.rng.uniform(90, 140),
        }[cls]
        self.rows.append((CLASS_NAMES.index(cls), category, attr, wlh, s0, d0, vs, yaw_off, refl))
        return wlh[1]

    def build(self) -> Actors:
        if not self.rows:
            raise RuntimeError("scenario has no actors")
        cols = list(zip(*self.rows))
        return Actors(cls=np.array(cols[0], dtype=np.int64), category=list(cols[1]),
                      attr=np.array(cols[2], dtype=np.int64), wlh=np.array(cols[3], dtype=np.float64),
                      s0=np.array(cols[4]), d0=np.array(cols[5]), vs=np.array(cols[6]),
                      yaw_off=np.array(cols[7]), refl=np.array(cols[8]))


def _pick(rng: np.random.Generator, table: dict[str, float]) -> str:
    keys = list(table)
    p = np.array([table[k] for k in keys])
    return str(keys[int(rng.choice(len(keys), p=p / p.sum()))])


_PLATOON_MIX = {"car": 0.72, "truck": 0.09, "bus": 0.06, "motorcycle": 0.06, "truck+trailer": 0.04,
                "construction_vehicle": 0.03}
_PARKED_MIX = {"car": 0.78, "truck": 0.07, "trailer": 0.04, "motorcycle": 0.05, "bicycle": 0.04,
               "construction_vehicle": 0.02}


def _vehicle_category(rng: np.random.Generator, cls: str) -> str:
    if cls == "bus":
        return "vehicle.bus.bendy" if rng.random() < 0.15 else "vehicle.bus.rigid"
    return {"car": "vehicle.car", "truck": "vehicle.truck", "construction_vehicle": "vehicle.construction",
            "trailer": "vehicle.trailer", "motorcycle": "vehicle.motorcycle",
            "bicycle": "vehicle.bicycle"}[cls]


def _platoon(acts: _ActorList, lo: float, hi: float, d: float, direction: int, speed: float,
             gap: tuple[float, float], keep_out: tuple[float, float] | None) -> None:
    """Fill one lane between arc lengths lo..hi [m] with vehicles moving at ``speed`` [m/s].

    ``keep_out`` is an interval of arc length at t = 0 left free (the ego's place in its own lane).
    """
    rng = acts.rng
    pos = lo + rng.uniform(0.0, gap[1])
    attr = MOVING if speed > 0.2 else STOPPED
    while pos < hi:
        kind = _pick(rng, _PLATOON_MIX)
        parts = ["truck", "trailer"] if kind == "truck+trailer" else [kind]  # front first
        cats = [_vehicle_category(rng, p) for p in parts]
        sizes = [acts.size(p, c) for p, c in zip(parts, cats)]
        total = sum(s[1] for s in sizes) + 0.8 * (len(parts) - 1)
        if keep_out is not None and pos + total > keep_out[0] and pos < keep_out[1]:
            pos = keep_out[1] + rng.uniform(gap[0], gap[1])
            continue
        order = range(len(parts)) if direction < 0 else range(len(parts) - 1, -1, -1)  # increasing s
        cur = pos
        for i in order:
            l = sizes[i][1]
            mode = WITH_RIDER if parts[i] in ("motorcycle", "bicycle") else attr
            acts.add(parts[i], cats[i], mode, cur + l / 2, d + rng.normal(0, 0.15), direction * speed,
                     0.0 if direction > 0 else np.pi, wlh=sizes[i])
            cur += l + 0.8
        pos += total + rng.uniform(*gap)


def make_scenario(rng: np.random.Generator, duration: float, t_pre: float = 0.6,
                  origin: tuple[float, float] = (600.0, 900.0)) -> Scenario:
    """Random scene of ``duration`` seconds (plus ``t_pre`` [s] of sensor pre-roll before t = 0)."""
    # Ego speed profile.
    stopped = rng.random() < 0.1
    v0 = 0.0 if stopped else float(rng.uniform(3.0, 12.0))
    dv = 0.0 if stopped else float(min(0.25 * v0, rng.uniform(0.3, 2.0)))
    period = float(rng.uniform(8.0, 20.0))
    travel = v0 * (duration + t_pre) + 10.0
    margin = 160.0
    road = _make_road(rng, -margin - 40.0 - 15.0 * (duration + t_pre),
                      travel + margin + 40.0 + 15.0 * (duration + t_pre), np.asarray(origin))
    ego_lane = int(rng.integers(0, road.n_lanes))
    ego = Ego(road=road, d=-(ego_lane + 0.5) * LANE_WIDTH, s0=0.0, v0=v0, dv=dv, period=period,
              phase=float(rng.uniform(0, 2 * np.pi)))
    acts = _ActorList(rng)
    ts = np.linspace(-t_pre, duration, 32)
    s_ego = ego.s(ts)
    reach = 110.0  # actors are generated so that this range around the ego stays populated [m]

    def span(vs: float) -> tuple[float, float]:
        return float(np.min(s_ego - vs * ts) - reach), float(np.max(s_ego - vs * ts) + reach)

    # Lanes: same direction (d < 0) and oncoming (d > 0).
    v_ref = max(v0, 6.0)
    for lane in range(road.n_lanes):
        for direction in (1, -1):
            d = -direction * (lane + 0.5) * LANE_WIDTH
            if direction > 0 and lane == ego_lane:
                speed = v0
                osc = dv * period / (2 * np.pi) * 2.0 + 6.0
                keep = (-osc - 4.0, osc + 4.0)
            else:
                keep = None
                jam = rng.random() < 0.15
                speed = 0.0 if jam else float(np.clip(rng.uniform(0.6, 1.3) * v_ref, 3.0, 15.0))
            lo, hi = span(direction * speed)
            gap = (4.0, 14.0) if speed < 0.2 else (6.0, 40.0)
            _platoon(acts, lo, hi, d, direction, speed, gap, keep)
    # Construction zone on one side.
    zones: list[tuple[int, float, float]] = []
    for p_zone in (0.75, 0.3):
        if rng.random() < p_zone:
            side = int(rng.choice([-1, 1]))
            za = float(rng.uniform(-40.0, max(travel, 1.0) + 20.0))
            zones.append((side, za, za + float(rng.uniform(15.0, 40.0))))
    lo_st, hi_st = span(0.0)

    def in_zone(side: int, s: float) -> bool:
        return any(z[0] == side and z[1] - 3.0 < s < z[2] + 3.0 for z in zones)

    for side in (-1, 1):
        inner = road.n_lanes * LANE_WIDTH
        # Cyclists in the bike lane, moving with the traffic of that side.
        vs_c = float(rng.uniform(3.0, 6.0))
        lo, hi = span(-side * vs_c)
        pos = lo + rng.uniform(0, 40)
        while pos < hi:
            cls = "bicycle" if rng.random() < 0.8 else "motorcycle"
            acts.add(cls, _vehicle_category(rng, cls), WITH_RIDER, pos, side * (inner + 0.75),
                     -side * vs_c, 0.0 if side < 0 else np.pi)
            pos += rng.uniform(25.0, 110.0)
        # Parked vehicles.
        park = road.parking[0] if side < 0 else road.parking[1]
        if park:
            pos = lo_st
            d_park = side * (inner + BIKE_LANE + PARKING_STRIP / 2)
            while pos < hi_st:
                if rng.random() < 0.25:  # empty stretch
                    pos += rng.uniform(6.0, 25.0)
                    continue
                cls = _pick(rng, _PARKED_MIX)
                cat = _vehicle_category(rng, cls)
                wlh = acts.size(cls, cat)
                l = wlh[1]
                if in_zone(side, pos + l / 2):
                    pos += l + 1.0
                    continue
                mode = WITHOUT_RIDER if cls in ("motorcycle", "bicycle") else PARKED
                acts.add(cls, cat, mode, pos + l / 2, d_park + rng.normal(0, 0.15),
                         0.0, (0.0 if side < 0 else np.pi) + rng.normal(0, 0.04), wlh=wlh)
                pos += l + rng.uniform(0.6, 4.0)
        # Pedestrians and parked bicycles on the sidewalk.
        edge = road.edge(side)
        pos = lo_st + rng.uniform(0, 10)
        while pos < hi_st:
            u = rng.random()
            d = side * (edge + rng.uniform(0.4, SIDEWALK - 0.4))
            if u < 0.12:
                acts.add("bicycle", "vehicle.bicycle", WITHOUT_RIDER, pos, side * (edge + 0.6), 0.0,
                         side * np.pi / 2 + rng.normal(0, 0.1))
            else:
                category = "human.pedestrian.child" if rng.random() < 0.08 else "human.pedestrian.adult"
                v = rng.uniform(0.9, 1.7)
                mode = _pick(acts.rng, {"m": 0.6, "s": 0.34, "l": 0.06})
                if mode == "m":
                    direction = float(rng.choice([-1.0, 1.0]))
                    acts.add("pedestrian", category, PED_MOVING, pos, d, direction * v,
                             0.0 if direction > 0 else np.pi)
                else:
                    acts.add("pedestrian", category, PED_STANDING if mode == "s" else PED_SITTING, pos,
                             d, 0.0, rng.uniform(-np.pi, np.pi))
            pos += rng.exponential(12.0) + 1.0
    # Stray cones and barriers at the kerbs (driveways, loading bays).
    for side in (-1, 1):
        for s in rng.uniform(lo_st, hi_st, int(rng.poisson(0.012 * (hi_st - lo_st)))):
            if rng.random() < 0.7:
                acts.add("traffic_cone", "movable_object.trafficcone", NO_ATTR, float(s),
                         side * (road.edge(side) + 0.3), 0.0, rng.uniform(-np.pi, np.pi), scale=0.05)
            else:
                acts.add("barrier", "movable_object.barrier", NO_ATTR, float(s),
                         side * (road.edge(side) + 0.4), 0.0, np.pi / 2 + rng.normal(0, 0.05), scale=0.04)
    # Construction zones: barriers line, cones, a construction vehicle and workers.
    for side, za, zb in zones:
        inner = road.n_lanes * LANE_WIDTH
        d_bar = side * (inner + BIKE_LANE + 0.4)
        for s in np.arange(za, zb, 2.7):
            acts.add("barrier", "movable_object.barrier", NO_ATTR, float(s), d_bar, 0.0,
                     np.pi / 2 + rng.normal(0, 0.05), scale=0.04)
        for s in np.arange(za - 12.0, zb + 4.0, rng.uniform(3.0, 5.0)):
            acts.add("traffic_cone", "movable_object.trafficcone", NO_ATTR, float(s),
                     side * (inner + rng.uniform(0.3, 1.1)), 0.0, rng.uniform(-np.pi, np.pi), scale=0.05)
        acts.add("construction_vehicle", "vehicle.construction", PARKED, (za + zb) / 2,
                 side * (road.edge(side) + 1.2), 0.0, rng.uniform(-0.3, 0.3))
        for _ in range(int(rng.integers(1, 4))):
            acts.add("pedestrian", "human.pedestrian.construction_worker", PED_STANDING,
                     float(rng.uniform(za, zb)), side * (road.edge(side) + rng.uniform(0.3, 3.0)), 0.0,
                     rng.uniform(-np.pi, np.pi))
    actors = acts.build()
    structures, wall_lines = _make_structures(rng, road, lo_st - 60.0, hi_st + 60.0)
    return Scenario(road=road, ego=ego, actors=actors, structures=structures, wall_lines=wall_lines)


def _make_structures(rng: np.random.Generator, road: Road, lo: float, hi: float
                     ) -> tuple[Structures, list[float]]:
    kinds, xys, yaws, wlhs, refls = [], [], [], [], []
    wall_lines: list[float] = []
    styles: list[str] = []

    def box(kind: int, s: float, d: float, w: float, l: float, h: float, refl: float,
            yaw_off: float = 0.0) -> None:
        xy, heading = road.to_global(np.array(s), np.array(d))
        kinds.append(kind)
        xys.append(xy)
        yaws.append(float(heading) + yaw_off)
        wlhs.append((w, l, h))
        refls.append(refl)

    lo, hi = max(lo, road.s[0] + 25.0), min(hi, road.s[-1] - 25.0)
    for side in (-1, 1):
        edge = road.edge(side)
        style = _pick(rng, {"buildings": 0.7, "wall": 0.15, "open": 0.15})
        styles.append(style)
        # Street lights at the kerb.
        for s in np.arange(lo + rng.uniform(0, 30), hi, rng.uniform(25.0, 40.0)):
            box(KIND_POLE, float(s), side * (edge + 0.35), 0.25, 0.25, 7.0, 45.0)
        if style == "buildings":
            pos = lo
            while pos < hi:
                length = rng.uniform(8.0, 40.0)
                depth = rng.uniform(8.0, 20.0)
                setback = rng.uniform(0.5, 5.0)
                box(KIND_BUILDING, pos + length / 2, side * (edge + SIDEWALK + setback + depth / 2), depth,
                    length, rng.uniform(5.0, 25.0), rng.uniform(20.0, 70.0))
                pos += length + rng.uniform(1.0, 14.0)
        elif style == "wall":
            d_wall = side * (edge + SIDEWALK + 0.5)
            wall_lines.append(d_wall - side * 0.15)
            for s in np.arange(lo, hi, 10.0):
                box(KIND_WALL, float(s) + 5.0, d_wall, 0.3, 10.0, 2.5, 30.0)
    if rng.random() < 0.3:
        # Median guard rail between the directions.
        wall_lines.append(0.0)
        for s in np.arange(lo, hi, 8.0):
            box(KIND_GUARDRAIL, float(s) + 4.0, 0.0, 0.25, 8.0, 0.8, 80.0)
    return (Structures(kind=np.array(kinds, dtype=np.int64),
                       xy=np.array(xys, dtype=np.float64).reshape(-1, 2),
                       yaw=np.array(yaws), wlh=np.array(wlhs, dtype=np.float64).reshape(-1, 3),
                       refl=np.array(refls), styles=(styles[0], styles[1])), wall_lines)


#: Radar scatterer populations per roadside: (density per metre of road [1/m], scatterers per site,
#: lateral band (from, to) [m] beyond the carriageway edge, RCS mean and std [dBsm], detection
#: probability range, position spread [m], roadside styles it applies to). A site with several
#: scatterers (a tree: trunk and branches) can give several returns in one sweep.
SCATTERER_TYPES: tuple[tuple[float, int, tuple[float, float], float, float, tuple[float, float], float,
                             tuple[str, ...]], ...] = (
    (2.50, 1, (-0.05, 0.10), -7.0, 3.0, (0.25, 0.60), 0.05, ("buildings", "wall", "open")),  # kerbs, grates
    (0.50, 1, (0.20, 0.90), 3.0, 4.0, (0.50, 0.95), 0.05, ("buildings", "wall", "open")),  # signs, bollards
    (0.18, 5, (0.50, 1.10), 0.0, 4.0, (0.50, 0.90), 0.60, ("buildings", "wall")),  # street trees
    (0.80, 1, (SIDEWALK + 0.05, SIDEWALK + 0.30), -4.0, 4.0, (0.25, 0.70), 0.30,
     ("buildings",)),  # railings, gates, front gardens
    (1.00, 1, (SIDEWALK + 0.05, SIDEWALK + 0.30), -3.0, 4.0, (0.25, 0.70), 0.50, ("open",)),  # fences, hedges
    (0.80, 1, (SIDEWALK + 0.50, SIDEWALK + 20.0), -3.0, 4.0, (0.20, 0.70), 0.80, ("open",)),  # bushes, trees
)


def make_scatterers(rng: np.random.Generator, scn: Scenario) -> Scatterers:
    """Radar point scatterers along both roadsides of a scenario (see :data:`SCATTERER_TYPES`).

    Uses its own generator so that the scenario's actors and structures do not depend on it. The
    LiDAR does not see them (sub-box-scale clutter; the LiDAR's ground and structures stand in).
    """
    road = scn.road
    lo, hi = road.s[0] + 25.0, road.s[-1] - 25.0
    xys, rcss, ps, spreads = [], [], [], []
    for side_i, side in enumerate((-1, 1)):
        style = scn.structures.styles[side_i]
        edge = road.edge(side)
        for density, per, (d0, d1), rcs_mu, rcs_sd, (p0, p1), spread, styles in SCATTERER_TYPES:
            n = int(rng.poisson(density * (hi - lo)))
            if style not in styles or n == 0:
                continue
            s = np.repeat(rng.uniform(lo, hi, n), per)
            d = side * (edge + np.repeat(rng.uniform(d0, d1, n), per))
            n *= per
            xy, _ = road.to_global(s, d)
            xys.append(xy)
            rcss.append(rcs_mu + rcs_sd * rng.standard_normal(n))
            ps.append(rng.uniform(p0, p1, n))
            spreads.append(np.full(n, spread))
    if not xys:
        return _no_scatterers()
    return Scatterers(xy=np.concatenate(xys), rcs=np.concatenate(rcss), p_detect=np.concatenate(ps),
                      spread=np.concatenate(spreads))
