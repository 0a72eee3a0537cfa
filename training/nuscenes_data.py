"""Loader for any nuScenes-format dataset (real nuScenes or the synthetic world) via nuscenes-devkit.

For a sample token it returns a :class:`Sample` in the ego frame (base_link) of the key frame:

* reference pose and time: the ego pose and timestamp of the sample's key-frame ``LIDAR_TOP``
  sample_data (the pose DetectionEval measures distances from), ``t_ref`` [s];
* radar ``(N, 6)`` x, y, z, rcs, vx_comp, vy_comp: for each radar channel the key-frame sweep and
  up to ``radar_sweeps - 1`` earlier ones (sample_data ``prev`` links), read with
  ``RadarPointCloud.from_file`` with every state accepted (the devkit's default invalid_state /
  dyn_prop / ambig_state filters disabled, without touching its global class settings), and moved
  to the reference frame and time by :class:`radardistill_ros.sweeps.SweepAccumulator` (extrinsics,
  ego motion, v*dt to ``t_ref``);
* LiDAR ``(N, 5)`` x, y, z, intensity, time_lag: the key-frame ``LIDAR_TOP`` sweep and up to
  ``lidar_sweeps - 1`` earlier ones (``LidarPointCloud.from_file``), same accumulator;
* GT boxes ``(M, 9)`` + labels of the 10 detection classes converted with
  :func:`radardistill_ros.geometry.global_boxes_to_ego`; velocity from ``nusc.box_velocity``
  (NaN -> 0 with ``velocity_valid`` False).

GT filtering (documented choice): (1) categories outside the 10 classes are dropped; (2) boxes with
``num_lidar_pts + num_radar_pts < min_points`` (default 1) are dropped — the same rule as
DetectionEval's ``filter_eval_boxes`` and OpenPCDet's nuScenes infos; (3) with a grid, boxes whose
centre (x, y) lies outside ``point_cloud_range`` are dropped (a centre outside the grid has no
heatmap cell). DetectionEval's class distance ranges (<= 50 m) lie inside the +-54 m grid, so every
box the evaluation scores is kept. Scenes start with fewer sweeps than requested (no duplication).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud
from nuscenes.utils.splits import create_splits_scenes

from radardistill_ros.config import DataConfig, GridConfig
from radardistill_ros.conventions import CATEGORY_TO_CLASS, CLASS_NAMES, LIDAR_CHANNEL
from radardistill_ros.geometry import global_boxes_to_ego, transform_from_pose
from radardistill_ros.sweeps import Sweep, SweepAccumulator, radar_features

__all__ = ["NuScenesLoader", "Sample", "scenes_of_split"]

#: Every representable radar state value (int8 fields): keeps all points (filters disabled).
_ALL_STATES = frozenset(range(-128, 256))
_US = 1e-6  # nuScenes timestamps are microseconds


@dataclass(frozen=True)
class Sample:
    """One key frame in the ego frame at ``timestamp``.

    Attributes:
        token: sample token.
        scene_name: name of the scene.
        timestamp: reference time t_ref [s] (key-frame LIDAR_TOP timestamp).
        ego_translation, ego_rotation: ego pose (global frame; quaternion [w, x, y, z]).
        T_global_from_ego: 4x4 of the ego pose.
        radar: ``(N, 6)`` float32 or None when not requested.
        lidar: ``(N, 5)`` float32 or None when not requested.
        boxes: ``(M, 9)`` float32 x, y, z, l, w, h, yaw, vx, vy.
        labels: ``(M,)`` int64 indices into ``CLASS_NAMES``.
        velocity_valid: ``(M,)`` bool, False where the devkit had no velocity (set to 0).
        num_points: ``(M,)`` int64 num_lidar_pts + num_radar_pts of each box.
        attributes: attribute name per box ('' if none).
        annotation_tokens: sample_annotation token per box.
        num_dropped_points: non-finite point rows dropped while accumulating.
    """

    token: str
    scene_name: str
    timestamp: float
    ego_translation: np.ndarray
    ego_rotation: np.ndarray
    T_global_from_ego: np.ndarray
    radar: np.ndarray | None
    lidar: np.ndarray | None
    boxes: np.ndarray
    labels: np.ndarray
    velocity_valid: np.ndarray
    num_points: np.ndarray
    attributes: tuple[str, ...] = field(default_factory=tuple)
    annotation_tokens: tuple[str, ...] = field(default_factory=tuple)
    num_dropped_points: int = 0


def scenes_of_split(nusc: NuScenes, split: str) -> list[str]:
    """Scene names of a split: a predefined nuScenes split (``create_splits_scenes``) or a custom
    one from ``<dataroot>/<version>/splits.json``. Raises ``ValueError`` naming the split (and the
    file) when it is unknown or has no scene in this dataset."""
    predefined = create_splits_scenes()
    path = Path(nusc.dataroot) / nusc.version / "splits.json"
    if split in predefined:
        names = predefined[split]
    elif path.is_file():
        try:
            custom = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read split file {path}: {e}") from e
        if split not in custom:
            raise ValueError(f"split {split!r} not in {path} (has {sorted(custom)})")
        names = list(custom[split])
    else:
        raise ValueError(f"split {split!r} is not a nuScenes split and {path} does not exist")
    present = {s["name"] for s in nusc.scene}
    names = [n for n in names if n in present]
    if not names:
        raise ValueError(f"split {split!r} has no scene in {nusc.dataroot} ({nusc.version})")
    return names


class NuScenesLoader:
    """Reads samples of one nuScenes-format dataset (see the module docstring).

    Args:
        dataroot, version: the dataset (``NuScenes(version, dataroot)``), or pass ``nusc``.
        data: sweep counts and radar channels (``DataConfig``); default 6 radar / 10 LiDAR sweeps.
        grid: optional BEV grid whose ``point_cloud_range`` (x, y) filters GT box centres.
        min_points: GT boxes need ``num_lidar_pts + num_radar_pts >= min_points``.
    """

    def __init__(
        self,
        dataroot: str | os.PathLike | None = None,
        version: str | None = None,
        data: DataConfig | None = None,
        grid: GridConfig | None = None,
        *,
        nusc: NuScenes | None = None,
        min_points: int = 1,
        verbose: bool = False,
    ) -> None:
        if nusc is None:
            if dataroot is None or version is None:
                raise ValueError("give either nusc or both dataroot and version")
            table_root = Path(dataroot) / version
            if not table_root.is_dir():
                raise FileNotFoundError(f"nuScenes tables not found: {table_root}")
            nusc = NuScenes(version=version, dataroot=str(dataroot), verbose=verbose)
        self.nusc = nusc
        self.data = data if data is not None else DataConfig(radar_sweeps=6, lidar_sweeps=10)
        self.grid = grid
        self.min_points = min_points
        self._attribute_names = {a["token"]: a["name"] for a in nusc.attribute}

    # ---------------------------------------------------------------------------------- splits

    def scenes(self, split: str) -> list[str]:
        """Scene names of ``split`` present in this dataset (see :func:`scenes_of_split`)."""
        return scenes_of_split(self.nusc, split)

    def sample_tokens(self, split: str | None = None) -> list[str]:
        """Sample tokens of a split (all samples if None), scene by scene in time order."""
        wanted = set(self.scenes(split)) if split is not None else None
        tokens = []
        for scene in self.nusc.scene:
            if wanted is not None and scene["name"] not in wanted:
                continue
            tok = scene["first_sample_token"]
            while tok:
                tokens.append(tok)
                tok = self.nusc.get("sample", tok)["next"]
        return tokens

    # ---------------------------------------------------------------------------------- sweeps

    def _path(self, sd: dict) -> str:
        path = os.path.join(self.nusc.dataroot, sd["filename"])
        if not os.path.isfile(path):
            raise FileNotFoundError(f"point cloud file missing: {path} (sample_data {sd['token']})")
        return path

    def _sweep_chain(self, sd_token: str, n: int) -> list[dict]:
        """The sample_data record and up to n - 1 predecessors, newest first."""
        out = []
        while sd_token and len(out) < n:
            sd = self.nusc.get("sample_data", sd_token)
            out.append(sd)
            sd_token = sd["prev"]
        return out

    def _sweep(self, sd: dict, points: np.ndarray) -> Sweep:
        cs = self.nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        return Sweep(points, sd["timestamp"] * _US, transform_from_pose(cs["translation"], cs["rotation"]),
                     transform_from_pose(pose["translation"], pose["rotation"]), sd["channel"])

    def radar_sweeps(self, sample_token: str, channel: str) -> list[Sweep]:
        """Sweeps of one radar for a sample, newest (key frame) first, all points kept."""
        sample = self.nusc.get("sample", sample_token)
        if channel not in sample["data"]:
            raise KeyError(f"sample {sample_token} has no {channel} data")
        sweeps = []
        for sd in self._sweep_chain(sample["data"][channel], self.data.radar_sweeps):
            path = self._path(sd)
            try:
                pc = RadarPointCloud.from_file(path, invalid_states=_ALL_STATES, dynprop_states=_ALL_STATES,
                                               ambig_states=_ALL_STATES)
                pts = radar_features(pc.points)
            except (AssertionError, ValueError, IndexError, KeyError, UnicodeDecodeError) as e:
                raise ValueError(f"cannot read radar file {path}: {type(e).__name__}: {e}") from e
            sweeps.append(self._sweep(sd, pts))
        return sweeps

    def lidar_sweeps(self, sample_token: str) -> list[Sweep]:
        """LIDAR_TOP sweeps for a sample, newest (key frame) first; points (N, 4) x, y, z, intensity."""
        sample = self.nusc.get("sample", sample_token)
        sweeps = []
        for sd in self._sweep_chain(sample["data"][LIDAR_CHANNEL], self.data.lidar_sweeps):
            path = self._path(sd)
            try:
                pts = LidarPointCloud.from_file(path).points.T
            except (AssertionError, ValueError) as e:
                raise ValueError(f"cannot read LiDAR file {path}: {type(e).__name__}: {e}") from e
            sweeps.append(self._sweep(sd, np.ascontiguousarray(pts, dtype=np.float32)))
        return sweeps

    # ---------------------------------------------------------------------------------- samples

    def reference(self, sample_token: str) -> tuple[float, np.ndarray, np.ndarray]:
        """``(t_ref [s], ego translation (3,), ego rotation (4,))`` of the key-frame LIDAR_TOP."""
        sample = self.nusc.get("sample", sample_token)
        sd = self.nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
        pose = self.nusc.get("ego_pose", sd["ego_pose_token"])
        ego_t, ego_q = np.asarray(pose["translation"], float), np.asarray(pose["rotation"], float)
        return sd["timestamp"] * _US, ego_t, ego_q

    def load(self, sample_token: str, radar: bool = True, lidar: bool = True) -> Sample:
        """The :class:`Sample` of ``sample_token`` (radar / LiDAR points only when requested)."""
        sample = self.nusc.get("sample", sample_token)
        t_ref, ego_t, ego_q = self.reference(sample_token)
        t_global_from_ego = transform_from_pose(ego_t, ego_q)
        dropped = 0
        radar_pts = lidar_pts = None
        if radar:
            acc = SweepAccumulator(self.data.radar_sweeps, kind="radar")
            for channel in self.data.radar_channels:
                dropped += acc.extend(self.radar_sweeps(sample_token, channel)[::-1])
            radar_pts = acc.accumulate(t_global_from_ego, t_ref)
        if lidar:
            acc = SweepAccumulator(self.data.lidar_sweeps, kind="lidar")
            dropped += acc.extend(self.lidar_sweeps(sample_token)[::-1])
            lidar_pts = acc.accumulate(t_global_from_ego, t_ref)
        gt = self._ground_truth(sample, ego_t, ego_q)
        scene = self.nusc.get("scene", sample["scene_token"])
        return Sample(sample_token, scene["name"], t_ref, ego_t, ego_q, t_global_from_ego, radar_pts,
                      lidar_pts, *gt, num_dropped_points=dropped)

    def _ground_truth(self, sample: dict, ego_t: np.ndarray, ego_q: np.ndarray):
        anns = []
        for tok in sample["anns"]:
            ann = self.nusc.get("sample_annotation", tok)
            cls = CATEGORY_TO_CLASS.get(ann["category_name"])
            if cls is None or ann["num_lidar_pts"] + ann["num_radar_pts"] < self.min_points:
                continue
            anns.append((ann, CLASS_NAMES.index(cls)))
        m = len(anns)
        vel = np.array([self.nusc.box_velocity(a["token"]) for a, _ in anns], dtype=np.float64).reshape(m, 3)
        valid = np.isfinite(vel[:, :2]).all(axis=1)
        vel[~np.isfinite(vel)] = 0.0
        boxes = global_boxes_to_ego(
            np.array([a["translation"] for a, _ in anns], float).reshape(m, 3),
            np.array([a["size"] for a, _ in anns], float).reshape(m, 3),
            np.array([a["rotation"] for a, _ in anns], float).reshape(m, 4),
            vel, ego_t, ego_q)
        keep = np.ones(m, dtype=bool)
        if self.grid is not None:
            r = self.grid.point_cloud_range
            keep = (boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) & (boxes[:, 1] < r[4])
        idx = np.flatnonzero(keep)
        num_pts = [anns[i][0]["num_lidar_pts"] + anns[i][0]["num_radar_pts"] for i in idx]
        attrs = tuple(
            self._attribute_names[anns[i][0]["attribute_tokens"][0]] if anns[i][0]["attribute_tokens"] else ""
            for i in idx)
        return (
            boxes[idx].astype(np.float32),
            np.array([anns[i][1] for i in idx], dtype=np.int64),
            valid[idx],
            np.array(num_pts, dtype=np.int64),
            attrs,
            tuple(anns[i][0]["token"] for i in idx),
        )
