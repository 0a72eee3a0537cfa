"""Rigid transforms, quaternions and THE nuScenes box <-> ego box conversion (pure numpy).

Conventions (DESIGN.md, "Frames and conventions"):

* quaternions are ``[w, x, y, z]`` (nuScenes / pyquaternion order), unit norm, active rotation;
* a transform ``T_a_from_b`` is a 4x4 homogeneous matrix mapping coordinates in frame ``b`` to
  frame ``a``: ``p_a = T_a_from_b @ p_b``; ``T_a_from_c = T_a_from_b @ T_b_from_c``;
* yaw is counter-clockwise about +z from +x, in radians, wrapped to ``[-pi, pi)``;
* nuScenes global boxes: centre [m], size ``[w, l, h]`` [m], rotation quaternion, velocity
  ``(vx, vy[, vz])`` [m/s], all in the global frame;
* ego boxes ``(M, 9)``: :data:`radardistill_ros.conventions.BOX_FIELDS` = x, y, z, l, w, h, yaw,
  vx, vy in the ego frame (base_link) at the reference time.

The ego-frame yaw is the heading of the box's +x axis (its length direction) rotated into the ego
frame and projected onto the ego x-y plane; the velocity is rotated (never translated) with the
full ego rotation and its z component dropped. Back in the global frame a box is given a yaw-only
rotation about global +z (as nuScenes annotates). With a level ego pose (no pitch/roll) both
directions are exact inverses; with pitch/roll theta the heading error is O(theta^2).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "compose",
    "ego_boxes_to_global",
    "global_boxes_to_ego",
    "invert_transform",
    "make_transform",
    "quat_from_yaw",
    "quat_to_rot",
    "rot_to_quat",
    "rotate_vectors",
    "rotz",
    "transform_from_pose",
    "transform_points",
    "wrap_angle",
    "yaw_from_quat",
    "yaw_from_rot",
]


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Wrap angles [rad] to ``[-pi, pi)``."""
    return (np.asarray(angle, dtype=np.float64) + np.pi) % (2.0 * np.pi) - np.pi


def quat_to_rot(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` from quaternions ``(..., 4)`` = [w, x, y, z].

    The quaternion is normalised first; a zero quaternion raises ``ValueError``. A single
    quaternion is computed in scalar float arithmetic (same formula; ~10x fewer numpy calls: the
    TF buffer converts one per link and lookup).
    """
    if np.ndim(q) == 1 and len(q) == 4:
        w, x, y, z = (float(v) for v in q)
        n = math.sqrt(w * w + x * x + y * y + z * z)
        if n == 0.0 or not math.isfinite(n):
            raise ValueError("quaternion has zero or non-finite norm")
        w, x, y, z = w / n, x / n, y / n, z / n
        return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                         [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                         [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4:
        raise ValueError(f"quaternion must have 4 components [w, x, y, z], got shape {q.shape}")
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if np.any(n == 0.0) or not np.all(np.isfinite(n)):
        raise ValueError("quaternion has zero or non-finite norm")
    w, x, y, z = np.moveaxis(q / n, -1, 0)
    r = np.empty((*q.shape[:-1], 3, 3))
    r[..., 0, 0] = 1 - 2 * (y * y + z * z)
    r[..., 0, 1] = 2 * (x * y - w * z)
    r[..., 0, 2] = 2 * (x * z + w * y)
    r[..., 1, 0] = 2 * (x * y + w * z)
    r[..., 1, 1] = 1 - 2 * (x * x + z * z)
    r[..., 1, 2] = 2 * (y * z - w * x)
    r[..., 2, 0] = 2 * (x * z - w * y)
    r[..., 2, 1] = 2 * (y * z + w * x)
    r[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return r


def rot_to_quat(r: np.ndarray) -> np.ndarray:
    """Quaternions ``(..., 4)`` = [w, x, y, z] with w >= 0 from rotation matrices ``(..., 3, 3)``.

    Uses the numerically stable branch on the largest of (w, x, y, z).
    """
    r = np.asarray(r, dtype=np.float64)
    if r.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrix must be (..., 3, 3), got shape {r.shape}")
    batch = r.shape[:-2]
    m = r.reshape(-1, 3, 3)
    tr = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    # 4 * (w^2, x^2, y^2, z^2) - 1 from the diagonal, pick the largest for stability
    cand = np.stack([tr, 2 * m[:, 0, 0] - tr, 2 * m[:, 1, 1] - tr, 2 * m[:, 2, 2] - tr], axis=1)
    k = np.argmax(cand, axis=1)
    s = 2.0 * np.sqrt(np.maximum(1.0 + cand[np.arange(len(m)), k], 1e-300))  # = 4 * |q_k|
    q = np.empty((len(m), 4))
    d21, d02, d10 = m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]
    s21, s02, s10 = m[:, 2, 1] + m[:, 1, 2], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 0] + m[:, 0, 1]
    rows = (
        np.stack([s / 4, d21 / s, d02 / s, d10 / s], axis=1),
        np.stack([d21 / s, s / 4, s10 / s, s02 / s], axis=1),
        np.stack([d02 / s, s10 / s, s / 4, s21 / s], axis=1),
        np.stack([d10 / s, s02 / s, s21 / s, s / 4], axis=1),
    )
    for i in range(4):
        q[k == i] = rows[i][k == i]
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape((*batch, 4))


def rotz(yaw: np.ndarray | float) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` about +z by ``yaw`` [rad]."""
    yaw = np.asarray(yaw, dtype=np.float64)
    c, s = np.cos(yaw), np.sin(yaw)
    r = np.zeros((*yaw.shape, 3, 3))
    r[..., 0, 0], r[..., 0, 1], r[..., 1, 0], r[..., 1, 1], r[..., 2, 2] = c, -s, s, c, 1.0
    return r


def quat_from_yaw(yaw: np.ndarray | float) -> np.ndarray:
    """Quaternions ``(..., 4)`` = [cos(yaw/2), 0, 0, sin(yaw/2)] of a rotation about +z."""
    yaw = np.asarray(yaw, dtype=np.float64)
    q = np.zeros((*yaw.shape, 4))
    q[..., 0], q[..., 3] = np.cos(yaw / 2), np.sin(yaw / 2)
    return q


def yaw_from_rot(r: np.ndarray) -> np.ndarray:
    """Yaw [rad] of rotation matrices ``(..., 3, 3)``: heading of the rotated +x axis in the x-y
    plane, ``atan2(R[1, 0], R[0, 0])`` (as the devkit's ``quaternion_yaw``)."""
    r = np.asarray(r, dtype=np.float64)
    return np.arctan2(r[..., 1, 0], r[..., 0, 0])


def yaw_from_quat(q: np.ndarray) -> np.ndarray:
    """Yaw [rad] of quaternions ``(..., 4)`` = [w, x, y, z] (see :func:`yaw_from_rot`)."""
    return yaw_from_rot(quat_to_rot(q))


def make_transform(rotation: np.ndarray | None = None, translation: np.ndarray | None = None) -> np.ndarray:
    """4x4 rigid transform from a 3x3 rotation matrix and a translation (3,) [m]."""
    t = np.eye(4)
    if rotation is not None:
        t[:3, :3] = np.asarray(rotation, dtype=np.float64)
    if translation is not None:
        t[:3, 3] = np.asarray(translation, dtype=np.float64).reshape(3)
    return t


def transform_from_pose(translation: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """4x4 ``T_parent_from_child`` of a nuScenes pose record (translation [m], quaternion
    [w, x, y, z]), e.g. ego_pose -> ``T_global_from_ego``, calibrated_sensor ->
    ``T_ego_from_sensor``."""
    return make_transform(quat_to_rot(rotation), translation)


def compose(*transforms: np.ndarray) -> np.ndarray:
    """Product ``T_1 @ T_2 @ ... @ T_n`` of 4x4 transforms (``T_a_from_b, T_b_from_c -> T_a_from_c``)."""
    out = np.eye(4)
    for t in transforms:
        out = out @ np.asarray(t, dtype=np.float64)
    return out


def invert_transform(t: np.ndarray) -> np.ndarray:
    """Inverse of a 4x4 rigid transform: ``T_b_from_a`` from ``T_a_from_b`` (R^T, -R^T t)."""
    t = np.asarray(t, dtype=np.float64)
    r = t[:3, :3]
    out = np.eye(4)
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ t[:3, 3]
    return out


def transform_points(t: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points ``(N, 3)``: ``R p + t``. Returns float64 ``(N, 3)``."""
    t = np.asarray(t, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return p @ t[:3, :3].T + t[:3, 3]


def rotate_vectors(t: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rotate (not translate) vectors ``(N, 3)`` by a 4x4 transform or 3x3 rotation: ``R v``."""
    r = np.asarray(t, dtype=np.float64)[:3, :3]
    return np.asarray(vectors, dtype=np.float64) @ r.T


def global_boxes_to_ego(
    centers: np.ndarray,
    sizes_wlh: np.ndarray,
    rotations: np.ndarray,
    velocities: np.ndarray,
    ego_translation: np.ndarray,
    ego_rotation: np.ndarray,
) -> np.ndarray:
    """nuScenes global boxes -> ego boxes ``(M, 9)`` = x, y, z, l, w, h, yaw, vx, vy.

    Args:
        centers: ``(M, 3)`` box centres in the global frame [m].
        sizes_wlh: ``(M, 3)`` nuScenes sizes [w, l, h] [m].
        rotations: ``(M, 4)`` box quaternions [w, x, y, z] (global frame).
        velocities: ``(M, 2)`` or ``(M, 3)`` global velocities [m/s] (vz = 0 when 2 given).
        ego_translation, ego_rotation: ego pose ``T_global_from_ego`` at the reference time.

    Centre: ``p_ego = R_e^T (p_g - t_e)``; yaw: heading of ``R_e^T R_box e_x``; velocity:
    ``(R_e^T v_g)[:2]``. Returns float64 ``(M, 9)``.
    """
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    m = len(centers)
    sizes = np.asarray(sizes_wlh, dtype=np.float64).reshape(m, 3)
    rots = np.asarray(rotations, dtype=np.float64).reshape(m, 4)
    vel = np.asarray(velocities, dtype=np.float64)
    vel = vel.reshape(m, vel.shape[-1] if vel.ndim == 2 else 3)
    if vel.shape[1] == 2:
        vel = np.concatenate([vel, np.zeros((m, 1))], axis=1)
    t_ego_from_global = invert_transform(transform_from_pose(ego_translation, ego_rotation))
    out = np.zeros((m, 9))
    if m == 0:
        return out
    out[:, 0:3] = transform_points(t_ego_from_global, centers)
    out[:, 3] = sizes[:, 1]
    out[:, 4] = sizes[:, 0]
    out[:, 5] = sizes[:, 2]
    heading_g = quat_to_rot(rots)[:, :, 0]  # box +x axis in the global frame
    heading_e = rotate_vectors(t_ego_from_global, heading_g)
    out[:, 6] = np.arctan2(heading_e[:, 1], heading_e[:, 0])
    out[:, 7:9] = rotate_vectors(t_ego_from_global, vel)[:, :2]
    return out


def ego_boxes_to_global(
    boxes: np.ndarray, ego_translation: np.ndarray, ego_rotation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ego boxes ``(M, 9)`` -> nuScenes global boxes (inverse of :func:`global_boxes_to_ego`).

    Args:
        boxes: ``(M, >=9)`` x, y, z, l, w, h, yaw, vx, vy in the ego frame (extra columns ignored).
        ego_translation, ego_rotation: ego pose ``T_global_from_ego`` at the reference time.

    Returns:
        ``(centers (M, 3), sizes_wlh (M, 3), rotations (M, 4) [w, x, y, z] yaw-only about global
        +z, velocities (M, 3))`` in the global frame, float64. Evaluation uses velocity[:, :2].
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        b = b.reshape(0, 9)
    if b.ndim != 2 or b.shape[1] < 9:
        raise ValueError(f"ego boxes must have 9 columns (x, y, z, l, w, h, yaw, vx, vy), got {b.shape}")
    m = len(b)
    t_global_from_ego = transform_from_pose(ego_translation, ego_rotation)
    centers = transform_points(t_global_from_ego, b[:, 0:3])
    sizes = b[:, [4, 3, 5]].copy()
    heading_e = np.stack([np.cos(b[:, 6]), np.sin(b[:, 6]), np.zeros(m)], axis=1)
    heading_g = rotate_vectors(t_global_from_ego, heading_e)
    rotations = quat_from_yaw(np.arctan2(heading_g[:, 1], heading_g[:, 0])).reshape(m, 4)
    vel_e = np.concatenate([b[:, 7:9], np.zeros((m, 1))], axis=1)
    velocities = rotate_vectors(t_global_from_ego, vel_e)
    return centers.reshape(m, 3), sizes, rotations, velocities.reshape(m, 3)
