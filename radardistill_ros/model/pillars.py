"""Pillarisation: points -> unique BEV pillars and each point's pillar (vectorised torch).

Points are ``(N, 1 + F)`` float: column 0 the batch index, then the point features of
``conventions.RADAR_FEATURES`` / ``LIDAR_FEATURES`` (x, y, z first), in the ego frame. Pillar
(ix, iy) covers x in ``x_min + ix * dx + [0, dx)`` and y likewise; points outside
``point_cloud_range`` (x, y and z) are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from radardistill_ros.config import GridConfig


@dataclass(frozen=True)
class Pillars:
    """Result of :func:`pillarize`.

    ``points`` (N', 1 + F): the in-range points; ``point_pillar`` (N',) int64: row of each point in
    ``coords``; ``coords`` (P, 3) int64 = (batch, iy, ix), sorted by key (b*ny + iy)*nx + ix and
    unique; ``grid`` (ny, nx) pillar grid; ``batch_size``.
    """

    points: Tensor
    point_pillar: Tensor
    coords: Tensor
    grid: tuple[int, int]
    batch_size: int


def unique_keys(keys: Tensor, return_inverse: bool = False) -> tuple[Tensor, Tensor | None]:
    """Sorted unique values of an integer tensor ``keys (N,)`` and, optionally, each entry's
    position in them (``torch.unique(sorted=True, return_inverse=...)``, computed with one sort
    and a run-start mask: several times faster than ``torch.unique`` on CPU)."""
    ordered, perm = torch.sort(keys)
    start = torch.ones_like(ordered, dtype=torch.bool)
    start[1:] = ordered[1:] != ordered[:-1]
    unique = ordered[start]
    if not return_inverse:
        return unique, None
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.cumsum(start, dim=0) - 1
    return unique, inverse


def pillarize(points: Tensor, grid: GridConfig, batch_size: int) -> Pillars:
    """Assign points (N, 1 + F) to pillars of ``grid``; see :class:`Pillars`."""
    if points.dim() != 2 or points.shape[1] < 4:
        raise ValueError(f"points must be (N, 1 + F) with F >= 3, got {tuple(points.shape)}")
    r = grid.point_cloud_range
    nx, ny = grid.pillar_grid
    dx, dy = grid.pillar_size
    xyz = points[:, 1:4]
    ix = torch.floor((xyz[:, 0] - r[0]) / dx).long()
    iy = torch.floor((xyz[:, 1] - r[1]) / dy).long()
    keep = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (xyz[:, 2] >= r[2]) & (xyz[:, 2] < r[5])
    b = points[:, 0].long()
    keep &= (b >= 0) & (b < batch_size)
    if not bool(keep.all()):
        points, ix, iy, b = points[keep], ix[keep], iy[keep], b[keep]
    key = (b * ny + iy) * nx + ix
    ukey, inverse = unique_keys(key, return_inverse=True)
    coords = torch.stack((ukey // (ny * nx), (ukey // nx) % ny, ukey % nx), dim=1)
    return Pillars(points, inverse, coords, (ny, nx), batch_size)
