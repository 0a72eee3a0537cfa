"""Quaternions, rigid transforms and the nuScenes global box <-> ego box conversion."""

from __future__ import annotations

import numpy as np
import pytest
from nuscenes.eval.common.utils import quaternion_yaw
from nuscenes.utils.data_classes import Box
from pyquaternion import Quaternion

from radardistill_ros import geometry as g

S2 = np.sqrt(0.5)


def test_quaternion_90deg_about_z_by_hand() -> None:
    q = np.array([S2, 0.0, 0.0, S2])
    r = g.quat_to_rot(q)
    np.testing.assert_allclose(r, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert g.yaw_from_quat(q) == pytest.approx(np.pi / 2)
    np.testing.assert_allclose(g.rot_to_quat(r), q, atol=1e-12)
    np.testing.assert_allclose(g.quat_from_yaw(np.pi / 2), q, atol=1e-12)


def test_quaternions_match_pyquaternion() -> None:
    rng = np.random.default_rng(0)
    qs = rng.normal(size=(200, 4))
    qs /= np.linalg.norm(qs, axis=1, keepdims=True)
    rs = g.quat_to_rot(qs)
    for q, r in zip(qs, rs):
        pq = Quaternion(q)
        np.testing.assert_allclose(r, pq.rotation_matrix, atol=1e-12)
        assert g.yaw_from_quat(q) == pytest.approx(quaternion_yaw(pq), abs=1e-12)
    back = g.rot_to_quat(rs)
    sign = np.sign(qs[:, :1])  # q and -q are the same rotation; rot_to_quat returns w >= 0
    np.testing.assert_allclose(back, qs * sign, atol=1e-9)
    with pytest.raises(ValueError):
        g.quat_to_rot(np.zeros(4))
    # one quaternion (the scalar path the TF buffer uses) == the same row of a batch, unnormalised too
    raw = rng.normal(size=(20, 4)) * 3
    np.testing.assert_allclose(np.stack([g.quat_to_rot(q) for q in raw]), g.quat_to_rot(raw), atol=1e-15)
    np.testing.assert_allclose(g.quat_to_rot([S2, 0.0, 0.0, S2]), g.rotz(np.pi / 2), atol=1e-12)
    with pytest.raises(ValueError):
        g.quat_to_rot([np.nan, 1.0, 0.0, 0.0])


def test_transforms_compose_invert_apply() -> None:
    t_ab = g.make_transform(g.rotz(np.pi / 2), [1.0, 0.0, 0.0])
    # p_b = (2, 0, 0) -> rotated to (0, 2, 0), shifted to (1, 2, 0)
    np.testing.assert_allclose(g.transform_points(t_ab, [[2.0, 0.0, 0.0]]), [[1.0, 2.0, 0.0]], atol=1e-12)
    np.testing.assert_allclose(g.rotate_vectors(t_ab, [[3.0, 0.0, 0.0]]), [[0.0, 3.0, 0.0]], atol=1e-12)
    rng = np.random.default_rng(1)
    q = rng.normal(size=4)
    t_bc = g.transform_from_pose(rng.normal(size=3), q)
    t_ac = g.compose(t_ab, t_bc)
    p = rng.normal(size=(5, 3))
    np.testing.assert_allclose(g.transform_points(t_ac, p),
                               g.transform_points(t_ab, g.transform_points(t_bc, p)), atol=1e-12)
    np.testing.assert_allclose(g.compose(t_ac, g.invert_transform(t_ac)), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(g.wrap_angle([np.pi, -np.pi, 3 * np.pi / 2]), [-np.pi, -np.pi, -np.pi / 2])


def test_box_rotated_90deg_by_hand() -> None:
    # ego at global (10, 5, 0), yawed +90 deg (facing global +y)
    ego_t, ego_q = np.array([10.0, 5.0, 0.0]), g.quat_from_yaw(np.pi / 2)
    # global box 3 m ahead of the ego, heading global -x, moving global +y at 2 m/s
    boxes = g.global_boxes_to_ego([[10.0, 8.0, 1.0]], [[2.0, 4.0, 1.5]], [g.quat_from_yaw(np.pi)],
                                  [[0.0, 2.0, 0.0]], ego_t, ego_q)
    np.testing.assert_allclose(boxes, [[3.0, 0.0, 1.0, 4.0, 2.0, 1.5, np.pi / 2, 2.0, 0.0]], atol=1e-12)
    c, s, q, v = g.ego_boxes_to_global(boxes, ego_t, ego_q)
    np.testing.assert_allclose(c, [[10.0, 8.0, 1.0]], atol=1e-12)
    np.testing.assert_allclose(s, [[2.0, 4.0, 1.5]], atol=1e-12)
    assert abs(g.wrap_angle(g.yaw_from_quat(q[0]) - np.pi)) < 1e-12
    np.testing.assert_allclose(v, [[0.0, 2.0, 0.0]], atol=1e-12)


def _random_global_boxes(rng: np.random.Generator, m: int):
    centers = rng.uniform(-50, 50, size=(m, 3)) + np.array([600.0, 1600.0, 0.0])
    sizes = rng.uniform(0.3, 12, size=(m, 3))
    rots = g.quat_from_yaw(rng.uniform(-np.pi, np.pi, m))
    vel = np.concatenate([rng.normal(0, 5, (m, 2)), np.zeros((m, 1))], axis=1)
    return centers, sizes, rots, vel


def test_ego_global_round_trip_level_ego() -> None:
    rng = np.random.default_rng(2)
    centers, sizes, rots, vel = _random_global_boxes(rng, 50)
    ego_t, ego_q = np.array([610.0, 1590.0, 0.2]), g.quat_from_yaw(2.0)
    ego = g.global_boxes_to_ego(centers, sizes, rots, vel, ego_t, ego_q)
    c, s, q, v = g.ego_boxes_to_global(ego, ego_t, ego_q)
    np.testing.assert_allclose(c, centers, atol=1e-9)
    np.testing.assert_allclose(s, sizes, atol=1e-12)
    np.testing.assert_allclose(g.wrap_angle(g.yaw_from_quat(q) - g.yaw_from_quat(rots)), 0.0, atol=1e-9)
    np.testing.assert_allclose(v, vel, atol=1e-9)
    # and ego -> global -> ego
    np.testing.assert_allclose(g.global_boxes_to_ego(c, s, q, v[:, :2], ego_t, ego_q), ego, atol=1e-9)


def test_ego_conversion_matches_devkit_box_with_pitched_ego() -> None:
    """Against nuScenes' Box.translate/rotate (what the devkit tutorials do) for a tilted ego."""
    rng = np.random.default_rng(3)
    centers, sizes, rots, vel = _random_global_boxes(rng, 20)
    ego_q = (Quaternion(axis=[0, 0, 1], angle=0.7) * Quaternion(axis=[0, 1, 0], angle=0.03)
             * Quaternion(axis=[1, 0, 0], angle=-0.02)).elements
    ego_t = np.array([605.0, 1602.0, 1.0])
    ego = g.global_boxes_to_ego(centers, sizes, rots, vel, ego_t, ego_q)
    for i in range(len(centers)):
        box = Box(centers[i], sizes[i], Quaternion(rots[i]), velocity=vel[i])
        box.translate(-ego_t)
        box.rotate(Quaternion(ego_q).inverse)
        np.testing.assert_allclose(ego[i, :3], box.center, atol=1e-9)
        np.testing.assert_allclose(ego[i, 7:9], box.velocity[:2], atol=1e-9)
        assert abs(g.wrap_angle(ego[i, 6] - quaternion_yaw(box.orientation))) < 1e-9
    c, _, q, _ = g.ego_boxes_to_global(ego, ego_t, ego_q)
    np.testing.assert_allclose(c, centers, atol=1e-9)
    # yaw error after a round trip through a pitched/rolled ego is second order (< 1e-3 rad here)
    assert np.abs(g.wrap_angle(g.yaw_from_quat(q) - g.yaw_from_quat(rots))).max() < 1e-3


def test_empty_boxes() -> None:
    ego = g.global_boxes_to_ego(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 2)),
                                np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert ego.shape == (0, 9)
    c, s, q, v = g.ego_boxes_to_global(ego, np.zeros(3), np.array([1.0, 0, 0, 0]))
    assert c.shape == (0, 3) and s.shape == (0, 3) and q.shape == (0, 4) and v.shape == (0, 3)
