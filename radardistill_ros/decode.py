"""CenterHead outputs -> boxes: the one decoding used by the losses, evaluation, export checks
and the node.

Head outputs (docs/architecture.md, "Head outputs") are a list over :data:`TASKS` of dicts of
maps ``(B, C, H, W)``: ``hm`` (K_t heatmap logits), ``center`` (dx, dy in cells), ``center_z``
[m], ``dim`` (log l, log w, log h), ``rot`` (cos, sin), ``vel`` (vx, vy [m/s]) and ``iou``
(in [-1, 1]). BEV cell (iy, ix) of a ``GridConfig`` covers x in ``x_min + ix * cell_x + [0, cell_x)``.

Decoding per task: sigmoid heatmap, top ``pre_max`` cells over (class, cell), box
``x = x_min + (ix + dx) * cell_x``, ``y = y_min + (iy + dy) * cell_y``, ``z``, ``(l, w, h) =
exp(dim)``, ``yaw = atan2(sin, cos)``, ``(vx, vy)``; IoU-rectified score
``s = hm^(1 - r) * iou^r`` with ``iou = clamp((pred_iou + 1) / 2, 0, 1)``; score threshold on
``s``; post-centre range; rotated BEV NMS per task; labels mapped to global class indices.
Accepts torch tensors or numpy arrays (ONNX Runtime / TensorRT outputs); numpy in -> numpy out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from radardistill_ros.box_ops import nms_rotated
from radardistill_ros.config import GridConfig, PostConfig
from radardistill_ros.conventions import CLASS_NAMES, TASKS

__all__ = [
    "HEAD_KEYS",
    "Detections",
    "decode",
    "gather_cells",
    "head_outputs_from_flat",
    "head_regression",
    "regression_to_boxes",
]

#: Keys of one task's head outputs, in the flattened (ONNX) order of docs/architecture.md.
HEAD_KEYS: tuple[str, ...] = ("hm", "center", "center_z", "dim", "rot", "vel", "iou")
#: Regression keys concatenated into the 10 channels of the ``reg`` target.
REG_KEYS: tuple[str, ...] = ("center", "center_z", "dim", "rot", "vel")
#: Clamp of the predicted log size before exp (sizes within [e^-5, e^5] m ~ [7 mm, 148 m]).
_LOG_DIM_LIMIT = 5.0


class Detections(NamedTuple):
    """Detections of one sample: ``boxes (K, 9)`` float32 (``BOX_FIELDS``), ``scores (K,)``
    float32, ``labels (K,)`` int64 into ``CLASS_NAMES``; sorted by task, then score."""

    boxes: Any
    scores: Any
    labels: Any


def head_outputs_from_flat(
    flat: Sequence[Any], tasks: Sequence[Sequence[str]] = TASKS
) -> list[dict[str, Any]]:
    """Regroup a flat list of head maps (tasks in order, keys in :data:`HEAD_KEYS` order, as the
    ONNX graph outputs them) into the list-of-dicts head output."""
    if len(flat) != len(tasks) * len(HEAD_KEYS):
        raise ValueError(f"expected {len(tasks) * len(HEAD_KEYS)} head maps "
                         f"({len(tasks)} tasks x {HEAD_KEYS}), got {len(flat)}")
    n = len(HEAD_KEYS)
    return [dict(zip(HEAD_KEYS, flat[t * n:(t + 1) * n])) for t in range(len(tasks))]


def head_regression(task_out: Mapping[str, Tensor]) -> Tensor:
    """The 10 regression channels ``(B, 10, H, W)`` of one task in the order of the ``reg``
    target: dx, dy, z, log l, log w, log h, cos yaw, sin yaw, vx, vy."""
    return torch.cat([task_out[k] for k in REG_KEYS], dim=1)


def gather_cells(fmap: Tensor, ind: Tensor) -> Tensor:
    """Values of ``fmap (B, C, H, W)`` at flat cells ``ind (B, M)`` (``iy * W + ix``) -> ``(B, M, C)``."""
    b, c = fmap.shape[:2]
    flat = fmap.reshape(b, c, -1)
    return flat.gather(2, ind[:, None, :].expand(-1, c, -1)).transpose(1, 2)


def regression_to_boxes(reg: Tensor, ind: Tensor, grid: GridConfig) -> Tensor:
    """Boxes ``(..., 9)`` from regressions ``reg (..., 10)`` predicted at flat cells ``ind (...)``.

    ``x = x_min + (ix + dx) * cell_x``, ``y = y_min + (iy + dy) * cell_y`` with ``ix = ind % W``,
    ``iy = ind // W``; ``z``; ``(l, w, h) = exp(clamp(log size, +-5))``; ``yaw = atan2(sin, cos)``;
    ``(vx, vy)``. Pure and differentiable in ``reg`` (used by the IoU and DIoU losses).
    """
    _, width = grid.bev_shape
    cell_x, cell_y = grid.cell_size
    x_min, y_min = grid.point_cloud_range[0], grid.point_cloud_range[1]
    ix = (ind % width).to(reg.dtype)
    iy = torch.div(ind, width, rounding_mode="floor").to(reg.dtype)
    x = x_min + (ix + reg[..., 0]) * cell_x
    y = y_min + (iy + reg[..., 1]) * cell_y
    size = torch.exp(reg[..., 3:6].clamp(-_LOG_DIM_LIMIT, _LOG_DIM_LIMIT))
    yaw = torch.atan2(reg[..., 7], reg[..., 6])
    return torch.cat(
        (x[..., None], y[..., None], reg[..., 2:3], size, yaw[..., None], reg[..., 8:10]), dim=-1)


def _to_torch(x: Any) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x


@torch.no_grad()
def decode(
    head_outputs: Sequence[Mapping[str, Any]] | Sequence[Any],
    grid: GridConfig,
    post: PostConfig,
    tasks: Sequence[Sequence[str]] = TASKS,
) -> list[Detections]:
    """Head outputs (list over tasks of dicts, or the flat ONNX list) -> one :class:`Detections`
    per sample, boxes in the grid's (ego) frame.

    Per task t: ``hm = sigmoid(logits)``; top ``post.nms_pre_max`` (class, cell) entries; boxes by
    :func:`regression_to_boxes`; ``score = hm^(1-r) * iou^r`` (``r = post.iou_rectifier``,
    ``iou = clamp((pred_iou + 1) / 2, 0, 1)``; ``score = hm`` if the head has no ``iou``); keep
    ``score > post.score_threshold`` with the centre inside ``post.post_center_range``; rotated
    BEV NMS (IoU > ``post.nms_iou_threshold`` suppressed, ``post.nms_post_max`` kept per task).
    The threshold applies to the rectified score (OpenPCDet thresholds the raw heatmap).
    Numpy inputs give numpy outputs; tensors give tensors on their device.
    """
    if len(head_outputs) and not isinstance(head_outputs[0], Mapping):
        head_outputs = head_outputs_from_flat(head_outputs, tasks)
    if len(head_outputs) != len(tasks):
        raise ValueError(f"head outputs have {len(head_outputs)} tasks, expected {len(tasks)}")
    as_numpy = isinstance(head_outputs[0]["hm"], np.ndarray)
    r = float(post.iou_rectifier)
    rng = post.post_center_range
    per_sample: list[list[tuple[Tensor, Tensor, Tensor]]] | None = None

    for t, (task_out, names) in enumerate(zip(head_outputs, tasks)):
        out = {k: _to_torch(v).float() for k, v in task_out.items()}
        hm = out["hm"]
        bsz, k_t, height, width = hm.shape
        if k_t != len(names):
            raise ValueError(f"task {t} {names}: hm has {k_t} channels, expected {len(names)}")
        if per_sample is None:
            per_sample = [[] for _ in range(bsz)]
        global_labels = torch.tensor([CLASS_NAMES.index(n) for n in names], dtype=torch.long,
                                     device=hm.device)
        k = min(post.nms_pre_max, k_t * height * width)
        hm_top, top = torch.sigmoid(hm).reshape(bsz, -1).topk(k, dim=1)  # (B, k), sorted
        cls = torch.div(top, height * width, rounding_mode="floor")
        cell = top % (height * width)
        reg = gather_cells(head_regression(out), cell)  # (B, k, 10)
        boxes = regression_to_boxes(reg, cell, grid)  # (B, k, 9)
        if "iou" in out:
            iou = ((gather_cells(out["iou"], cell)[..., 0] + 1.0) * 0.5).clamp(0.0, 1.0)
            scores = hm_top.pow(1.0 - r) * iou.pow(r)
        else:
            scores = hm_top
        keep = scores > post.score_threshold
        for axis in range(3):
            keep &= (boxes[..., axis] >= rng[axis]) & (boxes[..., axis] <= rng[axis + 3])
        for b in range(bsz):
            bx, sc, lb = boxes[b][keep[b]], scores[b][keep[b]], global_labels[cls[b][keep[b]]]
            idx = nms_rotated(bx, sc, post.nms_iou_threshold, post.nms_pre_max, post.nms_post_max)
            per_sample[b].append((bx[idx], sc[idx], lb[idx]))

    results = []
    for parts in per_sample or []:
        boxes = torch.cat([p[0] for p in parts]).float()
        scores = torch.cat([p[1] for p in parts]).float()
        labels = torch.cat([p[2] for p in parts]).long()
        if as_numpy:
            results.append(Detections(boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()))
        else:
            results.append(Detections(boxes, scores, labels))
    return results
