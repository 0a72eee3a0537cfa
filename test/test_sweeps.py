"""Sweep accumulation: hand-computed transforms, v*dt shift, ring buffer, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from radardistill_ros import geometry as g
from radardistill_ros.conventions import NUSCENES_RADAR_FIELDS
from radardistill_ros.sweeps import Sweep, SweepAccumulator, radar_features, sweeps_to_ref

# a radar mounted at ego (1, 0, 0) looking left (yawed +90 deg)
T_EGO_FROM_LEFT_RADAR = g.make_transform(g.rotz(np.pi / 2), [1.0, 0.0, 0.0])


def _radar_sweep(points, t, t_global_from_ego, sensor="RADAR_FRONT_LEFT") -> Sweep:
    return Sweep(np.asarray(points, np.float32), t, T_EGO_FROM_LEFT_RADAR, t_global_from_ego, sensor)


def test_radar_hand_case_ego_moved_1m_and_v_dt() -> None:
    # sweep at t = 0 with the ego at the global origin; reference at t = 0.1, ego 1 m further along +x
    point = [2.0, 0.0, 0.5, 7.0, 3.0, 0.0]  # 2 m ahead of the radar, rcs 7, moving away at 3 m/s
    sweep = _radar_sweep([point], 0.0, np.eye(4))
    t_global_from_ref = g.make_transform(translation=[1.0, 0.0, 0.0])
    out = sweeps_to_ref([sweep], t_global_from_ref, 0.1)
    # sensor (2, 0, .5) -> ego(t0) (1, 2, .5) = global -> ref ego (0, 2, .5); v = (0, 3) in ego; +v*dt
    np.testing.assert_allclose(out, [[0.0, 2.3, 0.5, 7.0, 0.0, 3.0]], atol=1e-6)

    # same, with the reference ego also yawed +90 deg: global (1, 2) -> ref (2, 0); v -> (3, 0)
    t_global_from_ref = g.make_transform(g.rotz(np.pi / 2), [1.0, 0.0, 0.0])
    out = sweeps_to_ref([sweep], t_global_from_ref, 0.1)
    np.testing.assert_allclose(out, [[2.3, 0.0, 0.5, 7.0, 3.0, 0.0]], atol=1e-6)


def test_radar_sweep_after_reference_is_shifted_back() -> None:
    sweep = _radar_sweep([[2.0, 0.0, 0.0, 1.0, -4.0, 1.0]], 0.05, np.eye(4))
    out = sweeps_to_ref([sweep], np.eye(4), 0.0)  # dt = -0.05 s
    # sensor -> ego: (1, 2, 0); v_ego = rotz(90) (-4, 1) = (-1, -4); shift -0.05 * v = (+0.05, +0.2)
    np.testing.assert_allclose(out, [[1.05, 2.2, 0.0, 1.0, -1.0, -4.0]], atol=1e-6)


def test_matches_per_point_reference_random() -> None:
    rng = np.random.default_rng(0)
    t_ref, t_global_from_ref = 10.0, g.transform_from_pose([5.0, -3.0, 0.1], rng.normal(size=4))
    sweeps = []
    for k in range(4):
        t_gs = g.transform_from_pose(rng.normal(size=3) * 3, rng.normal(size=4))
        t_es = g.transform_from_pose(rng.normal(size=3), g.quat_from_yaw(rng.uniform(-3, 3)))
        sweeps.append(Sweep(rng.normal(size=(30, 6)).astype(np.float32), t_ref - 0.077 * k, t_es, t_gs,
                            f"R{k % 2}"))
    out = sweeps_to_ref(sweeps, t_global_from_ref, t_ref)
    expected = []
    t_ref_from_global = np.linalg.inv(t_global_from_ref)
    for s in sweeps:
        m = t_ref_from_global @ s.T_global_from_ego @ s.T_ego_from_sensor
        for p in s.points.astype(np.float64):
            v = m[:3, :3] @ np.array([p[4], p[5], 0.0])
            xyz = m[:3, :3] @ p[:3] + m[:3, 3] + v * (t_ref - s.timestamp)
            expected.append([*xyz, p[3], v[0], v[1]])
    np.testing.assert_allclose(out, np.array(expected), atol=1e-4)
    assert out.dtype == np.float32 and out.shape == (120, 6)


def test_no_sweeps_and_empty_sweeps() -> None:
    for kind, width in (("radar", 6), ("lidar", 5)):
        out = sweeps_to_ref([], np.eye(4), 0.0, kind)
        assert out.shape == (0, width) and out.dtype == np.float32
    empty = _radar_sweep(np.zeros((0, 6)), 0.0, np.eye(4))
    one = _radar_sweep([[2.0, 0.0, 0.0, 1.0, 0.0, 0.0]], 0.0, np.eye(4))
    out = sweeps_to_ref([empty, one, empty], np.eye(4), 0.0)
    np.testing.assert_allclose(out, [[1.0, 2.0, 0.0, 1.0, 0.0, 0.0]], atol=1e-6)


def test_lidar_variant_time_lag_and_no_shift() -> None:
    t_es = g.make_transform(g.rotz(np.pi / 2), [0.0, 0.0, 1.8])
    sweep = Sweep(np.array([[1.0, 0.0, 0.0, 42.0, 7.0]], np.float32), 0.95, t_es, np.eye(4), "LIDAR_TOP")
    acc = SweepAccumulator(10, kind="lidar")
    acc.add(sweep)
    out = acc.accumulate(g.make_transform(translation=[0.0, 1.0, 0.0]), 1.0)
    np.testing.assert_allclose(out, [[0.0, 0.0, 1.8, 42.0, 0.05]], atol=1e-6)


def test_accumulator_keeps_last_n_per_sensor_sorted() -> None:
    acc = SweepAccumulator(2)
    for t in (0.3, 0.1, 0.2):  # out of order
        acc.add(_radar_sweep([[1.0, 0, 0, t, 0, 0]], t, np.eye(4), "A"))
    acc.add(_radar_sweep([[1.0, 0, 0, 9, 0, 0]], 0.25, np.eye(4), "B"))
    assert [s.timestamp for s in acc.sweeps("A")] == [0.2, 0.3]
    acc.add(_radar_sweep([[1.0, 0, 0, 0.35, 0, 0]], 0.3, np.eye(4), "A"))  # same stamp replaces
    assert [s.points[0, 3] for s in acc.sweeps("A")] == pytest.approx([0.2, 0.35])
    out = acc.accumulate(np.eye(4), 0.3)
    np.testing.assert_allclose(out[:, 3], [0.2, 0.35, 9.0], atol=1e-6)
    acc.max_age = 0.06
    np.testing.assert_allclose(acc.accumulate(np.eye(4), 0.3)[:, 3], [0.35, 9.0], atol=1e-6)
    assert acc.sensors == ("A", "B")
    acc.clear()
    assert acc.accumulate(np.eye(4), 0.3).shape == (0, 6)


def test_bad_input_dropped_and_counted_never_crashes() -> None:
    acc = SweepAccumulator(3)
    pts = np.ones((5, 6), np.float32)
    pts[1, 0] = np.nan
    pts[3, 5] = np.inf
    assert acc.add(_radar_sweep(pts, 0.0, np.eye(4))) == 2
    out = acc.accumulate(np.eye(4), 0.0)
    assert out.shape == (3, 6) and np.isfinite(out).all()
    assert acc.add(_radar_sweep(np.zeros((0, 6)), 0.1, np.eye(4))) == 0  # empty sweep is fine
    bad_pose = np.eye(4)
    bad_pose[0, 3] = np.nan
    with pytest.raises(ValueError, match="T_global_from_ego"):
        acc.add(_radar_sweep(pts, 0.2, bad_pose))
    with pytest.raises(ValueError, match=r"\(N, >=6\)"):
        acc.add(_radar_sweep(np.ones((4, 3)), 0.2, np.eye(4)))
    assert len(acc.sweeps()) == 2  # state unchanged by the rejected sweeps


def test_radar_features_from_structured_and_devkit_matrix() -> None:
    dtype = np.dtype([(n, t) for n, t in NUSCENES_RADAR_FIELDS])
    rec = np.zeros(2, dtype)
    rec["x"], rec["y"], rec["z"], rec["rcs"] = [1, 2], [3, 4], [5, 6], [7, 8]
    rec["vx_comp"], rec["vy_comp"], rec["vx"] = [9, 10], [11, 12], [99, 99]
    expected = [[1, 3, 5, 7, 9, 11], [2, 4, 6, 8, 10, 12]]
    np.testing.assert_allclose(radar_features(rec), expected)
    matrix = np.stack([rec[n].astype(np.float64) for n in dtype.names])  # devkit (18, N)
    np.testing.assert_allclose(radar_features(matrix), expected)
    with pytest.raises(ValueError):
        radar_features(np.zeros((6, 3)))
    # the accumulator takes the structured record directly (the node's PointCloud2 path)
    acc = SweepAccumulator(1)
    assert acc.add(Sweep(rec, 0.0, np.eye(4), np.eye(4), "RADAR_FRONT")) == 0
    np.testing.assert_allclose(acc.accumulate(np.eye(4), 0.0), expected)
    with pytest.raises(ValueError, match="vx_comp"):
        acc.add(Sweep(np.zeros(2, [("x", "<f4"), ("y", "<f4")]), 0.1, np.eye(4), np.eye(4), "RADAR_FRONT"))
