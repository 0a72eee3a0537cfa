"""CenterHead outputs -> boxes: the one decoding used by the losses, evaluation, export checks
and the node.

Head outputs (docs/architecture.md, "Head outputs") are a list over :data:`TASKS` of dicts of
maps ``(B, C, H, W)``: ``hm`` (K_t heatmap logits), ``center`` (dx, dy in cells), ``center_z``
[m], ``dim`` (log l, log w, log h), ``rot`` (cos, sin), ``vel`` (vx, vy [m/s]) and ``iou``
(in [-1, 1]). BEV cell (iy, ix) of a ``GridConfig`` covers x in ``x_min + ix * cell_x + [0, cell_x)``.

Decoding: sigmoid heatmap; optionally only its k x k local maxima (``PostConfig.peak_kernel``);
IoU-rectified score ``s = hm^(1 - r) * iou^r`` with ``iou = clamp((pred_iou + 1) / 2, 0, 1)``
and the threshold on ``s``; the ``pre_max`` best candidates of each task (boxes are built for
those only); box
``x = x_min + (ix + dx) * cell_x``, ``y = y_min + (iy + dy) * cell_y``, ``z``, ``(l, w, h) =
exp(dim)``, ``yaw = atan2(sin, cos)``, ``(vx, vy)``; post-centre range; one rotated BEV NMS
call with the task as group (``post_max`` per task); labels mapped to global
class indices.
Accepts torch tensors or numpy arrays (ONNX Runtime / TensorRT outputs); numpy in -> numpy out.
On CPU the candidate search, regression gather and NMS are compiled loops
(:mod:`radardistill_ros.decode_cpu`), on CUDA tensor ops; both give the same detections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from radardistill_ros.box_ops import nms_rotated
from radardistill_ros.config import GridConfig, PostConfig
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from radardistill_ros.decode_cpu import gather_regression, peak_candidates

__all__ = [
    "DECODE_IMPLS",
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
#: ``decode`` implementations.
DECODE_IMPLS: tuple[str, ...] = ("auto", "torch", "compiled")
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


def _window_max(x: Tensor, k: int) -> Tensor:
    """``max_pool2d(x, k, stride=1, padding=k // 2)`` of ``(B, C, H, W)`` as two separable 1-D
    running maxima of shifted views (several times faster than max_pool2d on CPU)."""
    h = k // 2
    height, width = x.shape[-2:]
    p = F.pad(x, (h, h, h, h), value=float("-inf"))
    row = p[..., :, 0:width]
    for d in range(1, k):
        row = torch.maximum(row, p[..., :, d:d + width])
    out = row[..., 0:height, :]
    for d in range(1, k):
        out = torch.maximum(out, row[..., d:d + height, :])
    return out


@torch.no_grad()
def decode(
    head_outputs: Sequence[Mapping[str, Any]] | Sequence[Any],
    grid: GridConfig,
    post: PostConfig,
    tasks: Sequence[Sequence[str]] = TASKS,
    impl: str = "auto",
) -> list[Detections]:
    """Head outputs (list over tasks of dicts, or the flat ONNX list) -> one :class:`Detections`
    per sample, boxes in the grid's (ego) frame.

    For every class map: ``hm = sigmoid(logits)``; with ``post.peak_kernel = k > 1`` only cells
    that are the maximum of their k x k neighbourhood stay candidates (CenterNet's max-pool peak
    extraction: one candidate per heatmap peak instead of every cell of a blob); score ``s =
    hm^(1-r) * iou^r`` (``r = post.iou_rectifier``, ``iou = clamp((pred_iou + 1) / 2, 0, 1)``
    of the class's task; ``s = hm`` if the head has no ``iou``); candidates with ``s >
    post.score_threshold``; boxes by :func:`regression_to_boxes`, centre inside
    ``post.post_center_range`` (boxes are built for the ``post.nms_pre_max`` best-scoring
    candidates of each task only); rotated BEV NMS with the task as group (a task's boxes
    suppress only each other): IoU >
    ``post.nms_iou_threshold`` suppressed, ``post.nms_post_max`` kept per task.
    The threshold applies to the rectified score (OpenPCDet thresholds the raw heatmap).
    Numpy inputs give numpy outputs; tensors give tensors on their device.

    ``impl``: ``"torch"`` (tensor ops throughout), ``"compiled"`` (CPU only: candidates and NMS
    from the compiled loops of :mod:`radardistill_ros.decode_cpu`, the same results, ~5 -> ~1 ms
    per ``lite`` frame on one core), ``"auto"``: compiled on CPU, torch on CUDA.
    """
    if impl not in DECODE_IMPLS:
        raise ValueError(f"impl must be one of {DECODE_IMPLS}, got {impl!r}")
    if len(head_outputs) and not isinstance(head_outputs[0], Mapping):
        head_outputs = head_outputs_from_flat(head_outputs, tasks)
    if len(head_outputs) != len(tasks):
        raise ValueError(f"head outputs have {len(head_outputs)} tasks, expected {len(tasks)}")
    as_numpy = isinstance(head_outputs[0]["hm"], np.ndarray)
    outs = [{k: _to_torch(v).float() for k, v in task_out.items()} for task_out in head_outputs]
    for t, (out, names) in enumerate(zip(outs, tasks)):
        if out["hm"].shape[1] != len(names):
            raise ValueError(f"task {t} {names}: hm has {out['hm'].shape[1]} channels, expected {len(names)}")
    device = outs[0]["hm"].device
    bsz = outs[0]["hm"].shape[0]
    class_task = torch.tensor([t for t, names in enumerate(tasks) for _ in names], device=device)
    class_label = torch.tensor([CLASS_NAMES.index(n) for names in tasks for n in names], device=device)

    if bsz == 0:
        return []
    if impl == "compiled" and device.type != "cpu":
        raise ValueError(f"impl='compiled' runs on CPU, the head outputs are on {device}")
    compiled = impl == "compiled" or (impl == "auto" and device.type == "cpu")
    logits = torch.cat([o["hm"] for o in outs], dim=1)  # (B, C, H, W), C = all classes
    hw = logits.shape[-2] * logits.shape[-1]
    has_iou = all("iou" in o for o in outs)
    if compiled:  # the same candidates from one compiled pass (radardistill_ros.decode_cpu)
        iou_maps = torch.cat([o["iou"] for o in outs], dim=1).numpy() if has_iou else None
        sample, cls, cell, scores = (torch.from_numpy(x) for x in peak_candidates(
            logits.numpy(), iou_maps, class_task.numpy(), [len(n) for n in tasks], post.iou_rectifier,
            post.score_threshold, post.peak_kernel, post.nms_pre_max))
    else:
        score = torch.sigmoid(logits)
        if has_iou:
            r = float(post.iou_rectifier)
            iou = torch.cat([o["iou"] for o in outs], dim=1)[:, class_task]  # each class: its task's
            score = score.pow(1.0 - r) * ((iou + 1.0) * 0.5).clamp(0.0, 1.0).pow(r)
        candidate = score > post.score_threshold
        if post.peak_kernel > 1:
            candidate &= logits == _window_max(logits, post.peak_kernel)
        masked = torch.where(candidate, score, torch.full_like(score, -1.0)).reshape(bsz, score.shape[1], -1)
        parts, c0 = [], 0
        for names in tasks:  # the nms_pre_max best candidates of each sample and task (sorted)
            flat = masked[:, c0:c0 + len(names)].reshape(bsz, -1)
            k = min(post.nms_pre_max, int(candidate[:, c0:c0 + len(names)].reshape(bsz, -1).sum(dim=1).max()))
            val, idx = flat.topk(k, dim=1)
            b, j = torch.nonzero(val > -1.0, as_tuple=True)
            i = idx[b, j]
            parts.append((b, c0 + torch.div(i, hw, rounding_mode="floor"), i % hw, val[b, j]))
            c0 += len(names)
        sample, cls, cell, scores = (torch.cat(x) for x in zip(*parts))
    task = class_task[cls]
    if compiled:  # each candidate reads its task's maps at its cell (no (T * B * H * W, 10) table)
        maps = [o[k].numpy() for o in outs for k in REG_KEYS]
        reg = gather_regression(maps, len(REG_KEYS), task.numpy(), sample.numpy(), cell.numpy())
        reg = torch.from_numpy(reg)
    else:  # every task's regression maps as one row table (T * B * H * W, 10): one gather for all
        table = torch.cat([head_regression(o) for o in outs], dim=1).reshape(bsz, len(outs), 10, hw)
        table = table.permute(1, 0, 3, 2).reshape(-1, 10)
        reg = table.index_select(0, (task * bsz + sample) * hw + cell)
    boxes = regression_to_boxes(reg, cell, grid)  # (n, 9)
    rng = post.post_center_range
    inside = ((boxes[:, :3] >= boxes.new_tensor(rng[:3]))
              & (boxes[:, :3] <= boxes.new_tensor(rng[3:]))).all(dim=1)
    sample, boxes, scores, labels, task = (x[inside] for x in (sample, boxes, scores, class_label[cls], task))

    results = []
    for b in range(bsz):
        sel = torch.nonzero(sample == b)[:, 0] if bsz > 1 else torch.arange(sample.numel(), device=device)
        idx = sel[nms_rotated(boxes[sel], scores[sel], post.nms_iou_threshold, post.nms_pre_max,
                              post.nms_post_max, groups=task[sel], impl="compiled" if compiled else "torch")]
        idx = idx[torch.argsort(task[idx], stable=True)]  # by task, then score
        det = Detections(boxes[idx].float(), scores[idx].float(), labels[idx].long())
        results.append(Detections(*(x.cpu().numpy() for x in det)) if as_numpy else det)
    return results
