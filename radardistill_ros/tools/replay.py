"""Replay a rosbag2 through rclpy with its original timing: ``ros2 bag play`` where ros2cli is absent.

Console script ``replay_bag``; same as:

    python -m radardistill_ros.tools.replay BAG [--rate R] [--loop] [--start-offset S] \\
        [--topics T ...] [--clock [HZ]] [--reliable-sensors] [--wait-subscribers S] [--delay S] [--duration S]

* Messages go out in bag-timestamp order at ``t0 + (t_bag - t_bag0) / rate`` (wall clock), as
  the raw CDR bytes stored in the bag through serialized publishers: nothing is re-serialised,
  header stamps are the recorded ones.
* QoS: ``/tf_static`` (and any topic recorded with transient-local offered QoS) is published
  reliable + transient local (keep last 1), like tf2's static broadcaster, so late joiners get it;
  PointCloud2 topics use the sensor-data profile of radar drivers (best effort, keep last 10;
  ``--reliable-sensors`` for reliable), which matches the node's default best-effort subscription
  (a reliable publisher would match it too); every other topic is reliable, keep last 100.
* ``--clock [HZ]`` publishes rosgraph_msgs/Clock with the bag time (default 100 Hz), for nodes
  with ``use_sim_time:=true``: extrapolated at the replay rate from the last published message,
  never going back (a sim-time node would see a time jump) except when a looped bag starts over.
* Bounded: it ends after the bag (or ``--duration`` seconds of wall time with ``--loop``).
  Time stamps of a looped bag repeat; the node clears its history on such a jump.

The :class:`Replayer` class is the library form (used by ``replay_evaluate`` and the benchmark):
it reports every published message's publish time through a callback.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radardistill_ros.tools.bag_io import BagMessage, read_messages

__all__ = ["PublishRecord", "Replayer", "header_stamp_ns", "main", "message_class"]

SENSOR_TYPES = ("sensor_msgs/msg/PointCloud2",)
LATCHED_TOPICS = ("/tf_static",)


def message_class(msgtype: str) -> type:
    """rclpy message class of a ROS type name such as ``sensor_msgs/msg/PointCloud2``."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def header_stamp_ns(raw: bytes) -> int | None:
    """Header stamp [ns] of a CDR message whose first field is a std_msgs/Header (PointCloud2,
    Detection3DArray, ...), read from the bytes without deserialising; None if too short.

    XCDR1: 4-byte encapsulation header (byte 1 = 0x01 little endian, 0x00 big endian), then
    ``int32 sec``, ``uint32 nanosec``.
    """
    if len(raw) < 12:
        return None
    order = "<" if raw[1] & 1 else ">"
    sec, nsec = struct.unpack_from(order + "iI", raw, 4)
    return sec * 1_000_000_000 + nsec


@dataclass
class PublishRecord:
    """One published message: topic, bag time [ns], header stamp [ns] (None when the type has no
    leading header), publish time (``time.time()`` [s]) and loop index."""

    topic: str
    bag_ns: int
    stamp_ns: int | None
    publish_s: float
    loop: int


@dataclass
class Replayer:
    """Publishes a bag's messages through an rclpy node with the original timing.

    Args:
        node: the rclpy node that owns the publishers.
        bag: rosbag2 directory.
        topics: only these topics (default all).
        rate: playback speed factor (> 0).
        start_offset: skip the first ``start_offset`` seconds of the bag.
        reliable_sensors: publish PointCloud2 topics reliable instead of best effort.
        clock_hz: publish /clock at this rate (0: no /clock).
    """

    node: Any
    bag: str | Path
    topics: Sequence[str] | None = None
    rate: float = 1.0
    start_offset: float = 0.0
    reliable_sensors: bool = False
    clock_hz: float = 0.0
    publishers: dict[str, Any] = field(default_factory=dict, init=False)
    _messages: list[BagMessage] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        msgs = list(read_messages(self.bag, self.topics))
        if not msgs:
            raise ValueError(f"{self.bag}: no messages on {self.topics or 'any topic'}")
        start = msgs[0].timestamp + round(self.start_offset * 1e9)
        # latched topics before the start offset still count: keep their newest message
        latched = {m.topic: m for m in msgs if m.topic in LATCHED_TOPICS and m.timestamp < start}
        self._messages = [*latched.values(), *(m for m in msgs if m.timestamp >= start)]
        self._messages.sort(key=lambda m: m.timestamp)
        for m in self._messages:
            if m.topic in self.publishers:
                continue
            if m.topic in LATCHED_TOPICS:
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            elif m.msgtype in SENSOR_TYPES:
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                 reliability=ReliabilityPolicy.RELIABLE if self.reliable_sensors
                                 else ReliabilityPolicy.BEST_EFFORT)
            else:
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                                 reliability=ReliabilityPolicy.RELIABLE)
            self.publishers[m.topic] = self.node.create_publisher(message_class(m.msgtype), m.topic, qos)
        self._clock_pub = None
        if self.clock_hz > 0:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = self.node.create_publisher(Clock, "/clock", QoSProfile(depth=10))

    @property
    def messages(self) -> list[BagMessage]:
        """The messages that will be published, in order."""
        return self._messages

    def wait_for_subscribers(self, topics: Iterable[str], timeout: float) -> list[str]:
        """Wait until every topic in ``topics`` has a matched subscriber; returns the ones without."""
        deadline = time.monotonic() + timeout
        missing = [t for t in topics if t in self.publishers]
        while missing and time.monotonic() < deadline:
            time.sleep(0.05)
            missing = [t for t in missing if self.publishers[t].get_subscription_count() == 0]
        return missing

    def play(self, loop: bool = False, duration: float | None = None,
             on_publish: Callable[[PublishRecord], None] | None = None,
             stop: threading.Event | None = None) -> int:
        """Publish the messages (once, or looping until ``duration`` wall seconds / ``stop``);
        returns the number published."""
        count, n_loop = 0, 0
        t_begin = time.monotonic()
        bag0 = self._messages[0].timestamp
        bag_now = [bag0]
        clock_stop = threading.Event()
        clock_thread = None
        if self._clock_pub is not None:
            clock_thread = threading.Thread(target=self._clock_loop, args=(bag_now, clock_stop), daemon=True)
            clock_thread.start()
        try:
            while True:
                t0 = time.monotonic()
                for m in self._messages:
                    if stop is not None and stop.is_set():
                        return count
                    if duration is not None and time.monotonic() - t_begin > duration:
                        return count
                    due = t0 + (m.timestamp - bag0) * 1e-9 / self.rate
                    _sleep_until(due)
                    bag_now[0] = m.timestamp
                    self.publishers[m.topic].publish(m.rawdata)
                    publish_s = time.time()
                    count += 1
                    if on_publish is not None:
                        stamp = header_stamp_ns(m.rawdata) if m.msgtype in SENSOR_TYPES else None
                        on_publish(PublishRecord(m.topic, m.timestamp, stamp, publish_s, n_loop))
                n_loop += 1
                if not loop:
                    return count
        finally:
            clock_stop.set()
            if clock_thread is not None:
                clock_thread.join(timeout=1.0)

    def flush(self, timeout: float = 2.0) -> bool:
        """Wait (at most ``timeout`` s in all) until every reliable publisher's messages are
        acknowledged by its subscribers, so the last messages of a replay are not lost when the
        process exits right after publishing them; True if all were."""
        from rclpy.duration import Duration

        deadline = time.monotonic() + timeout
        ok = True
        for pub in self.publishers.values():
            left = max(0.0, deadline - time.monotonic())
            ok &= pub.wait_for_all_acked(Duration(nanoseconds=round(left * 1e9)))
        return ok

    def _clock_loop(self, bag_now: list[int], stop: threading.Event) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        period = 1.0 / self.clock_hz
        last_wall, last_bag = time.monotonic(), bag_now[0]
        last_t = last_bag
        while not stop.wait(period):
            now = time.monotonic()
            if bag_now[0] != last_bag:
                if bag_now[0] < last_bag:  # the bag starts over (--loop): time jumps back once
                    last_t = bag_now[0]
                last_wall, last_bag = now, bag_now[0]
            # extrapolated from the last published message; when the publishing thread runs late
            # the extrapolation passes the next message's time, so hold it instead of going back
            t = max(last_t, last_bag + round((now - last_wall) * self.rate * 1e9))
            last_t = t
            sec, nsec = divmod(t, 1_000_000_000)
            self._clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nsec)))


def publish_log_writer(f: Any) -> Callable[[PublishRecord], None]:
    """An ``on_publish`` callback writing one CSV row per :class:`PublishRecord` to the open text
    file ``f`` as messages go out (a long ``--loop`` replay keeps nothing in memory); ``stamp_ns``
    is empty for types without a header."""
    w = csv.writer(f)
    w.writerow(("topic", "bag_ns", "stamp_ns", "publish_s", "loop"))

    def write(r: PublishRecord) -> None:
        stamp = "" if r.stamp_ns is None else r.stamp_ns
        w.writerow((r.topic, r.bag_ns, stamp, f"{r.publish_s:.6f}", r.loop))

    return write


def _sleep_until(due: float) -> None:
    """Sleep until ``time.monotonic() >= due`` (coarse sleep, then a short spin for ~0.2 ms accuracy)."""
    while True:
        left = due - time.monotonic()
        if left <= 0:
            return
        time.sleep(left - 0.0005 if left > 0.002 else 0.0001)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point (console script ``replay_bag``); returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m radardistill_ros.tools.replay",
                                 description="Publish a rosbag2 through rclpy with its original timing "
                                             "(raw CDR bytes; what `ros2 bag play` does)")
    ap.add_argument("bag", help="rosbag2 directory (mcap or sqlite3)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1)")
    ap.add_argument("--loop", action="store_true", help="play again and again (bounded by --duration)")
    ap.add_argument("--duration", type=float, default=None, help="stop after this many wall seconds")
    ap.add_argument("--start-offset", type=float, default=0.0, help="skip the first S seconds of the bag")
    ap.add_argument("--delay", type=float, default=0.0, metavar="S",
                    help="sleep S seconds before playing (after --wait-subscribers): discovery matches each "
                         "side separately, and best-effort messages sent before the subscriber's side has "
                         "matched are lost (ros2 bag play --delay)")
    ap.add_argument("--topics", nargs="+", default=None, help="only these topics (default: all)")
    ap.add_argument("--clock", nargs="?", type=float, const=100.0, default=0.0, metavar="HZ",
                    help="publish /clock with the bag time (default 100 Hz when given)")
    ap.add_argument("--reliable-sensors", action="store_true",
                    help="publish PointCloud2 topics reliable (default: best effort, as radar drivers)")
    ap.add_argument("--wait-subscribers", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds for a subscriber on every PointCloud2 topic before playing")
    ap.add_argument("--publish-log", metavar="CSV", default=None,
                    help="write one row per published message: topic, bag_ns, stamp_ns (header, sensor "
                         "types), publish_s (wall clock), loop")
    ap.add_argument("--quiet", action="store_true", help="no summary")
    args = ap.parse_args(argv)
    if args.loop and args.duration is None:
        print("note: --loop without --duration plays until Ctrl-C", file=sys.stderr)

    import rclpy

    rclpy.init(args=None)
    node = rclpy.create_node("radardistill_replay")
    try:
        rep = Replayer(node, args.bag, args.topics, args.rate, args.start_offset, args.reliable_sensors,
                       args.clock)
        if args.wait_subscribers > 0:
            sensors = sorted({m.topic for m in rep.messages if m.msgtype in SENSOR_TYPES})
            missing = rep.wait_for_subscribers(sensors, args.wait_subscribers)
            if missing:
                print(f"warning: no subscriber on {missing} after {args.wait_subscribers} s", file=sys.stderr)
        if args.delay > 0:
            time.sleep(args.delay)
        with contextlib.ExitStack() as stack:
            log = stack.enter_context(open(args.publish_log, "w", newline="")) if args.publish_log else None
            t = time.monotonic()
            n = rep.play(loop=args.loop, duration=args.duration,
                         on_publish=publish_log_writer(log) if log is not None else None)
        if not rep.flush():
            print("warning: some reliable messages were not acknowledged within 2 s", file=sys.stderr)
        if not args.quiet:
            print(f"published {n} messages on {len(rep.publishers)} topics in {time.monotonic() - t:.1f} s")
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
