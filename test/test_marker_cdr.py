"""detection_markers_cdr: a hand-computed frame, and equality with the same MarkerArray built from
rclpy message objects field by field (the way the node built it before) for several frames."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radardistill_ros import ros_env  # noqa: F401  (makes the locally built interfaces importable)
from radardistill_ros.marker_cdr import CLASS_COLORS, detection_markers_cdr

NAMES = ["car", "truck", "construction_vehicle", "bus", "trailer", "barrier", "motorcycle", "bicycle",
         "pedestrian", "traffic_cone"]


def reference(stamp_ns, frame, boxes, quats, scores, labels, threshold):
    """The markers from rclpy message objects (independent of the CDR writer)."""
    from builtin_interfaces.msg import Time
    from geometry_msgs.msg import Point, Pose, Vector3
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    markers = [Marker(action=Marker.DELETEALL)]
    for i, (box, score, label) in enumerate(zip(boxes.tolist(), scores.tolist(), labels.tolist())):
        if score < threshold:
            continue
        r, g, b = CLASS_COLORS[label % len(CLASS_COLORS)]
        pose = Pose()
        pose.position = Point(x=box[0], y=box[1], z=box[2])
        if quats is None:
            pose.orientation.z, pose.orientation.w = math.sin(0.5 * box[6]), math.cos(0.5 * box[6])
        else:
            o = pose.orientation
            o.x, o.y, o.z, o.w = map(float, quats[i])
        text_pose = Pose()
        text_pose.position = Point(x=box[0], y=box[1], z=box[2] + 0.5 * box[5] + 0.5)
        markers += [
            Marker(type=Marker.CUBE, ns="boxes", id=i, pose=pose, color=ColorRGBA(r=r, g=g, b=b, a=0.35),
                   scale=Vector3(x=max(box[3], 0.01), y=max(box[4], 0.01), z=max(box[5], 0.01))),
            Marker(type=Marker.TEXT_VIEW_FACING, ns="labels", id=i, pose=text_pose, scale=Vector3(z=0.8),
                   color=ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.9), text=f"{NAMES[label]} {score:.2f}"),
            Marker(type=Marker.ARROW, ns="velocities", id=i, scale=Vector3(x=0.15, y=0.3, z=0.3),
                   color=ColorRGBA(r=r, g=g, b=b, a=1.0),
                   points=[Point(x=box[0], y=box[1], z=box[2]),
                           Point(x=box[0] + box[7], y=box[1] + box[8], z=box[2])])]
    for m in markers:
        m.header.stamp, m.header.frame_id = Time(sec=sec, nanosec=nsec), frame
    return MarkerArray(markers=markers)


def frame_sample(k: int, seed: int):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.normal(0, 20, (k, 3)), rng.uniform(0.001, 5, (k, 3)),
                            rng.uniform(-3, 3, (k, 3))], axis=1).astype(np.float32)
    return boxes, rng.uniform(0, 0.8, k).astype(np.float32), rng.integers(0, len(NAMES), k)


@pytest.mark.parametrize("k", [0, 1, 40])
@pytest.mark.parametrize("frame", ["base_link", "odom"])
@pytest.mark.parametrize("with_quats", [False, True])
def test_equals_the_message_objects(k: int, frame: str, with_quats: bool) -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from visualization_msgs.msg import MarkerArray

    boxes, scores, labels = frame_sample(k, seed=k)
    quats = np.random.default_rng(1).normal(size=(k, 4)) if with_quats else None
    stamp = 1_700_000_123_456_789_000
    ref = serialize_message(reference(stamp, frame, boxes, quats, scores, labels, 0.3))
    raw = detection_markers_cdr(stamp, frame, boxes, quats, scores, labels, NAMES, 0.3)
    assert len(raw) == len(ref)
    # the rmw's serialiser leaves alignment padding uninitialised: compare the messages
    assert deserialize_message(raw, MarkerArray) == deserialize_message(ref, MarkerArray)


def test_hand_computed_case() -> None:
    """Two boxes, one under the threshold: DELETEALL, then cube / label / arrow of the other
    (id = its index), stamped and framed like the detections."""
    from rclpy.serialization import deserialize_message
    from visualization_msgs.msg import Marker, MarkerArray

    boxes = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, np.pi / 2, 3.0, -1.0],
                      [9.0, 9.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]], np.float32)
    raw = detection_markers_cdr(1_500_000_000, "map", boxes, None, np.array([0.9, 0.1], np.float32),
                                np.array([8, 0]), NAMES, score_threshold=0.3)
    clear, cube, text, arrow = deserialize_message(raw, MarkerArray).markers
    assert clear.action == Marker.DELETEALL
    for m in (clear, cube, text, arrow):
        assert (m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) == (1, 500_000_000, "map")
    assert [(m.type, m.ns, m.id, m.action) for m in (cube, text, arrow)] == [
        (Marker.CUBE, "boxes", 0, Marker.ADD), (Marker.TEXT_VIEW_FACING, "labels", 0, Marker.ADD),
        (Marker.ARROW, "velocities", 0, Marker.ADD)]
    p, q = cube.pose.position, cube.pose.orientation
    assert (p.x, p.y, p.z) == (1.0, 2.0, 0.5)
    assert (cube.scale.x, cube.scale.y, cube.scale.z) == (4.0, 2.0, 1.5)
    np.testing.assert_allclose([q.x, q.y, q.z, q.w], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)], atol=1e-7)
    assert (cube.color.r, cube.color.g, cube.color.b, cube.color.a) == pytest.approx((*CLASS_COLORS[8], 0.35))
    assert text.text == "pedestrian 0.90" and text.pose.position.z == 0.5 + 0.75 + 0.5
    assert [(pt.x, pt.y, pt.z) for pt in arrow.points] == [(1.0, 2.0, 0.5), (4.0, 1.0, 0.5)]
    assert arrow.pose.orientation.w == 1.0 and (arrow.scale.x, arrow.scale.y) == (0.15, 0.3)
