"""A separate rclpy process for the DDS exchange test: ``pub`` or ``sub`` of fixed messages.

    python test/dds_peer.py pub --seconds 20
    python test/dds_peer.py sub --out received.json --seconds 20

The publisher sends the messages of :func:`make_messages` every 50 ms until its time is up or
the subscriber's ``done`` message arrives; the subscriber writes the first message of each type as
a plain dict (every field, recursively) to JSON. Both loops are bounded in time.
"""

from __future__ import annotations

import argparse
import array
import json
import sys
import time


def make_messages() -> dict[str, object]:
    """Deterministic PointCloud2 and Detection3DArray with every kind of field set."""
    from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion, Vector3
    from sensor_msgs.msg import PointCloud2, PointField
    from std_msgs.msg import Header
    from vision_msgs.msg import (
        BoundingBox3D,
        Detection3D,
        Detection3DArray,
        ObjectHypothesis,
        ObjectHypothesisWithPose,
    )

    header = Header(frame_id="base_link")
    header.stamp.sec = 1_532_402_927
    header.stamp.nanosec = 647_951_000
    cloud = PointCloud2(header=header, height=1, width=3, is_bigendian=False, point_step=13,
                        row_step=39, is_dense=True)
    cloud.fields = [PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
                    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
                    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
                    PointField(name="dyn_prop", offset=12, datatype=PointField.INT8, count=1)]
    cloud.data = array.array("B", bytes(range(39)))

    dets = Detection3DArray(header=header)
    for i, (cls, score) in enumerate([("car", 0.91), ("pedestrian", 0.42)]):
        pose = Pose(position=Point(x=10.5 + i, y=-3.25, z=0.9),
                    orientation=Quaternion(x=0.0, y=0.0, z=0.3826834, w=0.9238795))
        det = Detection3D(header=header, id=f"obj{i}")
        cov = PoseWithCovariance(pose=pose)
        cov.covariance = [float(k) for k in range(36)]
        det.results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=cls, score=score),
                                                pose=cov)]
        det.bbox = BoundingBox3D(center=pose, size=Vector3(x=4.6, y=1.9, z=1.7 - 0.9 * i))
        dets.detections.append(det)
    return {"cloud": cloud, "detections": dets}


def to_plain(msg: object) -> object:
    """A ROS message as nested dicts/lists of Python scalars (field order kept)."""
    if hasattr(msg, "get_fields_and_field_types"):
        return {name: to_plain(getattr(msg, name)) for name in msg.get_fields_and_field_types()}
    if isinstance(msg, (list, tuple, array.array)) or type(msg).__name__ == "ndarray":
        return [to_plain(v) for v in msg]
    if isinstance(msg, bytes):
        return list(msg)
    return msg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["pub", "sub"])
    ap.add_argument("--out", default="received.json")
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args(argv)

    import rclpy
    from sensor_msgs.msg import PointCloud2
    from std_msgs.msg import Empty
    from vision_msgs.msg import Detection3DArray

    rclpy.init()
    node = rclpy.create_node(f"dds_peer_{args.role}")
    deadline = time.monotonic() + args.seconds
    try:
        if args.role == "pub":
            msgs = make_messages()
            pub_c = node.create_publisher(PointCloud2, "test_cloud", 10)
            pub_d = node.create_publisher(Detection3DArray, "test_detections", 10)
            done = []
            node.create_subscription(Empty, "test_done", lambda _m: done.append(1), 10)
            while not done and time.monotonic() < deadline:
                pub_c.publish(msgs["cloud"])
                pub_d.publish(msgs["detections"])
                rclpy.spin_once(node, timeout_sec=0.05)
            return 0 if done else 3
        got: dict[str, object] = {}
        node.create_subscription(PointCloud2, "test_cloud",
                                 lambda m: got.setdefault("cloud", to_plain(m)), 10)
        node.create_subscription(Detection3DArray, "test_detections",
                                 lambda m: got.setdefault("detections", to_plain(m)), 10)
        pub_done = node.create_publisher(Empty, "test_done", 10)
        while len(got) < 2 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.05)
        with open(args.out, "w") as f:
            json.dump(got, f)
        for _ in range(20):  # tell the publisher, a few times in case the first is lost
            pub_done.publish(Empty())
            rclpy.spin_once(node, timeout_sec=0.05)
        return 0 if len(got) == 2 else 4
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
