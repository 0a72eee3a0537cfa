"""Sensor rig: nuScenes-like mounting of LIDAR_TOP and the five radars, and frame helpers.

Extrinsics are sensor -> ego (``base_link``: rear-axle centre on the ground, x forward, y left,
z up). Values follow the nuScenes vehicles (rounded, roll and pitch zero):

=================  ======================  ===========  ==========================================
channel            translation [m]         yaw [deg]    notes
=================  ======================  ===========  ==========================================
LIDAR_TOP          (0.943, 0.000, 1.840)   -90          sensor x points right, y forward
RADAR_FRONT        (3.412, 0.000, 0.500)     0          front bumper
RADAR_FRONT_LEFT   (2.422, 0.800, 0.780)    90          front-left corner, facing left
RADAR_FRONT_RIGHT  (2.422, -0.800, 0.780)  -90          front-right corner, facing right
RADAR_BACK_LEFT    (-0.562, 0.628, 0.530)  176          rear-left corner, facing backwards
RADAR_BACK_RIGHT   (-0.562, -0.618, 0.530) -178         rear-right corner, facing backwards
=================  ======================  ===========  ==========================================
"""

from __future__ import annotations

import numpy as np

from radardistill_ros.conventions import LIDAR_CHANNEL, RADAR_CHANNELS

#: channel -> (translation xyz [m], yaw [rad]) of the sensor in the ego frame.
MOUNTS: dict[str, tuple[tuple[float, float, float], float]] = {
    LIDAR_CHANNEL: ((0.943, 0.0, 1.84), np.deg2rad(-90.0)),
    "RADAR_FRONT": ((3.412, 0.0, 0.50), 0.0),
    "RADAR_FRONT_LEFT": ((2.422, 0.80, 0.78), np.deg2rad(90.0)),
    "RADAR_FRONT_RIGHT": ((2.422, -0.80, 0.78), np.deg2rad(-90.0)),
    "RADAR_BACK_LEFT": ((-0.562, 0.628, 0.53), np.deg2rad(176.0)),
    "RADAR_BACK_RIGHT": ((-0.562, -0.618, 0.53), np.deg2rad(-178.0)),
}
assert tuple(MOUNTS)[1:] == RADAR_CHANNELS


def yaw_quaternion(yaw: float) -> list[float]:
    """Quaternion [w, x, y, z] of a rotation by ``yaw`` [rad] about +z."""
    return [float(np.cos(yaw / 2.0)), 0.0, 0.0, float(np.sin(yaw / 2.0))]


def rot2(yaw: float | np.ndarray) -> np.ndarray:
    """2D rotation matrix (or stack of them) for ``yaw`` [rad]."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]]) if np.ndim(yaw) == 0 else np.stack(
        [np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def sensor_pose(channel: str, ego_xy: np.ndarray, ego_yaw: float) -> tuple[np.ndarray, float, float]:
    """Global sensor origin xy [m], its height z [m] and global yaw [rad] for an ego pose."""
    (tx, ty, tz), syaw = MOUNTS[channel]
    xy = ego_xy + rot2(ego_yaw) @ np.array([tx, ty])
    return xy, tz, ego_yaw + syaw


def to_sensor(xy: np.ndarray, yaw: np.ndarray, s_xy: np.ndarray, s_yaw: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Global positions ``(N, 2)`` and yaws ``(N,)`` into a sensor frame at (s_xy, s_yaw)."""
    c, s = np.cos(s_yaw), np.sin(s_yaw)
    rel = xy - s_xy
    return np.column_stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]]), yaw - s_yaw
