"""Compiled (numba) CPU kernels for the two per-op-bound steps of :func:`~radardistill_ros.decode.decode`.

On one CPU core the torch decode of one ``lite`` frame (~100 candidates, ~80 detections) took
~5 ms, almost all of it the fixed cost of ~250 small tensor ops: the heatmap peaks and score
ranking (~2.5 ms) and the rotated NMS (~2.5 ms). These loops compute the same results in one
pass each, release the GIL while they run (the node's executor thread keeps serving), and are
used for CPU inputs; CUDA tensors keep the torch path (``decode(..., impl=...)`` and
``box_ops.nms_rotated(..., impl=...)`` select either; both are checked against each other in
``test/test_decode.py`` and ``test/test_box_ops.py``).

* :func:`peak_candidates`: score ``s = hm^(1-r) * iou^r`` with ``hm = sigmoid(logit)`` and
  ``iou = clamp((pred_iou + 1) / 2, 0, 1)`` of the class's task, threshold, ``k x k`` peak test
  (a cell whose logit equals its window's maximum, out-of-map cells ignored), then per sample
  and task the ``pre_max`` best by descending score (ties: class-major cell order).
* :func:`nms_rotated_cpu`: greedy rotated-BEV NMS (visit by descending score, stable; drop a
  box whose IoU with a kept box of its group exceeds the threshold); ``pre_max`` / ``post_max``
  per group, as the torch version.
* :func:`iou_bev_pairs`: the rotated BEV IoU both use: box ``b`` clipped by ``a``'s four edge
  lines (Sutherland-Hodgman, in ``a``'s frame where they are axis-aligned, in float64), area by
  the shoelace formula, ``IoU = inter / max(union, 1e-9)`` clamped to [0, 1].

Boxes are ``(N, 7+)``: centre x, y, z [m], l, w, h [m], yaw [rad] (``BOX_FIELDS``).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["gather_regression", "iou_bev_pairs", "nms_rotated_cpu", "peak_candidates"]

# unit-box corner offsets, counter-clockwise (as box_ops._CORNER_L / _CORNER_W)
_CL = np.array([0.5, 0.5, -0.5, -0.5])
_CW = np.array([-0.5, 0.5, 0.5, -0.5])


@numba.njit(cache=True, nogil=True)
def _clip(px: np.ndarray, py: np.ndarray, n: int, axis: int, sign: float, lim: float,
          qx: np.ndarray, qy: np.ndarray) -> int:
    """Sutherland-Hodgman: the part of polygon ``p`` (n vertices) with ``sign * coord <= lim``
    (coord x for axis 0, y for 1) into ``q``; returns its vertex count."""
    m = 0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        ci = sign * (px[i] if axis == 0 else py[i])
        cj = sign * (px[j] if axis == 0 else py[j])
        if ci <= lim:
            qx[m] = px[i]
            qy[m] = py[i]
            m += 1
        if (ci <= lim) != (cj <= lim):
            t = (lim - ci) / (cj - ci)
            qx[m] = px[i] + t * (px[j] - px[i])
            qy[m] = py[i] + t * (py[j] - py[i])
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def _iou_bev(a: np.ndarray, b: np.ndarray, bufx: np.ndarray, bufy: np.ndarray) -> float:
    """Rotated BEV IoU of two boxes (rows of at least 7 values); ``buf*`` (2, 16) scratch."""
    ca, sa = math.cos(a[6]), math.sin(a[6])
    dx, dy = b[0] - a[0], b[1] - a[1]
    bx, by = dx * ca + dy * sa, -dx * sa + dy * ca          # centre of b in a's frame
    rel = b[6] - a[6]
    cr, sr = math.cos(rel), math.sin(rel)
    for k in range(4):
        lx, ly = _CL[k] * b[3], _CW[k] * b[4]
        bufx[0, k] = bx + lx * cr - ly * sr
        bufy[0, k] = by + lx * sr + ly * cr
    hl, hw = 0.5 * a[3], 0.5 * a[4]
    n = 4
    src = 0
    for axis, sign, lim in ((0, 1.0, hl), (0, -1.0, hl), (1, 1.0, hw), (1, -1.0, hw)):
        n = _clip(bufx[src], bufy[src], n, axis, sign, lim, bufx[1 - src], bufy[1 - src])
        src = 1 - src
        if n < 3:
            return 0.0
    area = 0.0
    for i in range(n):
        j = i + 1 if i + 1 < n else 0
        area += bufx[src, i] * bufy[src, j] - bufx[src, j] * bufy[src, i]
    inter = 0.5 * abs(area)
    union = a[3] * a[4] + b[3] * b[4] - inter
    iou = inter / max(union, 1e-9)
    return min(max(iou, 0.0), 1.0)


@numba.njit(cache=True, nogil=True)
def _iou_bev_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.empty(a.shape[0], np.float64)
    bufx = np.empty((2, 16))
    bufy = np.empty((2, 16))
    for i in range(a.shape[0]):
        out[i] = _iou_bev(a[i], b[i], bufx, bufy)
    return out


def iou_bev_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotated BEV IoU of ``a[i]`` and ``b[i]`` (``(P, 7+)`` each) -> ``(P,)`` float64 in [0, 1]."""
    a = np.ascontiguousarray(a, np.float64)
    b = np.ascontiguousarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] < 7:
        raise ValueError(f"expected two (P, 7+) box arrays of one shape, got {a.shape} and {b.shape}")
    return _iou_bev_pairs(a, b)


@numba.njit(cache=True, nogil=True)
def _nms(boxes: np.ndarray, scores: np.ndarray, thr: float, pre_max: int, post_max: int,
         group: np.ndarray, num_groups: int) -> np.ndarray:
    n = boxes.shape[0]
    order = np.argsort(-scores, kind="mergesort")            # descending, stable
    radius = 0.5 * np.sqrt(boxes[:, 3] * boxes[:, 3] + boxes[:, 4] * boxes[:, 4])
    taken = np.zeros(num_groups, np.int64)
    kept = np.empty(n, np.int64)
    nk = 0
    bufx = np.empty((2, 16))
    bufy = np.empty((2, 16))
    for idx in order:
        g = group[idx]
        if taken[g] >= pre_max:
            continue
        taken[g] += 1
        suppressed = False
        for q in range(nk):
            k = kept[q]
            if group[k] != g:
                continue
            dx = boxes[k, 0] - boxes[idx, 0]
            dy = boxes[k, 1] - boxes[idx, 1]
            reach = radius[k] + radius[idx]
            if dx * dx + dy * dy > reach * reach:          # circumcircles apart: IoU 0
                continue
            if _iou_bev(boxes[k], boxes[idx], bufx, bufy) > thr:   # in the higher-scored box's frame
                suppressed = True
                break
        if not suppressed:
            kept[nk] = idx
            nk += 1
    out_count = np.zeros(num_groups, np.int64)
    out = np.empty(nk, np.int64)
    m = 0
    for q in range(nk):
        g = group[kept[q]]
        if out_count[g] < post_max:
            out_count[g] += 1
            out[m] = kept[q]
            m += 1
    return out[:m]


def nms_rotated_cpu(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                    pre_max: int | None = None, post_max: int | None = None,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """Greedy rotated BEV NMS -> kept indices into ``boxes`` (int64), by descending score.

    ``boxes (N, 7+)``, ``scores (N,)``; ``groups (N,)`` integers: boxes of different groups
    never suppress each other and ``pre_max`` (candidates) / ``post_max`` (kept) count per group.
    """
    boxes = np.ascontiguousarray(boxes, np.float64)
    scores = np.ascontiguousarray(scores, np.float64)
    n = boxes.shape[0]
    if boxes.ndim != 2 or (n and boxes.shape[1] < 7) or scores.shape != (n,):
        raise ValueError(f"expected boxes (N, 7+) and scores (N,), got {boxes.shape} and {scores.shape}")
    if n == 0:
        return np.zeros(0, np.int64)
    if groups is None:
        inverse, num_groups = np.zeros(n, np.int64), 1
    else:
        uniq, inverse = np.unique(np.asarray(groups).reshape(-1), return_inverse=True)
        inverse, num_groups = inverse.astype(np.int64).reshape(-1), len(uniq)
    return _nms(boxes, scores, float(iou_threshold), n if pre_max is None else int(pre_max),
                n if post_max is None else int(post_max), inverse, num_groups)


@numba.njit(cache=True, nogil=True)
def _peaks(logits: np.ndarray, iou: np.ndarray, has_iou: bool, class_task: np.ndarray,
           task_start: np.ndarray, r: float, thr: float, k: int, pre_max: int, logit_floor: float):
    bsz, nc, height, width = logits.shape
    hw = height * width
    half = k // 2
    one = np.float32(1.0)
    thr32 = np.float32(thr)                                  # torch compares in the maps' float32
    num_tasks = task_start.shape[0] - 1
    cap = bsz * nc * hw
    out_b = np.empty(cap, np.int64)
    out_c = np.empty(cap, np.int64)
    out_cell = np.empty(cap, np.int64)
    out_s = np.empty(cap, np.float32)
    found = np.empty(nc * hw, np.int64)                      # class-major flat index within a task
    found_s = np.empty(nc * hw, np.float32)
    m = 0
    for t in range(num_tasks):
        for b in range(bsz):
            n = 0
            for c in range(task_start[t], task_start[t + 1]):
                for y in range(height):
                    for x in range(width):
                        v = logits[b, c, y, x]
                        if v < logit_floor:                  # score provably <= threshold
                            continue
                        if k > 1:                            # peak test first: cheaper than the score
                            peak = True
                            for yy in range(max(0, y - half), min(height, y + half + 1)):
                                for xx in range(max(0, x - half), min(width, x + half + 1)):
                                    w = logits[b, c, yy, xx]
                                    if w > v or not w == w:  # NaN in the window: no peak (as torch)
                                        peak = False
                            if not peak:
                                continue
                        s = one / (one + np.exp(-v))
                        if has_iou:
                            q = (iou[b, class_task[c], y, x] + one) * np.float32(0.5)
                            q = min(max(q, np.float32(0.0)), one)
                            s = np.float32(s ** (1.0 - r) * q ** r)
                        if s > thr32:
                            found[n] = (c - task_start[t]) * hw + y * width + x
                            found_s[n] = s
                            n += 1
            order = np.argsort(-found_s[:n], kind="mergesort")  # descending; ties: cell order
            for q in range(min(n, pre_max)):
                i = found[order[q]]
                out_b[m] = b
                out_c[m] = task_start[t] + i // hw
                out_cell[m] = i % hw
                out_s[m] = found_s[order[q]]
                m += 1
    return out_b[:m], out_c[:m], out_cell[:m], out_s[:m]


def peak_candidates(logits: np.ndarray, iou: np.ndarray | None, class_task: np.ndarray,
                    task_sizes: list[int], iou_rectifier: float, score_threshold: float,
                    peak_kernel: int, pre_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Candidates of ``logits (B, C, H, W)`` (all classes, tasks in order, ``task_sizes`` classes
    each) with their task IoU maps ``iou (B, T, H, W)`` (None: ``s = hm``) -> ``(sample, class,
    flat cell iy*W+ix, score)``, ordered by task, sample, descending score; at most ``pre_max``
    per sample and task."""
    logits = np.ascontiguousarray(logits, np.float32)
    if logits.ndim != 4 or logits.shape[1] != sum(task_sizes):
        raise ValueError(f"logits {logits.shape}: expected (B, {sum(task_sizes)}, H, W)")
    has_iou = iou is not None
    iou = np.ascontiguousarray(iou, np.float32) if has_iou else np.zeros((1, 1, 1, 1), np.float32)
    task_start = np.concatenate(([0], np.cumsum(task_sizes))).astype(np.int64)
    return _peaks(logits, iou, has_iou, np.ascontiguousarray(class_task, np.int64), task_start,
                  float(iou_rectifier), float(score_threshold), int(peak_kernel), int(pre_max),
                  _logit_floor(score_threshold, iou_rectifier if has_iou else 0.0))


def _logit_floor(threshold: float, r: float) -> float:
    """A logit below which ``s = hm^(1-r) * iou^r`` cannot exceed ``threshold`` (``iou <= 1``,
    so ``s <= hm^(1-r)``: ``hm > threshold^(1/(1-r))`` is necessary), lowered by a margin far
    above float32 rounding; -inf where no such bound exists. Lets the kernel skip the peak test
    and the score of the (many) background cells."""
    if r >= 1.0 or threshold <= 0.0:
        return -math.inf
    hm = threshold ** (1.0 / (1.0 - r))
    if hm <= 1e-30:
        return -math.inf
    if hm >= 1.0:
        return math.inf
    return math.log(hm / (1.0 - hm)) - 1e-3


@numba.njit(cache=True, nogil=True)
def _gather(maps, per_task: int, task: np.ndarray, sample: np.ndarray, cell: np.ndarray,
            width: int, channels: int) -> np.ndarray:
    out = np.empty((task.shape[0], channels), np.float32)
    for i in range(task.shape[0]):
        y, x = cell[i] // width, cell[i] % width
        col = 0
        for k in range(per_task):
            m = maps[task[i] * per_task + k]
            for c in range(m.shape[1]):
                out[i, col] = m[sample[i], c, y, x]
                col += 1
    return out


def gather_regression(maps: list[np.ndarray], per_task: int, task: np.ndarray, sample: np.ndarray,
                      cell: np.ndarray) -> np.ndarray:
    """Values of head maps at candidate cells: ``maps`` lists ``per_task`` float32 maps
    ``(B, C_k, H, W)`` for each task in order (the same ``C_k`` in every task); candidate ``i``
    reads row ``sample[i]``, flat cell ``cell[i]`` (``iy * W + ix``) of its task's maps ->
    ``(n, sum C_k)`` float32, channels in map order."""
    maps = tuple(np.ascontiguousarray(m, np.float32) for m in maps)
    if len(maps) == 0 or len(maps) % per_task:
        raise ValueError(f"{len(maps)} maps is not a whole number of tasks of {per_task} maps")
    channels = sum(m.shape[1] for m in maps[:per_task])
    task, sample, cell = (np.ascontiguousarray(x, np.int64) for x in (task, sample, cell))
    return _gather(maps, per_task, task, sample, cell, maps[0].shape[-1], channels)


def warm_up(num_regression_maps: int) -> None:
    """Compile (or load from numba's cache) every kernel with the argument types decoding uses,
    so that the first real frame does not pay for it: a frame without candidates never reaches
    the NMS. ``num_regression_maps``: tasks x regression keys of the head (the gather's tuple)."""
    logits = np.full((1, 2, 3, 3), -9.0, np.float32)
    logits[0, :, 1, 1] = 3.0
    iou = np.zeros((1, 2, 3, 3), np.float32)
    cand = peak_candidates(logits, iou, np.array([0, 1]), [1, 1], 0.5, 0.1, 3, 10)
    gather_regression([np.zeros((1, 1, 3, 3), np.float32)] * num_regression_maps, 1,
                      np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64))
    boxes = np.array([[0, 0, 0, 2, 2, 2, 0], [0.5, 0, 0, 2, 2, 2, 0.1]], np.float64)
    nms_rotated_cpu(boxes, np.array([0.9, 0.8]), 0.2, 10, 10, np.array([0, 0]))
    if len(cand[0]) != 2:
        raise RuntimeError(f"decode kernels self-check failed: {len(cand[0])} candidates, expected 2")
