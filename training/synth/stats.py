"""Radar-likeness statistics of a nuScenes-format dataset (read back through nuscenes-devkit).

At each key frame (reference: the ego frame at the LIDAR_TOP key timestamp):

* pillar ratio: non-empty 0.075 m pillars of the 5 radars x 6 sweeps over those of LIDAR_TOP x
  10 sweeps, both accumulated in the key frame's ego frame by the project's accumulator
  (:class:`radardistill_ros.sweeps.SweepAccumulator`: radar with its v*dt shift, no radar filters),
  inside x, y in [-54, 54] m and z in the RadarDistill range [-5, 3] m of the LIDAR_TOP frame (ego z
  in [-3.16, 4.84] m). The bound on the paper's ~11 % is checked there (see
  :data:`PILLAR_RATIO_BOUNDS`); the ratio of 0.6 m BEV cells (the pillar grid at the backbone's
  output stride 8) is reported as extra information.
* radar returns per annotated object: ``num_radar_pts`` of the annotations (5 key radar sweeps).
* false-positive share: points of the 5 key radar sweeps inside no annotated box, the boxes moved
  to each sweep's time with the devkit's ``box_velocity``; no radar filters applied. Like real
  nuScenes radar (unfiltered ARS 408 clusters: mostly static environment, clutter and ghosts) this
  is the large majority of the points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radardistill_ros.conventions import CATEGORY_TO_CLASS, LIDAR_CHANNEL, RADAR_CHANNELS
from radardistill_ros.sweeps import Sweep, SweepAccumulator
from training.synth.writer import read_radar_pcd

LIDAR_SWEEPS = 10
RADAR_SWEEPS = 6
XY_RANGE = 54.0  #: [m]
Z_RANGE_EGO = (-5.0 + 1.84, 3.0 + 1.84)  #: [m], the LIDAR_TOP z range [-5, 3] in the ego frame

#: Acceptance bounds of :func:`check_stats`. Pillar ratio: the issue's 5-20 % around the paper's
#: ~11 %, at 0.075 m pillars. False-positive share (key radar points inside no annotated box): at
#: least 10 % (a visible share, the issue's demand); at most 95 % so that objects still return
#: something. Real unfiltered nuScenes radar is dominated by the static background (buildings,
#: parked infrastructure, kerbs, vegetation) plus clutter and ghosts, so the share is typically
#: 70-90 %, far above the 10-40 % a world with only object returns would give.
PILLAR_RATIO_BOUNDS = (0.05, 0.20)
FP_SHARE_BOUNDS = (0.10, 0.95)
MIN_SHARE_0_5_RETURNS = 0.5


def _quat_matrix(q: list[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _pose(rec: dict) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = _quat_matrix(rec["rotation"])
    m[:3, 3] = rec["translation"]
    return m


def _sweeps(nusc, sd_token: str, n: int) -> list[dict]:
    out = []
    rec = nusc.get("sample_data", sd_token)
    while len(out) < n:
        out.append(rec)
        if not rec["prev"]:
            break
        rec = nusc.get("sample_data", rec["prev"])
    return out


def _to_frame(nusc, sd: dict, pts: np.ndarray, ref_from_global: np.ndarray) -> np.ndarray:
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    m = ref_from_global @ _pose(pose) @ _pose(cs)
    return pts @ m[:3, :3].T + m[:3, 3]


def _sweep(nusc, sd: dict, points: np.ndarray) -> Sweep:
    """A :class:`~radardistill_ros.sweeps.Sweep` of a sample_data record's points (sensor frame)."""
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return Sweep(points=points, timestamp=sd["timestamp"] * 1e-6, T_ego_from_sensor=_pose(cs),
                 T_global_from_ego=_pose(pose), sensor=sd["channel"])


def _cells(pts: np.ndarray, size: float) -> set[tuple[int, int]] | np.ndarray:
    ok = ((np.abs(pts[:, 0]) < XY_RANGE) & (np.abs(pts[:, 1]) < XY_RANGE)
          & (pts[:, 2] >= Z_RANGE_EGO[0]) & (pts[:, 2] <= Z_RANGE_EGO[1]))
    n = round(2 * XY_RANGE / size)
    ij = np.floor((pts[ok, :2] + XY_RANGE) / size).astype(np.int64)
    return np.unique(np.clip(ij[:, 0], 0, n - 1) * n + np.clip(ij[:, 1], 0, n - 1))


def _inside_any(pts: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Points ``(P, 3)`` (global) inside any box (centre, rotation matrix, size wlh)."""
    inside = np.zeros(len(pts), dtype=bool)
    for c, r, wlh in boxes:
        local = (pts - c) @ r  # box frame: x along l, y along w
        inside |= ((np.abs(local[:, 0]) <= wlh[1] / 2) & (np.abs(local[:, 1]) <= wlh[0] / 2)
                   & (np.abs(local[:, 2]) <= wlh[2] / 2))
    return inside


def compute_stats(dataroot: str | Path, version: str = "v1.0-synth", max_samples: int | None = None,
                  nusc=None) -> dict:
    """Radar-likeness statistics (see module doc) over all or ``max_samples`` evenly spread key frames.

    Returns a JSON-serialisable dict: ``pillar_ratio`` (0.075 m pillars, checked), ``bev_cell_ratio`` (0.6 m),
    ``radar_pillars`` / ``lidar_pillars`` (means per key frame), ``share_objects_0_5_returns``,
    ``radar_returns_hist`` (objects with 0, 1, 2, 3-5, 6-10, >10 returns), ``fp_share``,
    ``radar_points_per_sweep``, ``lidar_points_per_sweep``, ``annotations_per_sample``,
    ``class_counts`` and the sample count.
    """
    if nusc is None:
        from nuscenes import NuScenes

        nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=False)
    root = Path(nusc.dataroot)
    samples = nusc.sample
    if max_samples is not None and max_samples < len(samples):
        pick = np.unique(np.linspace(0, len(samples) - 1, max_samples).round().astype(int))
        samples = [samples[i] for i in pick]
    ratios, cell_ratios, r_pillars, l_pillars, r_cells, l_cells = [], [], [], [], [], []
    n_fp = n_radar_key = 0
    radar_counts, lidar_counts = [], []
    returns: list[int] = []
    class_counts: dict[str, int] = {}
    n_ann = 0
    for sample in samples:
        lidar_sd = nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
        ref_pose = _pose(nusc.get("ego_pose", lidar_sd["ego_pose_token"]))
        t_ref = lidar_sd["timestamp"] * 1e-6
        lidar_acc = SweepAccumulator(LIDAR_SWEEPS, kind="lidar")
        for sd in _sweeps(nusc, lidar_sd["token"], LIDAR_SWEEPS):
            raw = np.fromfile(root / sd["filename"], dtype=np.float32).reshape(-1, 5)
            lidar_counts.append(len(raw))
            lidar_acc.add(_sweep(nusc, sd, raw[:, :4]))
        lidar_all = lidar_acc.accumulate(ref_pose, t_ref)[:, :3]
        # Annotated boxes (global) with velocities.
        boxes = []
        for tok in sample["anns"]:
            ann = nusc.get("sample_annotation", tok)
            vel = np.nan_to_num(nusc.box_velocity(tok))
            boxes.append((np.array(ann["translation"]), _quat_matrix(ann["rotation"]), np.array(ann["size"]),
                          vel))
            returns.append(int(ann["num_radar_pts"]))
            cls = CATEGORY_TO_CLASS.get(ann["category_name"], "other")
            class_counts[cls] = class_counts.get(cls, 0) + 1
            n_ann += 1
        radar_acc = SweepAccumulator(RADAR_SWEEPS, kind="radar")
        for ch in RADAR_CHANNELS:
            for i, sd in enumerate(_sweeps(nusc, sample["data"][ch], RADAR_SWEEPS)):
                rec = read_radar_pcd(root / sd["filename"])
                rec = rec[np.isfinite(rec["x"])]
                xyz = np.column_stack([rec["x"], rec["y"], rec["z"]]).astype(np.float64)
                radar_counts.append(len(rec))
                radar_acc.add(_sweep(nusc, sd, rec))
                if i == 0:
                    dt = (sd["timestamp"] - sample["timestamp"]) * 1e-6
                    g = _to_frame(nusc, sd, xyz, np.eye(4))
                    moved = [(c + v * dt, r, wlh) for c, r, wlh, v in boxes]
                    n_fp += int((~_inside_any(g, moved)).sum())
                    n_radar_key += len(rec)
        radar_all = radar_acc.accumulate(ref_pose, t_ref)[:, :3]
        rp, lp = len(_cells(radar_all, 0.075)), len(_cells(lidar_all, 0.075))
        rc, lc = len(_cells(radar_all, 0.6)), len(_cells(lidar_all, 0.6))
        r_pillars.append(rp)
        l_pillars.append(lp)
        r_cells.append(rc)
        l_cells.append(lc)
        ratios.append(rp / max(lp, 1))
        cell_ratios.append(rc / max(lc, 1))
    ret = np.array(returns)
    edges = [(0, 0), (1, 1), (2, 2), (3, 5), (6, 10), (11, 10**9)]
    hist = {f"{a}" if a == b else (f"{a}-{b}" if b < 10**9 else f">{a - 1}"):
            int(((ret >= a) & (ret <= b)).sum()) for a, b in edges}
    return {
        "samples": len(samples),
        "pillar_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "radar_pillars": float(np.mean(r_pillars)) if r_pillars else 0.0,
        "lidar_pillars": float(np.mean(l_pillars)) if l_pillars else 0.0,
        "bev_cell_ratio": float(np.mean(cell_ratios)) if cell_ratios else float("nan"),
        "radar_bev_cells": float(np.mean(r_cells)) if r_cells else 0.0,
        "lidar_bev_cells": float(np.mean(l_cells)) if l_cells else 0.0,
        "share_objects_0_5_returns": float(np.mean(ret <= 5)) if len(ret) else float("nan"),
        "mean_returns_per_object": float(ret.mean()) if len(ret) else float("nan"),
        "radar_returns_hist": hist,
        "fp_share": n_fp / max(n_radar_key, 1),
        "radar_points_per_sweep": float(np.mean(radar_counts)) if radar_counts else 0.0,
        "lidar_points_per_sweep": float(np.mean(lidar_counts)) if lidar_counts else 0.0,
        "annotations_per_sample": n_ann / max(len(samples), 1),
        "class_counts": dict(sorted(class_counts.items())),
    }


def check_stats(stats: dict) -> list[str]:
    """Violations of the radar-likeness bounds (empty when all hold)."""
    bad = []
    lo, hi = PILLAR_RATIO_BOUNDS
    if not lo <= stats["pillar_ratio"] <= hi:
        bad.append(f"radar/LiDAR non-empty 0.075 m pillar ratio {stats['pillar_ratio']:.3f} "
                   f"outside [{lo}, {hi}]")
    lo, hi = FP_SHARE_BOUNDS
    if not lo <= stats["fp_share"] <= hi:
        bad.append(f"false-positive share {stats['fp_share']:.3f} outside [{lo}, {hi}]")
    if not stats["share_objects_0_5_returns"] >= MIN_SHARE_0_5_RETURNS:
        bad.append(f"share of objects with 0-5 radar returns {stats['share_objects_0_5_returns']:.3f} "
                   f"< {MIN_SHARE_0_5_RETURNS}")
    return bad


def format_stats(stats: dict) -> str:
    """Human-readable summary of :func:`compute_stats`, with the bound checks."""
    lines = [
        f"key frames: {stats['samples']}, annotations per key frame: {stats['annotations_per_sample']:.1f}",
        f"points per sweep: LiDAR {stats['lidar_points_per_sweep']:.0f}, "
        f"radar {stats['radar_points_per_sweep']:.1f} (per radar)",
        f"non-empty 0.075 m pillars: radar (5x6 sweeps) {stats['radar_pillars']:.0f}, LiDAR (10 sweeps) "
        f"{stats['lidar_pillars']:.0f} -> ratio {100 * stats['pillar_ratio']:.1f}% "
        f"(bounds {100 * PILLAR_RATIO_BOUNDS[0]:.0f}-{100 * PILLAR_RATIO_BOUNDS[1]:.0f}%)",
        f"non-empty 0.6 m BEV cells (stride 8, information only): radar {stats['radar_bev_cells']:.0f}, "
        f"LiDAR {stats['lidar_bev_cells']:.0f} -> ratio {100 * stats['bev_cell_ratio']:.1f}%",
        f"radar returns per object (5 key sweeps): {stats['radar_returns_hist']}, "
        f"{100 * stats['share_objects_0_5_returns']:.0f}% have 0-5, "
        f"mean {stats['mean_returns_per_object']:.2f}",
        f"false positives (key radar points in no box): {100 * stats['fp_share']:.1f}% "
        f"(bounds {100 * FP_SHARE_BOUNDS[0]:.0f}-{100 * FP_SHARE_BOUNDS[1]:.0f}%)",
        f"classes: {stats['class_counts']}",
    ]
    bad = check_stats(stats)
    lines.append("checks: " + ("all hold" if not bad else "; ".join(bad)))
    return "\n".join(lines)
