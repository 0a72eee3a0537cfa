"""detection3d_array_cdr writes the bytes two independent CDR serialisers write (rosbags, and the
rmw's through rclpy), for empty arrays, one box and mixed class names (string lengths that move
the float64 alignment)."""

from __future__ import annotations

import numpy as np
import pytest

from radardistill_ros import ros_env  # noqa: F401  (makes the locally built interfaces importable)
from radardistill_ros.cdr import header_cdr
from radardistill_ros.detection_cdr import DetectionArrayWriter, detection3d_array_cdr
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


def writer_sample(k: int, seed: int = 0) -> tuple:
    """Node-style inputs: boxes (K, 9) float32 (x, y, z, l, w, h, yaw, vx, vy), scores, labels."""
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.normal(0, 20, (k, 3)), rng.uniform(0.3, 12, (k, 3)),
                            rng.uniform(-np.pi, np.pi, (k, 1)), rng.normal(0, 3, (k, 2))], axis=1)
    return boxes.astype(np.float32), rng.random(k).astype(np.float32), rng.integers(0, len(CLASSES), k)


@pytest.mark.parametrize("k", [0, 1, 9, 130])  # 130: more ids than the writer first encodes
def test_writer_equals_the_general_writer(k: int) -> None:
    """DetectionArrayWriter (the node's cached path) = detection3d_array_cdr of the same boxes
    (class_id by label, id = index), with explicit quaternions byte for byte and from the yaw
    column to float64 rounding of sin/cos."""
    boxes, scores, labels = writer_sample(k, seed=k)
    b = boxes.astype(np.float64)
    quats = quat_from_yaw(b[:, 6])[:, [1, 2, 3, 0]]
    classes, ids = [CLASSES[i] for i in labels], [str(i) for i in range(k)]
    want = detection3d_array_cdr(STAMP, "base_link", b[:, 0:3], quats, b[:, 3:6], scores, classes, ids)
    writer = DetectionArrayWriter("base_link", CLASSES)
    assert writer.write(STAMP, boxes, scores, labels, quats) == want
    assert want == rosbags_reference("base_link", b[:, 0:3], quats, b[:, 3:6], scores.astype(np.float64),
                                     classes, ids)
    from_yaw = writer.write(STAMP, boxes, scores, labels)
    assert len(from_yaw) == len(want)
    store = jazzy_typestore()
    got = store.deserialize_cdr(from_yaw, "vision_msgs/msg/Detection3DArray")
    ref = store.deserialize_cdr(want, "vision_msgs/msg/Detection3DArray")
    for g, r in zip(got.detections, ref.detections):
        pairs = ((g.bbox.center, r.bbox.center), (g.results[0].pose.pose, r.results[0].pose.pose))
        for pose_g, pose_r in pairs:
            o, w = pose_g.orientation, pose_r.orientation
            np.testing.assert_allclose([o.x, o.y, o.z, o.w], [w.x, w.y, w.z, w.w], rtol=0, atol=1e-15)
            assert pose_g.position == pose_r.position
        assert (g.id, g.results[0].hypothesis, g.bbox.size) == (r.id, r.results[0].hypothesis, r.bbox.size)


def test_writer_hand_computed_case() -> None:
    """One box by hand: yaw pi/2 -> quaternion (0, 0, sin(pi/4), cos(pi/4)); class 'bus'; id '0'."""
    boxes = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, np.pi / 2, 0.0, 0.0]], np.float32)
    raw = DetectionArrayWriter("map", CLASSES).write(2_000_000_007, boxes, np.array([0.5], np.float32),
                                                     np.array([3]))
    msg = jazzy_typestore().deserialize_cdr(raw, "vision_msgs/msg/Detection3DArray")
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id) == (2, 7, "map")
    (d,) = msg.detections
    assert (d.header.frame_id, d.id, d.results[0].hypothesis.class_id, d.results[0].hypothesis.score) == \
        ("map", "0", "bus", 0.5)
    c = d.bbox.center
    assert (c.position.x, c.position.y, c.position.z) == (1.0, 2.0, 3.0)
    half = float(np.float32(np.pi / 2)) / 2
    assert (c.orientation.x, c.orientation.y, c.orientation.z, c.orientation.w) == \
        (0.0, 0.0, np.sin(half), np.cos(half))
    assert (d.bbox.size.x, d.bbox.size.y, d.bbox.size.z) == (4.0, 5.0, 6.0)


def test_writer_refuses_bad_arguments() -> None:
    boxes, scores, labels = writer_sample(3)
    writer = DetectionArrayWriter("base_link", CLASSES)
    with pytest.raises(ValueError, match="labels must index the 5 class names"):
        writer.write(STAMP, boxes, scores, np.array([0, 1, 5]))
    with pytest.raises(ValueError, match="need 3 scores and labels"):
        writer.write(STAMP, boxes, scores[:2], labels)
    with pytest.raises(ValueError, match=r"boxes must be \(K, >= 7\)"):
        writer.write(STAMP, boxes[:, :6], scores, labels)
    with pytest.raises(ValueError, match=r"quats_xyzw must be \(3, 4\)"):
        writer.write(STAMP, boxes, scores, labels, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="int32 seconds"):
        writer.write(1 << 62, boxes, scores, labels)
    with pytest.raises(ValueError, match="distinct"):
        DetectionArrayWriter("base_link", ["car", "car"])
    with pytest.raises(ValueError, match="NUL"):
        DetectionArrayWriter("base\x00link", CLASSES)
