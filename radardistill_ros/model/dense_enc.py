"""DenseEnc (PillarNet RPN-V1 topology): F^h = DenseEnc(F^l), giving F^{h(1)} and F^{h(2)}.

    y     = conv5_layers x (Conv3x3 + BN + ReLU) on x_conv5          (B, Cd, H/2, W/2)
    F_h1  = ConvTranspose(k2, s2) + BN + ReLU (y)                     (B, Cd, H, W)
    F_h2  = Conv3x3(C4 + Cd -> Cd) + BN + ReLU, then fuse_layers x (Conv3x3 + BN + ReLU)
            on cat(x, F_h1)                                           (B, Cd, H, W)

``x`` is x_conv4 for the teacher and F^{a(2)} for the radar student with CMA; x_conv5 comes from
the pre-CMA x_conv4 in both (authors' code).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from radardistill_ros.model.backbone import bn2d


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    """Conv3x3 (no bias) + BN(eps 1e-3, momentum 0.01) + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), bn2d(cout), nn.ReLU(inplace=True))


class DenseEncOutput(NamedTuple):
    """F^{h(1)} (B, Cd, H, W) (the upsampled x_conv5 branch) and F^{h(2)} (B, Cd, H, W)."""

    high1: Tensor
    high2: Tensor


class DenseEnc(nn.Module):
    """DenseEnc: (x (B, C4, H, W), x_conv5 (B, C4, H/2, W/2)) -> (F^{h(1)}, F^{h(2)})."""

    def __init__(self, in_channels: int, channels: int, conv5_layers: int, fuse_layers: int):
        super().__init__()
        self.block5 = nn.Sequential(conv_bn_relu(in_channels, channels),
                                    *[conv_bn_relu(channels, channels) for _ in range(conv5_layers - 1)])
        self.deblock = nn.Sequential(nn.ConvTranspose2d(channels, channels, 2, 2, bias=False), bn2d(channels),
                                     nn.ReLU(inplace=True))
        self.fuse = nn.Sequential(conv_bn_relu(in_channels + channels, channels),
                                  *[conv_bn_relu(channels, channels) for _ in range(fuse_layers)])
        self.out_channels = channels

    def forward(self, x: Tensor, x_conv5: Tensor) -> DenseEncOutput:
        f_h1 = self.deblock(self.block5(x_conv5))
        if f_h1.shape[-2:] != x.shape[-2:]:
            f_h1 = f_h1[..., : x.shape[-2], : x.shape[-1]]
        f_h2 = self.fuse(torch.cat((x, f_h1), dim=1))
        return DenseEncOutput(f_h1, f_h2)
