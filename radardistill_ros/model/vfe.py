"""Pillar VFE (PillarNet's dynamic pillar VFE): points -> one C-vector per pillar, F^{2D}.

Per point: [offset to pillar centre (3), raw features (F), offset to pillar mean (3),
xyz - range_min (3)] -> Linear (no bias) -> BN1d(eps 1e-3, momentum 0.01) -> ReLU -> max over
the pillar's points. Input width F + 9: 15 for radar (F = 6), 14 for LiDAR (F = 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radardistill_ros.config import GridConfig
from radardistill_ros.model.pillars import Pillars


class PillarVFE(nn.Module):
    """Pillar feature net for ``num_point_features`` raw features (x, y, z first)."""

    def __init__(self, num_point_features: int, out_channels: int, grid: GridConfig):
        super().__init__()
        self.num_point_features = num_point_features
        self.in_channels = num_point_features + 9
        r = grid.point_cloud_range
        self.register_buffer("range_min", torch.tensor(r[:3], dtype=torch.float32), persistent=False)
        # pillar centre of (ix, iy) = range_min + (i + 0.5) * size; z centre = middle of the z range
        self.register_buffer("pillar_size", torch.tensor(grid.pillar_size, dtype=torch.float32),
                             persistent=False)
        self.z_centre = (r[2] + r[5]) / 2.0
        self.linear = nn.Linear(self.in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)

    def point_features(self, p: Pillars) -> Tensor:
        """(N', F + 9) decorated point features."""
        raw = p.points[:, 1:]
        if raw.shape[1] != self.num_point_features:
            raise ValueError(f"expected {self.num_point_features} point features, got {raw.shape[1]}")
        xyz = raw[:, :3]
        ixy = p.coords[p.point_pillar][:, [2, 1]].to(xyz.dtype)             # (N', 2) = (ix, iy)
        centre_xy = self.range_min[:2] + (ixy + 0.5) * self.pillar_size
        f_centre = torch.cat((xyz[:, :2] - centre_xy, xyz[:, 2:3] - self.z_centre), dim=1)
        n = p.coords.shape[0]
        counts = torch.zeros(n, dtype=xyz.dtype, device=xyz.device).index_add_(
            0, p.point_pillar, torch.ones_like(xyz[:, 0]))
        mean = torch.zeros(n, 3, dtype=xyz.dtype, device=xyz.device).index_add_(0, p.point_pillar, xyz)
        mean = mean / counts.clamp(min=1.0)[:, None]
        f_cluster = xyz - mean[p.point_pillar]
        return torch.cat((f_centre, raw, f_cluster, xyz - self.range_min), dim=1)

    def forward(self, p: Pillars) -> Tensor:
        """Pillar features (P, C), rows aligned with ``p.coords``."""
        x = F.relu(self.norm(self.linear(self.point_features(p))))
        out = x.new_zeros(p.coords.shape[0], x.shape[1])
        idx = p.point_pillar[:, None].expand_as(x)
        return out.scatter_reduce(0, idx, x, reduce="amax", include_self=True)
