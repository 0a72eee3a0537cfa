"""Replay a bag into a running detector node and measure what comes back: answers, latency, mAP.

    python -m radardistill_ros.tools.replay_evaluate BAG --dataroot D --version V [--rate R] [--out DIR]
        [--launch-node] [--params-file config/detector.yaml] [--model-path P] [--backend B]
        [--checkpoint-path C] [--offline] [--keyframe-offline] [--loopback]

1. Replays the bag (:class:`radardistill_ros.tools.replay.Replayer`, raw CDR bytes, original
   timing x ``--rate``) from this process; the node runs in another process (already running, or
   started here with ``--launch-node`` as ``python -m radardistill_ros.node --ros-args
   --params-file ...``, exactly what ``ros2 launch`` runs).
2. Records every ``detections`` (vision_msgs/Detection3DArray) and ``detections/velocities``
   message with its receive time, and the node's ``/diagnostics`` counters.
3. Prints trigger frames sent / answered / dropped (not answered) and the end-to-end latency
   p50/p95/p99: ``time.time()`` right after publishing the triggering radar message -> receive
   time of the Detection3DArray with the same header stamp, both in this process, over DDS.
4. With ``--dataroot``: scores the online detections with the official ``DetectionEval``. Key
   frame <-> trigger: each sample's key-frame sweep of the trigger radar
   (``sample["data"][RADAR_FRONT]`` for the default trigger) is a trigger message of the bag, so
   every key frame has exactly one trigger of its own (no nearest-neighbour guessing). The node's
   reference time is that sweep's stamp, the offline evaluation's the key frame (LIDAR_TOP)
   stamp, up to half a radar period (38 ms) apart: boxes are converted to the global frame with
   the ego pose at the trigger stamp and moved by their velocity to the key-frame time
   (``--no-time-align`` to skip). Key frames without an answer count as empty.
5. ``--offline``: the same key frames through the offline path -- the dataset (nuscenes-devkit
   .pcd reader), :class:`radardistill_ros.sweeps.SweepAccumulator` at the trigger stamp with the
   node's sweep selection, :class:`radardistill_ros.pipeline.RadarDetector` with the node's
   parameters -- and reports the largest online/offline box difference and both mAPs (serving
   equals offline when they agree). ``--keyframe-offline`` also scores the checkpoint with
   ``training.evaluate`` on the same key frames (reference time = the LiDAR key frame).

Writes ``replay_eval.json`` (and the devkit's metric files) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from radardistill_ros.conventions import CLASS_NAMES, RADAR_CHANNELS
from radardistill_ros.tools.replay import PublishRecord, Replayer

__all__ = [
    "DetectionRecorder",
    "ReceivedFrame",
    "align_boxes",
    "box_difference",
    "latency_stats",
    "load_node_params",
    "main",
    "offline_trigger_detections",
    "parse_detections",
    "start_node",
    "stop_process",
    "trigger_inputs",
]

GT_TOPIC = "/ground_truth/detections"


# ------------------------------------------------------------------------------------ parameters
def load_node_params(params_file: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The node's parameters from a ``ros__parameters`` YAML (``/**`` or the node's name), with
    ``overrides`` applied (what ``-p name:=value`` does)."""
    data = yaml.safe_load(Path(params_file).read_text()) or {}
    params: dict[str, Any] = {}
    for key in ("/**", "radardistill_detector", "/radardistill_detector"):
        params.update((data.get(key) or {}).get("ros__parameters", {}))
    params.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return params


def _channel_of_topic(topic: str) -> str | None:
    from radardistill_ros.tools.nuscenes_to_bag import radar_topic

    return next((c for c in RADAR_CHANNELS if radar_topic(c) == topic), None)


# ------------------------------------------------------------------------------------ messages
def parse_detections(det_msg: Any, vel_msg: Any | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Detection3DArray (+ its velocities cloud) -> boxes ``(K, 9)`` float64 x y z l w h yaw vx vy,
    scores ``(K,)``, labels ``(K,)`` (indices into ``CLASS_NAMES``). Yaw from the bbox quaternion
    (rotation about z); velocities 0 when ``vel_msg`` is None."""
    from radardistill_ros.pointcloud import decode_pointcloud2

    k = len(det_msg.detections)
    boxes = np.zeros((k, 9))
    scores = np.zeros(k)
    labels = np.zeros(k, np.int64)
    for i, d in enumerate(det_msg.detections):
        c, s, q = d.bbox.center.position, d.bbox.size, d.bbox.center.orientation
        yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
        boxes[i, :7] = (c.x, c.y, c.z, s.x, s.y, s.z, yaw)
        hyp = d.results[0].hypothesis
        scores[i] = hyp.score
        labels[i] = CLASS_NAMES.index(hyp.class_id)
    if vel_msg is not None:
        vel = decode_pointcloud2(vel_msg, required=("vx", "vy"))
        if len(vel) != k:
            raise ValueError(f"velocities cloud has {len(vel)} points for {k} detections")
        boxes[:, 7], boxes[:, 8] = vel["vx"], vel["vy"]
    return boxes, scores, labels


@dataclass
class ReceivedFrame:
    """Detections received for one stamp: receive time (``time.time()`` [s]) and raw messages."""

    stamp_ns: int
    receive_s: float
    raw: bytes
    vel_raw: bytes | None = None


@dataclass
class DetectionRecorder:
    """Subscribes to the node's outputs in this process and keeps them with their receive times.

    Callbacks only store the serialised bytes (raw subscriptions) and the time, so recording
    adds no parsing delay to the latency measurement; :meth:`frames` deserialises afterwards.
    """

    node: Any
    detections_topic: str = "/detections"
    frames_by_stamp: dict[int, ReceivedFrame] = field(default_factory=dict)
    diagnostics: list[tuple[float, Any]] = field(default_factory=list)
    duplicates: int = 0

    def __post_init__(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import PointCloud2
        from vision_msgs.msg import Detection3DArray

        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self._lock = threading.Lock()
        self._vel_pending: dict[int, bytes] = {}
        self.sub_det = self.node.create_subscription(Detection3DArray, self.detections_topic, self._on_det,
                                                     qos, raw=True)
        self.node.create_subscription(PointCloud2, self.detections_topic + "/velocities", self._on_vel, qos,
                                      raw=True)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)

    def _on_det(self, raw: bytes) -> None:
        from radardistill_ros.tools.replay import header_stamp_ns

        t = time.time()
        stamp = header_stamp_ns(raw)
        with self._lock:
            if stamp in self.frames_by_stamp:
                self.duplicates += 1
            self.frames_by_stamp[stamp] = ReceivedFrame(stamp, t, raw, self._vel_pending.pop(stamp, None))

    def _on_vel(self, raw: bytes) -> None:
        from radardistill_ros.tools.replay import header_stamp_ns

        stamp = header_stamp_ns(raw)
        with self._lock:
            frame = self.frames_by_stamp.get(stamp)
            if frame is not None:
                frame.vel_raw = raw
            else:
                self._vel_pending[stamp] = raw

    def _on_diag(self, msg: Any) -> None:
        for st in msg.status:
            if st.name.endswith(": detector"):
                with self._lock:
                    self.diagnostics.append((time.time(), st))

    def publisher_count(self) -> int:
        """Publishers matched on the detections topic (the node is up when >= 1)."""
        return self.node.count_publishers(self.detections_topic)

    def latest_counters(self) -> dict[str, str]:
        """KeyValues of the newest diagnostics status of the node ({} if none yet)."""
        with self._lock:
            if not self.diagnostics:
                return {}
            return {kv.key: kv.value for kv in self.diagnostics[-1][1].values}

    def parsed(self) -> dict[int, tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
        """``{stamp_ns: (receive_s, boxes, scores, labels)}`` of every received frame."""
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import PointCloud2
        from vision_msgs.msg import Detection3DArray

        with self._lock:
            frames = list(self.frames_by_stamp.values())
        out = {}
        for f in frames:
            det = deserialize_message(f.raw, Detection3DArray)
            vel = deserialize_message(f.vel_raw, PointCloud2) if f.vel_raw is not None else None
            out[f.stamp_ns] = (f.receive_s, *parse_detections(det, vel))
        return out


# ------------------------------------------------------------------------------------ processes
def start_node(params_file: str | Path, overrides: dict[str, Any], log_path: str | Path,
               env: dict[str, str] | None = None, namespace: str | None = None) -> subprocess.Popen:
    """Start the node as its own process, as ``ros2 launch`` would: ``python -m
    radardistill_ros.node --ros-args --params-file F [-r __ns:=NS] [-p name:=value ...]``."""
    cmd = [sys.executable, "-m", "radardistill_ros.node", "--ros-args", "--params-file", str(params_file)]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for k, v in overrides.items():
        if v is not None:
            cmd += ["-p", f"{k}:={v}"]
    log = open(log_path, "wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=Path(__file__).resolve().parents[2])


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGINT (clean rclpy shutdown), then SIGKILL after ``timeout``; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5.0)
    return proc.returncode


# ------------------------------------------------------------------------------------ statistics
def latency_stats(values_ms: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p95, p99, max of latencies [ms]."""
    v = np.asarray(values_ms, float)
    if not len(v):
        return {"count": 0}
    return {"count": len(v), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def box_difference(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> float:
    """Largest absolute difference between two detection sets (boxes with wrapped yaw, scores);
    ``inf`` when their sizes or labels differ."""
    (ba, sa, la), (bb, sb, lb) = (tuple(np.asarray(x) for x in a[:3]), tuple(np.asarray(x) for x in b[:3]))
    if ba.shape != bb.shape or not np.array_equal(la, lb):
        return math.inf
    if not len(ba):
        return 0.0
    d = np.abs(ba.astype(float) - bb.astype(float))
    dyaw = np.abs(np.arctan2(np.sin(ba[:, 6] - bb[:, 6]), np.cos(ba[:, 6] - bb[:, 6])))
    d[:, 6] = dyaw
    return float(max(d.max(), np.abs(sa.astype(float) - sb.astype(float)).max()))


def align_boxes(boxes: np.ndarray, dt: float) -> np.ndarray:
    """Boxes (ego frame) moved by their velocity over ``dt`` [s] (to the key-frame time)."""
    out = np.array(boxes, dtype=float, copy=True)
    out[:, 0] += out[:, 7] * dt
    out[:, 1] += out[:, 8] * dt
    return out


# ------------------------------------------------------------------------------------ offline
def _radar_sweep(nusc: Any, sd: dict) -> Any:
    """One radar sample_data as a :class:`radardistill_ros.sweeps.Sweep` (devkit reader, every
    state kept, as ``training.nuscenes_data`` reads it)."""
    from nuscenes.utils.data_classes import RadarPointCloud

    from radardistill_ros.geometry import transform_from_pose
    from radardistill_ros.sweeps import Sweep, radar_features

    states = frozenset(range(-128, 256))
    pc = RadarPointCloud.from_file(os.path.join(nusc.dataroot, sd["filename"]), invalid_states=states,
                                   dynprop_states=states, ambig_states=states)
    cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
    pose = nusc.get("ego_pose", sd["ego_pose_token"])
    return Sweep(radar_features(pc.points), sd["timestamp"] * 1e-6,
                 transform_from_pose(cs["translation"], cs["rotation"]),
                 transform_from_pose(pose["translation"], pose["rotation"]), sd["channel"])


def trigger_inputs(nusc: Any, trigger_sd_token: str, num_sweeps: int, max_age: float,
                   channels: Sequence[str] = RADAR_CHANNELS) -> tuple[np.ndarray, np.ndarray]:
    """Offline network input at a trigger sweep: ``(points (N, 6), T_global_from_ref)``.

    Reference time and pose: the trigger sample_data's timestamp and ego pose. Per channel: the
    newest ``num_sweeps`` sweeps of the scene with ``t_ref - max_age <= t <= t_ref`` (the node's
    selection, :class:`radardistill_ros.pipeline.SweepAssembler`), moved by
    :func:`radardistill_ros.sweeps.sweeps_to_ref` through a :class:`SweepAccumulator`.
    """
    from radardistill_ros.geometry import transform_from_pose
    from radardistill_ros.sweeps import SweepAccumulator

    trig = nusc.get("sample_data", trigger_sd_token)
    t_ref_us = trig["timestamp"]
    scene_token = nusc.get("sample", trig["sample_token"])["scene_token"]
    sample = nusc.get("sample", trig["sample_token"])
    acc = SweepAccumulator(num_sweeps, kind="radar")
    for ch in channels:
        if ch not in sample["data"]:
            continue
        sd = nusc.get("sample_data", sample["data"][ch])
        while sd["timestamp"] > t_ref_us and sd["prev"]:           # back to the newest <= t_ref
            sd = nusc.get("sample_data", sd["prev"])
        while sd["next"]:                                          # forward while still <= t_ref
            nxt = nusc.get("sample_data", sd["next"])
            other_scene = nusc.get("sample", nxt["sample_token"])["scene_token"] != scene_token
            if nxt["timestamp"] > t_ref_us or other_scene:
                break
            sd = nxt
        chain = []
        while sd is not None and len(chain) < num_sweeps:
            if sd["timestamp"] <= t_ref_us and (t_ref_us - sd["timestamp"]) * 1e-6 <= max_age:
                chain.append(sd)
            sd = nusc.get("sample_data", sd["prev"]) if sd["prev"] else None
        acc.extend([_radar_sweep(nusc, s) for s in reversed(chain)])
    pose = nusc.get("ego_pose", trig["ego_pose_token"])
    t_global_from_ref = transform_from_pose(pose["translation"], pose["rotation"])
    return acc.accumulate(t_global_from_ref, t_ref_us * 1e-6), t_global_from_ref


def offline_trigger_detections(nusc: Any, detector: Any, trigger_sd_tokens: Sequence[str], num_sweeps: int,
                               max_age: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``RadarDetector.detect`` on :func:`trigger_inputs` of each trigger sample_data."""
    out = []
    for tok in trigger_sd_tokens:
        points, _ = trigger_inputs(nusc, tok, num_sweeps, max_age)
        r = detector.detect(points)
        out.append((r.boxes.astype(float), r.scores.astype(float), r.labels))
    return out


def score_detections(nusc: Any, tokens: list[str], dets: list[tuple], poses: list[tuple],
                     out_dir: Path) -> dict[str, Any]:
    """Official DetectionEval of ``dets`` ((boxes, scores, labels) in the ego frame of each sample,
    ``poses`` = (translation, quaternion) ego poses) on the samples ``tokens``; the summary metrics."""
    from training.nusc_results import detections_to_results, run_detection_eval

    results = detections_to_results(tokens, dets, [p[0] for p in poses], [p[1] for p in poses])
    m = run_detection_eval(results, nusc, None, out_dir, sample_tokens=tokens)
    return {"mean_ap": m["mean_ap"], "nd_score": m["nd_score"], "mean_dist_aps": m["mean_dist_aps"],
            "tp_errors": m["tp_errors"], "num_samples": len(tokens)}


# ------------------------------------------------------------------------------------ main
@dataclass
class _Run:
    publishes: list[PublishRecord] = field(default_factory=list)


def run_replay(bag: str | Path, detections_topic: str, trigger_topic: str, rate: float, node_proc: Any,
               node_timeout: float, settle: float, reliable_sensors: bool = False, log: Any = print,
               setup: Any = None, on_start: Any = None
               ) -> tuple[list[PublishRecord], DetectionRecorder, dict[str, str]]:
    """Replay ``bag`` against the node and record its answers (rclpy initialised here).

    ``setup(node)``, if given, is called with this process's rclpy node before the replay starts
    (extra subscriptions, e.g. the node's debug topics); ``on_start()`` once the node is ready,
    right before the first message is published.
    """
    from radardistill_ros.ros_client import spun_node

    with spun_node("radardistill_replay_evaluate") as node:
        recorder = DetectionRecorder(node, detections_topic)
        replayer = Replayer(node, bag, rate=rate, reliable_sensors=reliable_sensors)
        if setup is not None:
            setup(node)
        # the node subscribes after its model loaded: wait for it on the trigger and TF topics
        wanted = [t for t in (trigger_topic, "/tf", "/tf_static") if t in replayer.publishers]
        wanted += [t for t in replayer.publishers if t.startswith("/radar/")]
        deadline = time.monotonic() + node_timeout
        while True:
            missing = [t for t in wanted if replayer.publishers[t].get_subscription_count() == 0]
            if not missing and recorder.publisher_count() > 0:
                break
            if node_proc is not None and node_proc.poll() is not None:
                raise RuntimeError(f"the node exited with status {node_proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no node after {node_timeout:.0f} s: unmatched topics {missing}, "
                                   f"detections publishers {recorder.publisher_count()}")
            time.sleep(0.1)
        time.sleep(0.5)  # let the remaining endpoints of the discovery settle
        publishes: list[PublishRecord] = []
        log(f"replaying {len(replayer.messages)} messages at rate {rate} ...")
        if on_start is not None:
            on_start()
        replayer.play(on_publish=publishes.append)
        triggers = {p.stamp_ns for p in publishes if p.topic == trigger_topic}
        deadline = time.monotonic() + settle
        last_count = -1
        while time.monotonic() < deadline:  # wait for the answers still in flight
            n = len(recorder.frames_by_stamp)
            if triggers <= set(recorder.frames_by_stamp):
                break
            if n != last_count:
                last_count, deadline = n, max(deadline, time.monotonic() + 1.0)
            time.sleep(0.1)
        t_diag = time.time()
        wait_diag = time.monotonic() + 3.0
        while time.monotonic() < wait_diag and not any(t > t_diag for t, _ in recorder.diagnostics):
            time.sleep(0.05)
        return publishes, recorder, recorder.latest_counters()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (console script ``replay_evaluate``); returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m radardistill_ros.tools.replay_evaluate",
                                 description="Replay a bag into the detector node; latency, answers and mAP")
    ap.add_argument("bag", help="rosbag2 written by nuscenes_to_bag")
    ap.add_argument("--dataroot", help="the dataset the bag was made from (for mAP)")
    ap.add_argument("--version", help="dataset version, e.g. v1.0-mini, v1.0-synth")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1 = real time)")
    ap.add_argument("--out", default="replay_eval", help="output directory (default ./replay_eval)")
    ap.add_argument("--params-file", default=str(Path(__file__).resolve().parents[2] / "config"
                                                 / "detector.yaml"),
                    help="the node's parameter file (read for the trigger topic and offline settings)")
    ap.add_argument("--model-path", help="override model_path (passed to a launched node with -p)")
    ap.add_argument("--checkpoint-path", help="override checkpoint_path")
    ap.add_argument("--backend", help="override backend")
    ap.add_argument("--namespace", default="", help="node namespace (its topics are relative)")
    ap.add_argument("--launch-node", action="store_true", help="start the node as a child process")
    ap.add_argument("--node-timeout", type=float, default=180.0, help="seconds to wait for the node")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait for late answers")
    ap.add_argument("--offline", action="store_true",
                    help="also run the offline path at the same triggers and compare boxes and mAP")
    ap.add_argument("--keyframe-offline", action="store_true",
                    help="also score the checkpoint with training.evaluate on the same key frames (reference "
                         "time = key frame, the training-time evaluation)")
    ap.add_argument("--no-time-align", action="store_true",
                    help="score boxes at the trigger time (no v*dt shift to the key-frame time)")
    ap.add_argument("--reliable-sensors", action="store_true", help="publish radar topics reliable")
    ap.add_argument("--loopback", action="store_true",
                    help="keep DDS on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, own domain)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.loopback:
        from radardistill_ros.ros_env import apply_loopback_ros_env

        apply_loopback_ros_env(out / "ros_log")
    overrides = {"model_path": args.model_path, "checkpoint_path": args.checkpoint_path,
                 "backend": args.backend}
    params = load_node_params(args.params_file, overrides)
    trigger_topic = params.get("trigger_topic", "/radar/front/points")
    ns = args.namespace.rstrip("/")
    det_topic = f"{ns}/detections" if ns else "/detections"
    proc = None
    if args.launch_node:
        proc = start_node(args.params_file, overrides, out / "node.log", namespace=ns or None)
        print(f"started the node (pid {proc.pid}); log {out / 'node.log'}")
    try:
        publishes, recorder, counters = run_replay(args.bag, det_topic, trigger_topic, args.rate, proc,
                                                      args.node_timeout, args.settle, args.reliable_sensors)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if proc is not None:
            stop_process(proc)
            print((out / "node.log").read_text()[-3000:], file=sys.stderr)
        return 1
    finally:
        if proc is not None:
            stop_process(proc)
    frames = recorder.parsed()
    sent = [p for p in publishes if p.topic == trigger_topic]
    latencies = [(frames[p.stamp_ns][0] - p.publish_s) * 1e3 for p in sent if p.stamp_ns in frames]
    report: dict[str, Any] = {
        "bag": str(args.bag), "rate": args.rate, "trigger_topic": trigger_topic,
        "frames_sent": len(sent), "frames_answered": len(latencies),
        "frames_unanswered": len(sent) - len(latencies),
        "duplicates": recorder.duplicates, "latency_ms": latency_stats(latencies), "node_counters": counters,
    }
    print(f"trigger frames sent {len(sent)}, answered {len(latencies)}, "
          f"not answered {len(sent) - len(latencies)}"
          f" (node: dropped {counters.get('dropped', '?')}, rejected {counters.get('rejected', '?')})")
    lat = report["latency_ms"]
    if lat.get("count"):
        print(f"end-to-end latency [ms]: p50 {lat['p50']:.1f}  p95 {lat['p95']:.1f}  p99 {lat['p99']:.1f}  "
              f"max {lat['max']:.1f}")
    if args.dataroot:
        report.update(evaluate_replay(args, params, sent, frames, out))
    (out / "replay_eval.json").write_text(json.dumps(report, indent=2, default=float))
    print(f"wrote {out / 'replay_eval.json'}")
    return 0


def evaluate_replay(args: argparse.Namespace, params: dict[str, Any], sent: list[PublishRecord],
                    frames: dict[int, tuple], out: Path) -> dict[str, Any]:
    """mAP of the online detections (and of the offline path at the same triggers with --offline)."""
    from nuscenes.nuscenes import NuScenes

    from radardistill_ros.tools.bag_io import read_messages

    if not args.version:
        raise SystemExit("error: --dataroot needs --version")
    nusc = NuScenes(version=args.version, dataroot=args.dataroot, verbose=False)
    trigger_topic = params.get("trigger_topic")
    channel = _channel_of_topic(trigger_topic)
    if channel is None:
        raise SystemExit(f"error: trigger topic {trigger_topic!r} is not a nuScenes radar topic; the "
                         "key-frame evaluation needs one radar as the trigger")
    gt_stamps = {m.timestamp for m in read_messages(args.bag, [GT_TOPIC])}
    samples = sorted((s for s in nusc.sample if s["timestamp"] * 1000 in gt_stamps),
                     key=lambda s: s["timestamp"])
    if not samples:
        raise SystemExit(f"error: no sample of {args.version} matches the bag's {GT_TOPIC} stamps")
    sent_stamps = {p.stamp_ns for p in sent}
    tokens, trig_tokens, online, poses = [], [], [], []
    missing_trigger = 0
    for s in samples:
        sd = nusc.get("sample_data", s["data"][channel])
        stamp = sd["timestamp"] * 1000
        if stamp not in sent_stamps:
            missing_trigger += 1
            continue
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        dt = 0.0 if args.no_time_align else (s["timestamp"] - sd["timestamp"]) * 1e-6
        if stamp in frames:
            _, boxes, scores, labels = frames[stamp]
            online.append((align_boxes(boxes, dt), scores, labels))
        else:
            online.append((np.zeros((0, 9)), np.zeros(0), np.zeros(0, np.int64)))
        tokens.append(s["token"])
        trig_tokens.append(sd["token"])
        poses.append((np.asarray(pose["translation"]), np.asarray(pose["rotation"])))
    res: dict[str, Any] = {"key_frames": len(tokens), "key_frames_without_trigger": missing_trigger,
                           "key_frames_answered": sum(nusc.get("sample_data", t)["timestamp"] * 1000 in frames
                                                      for t in trig_tokens),
                           "time_aligned": not args.no_time_align}
    res["online"] = score_detections(nusc, tokens, online, poses, out / "online")
    print(f"online  mAP {res['online']['mean_ap']:.4f}  NDS {res['online']['nd_score']:.4f}  "
          f"({len(tokens)} key frames)")
    if args.offline:
        from radardistill_ros.pipeline import RadarDetector

        detector = RadarDetector.from_checkpoint(
            _resolve(params.get("checkpoint_path") or params["model_path"]), backend=params["backend"],
            model_path=_resolve(params["model_path"]), config=params.get("model_config") or None,
            score_threshold=params["score_threshold"], num_threads=params["num_threads"],
            device=params.get("device", "cpu"))
        num_sweeps = params.get("num_sweeps") or detector.cfg.data.radar_sweeps
        offline = offline_trigger_detections(nusc, detector, trig_tokens, num_sweeps, params["max_sweep_age"])
        diffs = []
        for sd_tok, off in zip(trig_tokens, offline):
            stamp = nusc.get("sample_data", sd_tok)["timestamp"] * 1000
            if stamp in frames:
                diffs.append(box_difference(frames[stamp][1:], off))
        aligned = []
        for tok, off in zip(tokens, offline):
            s = nusc.get("sample", tok)
            sd = nusc.get("sample_data", s["data"][channel])
            dt = 0.0 if args.no_time_align else (s["timestamp"] - sd["timestamp"]) * 1e-6
            aligned.append((align_boxes(off[0], dt), off[1], off[2]))
        res["offline_at_trigger"] = score_detections(nusc, tokens, aligned, poses, out / "offline")
        res["parity"] = {"compared": len(diffs), "max_abs_diff": max(diffs) if diffs else None}
        print(f"offline mAP {res['offline_at_trigger']['mean_ap']:.4f}  NDS "
              f"{res['offline_at_trigger']['nd_score']:.4f} (all key frames); online vs offline boxes: "
              f"max |diff| {res['parity']['max_abs_diff']} over {len(diffs)} answered key frames")
        idx = [i for i, sd_tok in enumerate(trig_tokens)
               if nusc.get("sample_data", sd_tok)["timestamp"] * 1000 in frames]
        if idx:  # the answered key frames only: equal scores when serving equals offline
            sub = [tokens[i] for i in idx]
            sub_poses = [poses[i] for i in idx]
            res["answered_only"] = {
                "online": score_detections(nusc, sub, [online[i] for i in idx], sub_poses,
                                           out / "online_answered"),
                "offline": score_detections(nusc, sub, [aligned[i] for i in idx], sub_poses,
                                            out / "offline_answered")}
            a = res["answered_only"]
            print(f"answered key frames only ({len(idx)}): online mAP {a['online']['mean_ap']:.4f}, "
                  f"offline mAP {a['offline']['mean_ap']:.4f}")
    if args.keyframe_offline:
        from training.evaluate import evaluate

        ckpt = _resolve(params.get("checkpoint_path") or params["model_path"])
        m = evaluate(ckpt, args.dataroot, args.version, "replay", out / "keyframe_offline", tokens=tokens)
        res["keyframe_offline"] = {k: m[k] for k in ("mean_ap", "nd_score", "mean_dist_aps", "tp_errors")}
        print(f"key-frame offline (training.evaluate) mAP {m['mean_ap']:.4f}  NDS {m['nd_score']:.4f}")
    return res


def _resolve(path: str) -> str:
    from radardistill_ros.node import resolve_path

    return str(resolve_path(path))


if __name__ == "__main__":
    sys.exit(main())
