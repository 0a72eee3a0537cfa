"""Transform buffer: hand-computed interpolation, multi-hop chains, static/dynamic mix, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radardistill_ros.tf_buffer import (
    ConnectivityError,
    ExtrapolationError,
    TransformBuffer,
    TransformError,
    UnknownFrameError,
    stamp_to_ns,
)

T0 = 1_533_151_603_000_000_000  # a nuScenes-like epoch time [ns]
S = 1_000_000_000


def yaw_q(yaw: float) -> tuple[float, float, float, float]:
    """ROS quaternion (x, y, z, w) of a rotation by ``yaw`` about +z."""
    return (0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2))


def rz(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def apply(m: np.ndarray, p: tuple[float, float, float]) -> np.ndarray:
    return m[:3, :3] @ np.asarray(p, float) + m[:3, 3]


def test_translation_interpolates_linearly_halfway() -> None:
    buf = TransformBuffer()
    buf.set_transform("map", "base_link", T0, (0, 0, 0), yaw_q(0))
    buf.set_transform("map", "base_link", T0 + S, (2, 4, -6), yaw_q(0))
    m = buf.lookup("map", "base_link", T0 + S // 2)
    np.testing.assert_allclose(m[:3, 3], [1, 2, -3], atol=1e-12)
    np.testing.assert_allclose(m[:3, :3], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + S // 4)[:3, 3], [0.5, 1, -1.5])
    # float seconds and Time-like stamps read the same instant
    half_s = (T0 + S // 2) / S
    np.testing.assert_allclose(buf.lookup("map", "base_link", half_s)[:3, 3], [1, 2, -3], atol=1e-6)
    # exact samples
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + S)[:3, 3], [2, 4, -6])


def test_rotation_slerp_90_degree_yaw_halfway_is_45_degrees() -> None:
    buf = TransformBuffer()
    buf.set_transform("map", "base_link", T0, (0, 0, 0), yaw_q(0))
    buf.set_transform("map", "base_link", T0 + 2 * S, (0, 0, 0), yaw_q(math.pi / 2))
    h = math.sqrt(0.5)
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + S)[:3, :3],
                               [[h, -h, 0], [h, h, 0], [0, 0, 1]], atol=1e-12)
    quarter = buf.lookup("map", "base_link", T0 + S // 2)
    np.testing.assert_allclose(quarter[:3, :3], rz(math.pi / 8), atol=1e-12)
    # -q is the same rotation: SLERP takes the short arc, still 45 degrees halfway
    buf.set_transform("map", "base_link", T0 + 2 * S, (0, 0, 0), [-v for v in yaw_q(math.pi / 2)])
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + S)[:3, :3], rz(math.pi / 4), atol=1e-12)


def test_multi_hop_chain_map_base_link_radar() -> None:
    buf = TransformBuffer()
    buf.set_transform("map", "base_link", T0, (10, 5, 0), yaw_q(math.pi / 2))
    buf.set_transform("map", "base_link", T0 + S, (20, 5, 0), yaw_q(math.pi / 2))
    buf.set_transform("base_link", "RADAR_FRONT", 0, (3.4, 0, 0.5), yaw_q(0), static=True)
    buf.set_transform("base_link", "RADAR_BACK_LEFT", 0, (-0.5, 1, 0.5), yaw_q(math.pi), static=True)
    m = buf.lookup("map", "RADAR_FRONT", T0)
    np.testing.assert_allclose(apply(m, (0, 0, 0)), [10, 8.4, 0.5], atol=1e-12)
    np.testing.assert_allclose(apply(m, (1, 0, 0)), [10, 9.4, 0.5], atol=1e-12)
    # halfway in time: base_link at (15, 5, 0)
    np.testing.assert_allclose(apply(buf.lookup("map", "RADAR_FRONT", T0 + S // 2), (0, 0, 0)),
                               [15, 8.4, 0.5], atol=1e-12)
    # inverse direction
    inv = buf.lookup("RADAR_FRONT", "map", T0)
    np.testing.assert_allclose(inv @ m, np.eye(4), atol=1e-12)
    # siblings through their common parent (not the root): no time needed, all static
    sib = buf.lookup("RADAR_BACK_LEFT", "RADAR_FRONT")
    np.testing.assert_allclose(apply(sib, (0, 0, 0)), [-3.9, 1, 0], atol=1e-12)
    np.testing.assert_allclose(apply(sib, (1, 0, 0)), [-4.9, 1, 0], atol=1e-12)
    assert buf.frames() == {"map", "base_link", "RADAR_FRONT", "RADAR_BACK_LEFT"}
    assert buf.parent_of("RADAR_FRONT") == "base_link" and buf.parent_of("map") is None


def test_static_and_dynamic_mix_latest_time_and_leading_slash() -> None:
    buf = TransformBuffer()
    buf.set_transform("/map", "odom", 0, (1, 0, 0), yaw_q(0), static=True)
    for k in range(5):
        buf.set_transform("odom", "base_link", T0 + k * S // 10, (k, 0, 0), yaw_q(0))
    buf.set_transform("base_link", "RADAR_FRONT", 0, (0, 0, 1), yaw_q(0), static=True)
    # static links answer at any time, the dynamic one sets the window
    np.testing.assert_allclose(apply(buf.lookup("map", "RADAR_FRONT", T0 + S // 20), (0, 0, 0)),
                               [1.5, 0, 1], atol=1e-12)
    assert buf.latest_common_time("map", "RADAR_FRONT") == T0 + 4 * S // 10
    np.testing.assert_allclose(buf.lookup("map", "RADAR_FRONT")[:3, 3], [5, 0, 1])  # latest
    np.testing.assert_allclose(buf.lookup("map", "RADAR_FRONT", 0)[:3, 3], [5, 0, 1])  # 0 = latest
    assert buf.latest_common_time("odom", "map") is None  # all static
    np.testing.assert_allclose(buf.lookup("odom", "map", T0 + 100 * S)[:3, 3], [-1, 0, 0])
    with pytest.raises(ExtrapolationError):
        buf.lookup("map", "RADAR_FRONT", T0 + S)
    # a frame changing from static to dynamic (or to a new parent) replaces its history
    buf.set_transform("map", "odom", T0, (7, 0, 0), yaw_q(0))
    with pytest.raises(ExtrapolationError):
        buf.lookup("map", "odom", T0 + S)
    np.testing.assert_allclose(buf.lookup("map", "odom", T0)[:3, 3], [7, 0, 0])


def test_unknown_frame_not_connected_and_extrapolation_errors() -> None:
    buf = TransformBuffer(cache_time=10.0, extrapolation_tolerance=0.05)
    buf.set_transform("map", "base_link", T0, (0, 0, 0), yaw_q(0))
    buf.set_transform("map", "base_link", T0 + S, (1, 0, 0), yaw_q(0))
    buf.set_transform("other_map", "other_robot", 0, (0, 0, 0), yaw_q(0), static=True)
    with pytest.raises(UnknownFrameError, match="RADAR_FRONT"):
        buf.lookup("map", "RADAR_FRONT", T0)
    with pytest.raises(ConnectivityError, match="different trees"):
        buf.lookup("map", "other_robot", T0)
    with pytest.raises(ExtrapolationError, match="into the future"):
        buf.lookup("map", "base_link", T0 + S + S // 10)
    with pytest.raises(ExtrapolationError, match="into the past"):
        buf.lookup("map", "base_link", T0 - S // 10)
    # within the tolerance the nearest sample is used
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + S + S // 50)[:3, 3], [1, 0, 0])
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 - S // 50)[:3, 3], [0, 0, 0])
    assert not buf.can_transform("map", "base_link", T0 + 2 * S)
    assert buf.can_transform("map", "base_link", T0 + S // 3)
    # identical frames: identity, as tf2
    np.testing.assert_array_equal(buf.lookup("camera", "camera", T0), np.eye(4))
    # all error types share the base class
    assert issubclass(UnknownFrameError, TransformError) and issubclass(ExtrapolationError, TransformError)
    with pytest.raises(TransformError, match="itself"):
        buf.set_transform("a", "a", T0, (0, 0, 0), yaw_q(0))
    with pytest.raises(TransformError, match="non-finite"):
        buf.set_transform("a", "b", T0, (np.nan, 0, 0), yaw_q(0))
    with pytest.raises(TransformError, match="zero quaternion"):
        buf.set_transform("a", "b", T0, (0, 0, 0), (0, 0, 0, 0))


def test_bounded_history_drops_old_samples() -> None:
    buf = TransformBuffer(cache_time=10.0)
    for k in range(31):  # 0 .. 30 s at 1 Hz
        buf.set_transform("map", "base_link", T0 + k * S, (k, 0, 0), yaw_q(0))
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + 20 * S)[:3, 3], [20, 0, 0])
    with pytest.raises(ExtrapolationError, match="past"):
        buf.lookup("map", "base_link", T0 + 19 * S)
    assert buf.set_transform("map", "base_link", T0 + 5 * S, (5, 0, 0), yaw_q(0)) is False  # too old
    # out-of-order arrival inside the window is inserted in time order
    buf.set_transform("map", "base_link", T0 + 25 * S + S // 2, (100, 0, 0), yaw_q(0))
    np.testing.assert_allclose(buf.lookup("map", "base_link", T0 + 25 * S + S // 4)[:3, 3], [62.5, 0, 0])
    buf.clear()
    assert buf.frames() == set()


def test_random_chains_compose_consistently() -> None:
    rng = np.random.default_rng(0)
    buf = TransformBuffer()
    frames = ["map", "odom", "base_link", "sensor_a", "sensor_b", "sensor_c"]
    parents = {"odom": "map", "base_link": "odom", "sensor_a": "base_link", "sensor_b": "base_link",
               "sensor_c": "sensor_a"}
    for child, parent in parents.items():
        static = child.startswith("sensor")
        for k in range(1 if static else 3):
            q = rng.normal(size=4)
            buf.set_transform(parent, child, T0 + k * S, rng.normal(0, 5, 3), q / np.linalg.norm(q), static)
    t = T0 + int(rng.integers(0, 2 * S))
    for a in frames:
        for b in frames:
            m_ab = buf.lookup(a, b, t)
            np.testing.assert_allclose(m_ab[:3, :3] @ m_ab[:3, :3].T, np.eye(3), atol=1e-9)
            np.testing.assert_allclose(m_ab @ buf.lookup(b, a, t), np.eye(4), atol=1e-9)
            for c in ("sensor_c", "map"):
                np.testing.assert_allclose(m_ab @ buf.lookup(b, c, t), buf.lookup(a, c, t), atol=1e-9)


def test_feeds_from_rosbags_and_rclpy_messages() -> None:
    from radardistill_ros.interfaces import jazzy_typestore

    store = jazzy_typestore()
    ty = store.types
    Time, Header = ty["builtin_interfaces/msg/Time"], ty["std_msgs/msg/Header"]
    V3, Q = ty["geometry_msgs/msg/Vector3"], ty["geometry_msgs/msg/Quaternion"]
    TF, TS, TFM = ty["geometry_msgs/msg/Transform"], ty["geometry_msgs/msg/TransformStamped"], \
        ty["tf2_msgs/msg/TFMessage"]

    def ts(parent: str, child: str, ns: int, x: float, yaw: float):
        qx, qy, qz, qw = yaw_q(yaw)
        return TS(Header(Time(ns // S, ns % S), parent), child,
                  TF(V3(x, 0.0, 0.0), Q(qx, qy, qz, qw)))

    buf = TransformBuffer()
    assert buf.add_tf_message(TFM([ts("base_link", "RADAR_FRONT", T0, 3.0, 0.0)]), static=True) == 1
    n = buf.add_tf_messages([TFM([ts("map", "base_link", T0 + k * S, float(k), 0.0)]) for k in range(2)])
    assert n == 2
    np.testing.assert_allclose(buf.lookup("map", "RADAR_FRONT", Time(T0 // S, S // 2))[:3, 3], [3.5, 0, 0])

    pytest.importorskip("rclpy")
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = "base_link", "RADAR_FRONT_LEFT"
    msg.header.stamp.sec, msg.header.stamp.nanosec = T0 // S, 0
    msg.transform.translation.y = 0.7
    msg.transform.rotation.z, msg.transform.rotation.w = yaw_q(math.pi / 2)[2:]
    buf.add_transform_stamped(msg, static=True)
    m = buf.lookup("base_link", "RADAR_FRONT_LEFT")
    np.testing.assert_allclose(apply(m, (1, 0, 0)), [0, 1.7, 0], atol=1e-12)
    assert stamp_to_ns(msg.header.stamp) == T0
