"""Writes the synthetic world as a nuScenes-format dataset (13 tables, splits, maps, sensor files).

Timing (microsecond timestamps): LIDAR_TOP at 20 Hz; each radar at ~13 Hz (period 1/13 s
+-1 %, its own phase); key frames (samples) at 2 Hz, every 10th LiDAR sweep, the sample timestamp
being that LiDAR sweep's. Per radar the key frame is the sweep closest in time to the sample.
Sensor data start 0.5 s before the first sample (10 LiDAR / ~6 radar sweeps of history) and end
at the last sample (radars: up to half a period after it, so that every key sweep is within half
a period of its sample). A non-key sweep's ``sample_token`` is the sample that follows it
(nuScenes schema), the last sample for the few radar sweeps after it. Every sample_data has its
own ego_pose (same token) at its timestamp.

Radar sweeps see the actors, the static structures and the scene's fixed point scatterers
(``Scenario.scatterers``, drawn from a fourth per-scene generator so that actors, structures and
timestamps do not depend on them), see ``radar.py``.

Annotations: actors whose centre is within 80 m of the ego at a key frame, in the global frame
(size [w, l, h], rotation [w, x, y, z], nuScenes category and attribute names).
``num_lidar_pts`` counts points of the key LiDAR sweep inside the box, ``num_radar_pts`` points of
the five key radar sweeps inside the box at each sweep's own time (moving boxes are placed where
they are at that time). Visibility (nuScenes levels 1-4) is the share of LiDAR rays through the
box that reach it unoccluded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from tqdm import tqdm

from radardistill_ros.conventions import CLASS_NAMES, LIDAR_CHANNEL, RADAR_CHANNELS
from training.synth import lidar as lidar_mod
from training.synth import radar as radar_mod
from training.synth.rig import MOUNTS, rot2, sensor_pose, to_sensor, yaw_quaternion
from training.synth.world import ATTRIBUTE_NAMES, STOPPED, Scenario, make_scatterers, make_scenario

TRAIN_SPLIT = "synth_train"
VAL_SPLIT = "synth_val"
MARKER = ".synth_world.json"
GENERATOR = "training.synth"

LIDAR_PERIOD_US = 50_000
SWEEPS_PER_SAMPLE = 10
PRE_ROLL_US = 500_000
RADAR_PERIOD_US = 1_000_000 / 13.0
ANNOTATION_RANGE = 80.0  #: [m]
BASE_TIMESTAMP_US = 1_533_000_000_000_000  #: 2018-07-31, the nuScenes era

#: The nuScenes categories (v1.0), name -> description.
CATEGORIES: dict[str, str] = {
    "animal": "All animals, e.g. cats, rats, dogs, deer, birds.",
    "human.pedestrian.adult": "Adult subcategory.",
    "human.pedestrian.child": "Child subcategory.",
    "human.pedestrian.construction_worker": "Construction worker",
    "human.pedestrian.personal_mobility": "A small electric or self-propelled vehicle.",
    "human.pedestrian.police_officer": "Police officer.",
    "human.pedestrian.stroller": "Strollers.",
    "human.pedestrian.wheelchair": "Wheelchairs.",
    "movable_object.barrier": "Temporary road barrier placed in the scene in order to redirect traffic.",
    "movable_object.debris": "Movable object that is left on the driveable surface.",
    "movable_object.pushable_pullable": "Objects that a pedestrian may push or pull.",
    "movable_object.trafficcone": "All types of traffic cone.",
    "static_object.bicycle_rack": "Area or device intended to park or secure the bicycles in a row.",
    "vehicle.bicycle": "Human or electric powered 2-wheeled vehicle designed to travel at lower speeds.",
    "vehicle.bus.bendy": "Bendy bus subcategory.",
    "vehicle.bus.rigid": "Rigid bus subcategory.",
    "vehicle.car": "Vehicle designed primarily for personal use, e.g. sedans, hatch-backs, wagons, vans.",
    "vehicle.construction": "Vehicles primarily designed for construction.",
    "vehicle.emergency.ambulance": "All types of ambulances.",
    "vehicle.emergency.police": "All types of police vehicles.",
    "vehicle.motorcycle": "Gasoline or electric powered 2-wheeled vehicle designed to move rapidly.",
    "vehicle.trailer": "Any vehicle trailer, both for trucks, cars and bikes.",
    "vehicle.truck": "Vehicles primarily designed to haul cargo.",
}
ATTRIBUTES: dict[str, str] = {
    "vehicle.moving": "Vehicle is moving.",
    "vehicle.stopped": ("Vehicle, with a driver/rider in/on it, is currently stationary but has an intent "
                        "to move."),
    "vehicle.parked": "Vehicle is stationary (usually for longer duration) with no immediate intent to move.",
    "cycle.with_rider": "There is a rider on the bicycle or motorcycle.",
    "cycle.without_rider": "There is NO rider on the bicycle or motorcycle.",
    "pedestrian.sitting_lying_down": "The human is sitting or lying down.",
    "pedestrian.standing": "The human is standing.",
    "pedestrian.moving": "The human is moving.",
}
VISIBILITY: tuple[tuple[str, str, str], ...] = (
    ("1", "v0-40", "visibility of whole object is between 0 and 40%"),
    ("2", "v40-60", "visibility of whole object is between 40 and 60%"),
    ("3", "v60-80", "visibility of whole object is between 60 and 80%"),
    ("4", "v80-100", "visibility of whole object is between 80 and 100%"),
)
TABLES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
          "scene", "sample", "sample_data", "sample_annotation", "map")

_PCD_TYPE = {"f": "F", "i": "I", "u": "U"}


def token(*parts: object) -> str:
    """Deterministic 32-hex-digit token of the given parts."""
    return hashlib.md5("/".join(str(p) for p in parts).encode()).hexdigest()


def radar_pcd_bytes(records: np.ndarray) -> bytes:
    """Bytes of a nuScenes radar .pcd: the 11-line ASCII header, packed records, a trailing newline.

    An empty sweep is written as one all-NaN record (the devkit reads it as an empty cloud).
    """
    dt = radar_mod.RADAR_DTYPE
    if records.dtype != dt:
        raise TypeError(f"radar records must have dtype {dt}, got {records.dtype}")
    if len(records) == 0:
        records = np.zeros(1, dtype=dt)
        for name in ("x", "y", "z", "rcs", "vx", "vy", "vx_comp", "vy_comp"):
            records[name] = np.nan
    names = dt.names
    sizes = " ".join(str(dt[n].itemsize) for n in names)
    types = " ".join(_PCD_TYPE[dt[n].kind] for n in names)
    header = (
        "# .PCD v0.7 - Point Cloud Data file format\n"
        "VERSION 0.7\n"
        f"FIELDS {' '.join(names)}\n"
        f"SIZE {sizes}\n"
        f"TYPE {types}\n"
        f"COUNT {' '.join('1' for _ in names)}\n"
        f"WIDTH {len(records)}\n"
        "HEIGHT 1\n"
        "VIEWPOINT 0 0 0 1 0 0 0\n"
        f"POINTS {len(records)}\n"
        "DATA binary\n"
    )
    return header.encode("ascii") + records.tobytes() + b"\n"


def read_radar_pcd(path: str | Path) -> np.ndarray:
    """Records of a radar .pcd written by :func:`radar_pcd_bytes` (structured, 43-byte dtype)."""
    data = Path(path).read_bytes()
    pos = 0
    for _ in range(11):
        pos = data.index(b"\n", pos) + 1
    header = data[:pos].decode("ascii").splitlines()
    n = int(header[6].split()[1])
    return np.frombuffer(data, dtype=radar_mod.RADAR_DTYPE, count=n, offset=pos).copy()


def _png_gray(img: np.ndarray) -> bytes:
    """Minimal 8-bit greyscale PNG encoder (deterministic bytes)."""
    h, w = img.shape
    raw = b"".join(b"\x00" + img[i].astype(np.uint8).tobytes() for i in range(h))

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + payload))
        return struct.pack(">I", len(payload)) + kind + payload + crc

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


@dataclass
class _Tables:
    rows: dict[str, list[dict]] = field(default_factory=lambda: {t: [] for t in TABLES})


def _check_out_dir(out: Path, overwrite: bool) -> list[str]:
    """Validate the output directory; returns the versions a previous synth world there wrote."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return []
    marker = out / MARKER
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except json.JSONDecodeError:
            info = {}
        if info.get("generator") == GENERATOR:
            return list(info.get("versions", []))
    if not overwrite:
        raise FileExistsError(f"output directory {out} is not empty and holds no synthetic world "
                              f"(no {MARKER}); pass overwrite=True / --overwrite to write into it anyway")
    return []


def _clear(out: Path, versions: list[str], version: str) -> None:
    for name in ["samples", "sweeps", "maps", MARKER, *versions, version]:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def generate_world(out_dir: str | Path, version: str = "v1.0-synth", scenes: int = 2, seed: int = 0,
                   scene_seconds: float = 20.0, show_progress: bool = True, overwrite: bool = False) -> Path:
    """Generate a nuScenes-format synthetic world into ``out_dir`` (the devkit's dataroot).

    Writes ``<out_dir>/<version>/*.json`` (13 tables + splits.json with :data:`TRAIN_SPLIT` /
    :data:`VAL_SPLIT`), ``maps/``, ``samples/`` and ``sweeps/``. Same arguments -> same bytes.
    A non-empty ``out_dir`` must hold a previous synthetic world (replaced) unless ``overwrite``.
    Returns the dataroot path.
    """
    if not isinstance(scenes, int) or scenes < 1:
        raise ValueError(f"scenes must be a positive integer, got {scenes!r}")
    if not (1.0 <= float(scene_seconds) <= 600.0):
        raise ValueError(f"scene_seconds must be within [1, 600] s, got {scene_seconds!r}")
    if not version or "/" in version or version.startswith("."):
        raise ValueError(f"invalid version name {version!r}")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed!r}")
    out = Path(out_dir)
    previous = _check_out_dir(out, overwrite)
    _clear(out, previous, version)
    (out / version).mkdir(parents=True, exist_ok=True)
    tables = _Tables()
    rows = tables.rows
    for name, desc in CATEGORIES.items():
        rows["category"].append({"token": token("category", name), "name": name, "description": desc})
    for name, desc in ATTRIBUTES.items():
        rows["attribute"].append({"token": token("attribute", name), "name": name, "description": desc})
    for tok, level, desc in VISIBILITY:
        rows["visibility"].append({"token": tok, "level": level, "description": desc})
    for ch in (LIDAR_CHANNEL, *RADAR_CHANNELS):
        rows["sensor"].append({"token": token("sensor", ch), "channel": ch,
                               "modality": "lidar" if ch == LIDAR_CHANNEL else "radar"})
    scene_names: list[str] = []
    bar = tqdm(range(scenes), desc="synth scenes", unit="scene", disable=not show_progress)
    for i in bar:
        scene_names.append(_generate_scene(out, tables, seed, i, float(scene_seconds), show_progress))
    # Map: one tiny mask for all logs.
    map_token = token("map", seed)
    img = np.zeros((64, 64), dtype=np.uint8)
    img[24:40, :] = 255
    (out / "maps").mkdir(exist_ok=True)
    map_file = f"maps/{map_token}.png"
    (out / map_file).write_bytes(_png_gray(img))
    rows["map"].append({"token": map_token, "log_tokens": [r["token"] for r in rows["log"]],
                        "category": "semantic_prior", "filename": map_file})
    for name in TABLES:
        (out / version / f"{name}.json").write_text(json.dumps(rows[name], indent=1))
    n_val = 0 if scenes < 2 else max(1, round(0.2 * scenes))
    splits = {TRAIN_SPLIT: scene_names[: scenes - n_val], VAL_SPLIT: scene_names[scenes - n_val:]}
    (out / version / "splits.json").write_text(json.dumps(splits, indent=1))
    versions = sorted({*previous, version}) if previous else [version]
    (out / MARKER).write_text(json.dumps({"generator": GENERATOR, "versions": versions, "version": version,
                                          "scenes": scenes, "seed": int(seed),
                                          "scene_seconds": float(scene_seconds)}, indent=1))
    return out


def _mirror_fn(scn: Scenario, road_index: lidar_mod.RoadIndex, s_xy: np.ndarray, s_yaw: float,
               s_hint: float) -> Callable | None:
    """Mirror-ghost mapping for the radar (sensor frame in and out), or None without walls.

    A target is mirrored across the nearest wall / guard-rail line on the sensor's side of it.
    """
    if not scn.wall_lines:
        return None
    lines = np.array(scn.wall_lines)
    r_s, r_inv = rot2(s_yaw), rot2(-s_yaw)

    def mirror(pts: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(pts) == 0:
            return pts, vel, np.zeros(0, dtype=bool)
        _, d_sensor = road_index.sd(s_xy[None], s_hint)
        g = pts @ r_s.T + s_xy
        s, d = road_index.sd(g, s_hint)
        side_ok = np.sign(d[:, None] - lines[None]) == np.sign(d_sensor[0] - lines[None])
        dist = np.where(side_ok, np.abs(d[:, None] - lines[None]), np.inf)
        j = np.argmin(dist, axis=1)
        ok = np.isfinite(dist[np.arange(len(d)), j])
        d_w = lines[j]
        mxy, heading = scn.road.to_global(s, 2.0 * d_w - d)
        n = np.stack([-np.sin(heading), np.cos(heading)], axis=1)
        vg = vel @ r_s.T
        vm = vg - 2.0 * np.einsum("ij,ij->i", vg, n)[:, None] * n
        return (mxy - s_xy) @ r_inv.T, vm @ r_inv.T, ok

    return mirror


def _points_in_boxes_2d(pts: np.ndarray, z: np.ndarray, box_xy: np.ndarray, box_z0: np.ndarray,
                        box_yaw: np.ndarray, box_wlh: np.ndarray, only: np.ndarray | None = None
                        ) -> np.ndarray:
    """Counts ``(K,)`` of points (xy ``(P, 2)`` [m], z ``(P,)`` [m]) inside each box (bottom at box_z0).

    Same test as the devkit's ``points_in_box`` (closed box). ``only``: mask of the boxes to test
    (others count 0). Candidate points come from a k-d tree ball query around each box.
    """
    counts = np.zeros(len(box_xy), dtype=np.int64)
    sel = np.nonzero(only if only is not None else np.ones(len(box_xy), dtype=bool))[0]
    if len(pts) == 0 or len(sel) == 0:
        return counts
    tree = cKDTree(pts)
    radius = 0.5 * np.hypot(box_wlh[sel, 0], box_wlh[sel, 1]) + 1e-6
    lists = tree.query_ball_point(box_xy[sel], radius)
    n = np.array([len(li) for li in lists])
    if n.sum() == 0:
        return counts
    p = np.concatenate([np.asarray(li, dtype=np.int64) for li in lists])
    b = np.repeat(sel, n)
    c, s = np.cos(box_yaw[b]), np.sin(box_yaw[b])
    rx, ry = pts[p, 0] - box_xy[b, 0], pts[p, 1] - box_xy[b, 1]
    inside = ((np.abs(c * rx + s * ry) <= box_wlh[b, 1] / 2) & (np.abs(-s * rx + c * ry) <= box_wlh[b, 0] / 2)
              & (z[p] >= box_z0[b]) & (z[p] <= box_z0[b] + box_wlh[b, 2]))
    return np.bincount(b[inside], minlength=len(box_xy)).astype(np.int64)


def _scene_rngs(seed: int, idx: int) -> tuple[np.random.Generator, ...]:
    """Independent generators (world, LiDAR, radar, radar scatterers) of scene ``idx``."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), idx]).spawn(4))


def n_samples_of(scene_seconds: float) -> int:
    """Number of 2 Hz key frames of a scene of ``scene_seconds`` [s] (at least 2)."""
    return max(2, round(float(scene_seconds) * 2.0))


def scenario_for(seed: int, scene_index: int, scene_seconds: float) -> Scenario:
    """The scenario (road, ego, actors) behind scene ``scene_index`` of a world made with ``seed``.

    Time 0 is the scene's first key frame. Actor ``a`` is the instance with token
    ``token(seed, "instance", scene_index, a)``.
    """
    rngs = _scene_rngs(seed, scene_index)
    scn = make_scenario(rngs[0], (n_samples_of(scene_seconds) - 1) * 0.5, t_pre=PRE_ROLL_US * 1e-6)
    scn.scatterers = make_scatterers(rngs[3], scn)
    return scn


def _generate_scene(out: Path, tables: _Tables, seed: int, idx: int, seconds: float, progress: bool) -> str:
    rows = tables.rows
    rng_world, rng_lidar, rng_radar, rng_scat = _scene_rngs(seed, idx)
    n_samples = n_samples_of(seconds)
    scn = make_scenario(rng_world, (n_samples - 1) * 0.5, t_pre=PRE_ROLL_US * 1e-6)
    scn.scatterers = make_scatterers(rng_scat, scn)
    road_index = lidar_mod.RoadIndex(scn.road)
    name = f"synth-{idx:04d}"
    logfile = f"synth-s{int(seed)}-{idx:04d}"
    ts0 = BASE_TIMESTAMP_US + idx * 3_600_000_000 + int(rng_world.integers(0, 1_000_000))
    log_token = token(seed, "log", idx)
    rows["log"].append({"token": log_token, "logfile": logfile, "vehicle": "synth-ego",
                        "date_captured": "2018-07-31", "location": "synth-city"})
    scene_token = token(seed, "scene", idx)
    cs_tokens = {}
    for ch, ((tx, ty, tz), yaw) in MOUNTS.items():
        cs_tokens[ch] = token(seed, "calibrated_sensor", idx, ch)
        rows["calibrated_sensor"].append({"token": cs_tokens[ch], "sensor_token": token("sensor", ch),
                                          "translation": [tx, ty, tz], "rotation": yaw_quaternion(yaw),
                                          "camera_intrinsic": []})
    # Timelines.
    n_lidar = SWEEPS_PER_SAMPLE * (n_samples - 1) + 1 + PRE_ROLL_US // LIDAR_PERIOD_US
    lidar_ts = ts0 - PRE_ROLL_US + LIDAR_PERIOD_US * np.arange(n_lidar, dtype=np.int64)
    sample_ts = lidar_ts[PRE_ROLL_US // LIDAR_PERIOD_US::SWEEPS_PER_SAMPLE]
    assert len(sample_ts) == n_samples
    sample_tokens = [token(seed, "sample", idx, k) for k in range(n_samples)]
    radar_ts: dict[str, np.ndarray] = {}
    for ch in RADAR_CHANNELS:
        period = RADAR_PERIOD_US * (1.0 + rng_world.uniform(-0.01, 0.01))
        phase = rng_world.uniform(0.0, period)
        m = np.arange(int((sample_ts[-1] + period / 2 - lidar_ts[0] - phase) // period) + 1)
        radar_ts[ch] = (lidar_ts[0] + np.round(phase + m * period)).astype(np.int64)
    for k in range(n_samples):
        rows["sample"].append({"token": sample_tokens[k], "timestamp": int(sample_ts[k]),
                               "prev": sample_tokens[k - 1] if k > 0 else "",
                               "next": sample_tokens[k + 1] if k + 1 < n_samples else "",
                               "scene_token": scene_token})
    rows["scene"].append({"token": scene_token, "log_token": log_token, "nbr_samples": n_samples,
                          "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
                          "name": name, "description": f"synthetic scene {idx} (seed {int(seed)}), "
                          f"{scn.road.n_lanes} lane(s) per direction"})
    actors = scn.actors
    n_act = len(actors)
    refl = scn.refl()
    total = n_lidar + sum(len(v) for v in radar_ts.values())
    bar = tqdm(total=total, desc=f"scene {idx}", unit="frame", leave=False, disable=not progress)

    def write_channel(ch: str, stamps: np.ndarray, key_idx: dict[int, int], ext: str,
                      payload) -> None:
        """Sensor files + sample_data + ego_pose rows of one channel; payload(j, t) -> bytes."""
        toks = [token(seed, "sample_data", idx, ch, j) for j in range(len(stamps))]
        key_of = {j: k for k, j in key_idx.items()}
        for j, ts in enumerate(stamps):
            t = (int(ts) - int(sample_ts[0])) * 1e-6
            is_key = j in key_of
            folder = "samples" if is_key else "sweeps"
            fname = f"{folder}/{ch}/{logfile}__{ch}__{int(ts)}{ext}"
            (out / folder / ch).mkdir(parents=True, exist_ok=True)
            (out / fname).write_bytes(payload(j, t))
            if is_key:
                sample_tok = sample_tokens[key_of[j]]
            else:
                k = int(np.searchsorted(sample_ts, ts))
                sample_tok = sample_tokens[min(k, n_samples - 1)]
            xy, yaw = scn.ego.pose(np.array(t))
            rows["ego_pose"].append({"token": toks[j], "timestamp": int(ts),
                                     "rotation": yaw_quaternion(float(yaw)),
                                     "translation": [float(xy[0]), float(xy[1]), 0.0]})
            rows["sample_data"].append({
                "token": toks[j], "sample_token": sample_tok, "ego_pose_token": toks[j],
                "calibrated_sensor_token": cs_tokens[ch], "timestamp": int(ts), "fileformat": "pcd",
                "is_key_frame": is_key, "height": 0, "width": 0, "filename": fname,
                "prev": toks[j - 1] if j > 0 else "", "next": toks[j + 1] if j + 1 < len(stamps) else ""})
            bar.update(1)

    # LiDAR.
    lidar_keys = {k: PRE_ROLL_US // LIDAR_PERIOD_US + SWEEPS_PER_SAMPLE * k for k in range(n_samples)}
    key_lidar: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    lidar_key_set = {j: k for k, j in lidar_keys.items()}
    h_lidar = MOUNTS[LIDAR_CHANNEL][0][2]

    def lidar_payload(j: int, t: float) -> bytes:
        xy, yaw = scn.ego.pose(np.array(t))
        s_xy, s_z, s_yaw = sensor_pose(LIDAR_CHANNEL, xy, float(yaw))
        bxyz, byaw, bwlh, _ = scn.boxes_at(t)
        sxy, syaw = to_sensor(bxyz[:, :2], byaw, s_xy, s_yaw)
        r_s = rot2(s_yaw)
        s_hint = float(scn.ego.s(t))

        def ground_refl(p: np.ndarray) -> np.ndarray:
            return lidar_mod.ground_reflectivity(road_index, p[:, :2] @ r_s.T + s_xy, rng_lidar, s_hint)

        hits = lidar_mod.cast(np.column_stack([sxy, bxyz[:, 2] - s_z]), syaw, bwlh, refl, h_lidar, rng_lidar,
                              ground_refl)
        if j in lidar_key_set:
            k = lidar_key_set[j]
            cnt = _points_in_boxes_2d(hits.points[:, :2].astype(np.float64), hits.points[:, 2] + s_z,
                                      sxy[:n_act], np.zeros(n_act), syaw[:n_act], bwlh[:n_act],
                                      only=hits.box_rays[:n_act] > 0)
            vis = np.where(hits.box_rays[:n_act] > 0,
                           hits.box_hits[:n_act] / np.maximum(hits.box_rays[:n_act], 1), 0.0)
            key_lidar[k] = (cnt, vis, hits.box_rays[:n_act])
        return hits.points.astype("<f4").tobytes()

    write_channel(LIDAR_CHANNEL, lidar_ts, lidar_keys, ".pcd.bin", lidar_payload)
    # Radars.
    radar_counts = np.zeros((n_samples, n_act), dtype=np.int64)
    stopped = np.concatenate([actors.attr == STOPPED, np.zeros(len(scn.structures.kind), dtype=bool)])
    for ch in RADAR_CHANNELS:
        stamps = radar_ts[ch]
        keys = {k: int(np.argmin(np.abs(stamps - sample_ts[k]))) for k in range(n_samples)}
        key_set = {j: k for k, j in keys.items()}
        if len(key_set) != n_samples:
            raise RuntimeError(f"{ch}: key-frame sweeps not unique")

        def radar_payload(j: int, t: float, ch: str = ch, key_set: dict[int, int] = key_set) -> bytes:
            xy, yaw = scn.ego.pose(np.array(t))
            s_xy, s_z, s_yaw = sensor_pose(ch, xy, float(yaw))
            bxyz, byaw, bwlh, bkind = scn.boxes_at(t)
            sxy, syaw = to_sensor(bxyz[:, :2], byaw, s_xy, s_yaw)
            v_ego, omega = scn.ego.velocity(t)
            lever = s_xy - xy
            v_sensor = rot2(-s_yaw) @ (v_ego + omega * np.array([-lever[1], lever[0]]))
            vel = np.zeros((len(byaw), 2))
            vel[:n_act] = actors.velocity(scn.road, t) @ rot2(-s_yaw).T
            scat = scn.scatterers
            scat_xy = (scat.xy - s_xy) @ rot2(s_yaw)  # global -> sensor frame
            sweep = radar_mod.simulate(sxy, syaw, bwlh, bkind, vel, stopped, v_sensor, rng_radar,
                                       _mirror_fn(scn, road_index, s_xy, s_yaw, float(scn.ego.s(t))),
                                       scatterers=(scat_xy, scat.rcs, scat.p_detect, scat.spread))
            if j in key_set:
                rec = sweep.records
                pts = np.column_stack([rec["x"], rec["y"]]).astype(np.float64)
                radar_counts[key_set[j]] += _points_in_boxes_2d(
                    pts, rec["z"].astype(np.float64) + s_z, sxy[:n_act], np.zeros(n_act), syaw[:n_act],
                    bwlh[:n_act])
            return radar_pcd_bytes(sweep.records)

        write_channel(ch, stamps, keys, ".pcd", radar_payload)
    bar.close()
    # Annotations and instances.
    vis_tok = np.array(["1", "2", "3", "4"])
    inst_anns: dict[int, list[str]] = {}
    for k in range(n_samples):
        t = (int(sample_ts[k]) - int(sample_ts[0])) * 1e-6
        axy, ayaw = actors.pose(scn.road, t)
        exy, _ = scn.ego.pose(np.array(t))
        near = np.nonzero(np.hypot(*(axy - exy).T) <= ANNOTATION_RANGE)[0]
        cnt, vis, rays = key_lidar[k]
        for a in near:
            tok = token(seed, "sample_annotation", idx, k, int(a))
            inst_anns.setdefault(int(a), []).append(tok)
            attr = ATTRIBUTE_NAMES[int(actors.attr[a])]
            level = int(np.searchsorted([0.4, 0.6, 0.8], vis[a], side="right")) if rays[a] > 0 else 0
            rows["sample_annotation"].append({
                "token": tok, "sample_token": sample_tokens[k],
                "instance_token": token(seed, "instance", idx, int(a)),
                "visibility_token": str(vis_tok[level]),
                "attribute_tokens": [token("attribute", attr)] if attr else [],
                "translation": [float(axy[a, 0]), float(axy[a, 1]), float(actors.wlh[a, 2] / 2.0)],
                "size": [float(v) for v in actors.wlh[a]], "rotation": yaw_quaternion(float(ayaw[a])),
                "prev": "", "next": "", "num_lidar_pts": int(cnt[a]),
                "num_radar_pts": int(radar_counts[k, a])})
    by_token = {r["token"]: r for r in rows["sample_annotation"][-sum(len(v) for v in inst_anns.values()):]}
    for a, toks in sorted(inst_anns.items()):
        for p, q in itertools.pairwise(toks):
            by_token[p]["next"] = q
            by_token[q]["prev"] = p
        rows["instance"].append({"token": token(seed, "instance", idx, a),
                                 "category_token": token("category", actors.category[a]),
                                 "nbr_annotations": len(toks), "first_annotation_token": toks[0],
                                 "last_annotation_token": toks[-1]})
    assert all(c in CATEGORIES for c in actors.category)
    assert set(int(c) for c in actors.cls) <= set(range(len(CLASS_NAMES)))
    return name
