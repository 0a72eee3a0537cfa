"""The serving pipeline (ROS-free): radar points in the ego frame -> detections in the ego frame.

    detector = RadarDetector.from_checkpoint("student.pt", backend="onnxruntime", model_path="lite.onnx")
    result = detector.detect(points)        # points (N, 6) float32, base_link at the reference time
    result.boxes, result.scores, result.labels, result.timings

The one place where the serving steps are chained, each step being the project's single
implementation (docs/architecture.md):

1. front end in torch (:class:`radardistill_ros.model.PillarFrontEnd`: pillarise, VFE, sparse
   encoder) -> x_conv4 ``(1, C4, H, W)``;
2. dense part on the chosen backend (:func:`radardistill_ros.backends.create_backend`: torch,
   onnxruntime or tensorrt) -> head maps;
3. :func:`radardistill_ros.decode.decode` -> boxes ``(K, 9)`` x, y, z, l, w, h [m], yaw [rad],
   vx, vy [m/s] in the ego frame, scores ``(K,)``, labels ``(K,)`` into ``CLASS_NAMES``.

Multi-sweep accumulation happens before, with ``radardistill_ros.sweeps``: in the dataset
loader, or for live messages in :class:`SweepAssembler` (below), which stores decoded radar
messages (:func:`cloud_to_radar_points`), looks their poses up in a
:class:`~radardistill_ros.tf_buffer.TransformBuffer` and calls
:func:`~radardistill_ros.sweeps.sweeps_to_ref` with the sweeps a dataset sample of the same
reference time uses, in the same order (bit-identical inputs). The front-end weights come from a
checkpoint (``model.checkpoint``); the dense part from the same checkpoint (torch) or from an
exported file (.onnx / .engine) whose metadata is checked against the checkpoint's config.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from radardistill_ros import decode_cpu
from radardistill_ros.backends import BACKEND_KINDS, InferenceBackend, ModelMismatchError, create_backend
from radardistill_ros.config import Config, load_config
from radardistill_ros.conventions import CLASS_NAMES, RADAR_FEATURES, TASKS
from radardistill_ros.decode import REG_KEYS, decode
from radardistill_ros.model import PillarNetDetector, load_checkpoint
from radardistill_ros.model.front_end_infer import InferenceFrontEnd
from radardistill_ros.model.fuse import fold_front_end
from radardistill_ros.pointcloud import decode_pointcloud2, drop_nonfinite, to_feature_array
from radardistill_ros.sweeps import Sweep, SweepAccumulator, sweeps_to_ref
from radardistill_ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    TransformBuffer,
    TransformError,
    UnknownFrameError,
)

__all__ = [
    "STAGES",
    "AssembledFrame",
    "DetectionResult",
    "RadarDetector",
    "RawSweep",
    "SweepAssembler",
    "cloud_to_radar_points",
    "file_sha256",
    "ns_to_seconds",
    "transform_error_reason",
]

#: Timed stages of :meth:`RadarDetector.detect`, in order (keys of ``DetectionResult.timings``).
STAGES: tuple[str, ...] = ("front_end", "dense", "decode")


class DetectionResult(NamedTuple):
    """Detections of one frame, ego frame at the reference time.

    ``boxes (K, 9)`` float32 (x, y, z, l, w, h, yaw, vx, vy), ``scores (K,)`` float32, ``labels
    (K,)`` int64 into ``CLASS_NAMES``, ``num_points`` points fed to the front end, ``timings``
    wall time per stage of :data:`STAGES` plus ``"total"`` [ms].
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    num_points: int
    timings: dict[str, float]


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file (identifies the checkpoint an ONNX export was made from)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _infer_backend_kind(model_path: str | Path) -> str:
    suffix = Path(model_path).suffix.lower()
    return {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt",
            ".plan": "tensorrt"}.get(suffix, "")


class RadarDetector:
    """Front end (torch) -> backend dense part -> decode, for one frame at a time.

    Args:
        model: the radar student (its ``front_end`` is used; eval mode is set here).
        cfg: its configuration (grid, post-processing).
        backend: an :class:`InferenceBackend` serving the dense part of ``cfg``.
        score_threshold: overrides ``cfg.post.score_threshold`` (None keeps it).
        device: torch device of the front end (``"cpu"`` or ``"cuda[:N]"``).
        front_threads: torch intra-op threads for the front end and decode (CPU); None leaves
            torch's setting alone. Both are many small ops, for which a second OpenMP thread
            costs more in wake-ups than it gains (docs/benchmarks.md), so one is the default
            of :meth:`from_checkpoint`.
        dense_threads: torch intra-op threads for a torch CPU dense part (None: unchanged);
            ONNX Runtime and TensorRT sessions have their own.
    """

    def __init__(self, model: PillarNetDetector, cfg: Config, backend: InferenceBackend,
                 score_threshold: float | None = None, device: str = "cpu",
                 front_threads: int | None = None, dense_threads: int | None = None) -> None:
        if model.modality != "radar":
            raise ValueError(f"RadarDetector needs the radar student, got a {model.modality!r} model")
        self.cfg = cfg
        self.device = torch.device(device)
        folded = fold_front_end(model.front_end).to(self.device)  # batch norms folded
        # CPU: the compiled/fused inference form of the same function (model/front_end_infer.py)
        self.front_end = InferenceFrontEnd(folded) if self.device.type == "cpu" else folded
        self.backend = backend
        post = cfg.post
        if score_threshold is not None:
            if not 0.0 <= float(score_threshold) < 1.0:
                raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
            post = dataclasses.replace(post, score_threshold=float(score_threshold))
        self.post = post
        self.class_names: tuple[str, ...] = CLASS_NAMES
        self.num_features = len(RADAR_FEATURES)
        on_cpu = self.device.type == "cpu"
        self.front_threads = int(front_threads) if front_threads and on_cpu else None
        self.dense_threads = int(dense_threads) if dense_threads and on_cpu else None

    # ------------------------------------------------------------------------------ building
    @classmethod
    def from_checkpoint(cls, checkpoint_path: str | Path, backend: str = "torch",
                        model_path: str | Path | None = None, config: str | Path | Config | None = None,
                        score_threshold: float | None = None, num_threads: int = 2, device: str = "cpu",
                        fp16: bool = False) -> RadarDetector:
        """Build from a student checkpoint and a backend.

        Args:
            checkpoint_path: ``model.checkpoint`` file of the radar student (front-end weights;
                also the dense part for ``backend="torch"``).
            backend: one of :data:`radardistill_ros.backends.BACKEND_KINDS`.
            model_path: the dense part for the backend: the checkpoint itself (torch; default), an
                ``export.onnx`` file (onnxruntime; tensorrt builds/reuses an engine next to it) or a
                TensorRT engine. An ONNX file exported from a checkpoint must have been exported
                from *this* checkpoint (sha256 in its metadata), else :class:`ModelMismatchError`.
            config: expected variant (name, path or Config); None = the checkpoint's own. The
                checkpoint's config digest must match (``CheckpointError`` otherwise).
            score_threshold: decode threshold on the rectified score (None: the config's).
            num_threads: CPU intra-op threads of the dense part (the ONNX Runtime session, or torch
                for ``backend="torch"``); the front end and decode use one torch thread.
            device: ``"cpu"`` or ``"cuda[:N]"``.
            fp16: FP16 for the torch (CUDA) and tensorrt backends.
        """
        if backend not in BACKEND_KINDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {BACKEND_KINDS}")
        cfg = load_config(config) if isinstance(config, (str, Path)) else config
        model, cfg = load_checkpoint(checkpoint_path, cfg=cfg, modality="radar")
        torch.set_num_threads(int(num_threads))
        dense_path = Path(model_path) if model_path else Path(checkpoint_path)
        kind = _infer_backend_kind(dense_path)
        if kind and kind != backend and not (backend == "tensorrt" and kind == "onnxruntime"):
            raise ValueError(f"model_path {dense_path} looks like a {kind} model but backend is {backend!r}")
        if backend == "torch":
            if dense_path.resolve() == Path(checkpoint_path).resolve():
                dense: Any = model  # the loaded checkpoint's own dense part
            else:
                dense, _ = load_checkpoint(dense_path, cfg=cfg, modality="radar")
            engine = create_backend("torch", cfg, dense, device=device, fp16=fp16,
                                    num_threads=int(num_threads))
        else:
            if dense_path.suffix.lower() == ".onnx":
                _check_export_weights(dense_path, checkpoint_path)
            engine = create_backend(backend, cfg, dense_path, device=device, fp16=fp16,
                                    num_threads=int(num_threads))
        torch_dense = backend == "torch"
        return cls(model, cfg, engine, score_threshold=score_threshold, device=device, front_threads=1,
                   dense_threads=int(num_threads) if torch_dense else None)

    # ------------------------------------------------------------------------------ inference
    def front(self, points: np.ndarray) -> torch.Tensor:
        """Points ``(N, 6)`` (ego frame) -> x_conv4 ``(1, C4, H, W)`` float32 on the front-end device."""
        pts = np.asarray(points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != self.num_features:
            raise ValueError(f"points must be (N, {self.num_features}) {RADAR_FEATURES}, got {pts.shape}")
        batched = np.empty((pts.shape[0], 1 + self.num_features), np.float32)
        batched[:, 0] = 0.0
        batched[:, 1:] = pts
        with torch.inference_mode():
            return self.front_end(torch.from_numpy(batched).to(self.device), 1)

    def detect(self, points: np.ndarray) -> DetectionResult:
        """Detections for one frame of accumulated radar points ``(N, 6)`` in the ego frame.

        Non-finite rows must have been removed (the sweep accumulator does); points outside the
        grid are dropped by the pillariser, as in training.
        """
        t0 = time.perf_counter()
        if self.front_threads:
            torch.set_num_threads(self.front_threads)
        x_conv4 = self.front(points)
        t1 = time.perf_counter()
        if self.dense_threads:
            torch.set_num_threads(self.dense_threads)
        heads = self.backend.infer(x_conv4)
        t2 = time.perf_counter()
        if self.front_threads:
            torch.set_num_threads(self.front_threads)
        det = decode(heads, self.cfg.grid, self.post)[0]
        t3 = time.perf_counter()
        timings = {"front_end": (t1 - t0) * 1e3, "dense": (t2 - t1) * 1e3, "decode": (t3 - t2) * 1e3,
                   "total": (t3 - t0) * 1e3}
        return DetectionResult(np.asarray(det.boxes, np.float32), np.asarray(det.scores, np.float32),
                               np.asarray(det.labels, np.int64), len(points), timings)

    def warm_up(self, runs: int = 2) -> None:
        """Build the front end's GEMM kernels for the usual frame sizes, run a few frames of
        synthetic points (first-call allocations, ONNX Runtime arenas) and compile the decoding
        kernels."""
        rng = np.random.default_rng(0)
        r = self.cfg.grid.point_cloud_range
        pts = np.zeros((200, self.num_features), np.float32)
        pts[:, 0] = rng.uniform(r[0], r[3], 200)
        pts[:, 1] = rng.uniform(r[1], r[4], 200)
        pts[:, 2] = rng.uniform(r[2], r[5], 200)
        if isinstance(self.front_end, InferenceFrontEnd):
            self.front_end.warm_up()
        for _ in range(runs):
            self.detect(pts)
        decode_cpu.warm_up(len(TASKS) * len(REG_KEYS))  # a frame without candidates skips the NMS


def _check_export_weights(onnx_path: Path, checkpoint_path: str | Path) -> None:
    """Refuse an ONNX dense part exported from another checkpoint than the front end's.

    Exports of random weights (benchmarks) carry no checkpoint hash and are accepted.
    """
    from export.onnx import read_onnx_metadata

    weights = read_onnx_metadata(onnx_path).get("weights", {})
    want = weights.get("sha256")
    if weights.get("source") == "checkpoint" and want:
        have = file_sha256(checkpoint_path)
        if have != want:
            raise ModelMismatchError(
                f"{onnx_path} was exported from a checkpoint with sha256 {want[:16]} "
                f"({weights.get('file')}), "
                f"but the front end is loaded from {checkpoint_path} (sha256 {have[:16]}): the dense "
                "part and the front end would come from different weights; re-export the ONNX file "
                "from this checkpoint (python -m export.onnx --checkpoint ...)")


# ------------------------------------------------------------------------------------------
# live input: PointCloud2 -> sweeps -> accumulated points (what the node does per message)


def ns_to_seconds(stamp_ns: int) -> float:
    """Stamp [ns] -> seconds as the dataset loader computes them.

    nuScenes stamps are microseconds and the loader uses ``us * 1e-6``; a stamp that is a whole
    number of microseconds is converted the same way so that online and offline sweeps get
    bit-identical ``dt = t_ref - t_sweep`` (other stamps: ``ns * 1e-9``).
    """
    stamp_ns = int(stamp_ns)
    if stamp_ns % 1000 == 0:
        return (stamp_ns // 1000) * 1e-6
    return stamp_ns * 1e-9


def cloud_to_radar_points(msg: Any, max_points: int) -> tuple[np.ndarray, int]:
    """A radar sensor_msgs/PointCloud2 -> features ``(N, 6)`` float32 in its own frame, and the
    number of rows dropped for NaN/inf.

    Fields are found by name and datatype (:mod:`radardistill_ros.pointcloud`); the
    :data:`RADAR_FEATURES` fields are required. Raises :class:`PointCloudError` for a cloud that
    cannot be decoded (missing or mistyped fields, inconsistent steps, truncated data, more than
    ``max_points`` points).
    """
    arr = decode_pointcloud2(msg, required=RADAR_FEATURES, max_points=max_points)
    values, n_bad = drop_nonfinite(to_feature_array(arr, RADAR_FEATURES))
    return np.ascontiguousarray(values, np.float32), n_bad


def transform_error_reason(exc: TransformError) -> str:
    """Counter name of a transform failure: unknown_frame, tf_extrapolation, tf_connectivity."""
    if isinstance(exc, UnknownFrameError):
        return "unknown_frame"
    if isinstance(exc, ExtrapolationError):
        return "tf_extrapolation"
    if isinstance(exc, ConnectivityError):
        return "tf_connectivity"
    return "tf_error"


class RawSweep(NamedTuple):
    """One decoded radar message before its poses are known: ``points (N, 6)`` float32 in the
    sensor frame ``frame_id``, header stamp ``stamp_ns`` [ns], ``source`` the topic (sensor key)."""

    source: str
    frame_id: str
    stamp_ns: int
    points: np.ndarray


class AssembledFrame(NamedTuple):
    """Accumulated input of one detection: ``points (N, 6)`` in ``base_frame`` at ``t_ref``,
    ``T_fixed_from_base`` (4x4) at ``t_ref``, sweeps used, and sweeps dropped because their
    transforms failed (``{reason: count}``)."""

    points: np.ndarray
    T_fixed_from_base: np.ndarray
    num_sweeps: int
    failures: dict[str, int]


class SweepAssembler:
    """Keeps the recent sweeps of every radar topic and builds the network input for a trigger.

    Messages are stored undecided (:meth:`add`, cheap: done in the subscription callback); poses
    are looked up in the :class:`TransformBuffer` when a frame is assembled (:meth:`assemble`, in
    the worker), so transforms that arrive slightly after a cloud are still used. For a
    reference time ``t_ref`` (the trigger's stamp) each source contributes its newest
    ``num_sweeps`` sweeps with ``t_ref - max_age <= stamp <= t_ref`` -- the sweeps a dataset
    sample of the same reference time uses -- moved by :func:`radardistill_ros.sweeps.sweeps_to_ref`
    (extrinsics, ego motion and v*dt). Sweeps newer than ``t_ref`` (arrived while the worker was
    busy) wait for the next trigger.

    Thread-safe: one lock around the stored sweeps.

    Args:
        tf: transform buffer fed by /tf and /tf_static.
        fixed_frame: world frame of the ego poses (``map``).
        base_frame: ego frame (``base_link``), the model's reference frame.
        num_sweeps: sweeps per source (the model's ``data.radar_sweeps``).
        max_age: oldest sweep used, seconds before ``t_ref`` (> 0).
        source_order: order in which the sources' points are concatenated (sources not listed
            follow in order of first arrival). The network's float sums depend on the point order:
            give the dataset loader's channel order (``data.radar_channels``, i.e. the node's
            ``radar_topics`` in the same order) for bit-identical online/offline inputs.
    """

    def __init__(self, tf: TransformBuffer, fixed_frame: str, base_frame: str, num_sweeps: int,
                 max_age: float, source_order: Sequence[str] = ()) -> None:
        if num_sweeps < 1:
            raise ValueError(f"num_sweeps must be >= 1, got {num_sweeps}")
        if not max_age > 0.0:
            raise ValueError(f"max_age must be > 0, got {max_age}")
        self.tf = tf
        self.fixed_frame, self.base_frame = fixed_frame, base_frame
        self.num_sweeps, self.max_age = int(num_sweeps), float(max_age)
        self.source_order = tuple(source_order)
        # resolved sweeps: a few more than num_sweeps per source, for sweeps newer than a trigger
        self._resolved = SweepAccumulator(self.num_sweeps + 3, kind="radar")
        self._pending: list[RawSweep] = []
        self._lock = threading.Lock()

    def add(self, sweep: RawSweep) -> None:
        """Store a decoded sweep. Its poses are looked up now when the buffer already has them
        (that work then happens before the trigger, not on the detection's critical path: ~0.25
        of ~0.9 ms of a frame's accumulation in the node); otherwise at the next
        :meth:`assemble`. Either way a lookup only succeeds once the samples around the sweep's
        stamp are buffered, so both give the same pose (as in a bag replay: exact-stamp poses)."""
        try:
            resolved = self._resolve(sweep)
        except TransformError:
            resolved = None
        with self._lock:
            if resolved is not None:
                try:
                    self._resolved.add(resolved)
                    return
                except ValueError:  # left to assemble, which reports it as before
                    pass
            self._pending.append(sweep)
            limit = 8 * (self.num_sweeps + 3)
            if len(self._pending) > limit:  # transforms missing for a long time: keep it bounded
                del self._pending[: len(self._pending) - limit]

    def clear(self) -> None:
        """Forget every sweep (time jump backwards, bag loop)."""
        with self._lock:
            self._pending.clear()
            self._resolved.clear()

    def _resolve(self, raw: RawSweep) -> Sweep:
        t_ego_from_sensor = self.tf.lookup(self.base_frame, raw.frame_id, raw.stamp_ns)
        t_fixed_from_ego = self.tf.lookup(self.fixed_frame, self.base_frame, raw.stamp_ns)
        return Sweep(raw.points, ns_to_seconds(raw.stamp_ns), t_ego_from_sensor, t_fixed_from_ego, raw.source)

    def assemble(self, t_ref_ns: int, t_fixed_from_ref: np.ndarray | None = None) -> AssembledFrame:
        """Points of the stored sweeps in ``base_frame`` at ``t_ref_ns``.

        ``t_fixed_from_ref``: the ego pose at ``t_ref_ns`` if the caller has looked it up already
        (the node waits for it), else it is looked up here. Raises :class:`TransformError` when
        that pose is unavailable (the frame cannot be built); sweeps whose own transforms fail
        are dropped and counted in ``failures``.
        """
        if t_fixed_from_ref is None:
            t_fixed_from_ref = self.tf.lookup(self.fixed_frame, self.base_frame, int(t_ref_ns))
        t_ref = ns_to_seconds(t_ref_ns)
        failures: dict[str, int] = {}
        with self._lock:
            keep = []
            for raw in self._pending:
                if raw.stamp_ns > t_ref_ns:
                    keep.append(raw)
                    continue
                try:
                    self._resolved.add(self._resolve(raw))
                except TransformError as exc:
                    reason = transform_error_reason(exc)
                    failures[reason] = failures.get(reason, 0) + 1
            self._pending = keep
            selected = []
            seen = self._resolved.sensors
            for source in [s for s in self.source_order if s in seen] + [s for s in seen
                                                                          if s not in self.source_order]:
                usable = [s for s in self._resolved.sweeps(source)
                          if s.timestamp <= t_ref and t_ref - s.timestamp <= self.max_age]
                selected.extend(usable[-self.num_sweeps:])
        points = sweeps_to_ref(selected, t_fixed_from_ref, t_ref, kind="radar")
        return AssembledFrame(points, t_fixed_from_ref, len(selected), failures)
