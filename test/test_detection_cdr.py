"""detection3d_array_cdr writes the bytes two independent CDR serialisers write (rosbags, and the
rmw's through rclpy), for empty arrays, one box and mixed class names (string lengths that move
the float64 alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from radardistill_ros import ros_env  # noqa: F401  (makes the locally built interfaces importable)
from radardistill_ros.cdr import header_cdr
from radardistill_ros.detection_cdr import detection3d_array_cdr
from radardistill_ros.geometry import quat_from_yaw
from radardistill_ros.interfaces import jazzy_typestore

CLASSES = ["car", "pedestrian", "traffic_cone", "bus", "construction_vehicle"]
STAMP = 1_700_000_123_456_789_012 // 1000  # 1.7e9 s + some ns


def sample(k: int, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 20, (k, 3))
    yaw = rng.uniform(-np.pi, np.pi, k)
    quats = quat_from_yaw(yaw)[:, [1, 2, 3, 0]]
    sizes = rng.uniform(0.3, 12, (k, 3))
    scores = rng.random(k)
    classes = [CLASSES[i % len(CLASSES)] for i in range(k)]
    ids = [f"id{i * 37}" for i in range(k)]
    return centres, quats, sizes, scores, classes, ids


def rosbags_reference(frame: str, centres, quats, sizes, scores, classes, ids) -> bytes:
    store = jazzy_typestore()
    t = store.types
    sec, nsec = divmod(STAMP, 1_000_000_000)
    header = t["std_msgs/msg/Header"](t["builtin_interfaces/msg/Time"](sec, nsec), frame)
    dets = []
    for c, q, s, score, cls, ident in zip(centres, quats, sizes, scores, classes, ids):
        pose = t["geometry_msgs/msg/Pose"](t["geometry_msgs/msg/Point"](*map(float, c)),
                                           t["geometry_msgs/msg/Quaternion"](*map(float, q)))
        hyp = t["vision_msgs/msg/ObjectHypothesisWithPose"](
            t["vision_msgs/msg/ObjectHypothesis"](cls, float(score)),
            t["geometry_msgs/msg/PoseWithCovariance"](pose, np.zeros(36)))
        bbox = t["vision_msgs/msg/BoundingBox3D"](pose, t["geometry_msgs/msg/Vector3"](*map(float, s)))
        dets.append(t["vision_msgs/msg/Detection3D"](header, [hyp], bbox, ident))
    msg = t["vision_msgs/msg/Detection3DArray"](header, dets)
    return bytes(store.serialize_cdr(msg, "vision_msgs/msg/Detection3DArray"))


@pytest.mark.parametrize("k", [0, 1, 7])
@pytest.mark.parametrize("frame", ["base_link", "map"])
def test_bytes_equal_rosbags_serialiser(k: int, frame: str) -> None:
    args = sample(k, seed=k)
    got = detection3d_array_cdr(STAMP, frame, *args)
    assert got == rosbags_reference(frame, *args)


def test_rclpy_reads_the_bytes_back() -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from vision_msgs.msg import Detection3DArray

    centres, quats, sizes, scores, classes, ids = sample(5, seed=3)
    raw = detection3d_array_cdr(STAMP, "base_link", centres, quats, sizes, scores, classes, ids)
    msg = deserialize_message(raw, Detection3DArray)
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(STAMP, 1_000_000_000)
    assert msg.header.frame_id == "base_link" and len(msg.detections) == 5
    for i, d in enumerate(msg.detections):
        assert d.header.frame_id == "base_link" and d.id == ids[i] and len(d.results) == 1
        hyp = d.results[0]
        assert hyp.hypothesis.class_id == classes[i] and hyp.hypothesis.score == scores[i]
        p = d.bbox.center
        assert [p.position.x, p.position.y, p.position.z] == centres[i].tolist()
        assert [p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w] == quats[i].tolist()
        assert [d.bbox.size.x, d.bbox.size.y, d.bbox.size.z] == sizes[i].tolist()
        assert hyp.pose.pose == p and not np.any(hyp.pose.covariance)
    # the rmw's own serialiser agrees on every byte but its (uninitialised) alignment padding
    assert len(serialize_message(msg)) == len(raw)


def test_bad_arguments_are_refused() -> None:
    centres, quats, sizes, scores, classes, ids = sample(3)
    with pytest.raises(ValueError, match=r"quats_xyzw must be \(3, 4\)"):
        detection3d_array_cdr(STAMP, "base_link", centres, quats[:, :3], sizes, scores, classes, ids)
    with pytest.raises(ValueError, match="need 3 class_ids and ids"):
        detection3d_array_cdr(STAMP, "base_link", centres, quats, sizes, scores, classes[:2], ids)
    with pytest.raises(ValueError, match="NUL"):
        detection3d_array_cdr(STAMP, "base\x00link", centres, quats, sizes, scores, classes, ids)
    with pytest.raises(ValueError, match="int32 seconds"):
        header_cdr(1 << 62, "base_link")
