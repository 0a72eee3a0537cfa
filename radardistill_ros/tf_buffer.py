"""A ROS-free transform buffer: what tf2_ros.Buffer gives a node, for environments without tf2.

Feed it the records of ``/tf`` (dynamic, time-stamped, bounded history) and ``/tf_static``
(static, valid at any time) — geometry_msgs/TransformStamped-like objects from rclpy or rosbags,
or plain values — and look up ``T_target_from_source`` (4x4, float64) through the frame tree.

Conventions (as tf2 / REP 103):

* A record ``(parent=header.frame_id, child=child_frame_id, translation, rotation)`` is the pose of
  the child frame in the parent frame: ``p_parent = R(q) @ p_child + t``, metres.
* Quaternions are ROS order ``(x, y, z, w)`` (nuScenes tables and :mod:`radardistill_ros.geometry`
  use ``(w, x, y, z)``; the matrix maths is geometry's, only SLERP lives here).
* Times are integer nanoseconds since the epoch; a ``float`` is read as seconds; a
  builtin_interfaces/Time-like object (``.sec``, ``.nanosec``) is accepted everywhere.
  ``time=None`` or ``0`` means "latest time available on every link of the chain", as in tf2.
* Between two samples a link is interpolated linearly in translation and by SLERP in rotation;
  outside its samples it is not extrapolated: lookups more than ``extrapolation_tolerance`` [s]
  past either end raise :class:`ExtrapolationError` (within it the nearest sample is used).
* Each frame has one parent; a record that gives a frame a new parent (or switches it between
  static and dynamic) replaces its history. Leading ``/`` in frame ids is ignored.

Thread-safe (one lock), so ROS callbacks may feed it while another thread looks up.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from radardistill_ros.cdr import CdrError, CdrReader
from radardistill_ros.geometry import invert_transform, make_transform, quat_to_rot

__all__ = [
    "ConnectivityError",
    "ExtrapolationError",
    "TransformBuffer",
    "TransformError",
    "TransformRecord",
    "UnknownFrameError",
    "parse_tf_message_cdr",
    "slerp_xyzw",
    "stamp_to_ns",
]

NS_PER_S = 1_000_000_000


class TransformError(Exception):
    """Base class of lookup failures (tf2's TransformException)."""


class UnknownFrameError(TransformError, LookupError):
    """A frame id that no transform names (tf2's LookupException)."""


class ConnectivityError(TransformError):
    """Both frames are known but not in the same tree (tf2's ConnectivityException)."""


class ExtrapolationError(TransformError):
    """The requested time is outside the buffered samples of a link (tf2's ExtrapolationException)."""


def stamp_to_ns(stamp: Any) -> int:
    """Nanoseconds from ``int`` [ns], ``float`` [s] or a Time-like object (``.sec``, ``.nanosec``)."""
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if isinstance(stamp, (float, np.floating)):
        return round(float(stamp) * NS_PER_S)
    raise TypeError(f"cannot read a time from {stamp!r} (int ns, float s or Time with sec/nanosec)")


class TransformRecord(NamedTuple):
    """One geometry_msgs/TransformStamped: the pose of ``child`` in ``parent`` at ``stamp_ns``
    [ns], ``translation`` (x, y, z) [m], ``rotation_xyzw`` a quaternion in ROS order (the
    arguments of :meth:`TransformBuffer.set_transform`)."""

    parent: str
    child: str
    stamp_ns: int
    translation: tuple[float, float, float]
    rotation_xyzw: tuple[float, float, float, float]


def parse_tf_message_cdr(raw: bytes) -> list[TransformRecord]:
    """The transforms of a serialised tf2_msgs/TFMessage (plain CDR, either byte order), without
    building message objects. Raises :class:`TransformError` for bytes that do not hold one."""
    try:
        r = CdrReader(raw, "TFMessage")
        # a TransformStamped is >= 8 (stamp) + 4 + 4 (two strings) + 56 (7 float64) bytes
        out = []
        for _ in range(r.sequence_length(72)):
            stamp_ns, parent = r.header()
            child = r.string()
            out.append(TransformRecord(parent, child, stamp_ns, r.f64x3(), r.f64x4()))
    except CdrError as exc:
        raise TransformError(f"not a serialised TFMessage: {exc}") from None
    return out


def slerp_xyzw(q0: np.ndarray, q1: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical linear interpolation of unit quaternions (x, y, z, w), shortest arc, alpha in [0, 1]."""
    return np.array(_slerp(tuple(map(float, q0)), tuple(map(float, q1)), float(alpha)))


def _slerp(q0: tuple[float, ...], q1: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """:func:`slerp_xyzw` on 4-tuples of floats (scalar arithmetic: the buffer interpolates one
    link per lookup, where numpy's per-call cost was most of the time)."""
    dot = sum(a * b for a, b in zip(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = tuple(-b for b in q1), -dot
    if dot > 0.9995:  # nearly parallel: normalised lerp is exact to float precision
        q = tuple(a + alpha * (b - a) for a, b in zip(q0, q1))
        n = math.sqrt(sum(v * v for v in q))
        return tuple(v / n for v in q)
    theta = math.acos(min(dot, 1.0))
    s = math.sin(theta)
    w0, w1 = math.sin((1.0 - alpha) * theta) / s, math.sin(alpha * theta) / s
    return tuple(w0 * a + w1 * b for a, b in zip(q0, q1))


def _norm_frame(frame: str) -> str:
    frame = str(frame).lstrip("/")
    if not frame:
        raise TransformError("empty frame id")
    return frame


@dataclass
class _Link:
    """History of one child frame's pose in its parent frame (times sorted ascending, ns);
    a static link keeps its one matrix."""

    parent: str
    static: bool
    times: list[int] = field(default_factory=list)
    translations: list[tuple[float, float, float]] = field(default_factory=list)
    rotations: list[tuple[float, float, float, float]] = field(default_factory=list)  # (x, y, z, w), unit
    matrix: np.ndarray | None = None


def _matrix(t: tuple[float, ...], q_xyzw: tuple[float, ...]) -> np.ndarray:
    """4x4 ``T_parent_from_child`` from a translation and a ROS-order quaternion."""
    x, y, z, w = q_xyzw
    return make_transform(quat_to_rot((w, x, y, z)), t)


def _floats(values: Any, n: int) -> tuple[float, ...]:
    """``n`` floats from a tuple of floats (as parsed from CDR) or anything numpy reads."""
    if type(values) is tuple and len(values) == n and all(type(v) is float for v in values):
        return values
    return tuple(np.asarray(values, dtype=np.float64).reshape(n).tolist())


class TransformBuffer:
    """Frame tree from /tf and /tf_static records with bounded, interpolated history.

    Args:
        cache_time: dynamic history kept per link [s], counted back from its newest sample.
        extrapolation_tolerance: how far [s] a lookup may lie outside a link's samples (then the
            nearest sample is used) before :class:`ExtrapolationError`.
    """

    def __init__(self, cache_time: float = 10.0, extrapolation_tolerance: float = 0.0) -> None:
        if cache_time <= 0 or extrapolation_tolerance < 0:
            raise ValueError("cache_time must be > 0 and extrapolation_tolerance >= 0")
        self._cache_ns = round(cache_time * NS_PER_S)
        self._tol_ns = round(extrapolation_tolerance * NS_PER_S)
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------- input
    def set_transform(self, parent: str, child: str, stamp: Any, translation: Any, rotation_xyzw: Any,
                      static: bool = False) -> bool:
        """Add one transform (pose of ``child`` in ``parent``; translation [m], quaternion x, y, z, w).

        Returns False when a dynamic sample is older than the cache window and was dropped.
        Raises :class:`TransformError` for an empty or self-referencing frame id, non-finite values
        or a zero quaternion.
        """
        parent, child = _norm_frame(parent), _norm_frame(child)
        if parent == child:
            raise TransformError(f"transform from {child!r} to itself")
        t, q = _floats(translation, 3), _floats(rotation_xyzw, 4)
        if not all(map(math.isfinite, t + q)):
            raise TransformError(f"non-finite transform {parent!r} -> {child!r}: t={t}, q={q}")
        qn = math.sqrt(sum(v * v for v in q))
        if qn < 1e-9:
            raise TransformError(f"zero quaternion for {parent!r} -> {child!r}")
        q = tuple(v / qn for v in q)
        ns = stamp_to_ns(stamp)
        with self._lock:
            link = self._links.get(child)
            if link is None or link.parent != parent or link.static != static:
                link = self._links[child] = _Link(parent, static)
            if static:
                link.times, link.translations, link.rotations = [ns], [t], [q]
                link.matrix = _matrix(t, q)
                return True
            if link.times and ns < link.times[-1] - self._cache_ns:
                return False
            i = bisect.bisect_left(link.times, ns)
            if i < len(link.times) and link.times[i] == ns:  # repeated stamp: newest data wins
                link.translations[i], link.rotations[i] = t, q
            else:
                link.times.insert(i, ns)
                link.translations.insert(i, t)
                link.rotations.insert(i, q)
            cut = bisect.bisect_left(link.times, link.times[-1] - self._cache_ns)
            if cut:
                del link.times[:cut], link.translations[:cut], link.rotations[:cut]
            return True

    def add_transform_stamped(self, msg: Any, static: bool = False) -> bool:
        """Add a geometry_msgs/TransformStamped-like record (rclpy or rosbags message)."""
        tr, rot = msg.transform.translation, msg.transform.rotation
        return self.set_transform(msg.header.frame_id, msg.child_frame_id, msg.header.stamp,
                                  (tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w), static)

    def add_tf_message(self, msg: Any, static: bool = False) -> int:
        """Add every record of a tf2_msgs/TFMessage-like message (``.transforms``); returns how many
        were kept. Use ``static=True`` for /tf_static."""
        return sum(self.add_transform_stamped(ts, static) for ts in msg.transforms)

    def add_tf_messages(self, msgs: Iterable[Any], static: bool = False) -> int:
        """:meth:`add_tf_message` over several messages."""
        return sum(self.add_tf_message(m, static) for m in msgs)

    def clear(self) -> None:
        """Forget every transform (e.g. after a bag loops back in time)."""
        with self._lock:
            self._links.clear()

    # ---------------------------------------------------------------------------------- queries
    def frames(self) -> set[str]:
        """Every frame id named as a parent or a child."""
        with self._lock:
            return set(self._links) | {link.parent for link in self._links.values()}

    def has_frame(self, frame: str) -> bool:
        """True when a transform names ``frame`` (leading ``/`` ignored) as parent or child."""
        with self._lock:
            return self._has_frame(str(frame).lstrip("/"))

    def _has_frame(self, frame: str) -> bool:
        return frame in self._links or any(link.parent == frame for link in self._links.values())

    def parent_of(self, frame: str) -> str | None:
        """Parent frame id of ``frame`` (None for a root or unknown frame)."""
        with self._lock:
            link = self._links.get(_norm_frame(frame))
            return link.parent if link else None

    def _chain(self, frame: str) -> list[str]:
        """``[frame, parent, grandparent, ..., root]``; ConnectivityError on a loop."""
        chain, seen = [frame], {frame}
        while frame in self._links:
            frame = self._links[frame].parent
            if frame in seen:
                raise ConnectivityError(f"loop in the frame tree through {frame!r}: {chain}")
            chain.append(frame)
            seen.add(frame)
        return chain

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames whose links lead from source up to the common ancestor, and from target up to it."""
        if not (self._has_frame(target) and self._has_frame(source)):
            known = set(self._links) | {link.parent for link in self._links.values()}
            unknown = [f for f in (target, source) if f not in known]
            raise UnknownFrameError(
                f"frame(s) {unknown} do not exist in the buffer; known frames: {sorted(known)}")
        up_s, up_t = self._chain(source), self._chain(target)
        index_t = {f: i for i, f in enumerate(up_t)}
        for i, f in enumerate(up_s):
            if f in index_t:
                return up_s[:i], up_t[:index_t[f]]
        raise ConnectivityError(
            f"cannot transform {source!r} into {target!r}: they are in different trees "
            f"(roots {up_s[-1]!r} and {up_t[-1]!r})")

    def _latest_common(self, links: list[str]) -> int | None:
        dyn = [self._links[c].times[-1] for c in links if not self._links[c].static]
        return min(dyn) if dyn else None

    def _link_matrix(self, child: str, ns: int | None) -> np.ndarray:
        link = self._links[child]
        if link.matrix is not None:
            return link.matrix
        if ns is None:
            return _matrix(link.translations[-1], link.rotations[-1])
        times = link.times
        i = bisect.bisect_left(times, ns)
        if i < len(times) and times[i] == ns:
            return _matrix(link.translations[i], link.rotations[i])
        if i == 0 or i == len(times):
            edge = 0 if i == 0 else len(times) - 1
            gap = abs(ns - times[edge])
            if gap <= self._tol_ns:
                return _matrix(link.translations[edge], link.rotations[edge])
            when = "past" if i == 0 else "future"
            raise ExtrapolationError(
                f"lookup of {link.parent!r} -> {child!r} at t={ns / NS_PER_S:.9f} s would extrapolate "
                f"{gap / NS_PER_S:.6f} s into the {when}: buffered [{times[0] / NS_PER_S:.9f}, "
                f"{times[-1] / NS_PER_S:.9f}] s, tolerance {self._tol_ns / NS_PER_S:.6f} s")
        t0, t1 = times[i - 1], times[i]
        alpha = (ns - t0) / (t1 - t0)
        trans = tuple((1.0 - alpha) * a + alpha * b
                      for a, b in zip(link.translations[i - 1], link.translations[i]))
        return _matrix(trans, _slerp(link.rotations[i - 1], link.rotations[i], alpha))

    def latest_common_time(self, target_frame: str, source_frame: str) -> int | None:
        """Newest time [ns] at which every dynamic link between the two frames has data; None when
        the chain is all static (any time works)."""
        target, source = _norm_frame(target_frame), _norm_frame(source_frame)
        with self._lock:
            if target == source:
                return None
            up_s, up_t = self._path(target, source)
            return self._latest_common(up_s + up_t)

    def lookup(self, target_frame: str, source_frame: str, time: Any = None) -> np.ndarray:
        """``T_target_from_source`` (4x4 float64) at ``time``: ``p_target = T @ [p_source, 1]``.

        ``time``: ns (int), s (float) or a Time-like object; None or 0: latest common time.
        Identical frame ids give the identity (even when the frame is not in the buffer).
        Raises :class:`UnknownFrameError`, :class:`ConnectivityError`, :class:`ExtrapolationError`.
        """
        target, source = _norm_frame(target_frame), _norm_frame(source_frame)
        if target == source:
            return np.eye(4)
        ns = None if time is None else stamp_to_ns(time)
        with self._lock:
            up_s, up_t = self._path(target, source)
            if not ns:
                ns = self._latest_common(up_s + up_t)
            anc_from_source = self._chain_matrix(up_s, ns)  # source, parent(source), ... below the ancestor
            anc_from_target = self._chain_matrix(up_t, ns)
        if anc_from_target is None:  # the target is the common ancestor (map <- base_link <- radar)
            return np.eye(4) if anc_from_source is None else anc_from_source
        inv = invert_transform(anc_from_target)
        return inv if anc_from_source is None else inv @ anc_from_source

    def _chain_matrix(self, links: list[str], ns: int | None) -> np.ndarray | None:
        """Product of the link transforms ``links`` (child first) at ``ns``; None for no link."""
        out = None
        for child in links:
            m = self._link_matrix(child, ns)
            out = m.copy() if out is None else m @ out  # (a static link's matrix is shared)
        return out

    def can_transform(self, target_frame: str, source_frame: str, time: Any = None) -> bool:
        """True when :meth:`lookup` would succeed."""
        try:
            self.lookup(target_frame, source_frame, time)
        except TransformError:
            return False
        return True
