"""Compiled (numba) CPU kernels for the sparse-conv neighbour plan of :mod:`.sparse`.

The plain-torch plan (site keys, a dense key -> row table, broadcasts, ``nonzero``) takes ~25
small tensor ops per conv: ~4.8 ms of the ~18 ms radar front end on one core of the 2-core
target, almost all of it per-op overhead on ~2k sites. These loops compute the same two things
in one pass each (~0.05-0.15 ms), release the GIL while they run (the node's executor thread
keeps serving), and are used for CPU tensors on grids small enough for a dense table; CUDA
tensors and huge grids keep the torch path. Both are checked against each other and against
``F.conv2d`` in ``test/test_sparse.py``. :func:`gather_rows` is the gather-GEMM form's column
gather without the zero-row concatenation (CPU tensors that need no gradient).

Indices are (P, 3) int64 (batch, y, x) on a (B, H, W) grid; conv geometry: kernel k, stride s,
padding p; output size Ho = (H + 2p - k) // s + 1 (``F.conv2d``'s).
"""

from __future__ import annotations

import threading

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def strided_out_sites(idx: np.ndarray, h: int, w: int, batch: int, k: int, stride: int,
                      pad: int) -> np.ndarray:
    """Sorted (P_out, 3) output sites of a regular sparse conv: every output position whose
    receptive field holds an active input. Per axis, input coordinate y feeds outputs
    o in [ceil((y + p - k + 1) / s), floor((y + p) / s)] (clipped to [0, Ho)); they are marked in
    a (B, Ho, Wo) map whose set cells, read in order, are the sorted sites."""
    ho = (h + 2 * pad - k) // stride + 1
    wo = (w + 2 * pad - k) // stride + 1
    mask = np.zeros(batch * ho * wo, np.bool_)
    n = 0
    for i in range(idx.shape[0]):
        cy = idx[i, 1] + pad
        cx = idx[i, 2] + pad
        ylo = max(0, (cy - (k - 1) + stride - 1) // stride)
        yhi = min(ho - 1, cy // stride)
        xlo = max(0, (cx - (k - 1) + stride - 1) // stride)
        xhi = min(wo - 1, cx // stride)
        for oy in range(ylo, yhi + 1):
            for ox in range(xlo, xhi + 1):
                key = (idx[i, 0] * ho + oy) * wo + ox
                if not mask[key]:
                    mask[key] = True
                    n += 1
    out = np.empty((n, 3), np.int64)
    j = 0
    for key in range(mask.shape[0]):
        if mask[key]:
            out[j, 0] = key // (ho * wo)
            out[j, 1] = (key // wo) % ho
            out[j, 2] = key % wo
            j += 1
    return out


@numba.njit(cache=True, nogil=True)
def _neighbour_rows(in_idx: np.ndarray, h: int, w: int, batch: int, out_idx: np.ndarray, k: int,
                    stride: int, pad: int, missing: int, table: np.ndarray) -> np.ndarray:
    hp = h + 2 * pad
    wp = w + 2 * pad
    for i in range(in_idx.shape[0]):
        table[(in_idx[i, 0] * hp + in_idx[i, 1] + pad) * wp + in_idx[i, 2] + pad] = i
    rows = np.empty((out_idx.shape[0], k * k), np.int64)
    for o in range(out_idx.shape[0]):
        base = (out_idx[o, 0] * hp + out_idx[o, 1] * stride) * wp + out_idx[o, 2] * stride
        for ky in range(k):
            for kx in range(k):
                r = table[base + ky * wp + kx]
                rows[o, ky * k + kx] = r if r >= 0 else missing
    for i in range(in_idx.shape[0]):  # leave the scratch table all -1 for the next call
        table[(in_idx[i, 0] * hp + in_idx[i, 1] + pad) * wp + in_idx[i, 2] + pad] = -1
    return rows


_scratch = threading.local()


def _scratch_table(n: int) -> np.ndarray:
    """A per-thread int32 table of >= ``n`` entries, all -1 (kept between calls: filling a
    ~150k-entry table for every conv cost more than the lookups)."""
    table = getattr(_scratch, "table", None)
    if table is None or table.shape[0] < n:
        table = _scratch.table = np.full(n, -1, np.int32)
    return table


def neighbour_rows(in_idx: np.ndarray, h: int, w: int, batch: int, out_idx: np.ndarray, k: int,
                   stride: int, pad: int, missing: int) -> np.ndarray:
    """(P_out, k*k) int64: the input row read by output site o through tap (ky, kx) (ky major),
    i.e. the active input at (y*s - p + ky, x*s - p + kx), or ``missing`` where there is none.
    One pass writes the inputs' rows into a (B, H + 2p, W + 2p) key -> row table, one pass reads
    it, one pass clears what was written (the table is reused)."""
    table = _scratch_table(batch * (h + 2 * pad) * (w + 2 * pad))
    return _neighbour_rows(in_idx, h, w, batch, out_idx, k, stride, pad, missing, table)


@numba.njit(cache=True, nogil=True)
def gather_rows(src: np.ndarray, rows: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = src[rows[i]]`` for ``rows[i] < len(src)``, zeros for ``rows[i] == len(src)``
    (the appended zero row of the torch form); ``src (P, C)``, ``out (R, C)`` float32."""
    n, c = src.shape
    for i in range(rows.shape[0]):
        r = rows[i]
        if r < n:
            for j in range(c):
                out[i, j] = src[r, j]
        else:
            for j in range(c):
                out[i, j] = 0.0
