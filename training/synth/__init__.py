"""Synthetic nuScenes-format world: road scenes, a ray-cast LiDAR and ARS 408-like radars.

``python -m training.synth --out DIR --version v1.0-synth --scenes N --seed S [--stats]`` or
:func:`generate_world` write a dataset that ``nuscenes.NuScenes(version, dataroot)`` loads
unchanged; :func:`compute_stats` measures how radar-like it is. See ``world.py`` (scenario and
motion), ``lidar.py``, ``radar.py`` (sensor models), ``writer.py`` (tables and files) and
``rig.py`` (sensor mounting).
"""

from training.synth.stats import check_stats, compute_stats, format_stats
from training.synth.writer import (
    TRAIN_SPLIT,
    VAL_SPLIT,
    generate_world,
    radar_pcd_bytes,
    read_radar_pcd,
    scenario_for,
)

__all__ = ["TRAIN_SPLIT", "VAL_SPLIT", "check_stats", "compute_stats", "format_stats", "generate_world",
           "radar_pcd_bytes", "read_radar_pcd", "scenario_for"]
