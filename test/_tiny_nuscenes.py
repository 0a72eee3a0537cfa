"""A tiny hand-made nuScenes-format dataset (1 scene, 3 key frames) with hand-checkable values.

Ego drives along global +x at 10 m/s with identity rotation: ego pose at t = (10 t, 0, 0).
LIDAR_TOP at ego (0, 0, 1.8), sweeps at t = 0, 0.25, ..., 1.0 s, one point (1, 0, 0) intensity 7.
Radars sweep at t = 0.02 + 0.25 k; key frames at 0.02, 0.52, 1.02. RADAR_FRONT_LEFT sits at ego
(1, 0, 0.5) yawed +90 deg with one point (2, 0, 0), rcs 7, vx_comp 3 (moving away from the radar);
the other radars carry one static point each. Key frames at t = 0, 0.5, 1.0 s. Annotations
(see ``ANNOTATIONS``) include a moving car, a single-frame pedestrian (no velocity), a zero-point
pedestrian, an animal and a far car.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from radardistill_ros.conventions import NUSCENES_RADAR_FIELDS, RADAR_CHANNELS
from radardistill_ros.geometry import quat_from_yaw

VERSION = "v1.0-tiny"
SPLIT = "tiny_val"
T0 = 1_600_000_000_000_000  # µs
SPEED = 10.0
RADAR_MOUNTS = {  # channel -> (translation, yaw)
    "RADAR_FRONT": ((3.6, 0.0, 0.5), 0.0),
    "RADAR_FRONT_LEFT": ((1.0, 0.0, 0.5), np.pi / 2),
    "RADAR_FRONT_RIGHT": ((3.4, -0.8, 0.5), -np.pi / 2),
    "RADAR_BACK_LEFT": ((-1.0, 0.8, 0.5), np.pi),
    "RADAR_BACK_RIGHT": ((-1.0, -0.8, 0.5), np.pi),
}
# (instance, sample index, category, translation, size wlh, yaw, lidar pts, radar pts, attribute)
ANNOTATIONS = [
    ("car0", 0, "vehicle.car", (20.0, -5.0, 1.0), (2.0, 4.5, 1.7), np.pi / 2, 5, 2, "vehicle.moving"),
    ("car0", 1, "vehicle.car", (20.0, -2.5, 1.0), (2.0, 4.5, 1.7), np.pi / 2, 5, 2, "vehicle.moving"),
    ("car0", 2, "vehicle.car", (20.0, 0.0, 1.0), (2.0, 4.5, 1.7), np.pi / 2, 5, 2, "vehicle.moving"),
    ("ped0", 1, "human.pedestrian.adult", (10.0, 10.0, 0.9), (0.7, 0.7, 1.8), 0.3, 3, 0,
     "pedestrian.standing"),
    ("ped1", 1, "human.pedestrian.adult", (12.0, 12.0, 0.9), (0.7, 0.7, 1.8), 0.0, 0, 0, ""),
    ("dog0", 1, "animal", (8.0, 3.0, 0.3), (0.3, 0.8, 0.5), 0.0, 4, 0, ""),
    ("car1", 1, "vehicle.car", (200.0, 0.0, 1.0), (2.0, 4.5, 1.7), 0.0, 5, 0, "vehicle.parked"),
]
CATEGORIES = ["vehicle.car", "human.pedestrian.adult", "animal"]
ATTRIBUTES = ["vehicle.moving", "vehicle.parked", "pedestrian.standing"]


def write_radar_pcd(path: Path, points: np.ndarray) -> None:
    """Binary nuScenes radar .pcd: 11-line header, packed 43-byte records, one trailing byte."""
    names = [n for n, _ in NUSCENES_RADAR_FIELDS]
    sizes = [np.dtype(t).itemsize for _, t in NUSCENES_RADAR_FIELDS]
    types = ["F" if np.dtype(t).kind == "f" else "I" for _, t in NUSCENES_RADAR_FIELDS]
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7", "FIELDS " + " ".join(names),
        "SIZE " + " ".join(map(str, sizes)), "TYPE " + " ".join(types), "COUNT " + " ".join(["1"] * 18),
        f"WIDTH {len(points)}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {len(points)}", "DATA binary",
    ]) + "\n"
    path.write_bytes(header.encode() + points.tobytes() + b"\0")


def build(root: Path) -> Path:
    """Write the dataset under ``root``; returns ``root``."""
    from PIL import Image

    tables: dict[str, list] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map")}
    tables["category"] = [{"token": f"cat-{c}", "name": c, "description": ""} for c in CATEGORIES]
    tables["attribute"] = [{"token": f"attr-{a}", "name": a, "description": ""} for a in ATTRIBUTES]
    (root / "maps").mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "maps" / "map0.png")
    tables["map"] = [{"token": "map0", "log_tokens": ["log0"], "category": "semantic_prior",
                      "filename": "maps/map0.png"}]
    tables["log"] = [{"token": "log0", "logfile": "", "vehicle": "tiny", "date_captured": "2020-01-01",
                      "location": "tiny"}]
    sample_times = [0.0, 0.5, 1.0]
    tables["sample"] = [{"token": f"s{i}", "timestamp": T0 + int(t * 1e6), "scene_token": "scene0",
                         "prev": f"s{i - 1}" if i else "", "next": f"s{i + 1}" if i < 2 else ""}
                        for i, t in enumerate(sample_times)]
    tables["scene"] = [{"token": "scene0", "log_token": "log0", "nbr_samples": 3, "first_sample_token": "s0",
                        "last_sample_token": "s2", "name": "tiny-0000", "description": ""}]
    mounts = {"LIDAR_TOP": ((0.0, 0.0, 1.8), 0.0), **RADAR_MOUNTS}
    for ch, (t, yaw) in mounts.items():
        tables["sensor"].append({"token": f"sensor-{ch}", "channel": ch,
                                 "modality": "lidar" if ch == "LIDAR_TOP" else "radar"})
        tables["calibrated_sensor"].append({"token": f"cs-{ch}", "sensor_token": f"sensor-{ch}",
                                            "translation": list(t), "rotation": quat_from_yaw(yaw).tolist(),
                                            "camera_intrinsic": []})
    dtype = np.dtype(list(NUSCENES_RADAR_FIELDS))
    for ch, offset in [("LIDAR_TOP", 0.0)] + [(c, 0.02) for c in RADAR_CHANNELS]:
        (root / "sweeps" / ch).mkdir(parents=True)
        for k in range(5):
            t = offset + 0.25 * k
            tok = f"sd-{ch}-{k}"
            tables["ego_pose"].append({"token": f"ep-{tok}", "timestamp": T0 + round(t * 1e6),
                                       "translation": [SPEED * t, 0.0, 0.0],
                                       "rotation": [1.0, 0.0, 0.0, 0.0]})
            if ch == "LIDAR_TOP":
                fname = f"sweeps/{ch}/{k}.pcd.bin"
                np.array([[1.0, 0.0, 0.0, 7.0, 0.0]], np.float32).tofile(root / fname)
            else:
                fname = f"sweeps/{ch}/{k}.pcd"
                rec = np.zeros(1, dtype)
                rec["x"], rec["rcs"], rec["invalid_state"], rec["dyn_prop"] = 2.0, 7.0, 5, 7  # "invalid"
                rec["vx_comp"] = 3.0 if ch == "RADAR_FRONT_LEFT" else 0.0
                write_radar_pcd(root / fname, rec)
            tables["sample_data"].append({
                "token": tok, "sample_token": f"s{k // 2}" if k % 2 == 0 else f"s{min(k // 2 + 1, 2)}",
                "ego_pose_token": f"ep-{tok}", "calibrated_sensor_token": f"cs-{ch}",
                "timestamp": T0 + round(t * 1e6), "fileformat": "pcd", "is_key_frame": k % 2 == 0,
                "height": 0, "width": 0, "filename": fname,
                "prev": f"sd-{ch}-{k - 1}" if k else "", "next": f"sd-{ch}-{k + 1}" if k < 4 else ""})
    by_instance: dict[str, list[int]] = {}
    for i, a in enumerate(ANNOTATIONS):
        by_instance.setdefault(a[0], []).append(i)
    for inst, idx in by_instance.items():
        cat = ANNOTATIONS[idx[0]][2]
        tables["instance"].append({"token": inst, "category_token": f"cat-{cat}", "nbr_annotations": len(idx),
                                   "first_annotation_token": f"ann{idx[0]}",
                                   "last_annotation_token": f"ann{idx[-1]}"})
        for j, i in enumerate(idx):
            _, s, _, t, size, yaw, nl, nr, attr = ANNOTATIONS[i]
            tables["sample_annotation"].append({
                "token": f"ann{i}", "sample_token": f"s{s}", "instance_token": inst, "visibility_token": "",
                "attribute_tokens": [f"attr-{attr}"] if attr else [], "translation": list(t),
                "size": list(size), "rotation": quat_from_yaw(yaw).tolist(), "num_lidar_pts": nl,
                "num_radar_pts": nr, "prev": f"ann{idx[j - 1]}" if j else "",
                "next": f"ann{idx[j + 1]}" if j + 1 < len(idx) else ""})
    vdir = root / VERSION
    vdir.mkdir()
    for name, rows in tables.items():
        (vdir / f"{name}.json").write_text(json.dumps(rows))
    (vdir / "splits.json").write_text(json.dumps({SPLIT: ["tiny-0000"]}))
    return root
