"""CenterPoint targets per task group (docs/architecture.md, "Targets"), numpy.

For a box with centre (x, y) in the ego frame the continuous cell coordinate is
``c = ((x - x_min) / cell_x, (y - y_min) / cell_y)`` and its cell ``(ix, iy) = floor(c)``
(rows = y, columns = x, ``cell = pillar_size * out_stride``). Per task t (classes of
``TASKS[t]``):

* ``heatmap`` (K_t, H, W): max of gaussians ``exp(-(dx^2 + dy^2) / (2 sigma^2))``,
  ``sigma = (2 r + 1) / 6``, peak 1 at (iy, ix); ``r = max(int(gaussian_radius(l / cell_x,
  w / cell_y, overlap)), min_radius)`` (CenterPoint / OpenPCDet ``gaussian_radius``,
  ``draw_gaussian_to_heatmap``);
* ``ind`` (max_objects,) = iy * W + ix; ``mask`` (max_objects,) valid slots; ``cls`` class index
  within the task;
* ``reg`` (max_objects, 10) = c - (ix, iy), z, log l, log w, log h, cos yaw, sin yaw, vx, vy;
* ``boxes`` (max_objects, 9) the GT boxes (x, y, z, l, w, h, yaw, vx, vy).

Objects fill slots in input order; boxes with a centre outside the grid or a non-positive
length/width are skipped; at most ``max_objects`` per task.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from radardistill_ros.config import GridConfig, TargetConfig
from radardistill_ros.conventions import CLASS_NAMES, TASKS

__all__ = ["build_targets", "draw_gaussian", "gaussian_2d", "gaussian_radius"]

REG_DIM = 10


def gaussian_radius(
    height: np.ndarray | float, width: np.ndarray | float, min_overlap: float = 0.5
) -> np.ndarray:
    """CenterNet/CenterPoint radius [cells] (OpenPCDet ``centernet_utils.gaussian_radius``): the
    smallest of the three corner-shift radii that keep IoU >= ``min_overlap`` for a box of
    ``height`` x ``width`` cells. Note r3 = (b3 + sqrt(b3^2 - 4 a3 c3)) / 2 exactly as in
    OpenPCDet/CenterPoint (CornerNet divides by 2 a3); kept for parity with the published targets."""
    h = np.asarray(height, dtype=np.float64)
    w = np.asarray(width, dtype=np.float64)
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + np.sqrt(b1**2 - 4 * c1)) / 2
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + np.sqrt(b2**2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + np.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return np.minimum(np.minimum(r1, r2), r3)


def gaussian_2d(radius: int) -> np.ndarray:
    """``(2r+1, 2r+1)`` gaussian, sigma = (2r+1)/6, peak 1, values below eps*max set to 0."""
    diameter = 2 * radius + 1
    sigma = diameter / 6.0
    y, x = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return h


def draw_gaussian(heatmap: np.ndarray, center: Sequence[float], radius: int, k: float = 1.0) -> None:
    """Max-paint a gaussian of ``radius`` cells at cell ``(int(cx), int(cy))`` into ``heatmap``
    (H, W) in place, clipped at the borders (OpenPCDet ``draw_gaussian_to_heatmap``)."""
    g = gaussian_2d(radius)
    x, y = int(center[0]), int(center[1])
    height, width = heatmap.shape
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    if left + right <= 0 or top + bottom <= 0:
        return
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right] * k
    np.maximum(region, patch.astype(heatmap.dtype), out=region)


def build_targets(
    boxes: np.ndarray,
    labels: np.ndarray,
    grid: GridConfig,
    cfg: TargetConfig,
    tasks: Sequence[Sequence[str]] = TASKS,
) -> list[dict[str, np.ndarray]]:
    """CenterPoint targets for one sample.

    Args:
        boxes: ``(M, 9)`` x, y, z, l, w, h, yaw, vx, vy in the ego frame [m, rad, m/s].
        labels: ``(M,)`` indices into :data:`CLASS_NAMES`.
        grid: BEV grid (``bev_shape`` = (H, W), ``cell_size``, ``point_cloud_range``).
        cfg: max_objects, gaussian_overlap, min_radius.
        tasks: class-name groups (default :data:`TASKS`).

    Returns:
        One dict per task: ``heatmap`` (K_t, H, W) float32, ``ind`` (max_objects,) int64,
        ``mask`` (max_objects,) bool, ``cls`` (max_objects,) int64, ``reg`` (max_objects, 10)
        float32, ``boxes`` (max_objects, 9) float32.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 9)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(boxes) != len(labels):
        raise ValueError(f"{len(boxes)} boxes but {len(labels)} labels")
    h_map, w_map = grid.bev_shape
    cell_x, cell_y = grid.cell_size
    x_min, y_min = grid.point_cloud_range[0], grid.point_cloud_range[1]
    cx = (boxes[:, 0] - x_min) / cell_x
    cy = (boxes[:, 1] - y_min) / cell_y
    ix, iy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
    inside = (ix >= 0) & (ix < w_map) & (iy >= 0) & (iy < h_map) & (boxes[:, 3] > 0) & (boxes[:, 4] > 0)
    radius = gaussian_radius(boxes[:, 3] / cell_x, boxes[:, 4] / cell_y, cfg.gaussian_overlap)
    radius = np.maximum(np.floor(np.nan_to_num(radius)).astype(np.int64), cfg.min_radius)
    log_size = np.log(np.maximum(boxes[:, 3:6], 1e-6))
    rot = np.stack([np.cos(boxes[:, 6]), np.sin(boxes[:, 6])], axis=1)
    reg = np.concatenate([np.stack([cx - ix, cy - iy, boxes[:, 2]], axis=1), log_size, rot, boxes[:, 7:9]],
                         axis=1)

    out = []
    for names in tasks:
        ids = [CLASS_NAMES.index(n) for n in names]
        heatmap = np.zeros((len(ids), h_map, w_map), dtype=np.float32)
        ind = np.zeros(cfg.max_objects, dtype=np.int64)
        mask = np.zeros(cfg.max_objects, dtype=bool)
        cls = np.zeros(cfg.max_objects, dtype=np.int64)
        reg_t = np.zeros((cfg.max_objects, REG_DIM), dtype=np.float32)
        box_t = np.zeros((cfg.max_objects, 9), dtype=np.float32)
        sel = np.flatnonzero(np.isin(labels, ids) & inside)[: cfg.max_objects]
        for slot, i in enumerate(sel):
            k = ids.index(int(labels[i]))
            draw_gaussian(heatmap[k], (cx[i], cy[i]), int(radius[i]))
            ind[slot] = iy[i] * w_map + ix[i]
            mask[slot] = True
            cls[slot] = k
        n = len(sel)
        reg_t[:n] = reg[sel]
        box_t[:n] = boxes[sel]
        out.append({"heatmap": heatmap, "ind": ind, "mask": mask, "cls": cls, "reg": reg_t, "boxes": box_t})
    return out

