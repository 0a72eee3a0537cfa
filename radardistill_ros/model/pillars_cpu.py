"""Compiled (numba) CPU kernels for the pillar stage of the inference front end.

:func:`pillar_points` does in one pass what :func:`~radardistill_ros.model.pillars.pillarize`
followed by :meth:`~radardistill_ros.model.vfe.PillarVFE.point_features` does with ~40 small
torch ops (range filter, pillar keys, sorted unique keys with each point's pillar, per-pillar
point means and the decorated point features); :func:`scatter_max` is the VFE's per-pillar max.
On a 2.9k-point radar frame pillarise + VFE took ~1.5 ms of one core with the torch ops and
~0.6 ms with these (the kernels ~0.3 ms of it, the GIL released). Same float32 arithmetic in the
same order, so the results equal the torch path's (``test/test_front_end_infer.py``); training
and CUDA keep the torch path.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def pillar_points(points: np.ndarray, range_min: np.ndarray, range_max: np.ndarray,
                  pillar_size: np.ndarray, nx: int, ny: int, batch_size: int, z_centre: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points ``(N, 1 + F)`` float32 [batch, x, y, z, ...] in the ego frame ->
    (coords ``(P, 3)`` int64 (batch, iy, ix) sorted by key ``(b*ny + iy)*nx + ix``, point_pillar
    ``(N',)`` int64, decorated ``(N', F + 9)`` float32) for the N' in-range points (in input
    order): ``[x - x_c, y - y_c, z - z_centre, raw F, xyz - pillar mean, xyz - range_min]`` with
    (x_c, y_c) the pillar centre. ``range_min``/``range_max``: (3,) float32 [m];
    ``pillar_size``: (2,) float32 [m]."""
    n = points.shape[0]
    f = points.shape[1] - 1
    keys = np.empty(n, np.int64)
    ixs = np.empty(n, np.int64)
    iys = np.empty(n, np.int64)
    kept = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        x, y, z = points[i, 1], points[i, 2], points[i, 3]
        ix = np.int64(np.floor((x - range_min[0]) / pillar_size[0]))
        iy = np.int64(np.floor((y - range_min[1]) / pillar_size[1]))
        b = np.int64(points[i, 0])
        if 0 <= ix < nx and 0 <= iy < ny and z >= range_min[2] and z < range_max[2] and 0 <= b < batch_size:
            keys[m] = (b * ny + iy) * nx + ix
            ixs[m], iys[m], kept[m] = ix, iy, i
            m += 1
    keys, ixs, iys, kept = keys[:m], ixs[:m], iys[:m], kept[:m]
    order = np.argsort(keys, kind="mergesort")
    point_pillar = np.empty(m, np.int64)
    p = -1
    last = np.int64(-1)
    for j in range(m):
        k = keys[order[j]]
        if j == 0 or k != last:
            p += 1
            last = k
        point_pillar[order[j]] = p
    n_pillars = p + 1
    coords = np.empty((n_pillars, 3), np.int64)
    sums = np.zeros((n_pillars, 3), np.float32)
    counts = np.zeros(n_pillars, np.float32)
    for j in range(m):
        q = point_pillar[j]
        k = keys[j]
        coords[q, 0] = k // (ny * nx)
        coords[q, 1] = iys[j]
        coords[q, 2] = ixs[j]
        i = kept[j]
        for c in range(3):
            sums[q, c] += points[i, 1 + c]
        counts[q] += np.float32(1.0)
    half = np.float32(0.5)
    zc = np.float32(z_centre)
    out = np.empty((m, f + 9), np.float32)
    for j in range(m):
        q = point_pillar[j]
        i = kept[j]
        cnt = max(counts[q], np.float32(1.0))
        x, y, z = points[i, 1], points[i, 2], points[i, 3]
        out[j, 0] = x - (range_min[0] + (np.float32(ixs[j]) + half) * pillar_size[0])
        out[j, 1] = y - (range_min[1] + (np.float32(iys[j]) + half) * pillar_size[1])
        out[j, 2] = z - zc
        for c in range(f):
            out[j, 3 + c] = points[i, 1 + c]
        for c in range(3):
            out[j, 3 + f + c] = points[i, 1 + c] - sums[q, c] / cnt
            out[j, 6 + f + c] = points[i, 1 + c] - range_min[c]
    return coords, point_pillar, out


@numba.njit(cache=True, nogil=True)
def scatter_max(values: np.ndarray, point_pillar: np.ndarray, n_pillars: int) -> np.ndarray:
    """``(P, C)`` per-pillar maximum of ``values (N, C)`` float32 (>= 0: the VFE's ReLU output)
    over each pillar's points, 0 for a pillar without points (``scatter_reduce(amax,
    include_self=True)`` on zeros)."""
    out = np.zeros((n_pillars, values.shape[1]), np.float32)
    for i in range(values.shape[0]):
        q = point_pillar[i]
        for c in range(values.shape[1]):
            if values[i, c] > out[q, c]:
                out[q, c] = values[i, c]
    return out
