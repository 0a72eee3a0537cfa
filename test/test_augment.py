"""Global augmentation: hand cases for radar velocities and boxes, round trips, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from radardistill_ros.config import AugmentConfig
from radardistill_ros.geometry import wrap_angle
from training.augment import GlobalTransform, apply_transform, augment, sample_transform

RADAR = np.array([[10.0, 2.0, 0.5, 5.0, 3.0, 4.0]], np.float32)        # x y z rcs vx vy
LIDAR = np.array([[10.0, 2.0, 0.5, 20.0, 0.1]], np.float32)            # x y z intensity time_lag
BOXES = np.array([[10.0, 2.0, 1.0, 4.0, 2.0, 1.5, 0.3, 3.0, 4.0]], np.float32)


def test_flip_y_negates_y_vy_and_yaw() -> None:
    out = apply_transform(GlobalTransform(flip_y=True), RADAR, LIDAR, BOXES)
    np.testing.assert_allclose(out.radar, [[10.0, -2.0, 0.5, 5.0, 3.0, -4.0]])
    np.testing.assert_allclose(out.lidar, [[10.0, -2.0, 0.5, 20.0, 0.1]])
    np.testing.assert_allclose(out.boxes, [[10.0, -2.0, 1.0, 4.0, 2.0, 1.5, -0.3, 3.0, -4.0]], atol=1e-6)


def test_flip_x_negates_x_vx_and_mirrors_yaw() -> None:
    out = apply_transform(GlobalTransform(flip_x=True), RADAR, None, BOXES)
    np.testing.assert_allclose(out.radar, [[-10.0, 2.0, 0.5, 5.0, -3.0, 4.0]])
    np.testing.assert_allclose(out.boxes, [[-10.0, 2.0, 1.0, 4.0, 2.0, 1.5, np.pi - 0.3, -3.0, 4.0]],
                               atol=1e-6)
    assert out.lidar is None


def test_rotation_90deg_maps_vx_vy_to_minus_vy_vx() -> None:
    out = apply_transform(GlobalTransform(rotation=np.pi / 2), RADAR, LIDAR, BOXES)
    np.testing.assert_allclose(out.radar, [[-2.0, 10.0, 0.5, 5.0, -4.0, 3.0]], atol=1e-5)
    np.testing.assert_allclose(out.lidar, [[-2.0, 10.0, 0.5, 20.0, 0.1]], atol=1e-5)
    np.testing.assert_allclose(out.boxes, [[-2.0, 10.0, 1.0, 4.0, 2.0, 1.5, 0.3 + np.pi / 2, -4.0, 3.0]],
                               atol=1e-5)


def test_scaling_scales_positions_sizes_and_velocities_translation_only_positions() -> None:
    out = apply_transform(GlobalTransform(scale=1.1, translation=(1.0, -1.0, 0.5)), RADAR, LIDAR, BOXES)
    np.testing.assert_allclose(out.radar, [[12.0, 1.2, 1.05, 5.0, 3.3, 4.4]], atol=1e-5)
    np.testing.assert_allclose(out.lidar, [[12.0, 1.2, 1.05, 20.0, 0.1]], atol=1e-5)
    np.testing.assert_allclose(out.boxes, [[12.0, 1.2, 1.6, 4.4, 2.2, 1.65, 0.3, 3.3, 4.4]], atol=1e-5)


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
def test_round_trip_identity(flip_x: bool, flip_y: bool) -> None:
    rng = np.random.default_rng(0)
    radar = rng.normal(size=(50, 6)).astype(np.float32) * 10
    lidar = rng.normal(size=(80, 5)).astype(np.float32) * 10
    boxes = np.concatenate([rng.normal(size=(7, 3)) * 10, rng.uniform(0.5, 5, (7, 3)),
                            rng.uniform(-np.pi, np.pi, (7, 1)), rng.normal(size=(7, 2))], axis=1)
    tf = GlobalTransform(flip_x, flip_y, 0.6, 1.07, (0.3, -0.4, 0.2))
    np.testing.assert_allclose(tf.inverse().matrix, np.linalg.inv(tf.matrix), atol=1e-12)
    out = apply_transform(tf, radar, lidar, boxes)
    back = apply_transform(tf.inverse(), out.radar, out.lidar, out.boxes)
    np.testing.assert_allclose(back.radar, radar, atol=1e-4)
    np.testing.assert_allclose(back.lidar, lidar, atol=1e-4)
    np.testing.assert_allclose(back.boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]], boxes[:, [0, 1, 2, 3, 4, 5, 7, 8]],
                               atol=1e-9)
    np.testing.assert_allclose(wrap_angle(back.boxes[:, 6] - boxes[:, 6]), 0.0, atol=1e-9)


def test_radar_velocity_stays_consistent_with_motion() -> None:
    """A point moving with v for dt ends where the transformed point moves with transformed v."""
    rng = np.random.default_rng(1)
    tf = sample_transform(rng, AugmentConfig())
    p0 = np.array([[5.0, -3.0, 0.2, 1.0, 2.0, -1.5]])
    p1 = p0.copy()
    p1[:, 0:2] += 0.5 * p0[:, 4:6]  # position after dt = 0.5 s
    a0, a1 = apply_transform(tf, p0).radar, apply_transform(tf, p1).radar
    np.testing.assert_allclose(a1[:, 0:2], a0[:, 0:2] + 0.5 * a0[:, 4:6], atol=1e-9)


def test_deterministic_given_generator_and_ranges() -> None:
    cfg = AugmentConfig()
    a, tf_a = augment(np.random.default_rng(7), cfg, RADAR, LIDAR, BOXES)
    b, tf_b = augment(np.random.default_rng(7), cfg, RADAR, LIDAR, BOXES)
    assert tf_a == tf_b
    np.testing.assert_array_equal(a.radar, b.radar)
    assert a.radar.dtype == np.float32 and a.boxes.shape == BOXES.shape
    rng = np.random.default_rng(3)
    tfs = [sample_transform(rng, cfg) for _ in range(400)]
    assert all(abs(t.rotation) <= cfg.rotation and cfg.scale[0] <= t.scale <= cfg.scale[1] for t in tfs)
    assert 100 < sum(t.flip_x for t in tfs) < 300 and 100 < sum(t.flip_y for t in tfs) < 300
    off = sample_transform(rng, AugmentConfig(flip_x=False, flip_y=False, rotation=0.0, scale=(1.0, 1.0),
                                              translation_std=0.0))
    np.testing.assert_allclose(off.matrix, np.eye(4))
