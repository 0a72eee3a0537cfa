"""Rotated box geometry in torch: BEV / 3D IoU, 3D DIoU and rotated NMS (CPU and CUDA; the NMS
uses the compiled loop of :mod:`radardistill_ros.decode_cpu` for CPU tensors).

Boxes follow :data:`radardistill_ros.conventions.BOX_FIELDS`: ``(N, 7+)`` with centre x, y, z [m],
size l (along the heading), w, h [m], yaw [rad] counter-clockwise from +x; columns past 7
(velocity) are ignored.

The BEV intersection of two rotated rectangles is the convex polygon whose vertices are among
the corners of either box lying inside the other and the 16 edge-edge crossings. All 24
candidates are computed for every pair at once (in the first box's frame, where its edges are
axis-aligned lines); the valid ones are ordered by angle around their centroid and the area
follows from the shoelace formula. Everything is tensor ops over the pairs (no per-box Python
loop), differentiable with respect to the box parameters almost everywhere (the DIoU loss
back-propagates through it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from radardistill_ros.decode_cpu import nms_rotated_cpu

__all__ = [
    "bev_intersection_aligned",
    "box_corners_bev",
    "diou3d_aligned",
    "group_rank",
    "iou3d",
    "iou3d_aligned",
    "iou_bev",
    "iou_bev_aligned",
    "nms_rotated",
]

#: ``nms_rotated`` implementations.
NMS_IMPLS = ("auto", "torch", "compiled")
#: Tolerance (m) of the inside / on-edge tests; keeps touching and identical boxes exact.
_EPS_DIST = 1e-5
#: Pairs evaluated per chunk in the pairwise functions: cache-sized on CPU, launch-amortising on GPU.
_CHUNK_CPU = 1 << 12
_CHUNK_GPU = 1 << 18

# Unit-box corner offsets in counter-clockwise order (front-right, front-left, rear-left, rear-right).
_CORNER_L = (0.5, 0.5, -0.5, -0.5)
_CORNER_W = (-0.5, 0.5, 0.5, -0.5)


def _as_float(boxes: Tensor) -> Tensor:
    """Boxes in a float dtype with at least float32 precision."""
    if not boxes.is_floating_point() or boxes.dtype in (torch.float16, torch.bfloat16):
        return boxes.float()
    return boxes


def box_corners_bev(boxes: Tensor) -> Tensor:
    """BEV corners ``(..., 4, 2)`` of boxes ``(..., 7+)``, counter-clockwise, in metres."""
    x, y, length, width, yaw = boxes[..., 0], boxes[..., 1], boxes[..., 3], boxes[..., 4], boxes[..., 6]
    cl = boxes.new_tensor(_CORNER_L)
    cw = boxes.new_tensor(_CORNER_W)
    dx = length[..., None] * cl
    dy = width[..., None] * cw
    c, s = torch.cos(yaw)[..., None], torch.sin(yaw)[..., None]
    return torch.stack((x[..., None] + dx * c - dy * s, y[..., None] + dx * s + dy * c), dim=-1)


def bev_intersection_aligned(a: Tensor, b: Tensor) -> Tensor:
    """Area [m^2] of the BEV intersection of boxes ``a[i]`` and ``b[i]``, both ``(P, 7+)`` -> ``(P,)``.

    Computed in the frame of ``a[i]`` (centre at the origin, axes along its length and width), so
    float32 stays exact far from the ego origin. Candidate construction is laid out
    ``(candidates, P)`` (elementwise ops run over the contiguous pair axis), the per-pair angular
    sort and the shoelace sum ``(P, candidates)``.
    """
    a, b = _as_float(a), _as_float(b)
    if a.shape[0] == 0:
        return a.new_zeros(0)
    hla, hwa, hlb, hwb = 0.5 * a[:, 3], 0.5 * a[:, 4], 0.5 * b[:, 3], 0.5 * b[:, 4]  # (P,)
    ca, sa = torch.cos(a[:, 6]), torch.sin(a[:, 6])
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    bx, by = dx * ca + dy * sa, -dx * sa + dy * ca  # centre of b in a's frame
    rel = b[:, 6] - a[:, 6]
    cr, sr = torch.cos(rel), torch.sin(rel)
    ul = a.new_tensor(_CORNER_L)[:, None]  # (4, 1)
    uw = a.new_tensor(_CORNER_W)[:, None]
    # corners (4, P) of a and b in a's frame
    px, py = ul * a[:, 3], uw * a[:, 4]
    lx, ly = ul * b[:, 3], uw * b[:, 4]
    qx, qy = bx + lx * cr - ly * sr, by + lx * sr + ly * cr
    # corners of a inside b (tested in b's frame), corners of b inside a
    rx, ry = px - bx, py - by
    a_in_b = ((rx * cr + ry * sr).abs() <= hlb + _EPS_DIST) & ((ry * cr - rx * sr).abs() <= hwb + _EPS_DIST)
    b_in_a = (qx.abs() <= hla + _EPS_DIST) & (qy.abs() <= hwa + _EPS_DIST)
    # crossings of b's 4 edges q_k -> q_k+1 with a's edge lines x = +-hla (|y| <= hwa), y = +-hwa (|x| <= hla)
    ex, ey = qx.roll(-1, dims=0) - qx, qy.roll(-1, dims=0) - qy  # (4, P)
    elen = torch.hypot(ex, ey).clamp_min(1e-12)
    tol = _EPS_DIST / elen
    xs, ys, oks = [], [], []
    for lim_u, lim_v, qu, qv, eu, ev, swap in ((hla, hwa, qx, qy, ex, ey, False),
                                               (hwa, hla, qy, qx, ey, ex, True)):
        lines = torch.stack((lim_u, -lim_u))[:, None]  # (2, 1, P)
        ok = eu.abs() > 1e-9 * elen  # (4, P) not parallel to the line
        t = (lines - qu) / torch.where(ok, eu, torch.ones_like(eu))  # (2, 4, P)
        v = qv + t * ev
        ok = ok & (t >= -tol) & (t <= 1 + tol) & (v.abs() <= lim_v + _EPS_DIST)
        u = lines.expand_as(t)
        xs.append((v if swap else u).reshape(8, -1))
        ys.append((u if swap else v).reshape(8, -1))
        oks.append(ok.reshape(8, -1))
    # candidates (P, 24), contiguous along the vertices for the per-pair sort
    x = torch.cat([px, qx, *xs]).t().contiguous()
    y = torch.cat([py, qy, *ys]).t().contiguous()
    valid = torch.cat([a_in_b, b_in_a, *oks]).t().contiguous()
    vf = valid.to(x.dtype)
    count = vf.sum(dim=1, keepdim=True)
    x = x - (x * vf).sum(dim=1, keepdim=True) / count.clamp_min(1)  # relative to the vertex centroid
    y = y - (y * vf).sum(dim=1, keepdim=True) / count.clamp_min(1)
    with torch.no_grad():
        ang = torch.where(valid, torch.atan2(y, x), torch.full_like(x, 10.0))  # invalid last
        order = ang.argsort(dim=1)
    x, y, valid = x.gather(1, order), y.gather(1, order), valid.gather(1, order)
    # invalid slots repeat the first vertex: they add zero-area terms to the shoelace sum
    x = torch.where(valid, x, x[:, :1])
    y = torch.where(valid, y, y[:, :1])
    area = 0.5 * (x * y.roll(-1, dims=1) - x.roll(-1, dims=1) * y).sum(dim=1)
    return torch.where(count[:, 0] >= 3, area.clamp_min(0), torch.zeros_like(area))


def _z_overlap(a: Tensor, b: Tensor) -> Tensor:
    """Overlap [m] of the vertical extents z +- h/2 of aligned boxes."""
    top = torch.minimum(a[:, 2] + 0.5 * a[:, 5], b[:, 2] + 0.5 * b[:, 5])
    bottom = torch.maximum(a[:, 2] - 0.5 * a[:, 5], b[:, 2] - 0.5 * b[:, 5])
    return (top - bottom).clamp_min(0)


def iou_bev_aligned(a: Tensor, b: Tensor) -> Tensor:
    """Rotated BEV IoU of ``a[i]`` and ``b[i]`` (``(P, 7+)`` each) -> ``(P,)`` in [0, 1]."""
    a, b = _as_float(a), _as_float(b)
    inter = bev_intersection_aligned(a, b)
    union = a[:, 3] * a[:, 4] + b[:, 3] * b[:, 4] - inter
    return (inter / union.clamp_min(1e-9)).clamp(0.0, 1.0)


def iou3d_aligned(a: Tensor, b: Tensor) -> Tensor:
    """Rotated 3D IoU = BEV intersection * z overlap / union volume, aligned pairs -> ``(P,)``."""
    a, b = _as_float(a), _as_float(b)
    inter = bev_intersection_aligned(a, b) * _z_overlap(a, b)
    union = a[:, 3] * a[:, 4] * a[:, 5] + b[:, 3] * b[:, 4] * b[:, 5] - inter
    return (inter / union.clamp_min(1e-9)).clamp(0.0, 1.0)


def diou3d_aligned(a: Tensor, b: Tensor) -> Tensor:
    """3D DIoU of aligned pairs: ``IoU3D - d^2 / c^2`` in [-1, 1], ``(P,)``.

    ``d`` is the distance between the 3D box centres; ``c`` the diagonal of the smallest
    axis-aligned (ego x, y, z) box enclosing both boxes' rotated BEV corners and z extents.
    OpenPCDet's ``bbox3d_overlaps_diou`` (used by the RadarDistill code) ignores yaw both in the
    IoU and in the enclosing box; here the IoU is the true rotated one and the enclosing box is
    taken on the rotated corners, which equals OpenPCDet's definition for yaw = 0.
    """
    a, b = _as_float(a), _as_float(b)
    iou = iou3d_aligned(a, b)
    corners = torch.cat((box_corners_bev(a), box_corners_bev(b)), dim=1)  # (P, 8, 2)
    ext_xy = corners.amax(dim=1) - corners.amin(dim=1)
    ext_z = (torch.maximum(a[:, 2] + 0.5 * a[:, 5], b[:, 2] + 0.5 * b[:, 5])
             - torch.minimum(a[:, 2] - 0.5 * a[:, 5], b[:, 2] - 0.5 * b[:, 5]))
    c2 = (ext_xy ** 2).sum(dim=1) + ext_z ** 2
    d2 = ((a[:, 0:3] - b[:, 0:3]) ** 2).sum(dim=1)
    return (iou - d2 / c2.clamp_min(1e-9)).clamp(-1.0, 1.0)


def _ranges_to_pairs(start: Tensor, end: Tensor, perm: Tensor) -> tuple[Tensor, Tensor]:
    """Pairs (i, perm[k]) for every i and k in [start[i], end[i])."""
    counts = (end - start).clamp_min(0)
    ii = torch.repeat_interleave(torch.arange(start.numel(), device=start.device), counts)
    first = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    k = start[ii] + torch.arange(ii.numel(), device=start.device) - first
    return ii, perm[k]


#: Below this many box pairs, candidate pairs come from the dense (N, M) bounds test (a few
#: tensor ops); above it, from the sort-and-sweep (memory O(N + M + pairs)).
_DENSE_PAIRS = 1 << 18


def _candidate_pairs(
    a: Tensor, b: Tensor, upper: bool = False, min_iou: float | None = None
) -> tuple[Tensor, Tensor]:
    """Index pairs (i, j) whose axis-aligned BEV bounds overlap (all other pairs have IoU 0);
    ``upper``: only i < j (``a`` and ``b`` the same boxes); ``min_iou``: also drop pairs whose
    BEV IoU provably cannot exceed it (bound: intersection <= min(bounds overlap, areas)).

    Small inputs (N * M <= ``_DENSE_PAIRS``): the dense (N, M) bounds test. Larger ones: sort
    and sweep along x, O((N + M) log(N + M) + pairs): the x intervals of a[i] and b[j] overlap
    iff lo_b[j] in [lo_a[i], hi_a[i]] or lo_a[i] in (lo_b[j], hi_b[j]] (disjoint cases); each
    case is a contiguous range of the sorted lower bounds (searchsorted); y is then checked on
    the candidate pairs. Both give the same set of pairs.
    """
    with torch.no_grad():
        ca = box_corners_bev(a)  # (N, 4, 2)
        cb = ca if b is a else box_corners_bev(b)  # (M, 4, 2)
        lo_a, hi_a = ca.amin(dim=1) - _EPS_DIST, ca.amax(dim=1) + _EPS_DIST
        lo_b, hi_b = cb.amin(dim=1), cb.amax(dim=1)
        if a.shape[0] * b.shape[0] <= _DENSE_PAIRS:
            over = ((lo_a[:, None, :] <= hi_b[None, :, :])
                    & (lo_b[None, :, :] <= hi_a[:, None, :])).all(dim=2)
            if upper:
                over = over.triu(diagonal=1)
            ii, jj = over.nonzero(as_tuple=True)
        else:
            lbx, pb = lo_b[:, 0].contiguous().sort()
            lax, pa = lo_a[:, 0].contiguous().sort()
            i1, j1 = _ranges_to_pairs(torch.searchsorted(lbx, lo_a[:, 0].contiguous(), right=False),
                                      torch.searchsorted(lbx, hi_a[:, 0].contiguous(), right=True), pb)
            j2, i2 = _ranges_to_pairs(torch.searchsorted(lax, lo_b[:, 0].contiguous(), right=True),
                                      torch.searchsorted(lax, hi_b[:, 0].contiguous(), right=True), pa)
            ii, jj = torch.cat((i1, i2)), torch.cat((j1, j2))
            keep = (lo_a[ii, 1] <= hi_b[jj, 1]) & (lo_b[jj, 1] <= hi_a[ii, 1])
            if upper:
                keep &= ii < jj
            ii, jj = ii[keep], jj[keep]
        if min_iou is not None:
            ext = (torch.minimum(hi_a[ii], hi_b[jj]) - torch.maximum(lo_a[ii], lo_b[jj])).clamp_min(0)
            area_a, area_b = a[ii, 3] * a[ii, 4], b[jj, 3] * b[jj, 4]
            inter = torch.minimum(ext[:, 0] * ext[:, 1], torch.minimum(area_a, area_b))
            keep = inter > min_iou * (area_a + area_b - inter)
            ii, jj = ii[keep], jj[keep]
    return ii, jj


def _pair_values(a: Tensor, b: Tensor, ii: Tensor, jj: Tensor, aligned_fn) -> Tensor:
    """``aligned_fn(a[ii], b[jj])`` evaluated in chunks (bounded memory)."""
    step = _CHUNK_CPU if a.device.type == "cpu" else _CHUNK_GPU
    parts = [aligned_fn(a[ii[s:s + step]], b[jj[s:s + step]]) for s in range(0, ii.numel(), step)]
    return torch.cat(parts) if parts else a.new_zeros(0)


def _pairwise(a: Tensor, b: Tensor, aligned_fn) -> Tensor:
    """Dense ``(N, M)`` matrix of ``aligned_fn``, evaluated only where the boxes can intersect."""
    a, b = _as_float(a), _as_float(b)
    out = a.new_zeros((a.shape[0], b.shape[0]))
    if a.shape[0] == 0 or b.shape[0] == 0:
        return out
    ii, jj = _candidate_pairs(a, b)
    return out.index_put((ii, jj), _pair_values(a, b, ii, jj, aligned_fn).to(out.dtype))


def iou_bev(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise rotated BEV IoU of ``(N, 7+)`` and ``(M, 7+)`` boxes -> ``(N, M)``."""
    return _pairwise(a, b, iou_bev_aligned)


def iou3d(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise rotated 3D IoU of ``(N, 7+)`` and ``(M, 7+)`` boxes -> ``(N, M)``."""
    return _pairwise(a, b, iou3d_aligned)


def group_rank(groups: Tensor) -> Tensor:
    """Place of each entry among the earlier entries of its group: ``[0, 0, 1, 2, 1]`` for
    groups ``[3, 5, 3, 3, 5]``."""
    if groups.numel() == 0:
        return groups.new_zeros(0)
    perm = torch.argsort(groups, stable=True)  # each group's entries together, in their order
    ordered = groups[perm]
    rank = torch.empty_like(perm)
    rank[perm] = torch.arange(perm.numel(), device=groups.device) - torch.searchsorted(ordered, ordered)
    return rank


def nms_rotated(
    boxes: Tensor,
    scores: Tensor,
    iou_threshold: float,
    pre_max: int | None = None,
    post_max: int | None = None,
    groups: Tensor | None = None,
    impl: str = "auto",
) -> Tensor:
    """Greedy rotated NMS on BEV IoU; returns kept indices into ``boxes`` by descending score.

    Exactly the textbook greedy result (visit boxes by score, drop a box whose IoU with an already
    kept box of the same group exceeds ``iou_threshold``), computed without a per-box loop:

    1. sort by score, keep the ``pre_max`` best as candidates;
    2. BEV IoU once, for the pairs i < j (same group) whose axis-aligned bounds overlap enough to
       possibly exceed the threshold; keep the list of pairs (i, j) with IoU > threshold ("i
       suppresses j if i is kept");
    3. fixed-point iteration ``keep[j] = not any(keep[i] for (i, j) in pairs)`` from all-True.
       Entry j depends only on entries i < j, so after t sweeps the first t entries are final and
       the unique fixed point is the greedy answer; each sweep is O(#pairs) tensor ops and the
       number of sweeps is the depth of the longest suppression chain (a few, in practice);
    4. the first ``post_max`` kept candidates.

    ``groups (N,)`` (integers, e.g. the detection head's task): boxes of different groups never
    suppress each other and ``pre_max`` / ``post_max`` count per group, so one call does the
    NMS of every group (as ``batched_nms``).

    ``impl``: ``"torch"`` (the steps above), ``"compiled"`` (CPU only: the same greedy result
    from :func:`radardistill_ros.decode_cpu.nms_rotated_cpu`, one compiled loop, ~50x faster on
    a frame's ~100 boxes), ``"auto"``: compiled for CPU tensors, torch otherwise.
    """
    if impl not in NMS_IMPLS:
        raise ValueError(f"impl must be one of {NMS_IMPLS}, got {impl!r}")
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    if impl == "compiled" or (impl == "auto" and boxes.device.type == "cpu"):
        if boxes.device.type != "cpu":
            raise ValueError(f"impl='compiled' runs on CPU tensors, got {boxes.device}")
        keep = nms_rotated_cpu(boxes.detach().double().numpy(), scores.detach().double().numpy(),
                               iou_threshold, pre_max, post_max,
                               None if groups is None else groups.numpy())
        return torch.from_numpy(keep)
    order = torch.argsort(scores, descending=True, stable=True)
    if pre_max is not None:
        order = order[:pre_max] if groups is None else order[group_rank(groups[order]) < pre_max]
    cand = _as_float(boxes[order])
    with torch.no_grad():
        ii, jj = _candidate_pairs(cand, cand, upper=True, min_iou=iou_threshold)
        if groups is not None:
            g = groups[order]
            same = g[ii] == g[jj]
            ii, jj = ii[same], jj[same]
        over = _pair_values(cand, cand, ii, jj, iou_bev_aligned) > iou_threshold
        ii, jj = ii[over], jj[over]  # i < j: i (higher score) suppresses j if i is kept
        keep = torch.ones(order.numel(), dtype=torch.bool, device=boxes.device)
        while ii.numel():
            new = torch.ones_like(keep)
            new[jj[keep[ii]]] = False
            if torch.equal(new, keep):
                break
            keep = new
    idx = torch.nonzero(keep)[:, 0]
    if post_max is not None:
        idx = idx[:post_max] if groups is None else idx[group_rank(groups[order[idx]]) < post_max]
    return order[idx]
