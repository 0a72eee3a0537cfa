"""torch ``Dataset`` over a nuScenes-format split and its ``collate``.

One item = loader (:mod:`training.nuscenes_data`) -> optional global augmentation
(:mod:`training.augment`) -> range mask -> CenterPoint targets (:mod:`training.targets`).
Modes: ``student`` (radar), ``teacher`` (LiDAR), ``distill`` (both).

Item (numpy): ``token`` str, ``radar`` (N, 6) / ``lidar`` (N, 5) float32 (None when the mode does
not use them), ``boxes`` (M, 9) float32, ``labels`` (M,) int64, ``targets`` list per task (see
docs/architecture.md), ``aug_matrix`` (4, 4) float64 (identity without augmentation),
``ego_translation`` (3,), ``ego_rotation`` (4,).

Batch (:func:`collate`, torch): ``tokens`` list[str]; ``radar`` (sum N, 7) / ``lidar`` (sum N, 6)
float32 with the batch index in column 0; ``gt_boxes`` (B, M_max, 9) float32 and ``gt_labels``
(B, M_max) int64 padded with -1; ``targets`` list per task of dicts of stacked tensors
(``heatmap`` (B, K_t, H, W), ``ind``, ``mask``, ``cls`` (B, max_objects), ``reg`` (B, max_objects,
10), ``boxes`` (B, max_objects, 9)); ``aug_matrix`` (B, 4, 4); ``ego_translation`` (B, 3) and
``ego_rotation`` (B, 4) float64.

Points are kept where x, y, z lie in ``[min, max)`` of ``point_cloud_range``; boxes where the centre
x, y does (after augmentation). Augmentation is deterministic per (seed, epoch, index), so results
do not depend on the number of DataLoader workers; call :meth:`DetectionDataset.set_epoch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from radardistill_ros.config import AugmentConfig, GridConfig, TargetConfig
from training.augment import apply_transform, sample_transform
from training.nuscenes_data import NuScenesLoader
from training.targets import build_targets

__all__ = ["MODES", "DetectionDataset", "collate", "points_in_range"]

MODES = ("student", "teacher", "distill")


def points_in_range(points: np.ndarray, pc_range: Sequence[float]) -> np.ndarray:
    """Boolean mask of rows with x, y, z in ``[min, max)`` of ``point_cloud_range``."""
    r = pc_range
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    return (x >= r[0]) & (x < r[3]) & (y >= r[1]) & (y < r[4]) & (z >= r[2]) & (z < r[5])


class DetectionDataset(Dataset):
    """Samples of a split for training / evaluation (see the module docstring).

    Args:
        loader: the dataset loader (its DataConfig sets the sweep counts).
        split: split name (``loader.sample_tokens(split)``), or pass ``tokens``.
        grid: BEV grid (range mask, target maps).
        targets: target settings (max objects, overlap, min radius).
        mode: ``student`` | ``teacher`` | ``distill``.
        augment: augmentation settings, or None for none (evaluation).
        seed: base seed of the per-item augmentation generator.
    """

    def __init__(
        self,
        loader: NuScenesLoader,
        split: str | None = None,
        *,
        grid: GridConfig,
        targets: TargetConfig,
        mode: str = "student",
        augment: AugmentConfig | None = None,
        tokens: Sequence[str] | None = None,
        seed: int = 0,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if (split is None) == (tokens is None):
            raise ValueError("give exactly one of split or tokens")
        self.loader = loader
        self.tokens = list(tokens) if tokens is not None else loader.sample_tokens(split)
        self.grid = grid
        self.targets_cfg = targets
        self.mode = mode
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of an epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index: int) -> dict[str, Any]:
        token = self.tokens[index]
        s = self.loader.load(token, radar=self.mode != "teacher", lidar=self.mode != "student")
        radar, lidar, boxes, labels = s.radar, s.lidar, s.boxes, s.labels
        aug = np.eye(4)
        if self.augment is not None:
            tf = sample_transform(np.random.default_rng([self.seed, self.epoch, index]), self.augment)
            out = apply_transform(tf, radar, lidar, boxes)
            radar, lidar, boxes, aug = out.radar, out.lidar, out.boxes, tf.matrix
        r = self.grid.point_cloud_range
        if radar is not None:
            radar = radar[points_in_range(radar, r)]
        if lidar is not None:
            lidar = lidar[points_in_range(lidar, r)]
        keep = (boxes[:, 0] >= r[0]) & (boxes[:, 0] < r[3]) & (boxes[:, 1] >= r[1]) & (boxes[:, 1] < r[4])
        boxes, labels = boxes[keep], labels[keep]
        return {
            "token": token,
            "radar": radar,
            "lidar": lidar,
            "boxes": boxes,
            "labels": labels,
            "targets": build_targets(boxes, labels, self.grid, self.targets_cfg),
            "aug_matrix": aug,
            "ego_translation": s.ego_translation,
            "ego_rotation": s.ego_rotation,
        }


def _batch_points(clouds: list[np.ndarray | None]) -> torch.Tensor | None:
    if any(c is None for c in clouds):
        return None
    parts = [np.concatenate([np.full((len(c), 1), b, np.float32), c.astype(np.float32)], axis=1)
             for b, c in enumerate(clouds)]
    return torch.from_numpy(np.concatenate(parts, axis=0))


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch dataset items (see the module docstring for the layout)."""
    b = len(items)
    m_max = max((len(it["boxes"]) for it in items), default=0)
    gt_boxes = np.zeros((b, m_max, 9), np.float32)
    gt_labels = np.full((b, m_max), -1, np.int64)
    for i, it in enumerate(items):
        gt_boxes[i, : len(it["boxes"])] = it["boxes"]
        gt_labels[i, : len(it["labels"])] = it["labels"]
    targets = [
        {key: torch.from_numpy(np.stack([it["targets"][t][key] for it in items])) for key in task}
        for t, task in enumerate(items[0]["targets"])
    ]
    return {
        "tokens": [it["token"] for it in items],
        "radar": _batch_points([it["radar"] for it in items]),
        "lidar": _batch_points([it["lidar"] for it in items]),
        "gt_boxes": torch.from_numpy(gt_boxes),
        "gt_labels": torch.from_numpy(gt_labels),
        "targets": targets,
        "aug_matrix": torch.from_numpy(np.stack([it["aug_matrix"] for it in items])),
        "ego_translation": torch.from_numpy(np.stack([it["ego_translation"] for it in items])),
        "ego_rotation": torch.from_numpy(np.stack([it["ego_rotation"] for it in items])),
    }
