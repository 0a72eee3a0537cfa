"""nuScenes-format dataset -> rosbag2 (mcap or sqlite3), written with rosbags.

    python -m radardistill_ros.tools.nuscenes_to_bag --dataroot D --version V \\
        [--split S | --scenes NAME ...] --out BAG [--storage mcap|sqlite3] [--with-lidar]

Works for real nuScenes (trainval / mini / test) and the synthetic world (custom splits from
``<dataroot>/<version>/splits.json``). Every message's bag timestamp is its data timestamp and
equals its header stamp. Topics (types from the Jazzy typestore of
:func:`radardistill_ros.interfaces.jazzy_typestore`):

==============================  ===============================  =====================================
topic                           type                             content
==============================  ===============================  =====================================
/radar/front/points, ...        sensor_msgs/msg/PointCloud2      every radar sample_data (key frames and
(front, front_left,                                              sweeps); the .pcd records unchanged:
front_right, back_left,                                          18 nuScenes fields, packed, point_step
back_right)                                                      43, all points (no devkit filters);
                                                                 frame_id = channel, e.g. RADAR_FRONT
/lidar/top/points (--with-lidar) sensor_msgs/msg/PointCloud2      LIDAR_TOP: x y z intensity ring float32
/tf                             tf2_msgs/msg/TFMessage           ``<world> -> base_link`` ego pose at each
                                                                 radar / LIDAR_TOP sample_data time
/tf_static                      tf2_msgs/msg/TFMessage           base_link -> each radar and LIDAR_TOP
                                                                 (calibrated_sensor), once per scene at
                                                                 its start; offered QoS transient local
/odom (unless --no-odom)        nav_msgs/msg/Odometry            ego pose in <world>, twist in base_link
                                                                 (central finite differences of poses)
/ground_truth/detections        vision_msgs/msg/Detection3DArray  at each key frame, frame base_link at
                                                                 the key-frame time: class_id = detection
                                                                 class (car, ...), score 1, bbox centre /
                                                                 size (x = length, y = width, z = height),
                                                                 id = instance token
==============================  ===============================  =====================================

``<world>`` is ``map`` by default (``--world-frame``): the nuScenes global frame of the log.
Annotations whose category is not one of the 10 detection classes are not written. The global ->
ego box conversion is :func:`radardistill_ros.geometry.global_boxes_to_ego` (the project's one
conversion). Ground-truth velocity has no field in vision_msgs and is not written.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radardistill_ros.conventions import CATEGORY_TO_CLASS, EGO_FRAME, LIDAR_CHANNEL, RADAR_CHANNELS
from radardistill_ros.detection_cdr import detection3d_array_cdr
from radardistill_ros.geometry import global_boxes_to_ego, quat_from_yaw, quat_to_rot, rot_to_quat
from radardistill_ros.pointcloud import make_pointcloud2_msg, read_pcd
from radardistill_ros.tools.bag_io import BagWriter

__all__ = [
    "GT_TOPIC",
    "LIDAR_DTYPE",
    "LIDAR_TOPIC",
    "ODOM_TOPIC",
    "TF_STATIC_TOPIC",
    "TF_TOPIC",
    "ConversionResult",
    "convert",
    "main",
    "radar_topic",
    "read_lidar_bin",
    "select_scenes",
]

TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
ODOM_TOPIC = "/odom"
LIDAR_TOPIC = "/lidar/top/points"
GT_TOPIC = "/ground_truth/detections"
#: nuScenes LIDAR_TOP .pcd.bin record (float32 x 5).
LIDAR_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"), ("ring", "<f4")])

PC2 = "sensor_msgs/msg/PointCloud2"
TFM = "tf2_msgs/msg/TFMessage"
ODOM = "nav_msgs/msg/Odometry"
DET3D_ARRAY = "vision_msgs/msg/Detection3DArray"

# write order of messages that share a timestamp: transforms before the data that needs them
_PRIO_STATIC, _PRIO_TF, _PRIO_ODOM, _PRIO_DATA, _PRIO_GT = range(5)


def radar_topic(channel: str) -> str:
    """Topic of a radar channel: ``RADAR_FRONT_LEFT`` -> ``/radar/front_left/points``."""
    return f"/radar/{channel.removeprefix('RADAR_').lower()}/points"


def read_lidar_bin(path: str | Path) -> np.ndarray:
    """A nuScenes LIDAR_TOP .pcd.bin as a structured array of :data:`LIDAR_DTYPE`."""
    raw = np.fromfile(path, dtype="<f4")
    n = raw.size // 5
    return raw[: n * 5].view(LIDAR_DTYPE).copy()


def select_scenes(nusc: Any, split: str | None = None, scenes: Sequence[str] | None = None) -> list[dict]:
    """Scene records of a split (predefined or from splits.json), of the given names, or all.

    Raises ``ValueError`` naming scene names the dataset does not have.
    """
    by_name = {s["name"]: s for s in nusc.scene}
    if split is not None and scenes:
        raise ValueError("give either a split or scene names, not both")
    if split is not None:
        from nuscenes.utils.splits import get_scenes_of_split

        names = list(get_scenes_of_split(split, nusc))
        names = [n for n in names if n in by_name]  # a predefined split lists scenes of all versions
        if not names:
            raise ValueError(f"split {split!r} has no scene of {nusc.version} in {nusc.dataroot}")
    elif scenes:
        names = list(scenes)
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"scene(s) {missing} not in {nusc.version}; available: {sorted(by_name)[:20]}")
    else:
        names = [s["name"] for s in nusc.scene]
    return [by_name[n] for n in names]


@dataclass
class ConversionResult:
    """What :func:`convert` wrote: message counts per topic, scenes, wall time [s]."""

    counts: dict[str, int] = field(default_factory=dict)
    scenes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class _Msgs:
    """Builders of rosbags message objects from nuScenes records."""

    def __init__(self, store: Any, world_frame: str) -> None:
        t = store.types
        self.t = t
        self.world = world_frame
        self.pc2, self.pfield = t[PC2], t["sensor_msgs/msg/PointField"]

    def header(self, stamp_ns: int, frame_id: str) -> Any:
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return self.t["std_msgs/msg/Header"](self.t["builtin_interfaces/msg/Time"](sec, nsec), frame_id)

    def vec3(self, v: Sequence[float]) -> Any:
        return self.t["geometry_msgs/msg/Vector3"](float(v[0]), float(v[1]), float(v[2]))

    def quat_wxyz(self, q: Sequence[float]) -> Any:
        """geometry_msgs/Quaternion (x, y, z, w fields) from a nuScenes [w, x, y, z] quaternion."""
        return self.t["geometry_msgs/msg/Quaternion"](float(q[1]), float(q[2]), float(q[3]), float(q[0]))

    def pose(self, xyz: Sequence[float], q_wxyz: Sequence[float]) -> Any:
        p = self.t["geometry_msgs/msg/Point"](float(xyz[0]), float(xyz[1]), float(xyz[2]))
        return self.t["geometry_msgs/msg/Pose"](p, self.quat_wxyz(q_wxyz))

    def transform(self, stamp_ns: int, parent: str, child: str, xyz: Sequence[float],
                  q_wxyz: Sequence[float]) -> Any:
        tf = self.t["geometry_msgs/msg/Transform"](self.vec3(xyz), self.quat_wxyz(q_wxyz))
        return self.t["geometry_msgs/msg/TransformStamped"](self.header(stamp_ns, parent), child, tf)

    def tf_message(self, transforms: list[Any]) -> Any:
        return self.t[TFM](transforms)

    def cloud(self, arr: np.ndarray, stamp_ns: int, frame_id: str) -> Any:
        return make_pointcloud2_msg(arr, stamp_ns, frame_id, self.pc2, self.pfield)

    def odometry(self, stamp_ns: int, pose: dict, lin_body: np.ndarray, ang_body: np.ndarray) -> Any:
        t = self.t
        cov = np.zeros(36, np.float64)
        pwc = t["geometry_msgs/msg/PoseWithCovariance"](self.pose(pose["translation"], pose["rotation"]), cov)
        twist = t["geometry_msgs/msg/Twist"](self.vec3(lin_body), self.vec3(ang_body))
        twc = t["geometry_msgs/msg/TwistWithCovariance"](twist, cov.copy())
        return t[ODOM](self.header(stamp_ns, self.world), EGO_FRAME, pwc, twc)


def _body_twist(poses: list[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Ego linear [m/s] and angular [rad/s] velocity in base_link by central differences."""
    n = len(poses)
    out = []
    ts = [p["timestamp"] * 1e-6 for p in poses]
    rots = [quat_to_rot(p["rotation"]) for p in poses]
    for i in range(n):
        a, b = max(i - 1, 0), min(i + 1, n - 1)
        dt = ts[b] - ts[a]
        if n < 2 or dt <= 0:
            out.append((np.zeros(3), np.zeros(3)))
            continue
        v_world = (np.asarray(poses[b]["translation"]) - np.asarray(poses[a]["translation"])) / dt
        q = rot_to_quat(rots[a].T @ rots[b])  # relative rotation in the body frame, w >= 0
        s = float(np.linalg.norm(q[1:]))
        angle = 2.0 * math.atan2(s, float(q[0]))
        omega = (q[1:] / s) * angle / dt if s > 1e-12 else np.zeros(3)
        out.append((rots[i].T @ v_world, omega))
    return out


def _scene_events(nusc: Any, scene: dict, channels: Sequence[str], with_lidar: bool,
                  with_odom: bool, sd_by_sample: dict[str, list[dict]]) -> list[tuple]:
    """Time-ordered ``(stamp_ns, priority, seq, kind, payload)`` of one scene."""
    samples = []
    tok = scene["first_sample_token"]
    while tok:
        s = nusc.get("sample", tok)
        samples.append(s)
        tok = s["next"]
    wanted = set(channels) | {LIDAR_CHANNEL}
    sds = [sd for s in samples for sd in sd_by_sample.get(s["token"], ()) if sd["channel"] in wanted]
    events: list[tuple] = []
    # ego poses of every radar / LIDAR_TOP sample_data: /tf (and /odom)
    pose_tokens = sorted({sd["ego_pose_token"] for sd in sds},
                         key=lambda t: nusc.get("ego_pose", t)["timestamp"])
    poses = [nusc.get("ego_pose", t) for t in pose_tokens]
    twists = _body_twist(poses) if with_odom else []
    for i, pose in enumerate(poses):
        stamp = pose["timestamp"] * 1000
        events.append((stamp, _PRIO_TF, i, "tf", pose))
        if with_odom:
            events.append((stamp, _PRIO_ODOM, i, "odom", (pose, *twists[i])))
    for sd in sds:
        if sd["channel"] in channels or (with_lidar and sd["channel"] == LIDAR_CHANNEL):
            events.append((sd["timestamp"] * 1000, _PRIO_DATA, 0, "cloud", sd))
    for s in samples:
        events.append((s["timestamp"] * 1000, _PRIO_GT, 0, "gt", s))
    # static calibration of each sensor (first record of the channel in the scene)
    calib: dict[str, dict] = {}
    for sd in sorted(sds, key=lambda r: r["timestamp"]):
        calib.setdefault(sd["channel"], nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))
    start = min(e[0] for e in events) if events else samples[0]["timestamp"] * 1000
    events.append((start, _PRIO_STATIC, 0, "tf_static", calib))
    events.sort(key=lambda e: e[:3])
    return events


def convert(nusc: Any, scenes: Sequence[dict], out: str | Path, *, storage: str = "mcap",
            with_lidar: bool = False, with_odom: bool = True, world_frame: str = "map",
            channels: Sequence[str] = RADAR_CHANNELS, show_progress: bool = True) -> ConversionResult:
    """Write ``scenes`` of a loaded ``nuscenes.NuScenes`` to a new rosbag2 at ``out``.

    Scenes are written one after another, each in time order; scenes that overlap in time are
    reported on stderr (a reader sorts by timestamp and would interleave them).
    """
    from tqdm import tqdm

    t_start = time.perf_counter()
    writer = BagWriter(out, storage=storage)
    build = _Msgs(writer.typestore, world_frame)
    dataroot = Path(nusc.dataroot)
    sd_by_sample: dict[str, list[dict]] = defaultdict(list)
    for sd in nusc.sample_data:
        sd_by_sample[sd["sample_token"]].append(sd)
    result = ConversionResult()
    last_end = None
    with writer:
        for scene in scenes:
            events = _scene_events(nusc, scene, channels, with_lidar, with_odom, sd_by_sample)
            if last_end is not None and events and events[0][0] <= last_end:
                print(f"nuscenes_to_bag: scene {scene['name']} starts before the previous scene ends; "
                      "their messages interleave in bag time", file=sys.stderr)
            last_end = events[-1][0] if events else last_end
            bar = tqdm(events, desc=scene["name"], unit="msg", disable=not show_progress, leave=False)
            for stamp, _, _, kind, payload in bar:
                _write_event(writer, build, nusc, dataroot, stamp, kind, payload)
            result.scenes.append(scene["name"])
    result.counts = dict(writer.counts)
    result.seconds = time.perf_counter() - t_start
    return result


def _write_event(writer: BagWriter, build: _Msgs, nusc: Any, dataroot: Path, stamp: int, kind: str,
                 payload: Any) -> None:
    if kind == "tf":
        tf = build.transform(stamp, build.world, EGO_FRAME, payload["translation"], payload["rotation"])
        writer.write(TF_TOPIC, TFM, stamp, build.tf_message([tf]))
    elif kind == "odom":
        pose, lin, ang = payload
        writer.write(ODOM_TOPIC, ODOM, stamp, build.odometry(stamp, pose, lin, ang))
    elif kind == "tf_static":
        tfs = [build.transform(stamp, EGO_FRAME, ch, cs["translation"], cs["rotation"])
               for ch, cs in sorted(payload.items())]
        writer.write(TF_STATIC_TOPIC, TFM, stamp, build.tf_message(tfs))
    elif kind == "cloud":
        channel = payload["channel"]
        path = dataroot / payload["filename"]
        if channel == LIDAR_CHANNEL:
            writer.write(LIDAR_TOPIC, PC2, stamp, build.cloud(read_lidar_bin(path), stamp, channel))
        else:
            writer.write(radar_topic(channel), PC2, stamp, build.cloud(read_pcd(path), stamp, channel))
    elif kind == "gt":
        writer.write_raw(GT_TOPIC, DET3D_ARRAY, stamp, _ground_truth(nusc, payload, stamp))
    else:  # pragma: no cover - events are built above
        raise AssertionError(kind)


def _ground_truth(nusc: Any, sample: dict, stamp: int) -> bytes:
    """Detection3DArray (CDR bytes) of a key frame's annotations in base_link at the key-frame
    time: class_id = the detection class, score 1, id = the instance token."""
    ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])["ego_pose_token"])
    anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
    anns = [a for a in anns if a["category_name"] in CATEGORY_TO_CLASS]
    if anns:
        boxes = global_boxes_to_ego(
            np.array([a["translation"] for a in anns]), np.array([a["size"] for a in anns]),
            np.array([a["rotation"] for a in anns]), np.zeros((len(anns), 2)),
            np.asarray(ego["translation"]), np.asarray(ego["rotation"]))
    else:
        boxes = np.zeros((0, 9))
    return detection3d_array_cdr(stamp, EGO_FRAME, boxes[:, 0:3], quat_from_yaw(boxes[:, 6])[:, [1, 2, 3, 0]],
                                 boxes[:, 3:6], np.ones(len(anns)),
                                 [CATEGORY_TO_CLASS[a["category_name"]] for a in anns],
                                 [a["instance_token"] for a in anns])


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m radardistill_ros.tools.nuscenes_to_bag",
                                 description="nuScenes-format dataset -> rosbag2 (radar, TF, odometry, GT)")
    ap.add_argument("--dataroot", required=True, help="dataset root (holds <version>/, samples/, sweeps/)")
    ap.add_argument("--version", required=True, help="e.g. v1.0-mini, v1.0-trainval, v1.0-synth")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--split", help="predefined split or a name from <version>/splits.json")
    sel.add_argument("--scenes", nargs="+", metavar="NAME", help="scene names (default: all scenes)")
    ap.add_argument("--out", required=True, help="output bag directory (must not exist)")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--with-lidar", action="store_true", help="also write LIDAR_TOP on " + LIDAR_TOPIC)
    ap.add_argument("--no-odom", action="store_true", help="do not write " + ODOM_TOPIC)
    ap.add_argument("--world-frame", default="map", help="parent frame of base_link on /tf (default map)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)

    out = Path(args.out)
    if out.exists():
        print(f"error: {out} exists; choose a new directory", file=sys.stderr)
        return 2
    from nuscenes.nuscenes import NuScenes

    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    try:
        scenes = select_scenes(nusc, args.split, args.scenes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = convert(nusc, scenes, out, storage=args.storage, with_lidar=args.with_lidar,
                  with_odom=not args.no_odom, world_frame=args.world_frame,
                  show_progress=not args.no_progress)
    print(f"wrote {out} ({args.storage}): {len(res.scenes)} scene(s) in {res.seconds:.1f} s")
    for topic, n in sorted(res.counts.items()):
        print(f"  {topic:32s} {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
