"""Shared conventions of the data path: class names, task groups, array layouts, frames.

Every stage (dataset loading, targets, model, decoding, evaluation, export checks, the node)
imports these instead of repeating them.

Frames (DESIGN.md, "Frames and conventions"): the model's reference frame is the ego frame
(``base_link``) at the reference time — x forward, y left, z up (REP 103), metres, seconds, yaw
counter-clockwise from +x in radians.

Array layouts (numpy float32 unless stated):

* radar points ``(N, 6)``: :data:`RADAR_FEATURES` = x, y, z [m], rcs [dBsm], vx_comp, vy_comp [m/s]
  (ego-motion compensated velocity, rotated into the reference frame).
* LiDAR points ``(N, 5)``: :data:`LIDAR_FEATURES` = x, y, z [m], intensity, time_lag [s].
* boxes ``(M, 9)``: :data:`BOX_FIELDS` = centre x, y, z [m], length (along heading), width,
  height [m], yaw [rad], vx, vy [m/s]; labels ``(M,)`` int64 indices into :data:`CLASS_NAMES`.
"""

from __future__ import annotations

#: The 10 nuScenes detection classes, in the order of label indices.
CLASS_NAMES: tuple[str, ...] = (
    "car", "truck", "construction_vehicle", "bus", "trailer",
    "barrier", "motorcycle", "bicycle", "pedestrian", "traffic_cone",
)

#: CenterHead task groups (RadarDistill / CenterPoint nuScenes setting).
TASKS: tuple[tuple[str, ...], ...] = (
    ("car",),
    ("truck", "construction_vehicle"),
    ("bus", "trailer"),
    ("barrier",),
    ("motorcycle", "bicycle"),
    ("pedestrian", "traffic_cone"),
)

#: nuScenes category name -> detection class (as nuscenes-devkit's category_to_detection_name).
CATEGORY_TO_CLASS: dict[str, str] = {
    "movable_object.barrier": "barrier",
    "vehicle.bicycle": "bicycle",
    "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus",
    "vehicle.car": "car",
    "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle",
    "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian",
    "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian",
    "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer",
    "vehicle.truck": "truck",
}

RADAR_FEATURES: tuple[str, ...] = ("x", "y", "z", "rcs", "vx_comp", "vy_comp")
LIDAR_FEATURES: tuple[str, ...] = ("x", "y", "z", "intensity", "time_lag")
BOX_FIELDS: tuple[str, ...] = ("x", "y", "z", "l", "w", "h", "yaw", "vx", "vy")

#: The five nuScenes radars, in a fixed order.
RADAR_CHANNELS: tuple[str, ...] = (
    "RADAR_FRONT", "RADAR_FRONT_LEFT", "RADAR_FRONT_RIGHT", "RADAR_BACK_LEFT", "RADAR_BACK_RIGHT",
)
LIDAR_CHANNEL = "LIDAR_TOP"

#: Frame id of the model's reference frame.
EGO_FRAME = "base_link"


def class_index(name: str) -> int:
    """Label index of a detection class name; ``KeyError`` names the unknown class."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise KeyError(f"unknown detection class {name!r}; expected one of {CLASS_NAMES}") from None

#: nuScenes radar .pcd record (ARS 408-21): 18 fields, packed little-endian, 43 bytes a point.
#: The same layout is published as a packed PointCloud2 by nuScenes->ROS converters.
NUSCENES_RADAR_FIELDS: tuple[tuple[str, str], ...] = (
    ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("dyn_prop", "i1"), ("id", "<i2"),
    ("rcs", "<f4"), ("vx", "<f4"), ("vy", "<f4"), ("vx_comp", "<f4"), ("vy_comp", "<f4"),
    ("is_quality_valid", "i1"), ("ambig_state", "i1"), ("x_rms", "i1"), ("y_rms", "i1"),
    ("invalid_state", "i1"), ("pdh0", "i1"), ("vx_rms", "i1"), ("vy_rms", "i1"),
)
