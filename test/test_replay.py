"""The bag replay tool: raw CDR bytes out through rclpy with the bag's timing, latched /tf_static,
/clock; received in another process over DDS on loopback."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _node_helpers import ROOT, radar_cloud_array

from radardistill_ros.pointcloud import decode_pointcloud2, make_pointcloud2_msg
from radardistill_ros.tools.bag_io import BagWriter, read_messages
from radardistill_ros.tools.replay import header_stamp_ns

T0 = 1_600_000_000 * 1_000_000_000
PERIOD_NS = 50_000_000
N = 20
TOPIC = "/radar/front/points"


def _write_bag(path: Path) -> Path:
    with BagWriter(path) as w:
        t = w.typestore.types
        pc2, pf = t["sensor_msgs/msg/PointCloud2"], t["sensor_msgs/msg/PointField"]

        def tf(stamp: int, parent: str, child: str) -> object:
            sec, nsec = divmod(stamp, 1_000_000_000)
            hdr = t["std_msgs/msg/Header"](t["builtin_interfaces/msg/Time"](sec, nsec), parent)
            tr = t["geometry_msgs/msg/Transform"](t["geometry_msgs/msg/Vector3"](1.0, 0.0, 0.0),
                                                  t["geometry_msgs/msg/Quaternion"](0.0, 0.0, 0.0, 1.0))
            return t["tf2_msgs/msg/TFMessage"]([t["geometry_msgs/msg/TransformStamped"](hdr, child, tr)])

        w.write("/tf_static", "tf2_msgs/msg/TFMessage", T0, tf(T0, "base_link", "RADAR_FRONT"))
        for i in range(N):
            stamp = T0 + i * PERIOD_NS
            w.write("/tf", "tf2_msgs/msg/TFMessage", stamp, tf(stamp, "map", "base_link"))
            cloud = make_pointcloud2_msg(radar_cloud_array(10 + i, seed=i), stamp, "RADAR_FRONT", pc2, pf)
            w.write(TOPIC, "sensor_msgs/msg/PointCloud2", stamp, cloud)
    return path


def test_header_stamp_is_read_from_cdr_bytes(tmp_path: Path) -> None:
    bag = _write_bag(tmp_path / "bag")
    clouds = [m for m in read_messages(bag, [TOPIC])]
    assert [header_stamp_ns(m.rawdata) for m in clouds] == [T0 + i * PERIOD_NS for i in range(N)]
    assert header_stamp_ns(b"\x00\x01") is None


@pytest.mark.ros
def test_replay_publishes_raw_bytes_with_bag_timing(tmp_path: Path) -> None:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    from radardistill_ros.ros_client import spun_node

    bag = _write_bag(tmp_path / "bag")
    want = {header_stamp_ns(m.rawdata): m.msg for m in read_messages(bag, [TOPIC])}
    client = spun_node("replay_test_receiver")
    node = client.__enter__()
    got: dict[str, list] = {"cloud": [], "tf": [], "static": [], "clock": []}
    lock = threading.Lock()

    def keep(kind: str):
        def cb(msg) -> None:
            with lock:
                got[kind].append((time.monotonic(), msg))
        return cb

    # reliable here: best effort may lose a message on a loaded machine, and this test counts them
    sensor = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(PointCloud2, TOPIC, keep("cloud"), sensor, raw=True)
    node.create_subscription(TFMessage, "/tf", keep("tf"), QoSProfile(depth=100))
    node.create_subscription(Clock, "/clock", keep("clock"), QoSProfile(depth=1000))
    log_csv = tmp_path / "published.csv"
    proc = subprocess.Popen([sys.executable, "-m", "radardistill_ros.tools.replay", str(bag), "--rate", "2",
                             "--wait-subscribers", "30", "--delay", "1.0", "--clock", "50",
                             "--reliable-sensors", "--publish-log", str(log_csv)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 60
        while not got["cloud"] and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        # subscribe to /tf_static only now, after it was published: transient local delivers it
        latched = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(TFMessage, "/tf_static", keep("static"), latched)
        out, _ = proc.communicate(timeout=60)
        time.sleep(0.3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.__exit__(None, None, None)
    assert proc.returncode == 0, out.decode(errors="replace")
    clouds = [(t, deserialize_message(raw, PointCloud2)) for t, raw in got["cloud"]]
    assert len(clouds) == N
    for _, msg in clouds:
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        ref = want[stamp]
        assert msg.header.frame_id == ref.header.frame_id and msg.width == ref.width
        a, b = decode_pointcloud2(msg), decode_pointcloud2(ref)
        assert a.tobytes() == b.tobytes()
    # received in publication order (reliable, one publisher)
    assert [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for _, m in clouds] == sorted(want)
    # bag timing at rate 2, from the replay's publish log (the receive times of this process also
    # carry its own scheduling delays: a 0.66 s stall of the receiver once failed a span check here)
    rows = [r for r in csv.DictReader(log_csv.open()) if r["topic"] == TOPIC]
    assert [int(r["stamp_ns"]) for r in rows] == sorted(want)
    pub = np.array([float(r["publish_s"]) for r in rows])
    bag_s = np.array([int(r["bag_ns"]) for r in rows]) * 1e-9
    lateness = (pub - pub[0]) - (bag_s - bag_s[0]) / 2.0                  # rate 2
    assert np.all(np.abs(lateness) < 0.1), lateness
    assert len(got["tf"]) == N
    assert len(got["static"]) == 1 and got["static"][0][1].transforms[0].child_frame_id == "RADAR_FRONT"
    clock_ns = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for _, c in got["clock"]]
    assert clock_ns and T0 <= min(clock_ns) and max(clock_ns) <= T0 + N * PERIOD_NS
    assert clock_ns == sorted(clock_ns)
