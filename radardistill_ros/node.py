"""The radardistill_ros detector node (rclpy): radar PointCloud2 in, Detection3DArray out.

    detector_node --ros-args --params-file config/detector.yaml [-r __ns:=/perception]
    python -m radardistill_ros.node --ros-args --params-file config/detector.yaml

A thin ROS layer over the ROS-free core (Autoware lidar_centerpoint's split): parameters,
subscriptions, publishers and diagnostics live here; decoding, accumulation, inference and box
decoding are :mod:`radardistill_ros.pipeline` (which chains ``pointcloud``, ``sweeps``,
``model``, ``backends`` and ``decode``, the same code the evaluation scores).

Processing model. Inputs are subscribed raw (serialised bytes, read by ``cdr``-based parsers) and
served by rclpy's C++ EventsExecutor (parameter ``executor``). Subscription callbacks only decode
a cloud, resolve its poses when TF already has them, and store it (cheap). A detection
runs on a dedicated worker thread: a trigger (a message of ``trigger_topic``, or of any radar
topic at most every ``trigger_min_period`` seconds) is put in a one-slot mailbox; the worker
always takes the newest trigger, and a trigger replaced before the worker took it is counted as
dropped. There is no queue, so latency never builds up.

Every parameter is declared once below (:data:`PARAMETERS`) with a description, has no default in
code (the parameter file states every value) and is validated at start-up: a missing, mistyped or
invalid parameter ends the process with exit status 2 and a message naming the parameter.

Outputs (relative names, so ``-r __ns:=/x`` moves them): ``detections``
(vision_msgs/Detection3DArray), ``detections/velocities`` (sensor_msgs/PointCloud2, one point per
detection in the same order: x y z vx vy vz score label), ``detections/markers``
(visualization_msgs/MarkerArray), ``~/debug/processing_time_ms``,
``~/debug/pipeline_latency_ms`` (std_msgs/Float64), ``~/debug/stage_times``
(diagnostic_msgs/DiagnosticStatus) and ``/diagnostics`` (diagnostic_msgs/DiagnosticArray).
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSCompatibility,
    QoSProfile,
    ReliabilityPolicy,
    qos_check_compatible,
)
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray
from visualization_msgs.msg import MarkerArray

from radardistill_ros.detection_cdr import DetectionArrayWriter
from radardistill_ros.detection_cdr import warm_up as warm_up_detection_cdr
from radardistill_ros.geometry import rot_to_quat, rotz, yaw_from_rot
from radardistill_ros.malloc_tuning import retain_freed_memory
from radardistill_ros.marker_cdr import detection_markers_cdr
from radardistill_ros.marker_cdr import warm_up as warm_up_markers
from radardistill_ros.pipeline import (
    RadarDetector,
    RawSweep,
    SweepAssembler,
    cloud_to_radar_points,
    transform_error_reason,
)
from radardistill_ros.pointcloud import PointCloudError, parse_pointcloud2_cdr, pointcloud2_cdr
from radardistill_ros.sweeps import warm_up as warm_up_accumulation
from radardistill_ros.tf_buffer import TransformBuffer, TransformError, TransformRecord, parse_tf_message_cdr

NODE_NAME = "radardistill_detector"
#: Python thread switch interval of the node process [s] (default 5 ms). The inference worker
#: releases and re-takes the GIL around every torch op; with the default it waited up to 5 ms
#: whenever the executor thread (cloud and /tf callbacks) held the GIL. Measured at 13 Hz:
#: end-to-end p50 81 -> 56 ms (docs/benchmarks.md).
GIL_SWITCH_INTERVAL_S = 0.0005
PACKAGE_DIR = Path(__file__).resolve().parent

_T = Parameter.Type

#: (name, type, description) of every node parameter; config/detector.yaml gives each a value.
PARAMETERS: tuple[tuple[str, Parameter.Type, str], ...] = (
    ("model_path", _T.STRING, "Dense part of the model: a checkpoint .pt (backend torch), an ONNX file "
     "(onnxruntime; tensorrt builds an engine next to it) or a TensorRT .engine. Relative paths: current "
     "directory, then the installed radardistill_ros package directory."),
    ("checkpoint_path", _T.STRING, "Student checkpoint .pt with the front-end (pillar VFE + sparse encoder) "
     "weights and the model config; empty: model_path (which must then be a .pt)."),
    ("backend", _T.STRING, "Inference backend of the dense part: torch | onnxruntime | tensorrt."),
    ("device", _T.STRING, "Compute device: cpu | cuda | cuda:N."),
    ("num_threads", _T.INTEGER, "CPU threads of the dense part (ONNX Runtime or torch; >= 1); the front "
     "end and decoding use one."),
    ("model_config", _T.STRING, "Expected model variant (name such as lite / paper, or a YAML path); it "
     "must match the checkpoint's config digest. Empty: the checkpoint's own config."),
    ("class_names", _T.STRING_ARRAY, "Class names in label order; must equal the model's classes."),
    ("score_threshold", _T.DOUBLE, "Minimum IoU-rectified score of a published detection, in [0, 1)."),
    ("radar_topics", _T.STRING_ARRAY, "Radar sensor_msgs/PointCloud2 topics (one per radar, or one merged "
     "cloud). Each cloud is taken in its header frame_id at its header stamp."),
    ("trigger_topic", _T.STRING, "Topic whose messages trigger a detection (one of radar_topics), or 'any'."),
    ("trigger_min_period", _T.DOUBLE,
     "With trigger_topic 'any': minimum stamp spacing of triggers [s] (>= 0)."),
    ("input_reliability", _T.STRING, "Radar subscription reliability: best_effort (sensor data QoS, "
     "matches any publisher) | reliable."),
    ("input_depth", _T.INTEGER, "Radar subscription queue depth (keep last), >= 1."),
    ("fixed_frame", _T.STRING, "World frame of the ego poses on /tf (nuScenes bags: map)."),
    ("base_frame", _T.STRING, "Ego frame, the model's reference frame (REP 103 base_link)."),
    ("output_frame", _T.STRING, "Frame of the published detections (base_frame, or any frame in TF)."),
    ("num_sweeps", _T.INTEGER, "Sweeps per radar accumulated into one frame; 0: the model config's "
     "data.radar_sweeps (what the model was trained with)."),
    ("max_sweep_age", _T.DOUBLE, "Sweeps older than this before the trigger stamp are not used [s] (> 0)."),
    ("tf_timeout", _T.DOUBLE, "How long the worker waits for the ego pose at the trigger stamp [s] (>= 0)."),
    ("tf_cache_time", _T.DOUBLE, "History kept per dynamic /tf link [s] (> 0)."),
    ("max_points_per_cloud", _T.INTEGER, "Clouds claiming more points are rejected before decoding (>= 1)."),
    ("time_jump_threshold", _T.DOUBLE, "A stamp this far [s] behind the newest one seen (bag loop, "
     "restart) clears all sweeps and dynamic transforms (> 0)."),
    ("latency_budget_ms", _T.DOUBLE, "Diagnostics go WARN when a frame's receive-to-publish time in the "
     "last period exceeds this [ms] (> 0)."),
    ("diagnostics_period", _T.DOUBLE, "Period of /diagnostics [s] (> 0)."),
    ("marker_score_threshold", _T.DOUBLE, "Only detections at or above this score get RViz markers."),
    ("warn_throttle_period", _T.DOUBLE, "Minimum time between repeated warnings of one kind [s] (>= 0)."),
    ("executor", _T.STRING, "Executor of the subscription callbacks: events (rclpy's C++ EventsExecutor, "
     "least CPU per message) | single_threaded (rclpy's Python SingleThreadedExecutor)."),
)

BACKENDS = ("torch", "onnxruntime", "tensorrt")
EXECUTORS = ("events", "single_threaded")
RELIABILITIES = ("best_effort", "reliable")
#: Velocity companion cloud: one point per detection, in the order of the Detection3DArray.
VELOCITY_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("vx", "<f4"), ("vy", "<f4"),
                           ("vz", "<f4"), ("score", "<f4"), ("label", "<i4")])
REJECT_REASONS = ("malformed", "stamp_not_increasing", "unknown_frame", "tf_extrapolation",
                  "tf_connectivity", "tf_error", "inference_error")


class ParameterError(ValueError):
    """An invalid node parameter; the message starts with the parameter's name."""


@dataclass(frozen=True)
class NodeParams:
    """Validated parameters (see :data:`PARAMETERS`)."""

    model_path: str
    checkpoint_path: str
    backend: str
    device: str
    num_threads: int
    model_config: str
    class_names: tuple[str, ...]
    score_threshold: float
    radar_topics: tuple[str, ...]
    trigger_topic: str
    trigger_min_period: float
    input_reliability: str
    input_depth: int
    fixed_frame: str
    base_frame: str
    output_frame: str
    num_sweeps: int
    max_sweep_age: float
    tf_timeout: float
    tf_cache_time: float
    max_points_per_cloud: int
    time_jump_threshold: float
    latency_budget_ms: float
    diagnostics_period: float
    marker_score_threshold: float
    warn_throttle_period: float
    executor: str


def resolve_path(value: str) -> Path:
    """A model file path: absolute, relative to the current directory, or relative to the
    installed package directory (``radardistill_ros/``, e.g. ``models/lite_demo.pt``)."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return p
    candidate = PACKAGE_DIR / p
    return candidate if candidate.exists() else p


def validate_params(values: dict[str, Any]) -> NodeParams:
    """Check every parameter (ROS-free); raises :class:`ParameterError` naming the first bad one."""

    def need(cond: bool, name: str, why: str) -> None:
        if not cond:
            raise ParameterError(f"{name}: {why} (got {values.get(name)!r})")

    for name, _, _ in PARAMETERS:
        if name not in values or values[name] is None:
            raise ParameterError(f"{name}: missing; set it in the parameter file (see config/detector.yaml)")
    v = dict(values)
    need(v["backend"] in BACKENDS, "backend", f"must be one of {BACKENDS}")
    need(v["device"] == "cpu" or str(v["device"]).startswith("cuda"), "device", "must be cpu, cuda or cuda:N")
    need(v["num_threads"] >= 1, "num_threads", "must be >= 1")
    need(bool(v["model_path"]), "model_path", "must name a model file")
    mp = resolve_path(v["model_path"])
    need(mp.is_file(), "model_path", f"file not found ({mp})")
    if v["checkpoint_path"]:
        cp = resolve_path(v["checkpoint_path"])
        need(cp.is_file(), "checkpoint_path", f"file not found ({cp})")
    else:
        need(mp.suffix in (".pt", ".pth"), "checkpoint_path",
             f"is empty, so model_path must be a checkpoint .pt; {mp.name} has no front-end weights")
        cp = mp
    need(v["backend"] != "torch" or mp.suffix in (".pt", ".pth"), "model_path",
         "backend torch needs a checkpoint .pt")
    need(v["backend"] != "onnxruntime" or mp.suffix == ".onnx", "model_path",
         "backend onnxruntime needs an .onnx file")
    need(v["backend"] != "tensorrt" or mp.suffix in (".onnx", ".engine", ".plan"), "model_path",
         "backend tensorrt needs an .onnx file (engine built next to it) or an .engine")
    need(len(v["class_names"]) > 0, "class_names", "must list the model's classes")
    need(0.0 <= v["score_threshold"] < 1.0, "score_threshold", "must be in [0, 1)")
    topics = list(v["radar_topics"])
    need(len(topics) > 0 and all(t and t.strip() == t for t in topics), "radar_topics",
         "must be a non-empty list of topic names")
    need(len(set(topics)) == len(topics), "radar_topics", "has duplicates")
    need(v["trigger_topic"] == "any" or v["trigger_topic"] in topics, "trigger_topic",
         "must be one of radar_topics or 'any'")
    need(v["trigger_min_period"] >= 0.0, "trigger_min_period", "must be >= 0")
    need(v["input_reliability"] in RELIABILITIES, "input_reliability", f"must be one of {RELIABILITIES}")
    need(v["input_depth"] >= 1, "input_depth", "must be >= 1")
    for name in ("fixed_frame", "base_frame", "output_frame"):
        need(bool(str(v[name]).strip("/")), name, "must be a frame id")
    need(v["fixed_frame"] != v["base_frame"], "base_frame", "must differ from fixed_frame")
    need(v["num_sweeps"] >= 0, "num_sweeps", "must be >= 0 (0: the model config's)")
    need(v["max_sweep_age"] > 0.0, "max_sweep_age", "must be > 0")
    need(v["tf_timeout"] >= 0.0, "tf_timeout", "must be >= 0")
    need(v["tf_cache_time"] > 0.0, "tf_cache_time", "must be > 0")
    need(v["max_points_per_cloud"] >= 1, "max_points_per_cloud", "must be >= 1")
    need(v["time_jump_threshold"] > 0.0, "time_jump_threshold", "must be > 0")
    need(v["latency_budget_ms"] > 0.0, "latency_budget_ms", "must be > 0")
    need(v["diagnostics_period"] > 0.0, "diagnostics_period", "must be > 0")
    need(0.0 <= v["marker_score_threshold"] <= 1.0, "marker_score_threshold", "must be in [0, 1]")
    need(v["warn_throttle_period"] >= 0.0, "warn_throttle_period", "must be >= 0")
    need(v["executor"] in EXECUTORS, "executor", f"must be one of {EXECUTORS}")
    v["model_path"], v["checkpoint_path"] = str(mp), str(cp)
    v["class_names"], v["radar_topics"] = tuple(v["class_names"]), tuple(topics)
    return NodeParams(**{k: v[k] for k in NodeParams.__dataclass_fields__})


def _blame(exc: Exception, p: NodeParams) -> str:
    """The parameter a model-loading failure is attributed to."""
    from radardistill_ros.backends import BackendError, ModelMismatchError
    from radardistill_ros.model import CheckpointError

    if isinstance(exc, CheckpointError):
        return "model_config" if p.model_config and "digest mismatch" in str(exc) else "checkpoint_path"
    if isinstance(exc, ModelMismatchError):
        return "model_path"
    if isinstance(exc, BackendError):
        return "backend"
    return "model_path" if p.model_path != p.checkpoint_path and p.backend != "torch" else "checkpoint_path"


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, float), q)) if len(values) else float("nan")


class _Counters:
    """Thread-safe event counters for diagnostics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, int] = {k: 0 for k in (
            "clouds_in", "triggers", "answered", "dropped", "rejected", "empty_clouds",
            "nonfinite_points", "tf_messages", "tf_rejected", "time_jumps", "stale_after_jump",
            "sweeps_tf_failed")}
        self.rejects: dict[str, int] = {k: 0 for k in REJECT_REASONS}

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.values[key] = self.values.get(key, 0) + n

    def reject(self, reason: str) -> None:
        with self._lock:
            self.values["rejected"] += 1
            self.rejects[reason] = self.rejects.get(reason, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.values), dict(self.rejects)


class _Trigger:
    """A detection request: the trigger's stamp [ns], topic and its receive time (monotonic s)."""

    __slots__ = ("decode_ms", "receive_s", "stamp_ns", "topic")

    def __init__(self, stamp_ns: int, topic: str, receive_s: float, decode_ms: float) -> None:
        self.stamp_ns, self.topic, self.receive_s, self.decode_ms = stamp_ns, topic, receive_s, decode_ms


class DetectorNode(Node):
    """See the module docstring. Raises :class:`ParameterError` for invalid parameters and the
    model-loading errors (file, backend, config mismatch) from the constructor."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.params = self._read_parameters()
        p = self.params
        self.counters = _Counters()
        try:
            self.detector = RadarDetector.from_checkpoint(
                p.checkpoint_path, backend=p.backend, model_path=p.model_path,
                config=p.model_config or None, score_threshold=p.score_threshold,
                num_threads=p.num_threads, device=p.device)
        except Exception as exc:  # every loading failure is a start-up error naming a parameter
            raise ParameterError(f"{_blame(exc, p)}: cannot load the model ({type(exc).__name__}: {exc})") \
                from exc
        if tuple(p.class_names) != tuple(self.detector.class_names):
            raise ParameterError(f"class_names: {list(p.class_names)} does not match the model's classes "
                                 f"{list(self.detector.class_names)}")
        cfg = self.detector.cfg
        self.num_sweeps = p.num_sweeps or cfg.data.radar_sweeps
        self.detector.warm_up()
        warm_up_accumulation()
        warm_up_detection_cdr()
        warm_up_markers()
        try:
            self._detection_writer = DetectionArrayWriter(p.output_frame, p.class_names)
        except ValueError as exc:
            raise ParameterError(f"output_frame: {exc}") from None

        self.tf = TransformBuffer(cache_time=p.tf_cache_time)
        self._static_tf: list[list[TransformRecord]] = []  # the last /tf_static messages
        self.assembler = SweepAssembler(self.tf, p.fixed_frame, p.base_frame, self.num_sweeps,
                                        p.max_sweep_age, source_order=p.radar_topics)
        self._state_lock = threading.Lock()
        self._last_stamp: dict[str, int] = {}
        self._newest_stamp = 0
        self._jump_from: int | None = None   # newest stamp before the last time jump [ns]
        self._jump_until = 0.0               # monotonic end of the window for stale messages [s]
        self._last_trigger_stamp = -(1 << 62)
        self._mailbox: _Trigger | None = None
        self._cond = threading.Condition()
        self._running = True
        self._window_latency: deque[float] = deque(maxlen=300)     # receive -> publish [ms]
        self._window_processing: deque[float] = deque(maxlen=300)  # worker compute [ms]
        self._period_max_latency = 0.0
        self._period_dropped = 0

        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                             reliability=ReliabilityPolicy.RELIABLE)

        def publisher(msg_type: type, topic: str) -> Any:
            # No QoS event handlers on the outputs: rclpy gives every publisher two by default
            # (incompatible QoS / type warnings) and the executor adds every handler to its wait
            # set, in Python, on each wake-up (~11 per radar frame: 5 clouds, ~6 /tf). Without the
            # 14 output handlers the executor thread takes ~12.5 instead of ~14.5 ms CPU per
            # frame (docs/benchmarks.md). A subscriber with an incompatible QoS still reports it on
            # its side.
            return self.create_publisher(msg_type, topic, out_qos,
                                         event_callbacks=PublisherEventCallbacks(use_default_callbacks=False))

        self.pub_detections = publisher(Detection3DArray, "detections")
        self.pub_velocities = publisher(PointCloud2, "detections/velocities")
        self.pub_markers = publisher(MarkerArray, "detections/markers")
        self.pub_processing = publisher(Float64, "~/debug/processing_time_ms")
        self.pub_latency = publisher(Float64, "~/debug/pipeline_latency_ms")
        self.pub_stages = publisher(DiagnosticStatus, "~/debug/stage_times")
        self.pub_diag = publisher(DiagnosticArray, "/diagnostics")

        tf_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                            reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        tf_static_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                   reliability=ReliabilityPolicy.RELIABLE,
                                   durability=DurabilityPolicy.TRANSIENT_LOCAL)
        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=p.input_depth,
                            reliability=ReliabilityPolicy.BEST_EFFORT if p.input_reliability == "best_effort"
                            else ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
        #: (topic, message type, QoS) of every input, for the publisher check of the diagnostics timer
        self._inputs: list[tuple[str, type, QoSProfile]] = []
        self._incompatible: dict[tuple[str, tuple[int, ...]], str] = {}

        def subscribe(msg_type: type, topic: str, callback: Any, qos: QoSProfile) -> None:
            # Raw: the callback gets the serialised message (bytes) and reads only what it needs
            # (parse_pointcloud2_cdr, parse_tf_message_cdr); rclpy building message objects was
            # most of the executor thread's CPU (docs/benchmarks.md).
            # No QoS event handlers on the inputs either: the Python executor adds each handler to
            # its wait set on every wake-up (~11 per radar frame); without the inputs' 16 handlers
            # its thread took ~9.5 instead of ~12.3 ms CPU per frame (docs/benchmarks.md).
            # Incompatible publishers are found from the ROS graph instead (_check_input_publishers).
            self.create_subscription(msg_type, topic, callback, qos, raw=True,
                                     event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False))
            self._inputs.append((topic, msg_type, qos))

        subscribe(TFMessage, "/tf", lambda m: self._on_tf(m, False), tf_qos)
        subscribe(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), tf_static_qos)
        # the trigger topic is subscribed last: when several clouds are ready at once the
        # single-threaded executor serves subscriptions in creation order, so the sweeps that
        # precede a trigger are stored first (the events executor serves them in arrival order)
        for topic in sorted(p.radar_topics, key=lambda t: t == p.trigger_topic):
            subscribe(PointCloud2, topic, lambda m, t=topic: self._on_cloud(m, t), in_qos)
        # steady clock: diagnostics keep coming with use_sim_time and no /clock
        self.create_timer(p.diagnostics_period, self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._worker = threading.Thread(target=self._work, name="radardistill_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: config {cfg.name!r} (digest {cfg.digest()[:12]}), backend {self.detector.backend.name}, "
            f"{self.num_sweeps} sweeps x {len(p.radar_topics)} topics, trigger {p.trigger_topic}, "
            f"frames {p.fixed_frame} -> {p.base_frame} -> {p.output_frame}, executor {p.executor}")

    # ------------------------------------------------------------------------------ parameters
    def _read_parameters(self) -> NodeParams:
        values: dict[str, Any] = {}
        for name, ptype, desc in PARAMETERS:
            descriptor = ParameterDescriptor(description=desc, read_only=True)
            try:
                param = self.declare_parameter(name, ptype, descriptor)
            except Exception as exc:  # InvalidParameterTypeException & co: name the parameter
                raise ParameterError(f"{name}: expected type {ptype.name.lower()} "
                                     f"({type(exc).__name__}: {exc})") from None
            values[name] = None if param.type_ == _T.NOT_SET else param.value
        if isinstance(values.get("class_names"), (list, tuple)):
            values["class_names"] = list(values["class_names"])
        known = {n for n, _, _ in PARAMETERS} | {"use_sim_time", "start_type_description_service"}
        unknown = sorted(set(getattr(self, "_parameter_overrides", {})) - known)
        if unknown:
            raise ParameterError(f"{unknown[0]}: unknown parameter (typo?); known: {sorted(known)}")
        return validate_params(values)

    # ------------------------------------------------------------------------------- callbacks
    def _warn(self, msg: str) -> None:
        self.get_logger().warning(msg, throttle_duration_sec=self.params.warn_throttle_period)

    def _observe_stamp(self, stamp_ns: int) -> bool:
        """Detect time jumps backwards (bag loop / restart): forget sweeps and dynamic transforms.

        Returns False for a message of the old timeline still in flight just after a jump (stamp
        near the pre-jump time, within ``time_jump_threshold`` seconds of wall time after the
        jump): it is dropped and counted as ``stale_after_jump`` instead of undoing the reset.
        """
        threshold_ns = self.params.time_jump_threshold * 1e9
        with self._state_lock:
            newest = self._newest_stamp
            if (self._jump_from is not None and time.monotonic() < self._jump_until
                    and stamp_ns - newest > threshold_ns and abs(stamp_ns - self._jump_from) <= threshold_ns):
                stale = True
            else:
                stale = False
            jump = not stale and newest - stamp_ns > threshold_ns
            if jump:
                self._jump_from, self._jump_until = newest, time.monotonic() + self.params.time_jump_threshold
                self._newest_stamp = stamp_ns
                self._last_stamp.clear()
                self._last_trigger_stamp = -(1 << 62)
            elif not stale:
                self._newest_stamp = max(self._newest_stamp, stamp_ns)
        if stale:
            self.counters.add("stale_after_jump")
            return False
        if jump:
            self.counters.add("time_jumps")
            self.assembler.clear()
            self.tf.clear()
            for records in self._static_tf:
                for rec in records:
                    self.tf.set_transform(*rec, static=True)
            self.get_logger().warning(f"time jumped backwards from {newest * 1e-9:.6f} s to "
                                      f"{stamp_ns * 1e-9:.6f} s: cleared sweeps and dynamic transforms")
        return True

    def _on_tf(self, raw: bytes, static: bool) -> None:
        """A serialised tf2_msgs/TFMessage from /tf or /tf_static."""
        self.counters.add("tf_messages")
        topic = "/tf_static" if static else "/tf"
        try:
            records = parse_tf_message_cdr(raw)
        except TransformError as exc:
            self.counters.add("tf_rejected")
            self._warn(f"ignored a message on {topic}: {exc}")
            return
        if records and not static and not self._observe_stamp(max(r.stamp_ns for r in records)):
            return
        if static:
            self._static_tf.append(records)
            del self._static_tf[:-64]
        for rec in records:
            try:
                self.tf.set_transform(*rec, static=static)
            except (TransformError, ValueError) as exc:
                self.counters.add("tf_rejected")
                self._warn(f"ignored a transform on {topic}: {exc}")

    def _on_cloud(self, raw: bytes, topic: str) -> None:
        """A serialised sensor_msgs/PointCloud2 from a radar topic."""
        t_recv = time.monotonic()
        self.counters.add("clouds_in")
        try:
            cloud = parse_pointcloud2_cdr(raw)
            points, n_bad = cloud_to_radar_points(cloud, self.params.max_points_per_cloud)
        except PointCloudError as exc:
            self.counters.reject("malformed")
            self._warn(f"rejected a cloud on {topic}: {exc}")
            return
        stamp = cloud.stamp_ns
        frame_id = cloud.frame_id.lstrip("/")
        if not self.tf.has_frame(frame_id):
            self.counters.reject("unknown_frame")
            self._warn(f"rejected a cloud on {topic}: frame {frame_id!r} is not in the transform tree "
                       f"(/tf, /tf_static)")
            return
        if not self._observe_stamp(stamp):
            return
        with self._state_lock:
            last = self._last_stamp.get(topic)
            if last is not None and stamp <= last:
                ok = False
            else:
                ok = True
                self._last_stamp[topic] = stamp
        if not ok:
            self.counters.reject("stamp_not_increasing")
            self._warn(f"rejected a cloud on {topic}: stamp {stamp * 1e-9:.6f} s is not after the previous "
                       f"{last * 1e-9:.6f} s")
            return
        if n_bad:
            self.counters.add("nonfinite_points", n_bad)
        if len(points) == 0:
            self.counters.add("empty_clouds")
        self.assembler.add(RawSweep(topic, frame_id, stamp, points))
        p = self.params
        if p.trigger_topic == topic or (
                p.trigger_topic == "any" and stamp - self._last_trigger_stamp >= p.trigger_min_period * 1e9):
            self._last_trigger_stamp = stamp
            decode_ms = (time.monotonic() - t_recv) * 1e3
            self.counters.add("triggers")
            with self._cond:
                if self._mailbox is not None:
                    self.counters.add("dropped")
                    self._period_dropped += 1
                self._mailbox = _Trigger(stamp, topic, t_recv, decode_ms)
                self._cond.notify()

    # ---------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._cond:
                while self._mailbox is None and self._running:
                    self._cond.wait(0.5)
                if not self._running:
                    return
                trig, self._mailbox = self._mailbox, None
            try:
                self._process(trig)
            except Exception as exc:  # never let one frame kill the worker
                self.counters.reject("inference_error")
                self.get_logger().error(
                    f"frame {trig.stamp_ns * 1e-9:.6f} s failed: {type(exc).__name__}: {exc}",
                    throttle_duration_sec=self.params.warn_throttle_period)

    def _wait_for_pose(self, stamp_ns: int) -> np.ndarray:
        """Block up to ``tf_timeout`` for the ego pose ``T_fixed_from_base`` (4x4) at ``stamp_ns``
        and return it; re-raises the last failure."""
        p = self.params
        deadline = time.monotonic() + p.tf_timeout
        while True:
            try:
                return self.tf.lookup(p.fixed_frame, p.base_frame, stamp_ns)
            except TransformError:
                if time.monotonic() >= deadline or not self._running:
                    raise
            time.sleep(0.002)

    def _process(self, trig: _Trigger) -> None:
        p = self.params
        t0 = time.monotonic()
        try:
            pose = self._wait_for_pose(trig.stamp_ns)
            t_pose = time.monotonic()
            frame = self.assembler.assemble(trig.stamp_ns, pose)
        except TransformError as exc:
            self.counters.reject(transform_error_reason(exc))
            self._warn(f"skipped trigger {trig.stamp_ns * 1e-9:.6f} s on {trig.topic}: no ego pose: {exc}")
            return
        if frame.failures:
            self.counters.add("sweeps_tf_failed", sum(frame.failures.values()))
            self._warn(f"dropped sweeps without transforms: {frame.failures}")
        t1 = time.monotonic()
        result = self.detector.detect(frame.points)
        t2 = time.monotonic()
        boxes = result.boxes
        if p.output_frame != p.base_frame:
            t_out_from_base = self.tf.lookup(p.output_frame, p.base_frame, trig.stamp_ns)
            boxes, quats = _transform_boxes(boxes, t_out_from_base)
        else:
            quats = None
        detections = self._detection_writer.write(trig.stamp_ns, boxes, result.scores, result.labels, quats)
        velocities = velocity_cloud_cdr(trig.stamp_ns, p.output_frame, boxes, result.scores, result.labels)
        # the companion goes first and the Detection3DArray last: a consumer pairing them by stamp
        # has the velocities when the detections arrive, and the node's work is done when the
        # detections' subscribers wake up (on 2 cores one of them can take the worker's core right
        # after the publish: output p90 1.4 -> 0.6 ms, docs/benchmarks.md)
        self.pub_velocities.publish(velocities)
        self.pub_detections.publish(detections)
        t_pub = t3 = time.monotonic()
        self.counters.add("answered")
        latency_ms = (t_pub - trig.receive_s) * 1e3
        processing_ms = (t3 - t0) * 1e3
        stages = {"input_decode": trig.decode_ms, "wait": (t0 - trig.receive_s) * 1e3,
                  "pose_wait": (t_pose - t0) * 1e3, "accumulate": (t1 - t_pose) * 1e3, **result.timings,
                  "output": (t3 - t2) * 1e3, "receive_to_publish": latency_ms,
                  "points": float(result.num_points), "sweeps": float(frame.num_sweeps),
                  "detections": float(len(boxes))}
        with self._cond:
            self._window_latency.append(latency_ms)
            self._window_processing.append(processing_ms)
            self._period_max_latency = max(self._period_max_latency, latency_ms)
        self.pub_processing.publish(Float64(data=processing_ms))
        now_ns = self.get_clock().now().nanoseconds
        self.pub_latency.publish(Float64(data=(now_ns - trig.stamp_ns) * 1e-6))
        self.pub_stages.publish(DiagnosticStatus(
            level=DiagnosticStatus.OK, name="stage_times_ms", message=str(trig.stamp_ns),
            hardware_id=trig.topic, values=[KeyValue(key=k, value=f"{v:.4f}") for k, v in stages.items()]))
        if self.pub_markers.get_subscription_count() > 0:
            self.pub_markers.publish(
                detection_markers_cdr(trig.stamp_ns, p.output_frame, boxes, quats, result.scores,
                                      result.labels, p.class_names, p.marker_score_threshold))

    # --------------------------------------------------------------------------------- outputs
    def _check_input_publishers(self) -> int:
        """Publishers on the input topics that cannot deliver to this node (QoS incompatible with
        the subscription's, or another message type), from the ROS graph; each is warned about
        once while it exists. Returns how many there are now. Replaces rclpy's per-subscription
        QoS event handlers (see ``subscribe``), which cost executor CPU on every wake-up."""
        found: dict[tuple[str, tuple[int, ...]], str] = {}
        for topic, msg_type, qos in self._inputs:
            expected = f"{msg_type.__module__.split('.')[0]}/msg/{msg_type.__name__}"
            for info in self.get_publishers_info_by_topic(topic):
                who = f"{info.node_namespace.rstrip('/')}/{info.node_name}"
                if info.topic_type != expected:
                    why = f"publishes {info.topic_type}, this node subscribes {expected}"
                else:
                    compat, reason = qos_check_compatible(info.qos_profile, qos)
                    if compat != QoSCompatibility.ERROR:
                        continue
                    why = reason.strip().rstrip(";")
                found[(topic, tuple(info.endpoint_gid))] = (
                    f"publisher {who} on topic '{topic}', offering incompatible QoS or type: no messages "
                    f"will be received from it ({why})")
        for key, msg in found.items():
            if key not in self._incompatible:
                self.get_logger().warning(msg)
        self._incompatible = found
        return len(found)

    def _publish_diagnostics(self) -> None:
        p = self.params
        incompatible = self._check_input_publishers()
        values, rejects = self.counters.snapshot()
        with self._cond:
            lat, proc = list(self._window_latency), list(self._window_processing)
            period_max, self._period_max_latency = self._period_max_latency, 0.0
            period_dropped, self._period_dropped = self._period_dropped, 0
        level, message = diagnostic_level(period_max, p.latency_budget_ms, period_dropped, incompatible)
        kv = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        kv += [KeyValue(key=f"rejected.{k}", value=str(v)) for k, v in rejects.items()]
        kv.append(KeyValue(key="incompatible_publishers", value=str(incompatible)))
        kv += [KeyValue(key="latency_ms.p50", value=f"{_percentile(lat, 50):.3f}"),
               KeyValue(key="latency_ms.p99", value=f"{_percentile(lat, 99):.3f}"),
               KeyValue(key="processing_ms.p50", value=f"{_percentile(proc, 50):.3f}"),
               KeyValue(key="processing_ms.p99", value=f"{_percentile(proc, 99):.3f}"),
               KeyValue(key="latency_budget_ms", value=f"{p.latency_budget_ms:.3f}"),
               KeyValue(key="backend", value=self.detector.backend.name),
               KeyValue(key="model_config", value=self.detector.cfg.name),
               KeyValue(key="num_sweeps", value=str(self.num_sweeps))]
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: detector", message=message,
                                  hardware_id=self.get_fully_qualified_name(), values=kv)
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def stop(self) -> None:
        """Stop the worker thread (after the executor stopped)."""
        with self._cond:
            self._running = False
            self._cond.notify_all()
        self._worker.join(timeout=5.0)


def diagnostic_level(max_latency_ms: float, budget_ms: float, dropped: int,
                     incompatible: int) -> tuple[bytes, str]:
    """Level and message of the node's /diagnostics status for one diagnostics period: WARN when
    the period's largest receive-to-publish latency [ms] exceeded the budget, else when triggers
    were dropped, else while input publishers are incompatible; OK otherwise (first cause wins)."""
    if max_latency_ms > budget_ms:
        over = f"receive-to-publish {max_latency_ms:.1f} ms over the {budget_ms:.1f} ms budget"
        return DiagnosticStatus.WARN, over
    if dropped:
        return DiagnosticStatus.WARN, f"{dropped} trigger(s) dropped (worker busy)"
    if incompatible:
        why = "publisher(s) on the inputs with incompatible QoS or type (see the log)"
        return DiagnosticStatus.WARN, f"{incompatible} {why}"
    return DiagnosticStatus.OK, "ok"


def velocity_cloud_cdr(stamp_ns: int, frame_id: str, boxes: np.ndarray, scores: np.ndarray,
                       labels: np.ndarray) -> bytes:
    """The ``detections/velocities`` PointCloud2, serialised: one :data:`VELOCITY_DTYPE` point per
    box of ``boxes (K, 9)`` (x, y, z [m], ..., vx, vy [m/s] in ``frame_id``), in the order of the
    Detection3DArray, vz = 0, with its score and label. Built as float32 rows viewed as the
    structured dtype (every field is 4 bytes), no message objects on the worker."""
    k = len(boxes)
    rows = np.zeros((k, len(VELOCITY_DTYPE.names)), np.float32)
    rows[:, 0:3], rows[:, 3:5], rows[:, 6] = boxes[:, 0:3], boxes[:, 7:9], scores
    rows[:, 7] = np.asarray(labels, "<i4").view(np.float32)
    dense = bool(np.isfinite(rows[:, 0:7]).all())
    return pointcloud2_cdr(rows.view(VELOCITY_DTYPE).reshape(k), stamp_ns, frame_id, is_dense=dense)


def _transform_boxes(boxes: np.ndarray, t_out_from_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (K, 9) from base_frame into the output frame: centres moved, velocities rotated; the
    full orientation is returned as quaternions (K, 4) x, y, z, w (yaw column keeps the heading
    about the output frame's z)."""
    r, t = t_out_from_base[:3, :3], t_out_from_base[:3, 3]
    out = np.array(boxes, dtype=np.float64, copy=True)
    out[:, 0:3] = boxes[:, 0:3] @ r.T + t
    vel = np.zeros((len(boxes), 3))
    vel[:, :2] = boxes[:, 7:9]
    out[:, 7:9] = (vel @ r.T)[:, :2]
    rot = r @ rotz(boxes[:, 6])                                        # (K, 3, 3)
    out[:, 6] = yaw_from_rot(rot)
    quats = rot_to_quat(rot)[:, [1, 2, 3, 0]]                          # w x y z -> x y z w
    return out.astype(np.float32), quats


def spin(node: Node, kind: str) -> None:
    """Serve ``node``'s callbacks on this thread until the context shuts down (raises
    ExternalShutdownException then). ``kind`` ``events``: rclpy's C++ EventsExecutor, which
    took 68 instead of 341 us of the thread's CPU per raw message (docs/benchmarks.md);
    ``single_threaded``: the Python SingleThreadedExecutor."""
    if kind == "single_threaded":
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
        return
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError as exc:
        raise ParameterError(f"executor: 'events' needs rclpy.experimental.EventsExecutor, which this rclpy "
                             f"lacks ({exc}); set executor to single_threaded") from None
    executor = EventsExecutor()
    executor.add_node(node)
    # rclpy 7.1.5's EventsExecutor.spin() loops at 100 % CPU without running timers and does not
    # return on shutdown; spin_once serves one event at a time and releases the GIL while waiting.
    while rclpy.ok(context=node.context):
        executor.spin_once(timeout_sec=0.5)


def freeze_startup_objects() -> str:
    """Collect once, then move every object alive after start-up (modules, model, rclpy: ~270k)
    into the garbage collector's permanent generation (``gc.freeze``): a full collection that
    scans them all held the GIL for ~80 ms on the 2-core VM, a stall of every thread (a dropped
    frame); afterwards a full collection scans only what was created since. Returns a log line."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    return (f"gc: {gc.get_freeze_count()} start-up objects frozen (full collection of them: "
            f"{(time.perf_counter() - t0) * 1e3:.0f} ms)")


def main(args: Sequence[str] | None = None) -> int:
    """Entry point (console script ``detector_node``); returns the exit status (2: bad parameters)."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    _, malloc_msg = retain_freed_memory()
    rclpy.init(args=list(sys.argv if args is None else args))
    node: DetectorNode | None = None
    status = 0
    try:
        node = DetectorNode()
        node.get_logger().info(malloc_msg)
        node.get_logger().info(freeze_startup_objects())
        spin(node, node.params.executor)
    except ParameterError as exc:
        print(f"[{NODE_NAME}] FATAL: invalid parameter {exc}", file=sys.stderr, flush=True)
        status = 2
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
