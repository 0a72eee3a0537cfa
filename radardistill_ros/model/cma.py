"""CMA (Cross-Modality Alignment): densifying encoder-decoder on the radar F^l (x_conv4).

Blocks (authors' code): Down = DCNv2 3x3 s2 + ConvNeXt V2 block, then ``down_blocks - 1`` more
ConvNeXt V2 blocks; Up = ConvTranspose2d(k4, s2, p1) + BN + GELU; Agg = concat + Conv 1x1 + BN +
GELU. Wiring (x4 = F^l, C x H x W)::

    en16 = Down1(x4)                               # H/2
    F_a1 = Agg1(cat(Up1(en16), x4))                # H    -> F^{a(1)}
    en32 = Down2(en16)                             # H/4
    de16 = Agg2(cat(Up2(en32), Down3(F_a1)))       # H/2  (side pathway)
    F_a2 = Agg3(cat(Up3(de16), F_a1))              # H    -> F^{a(2)}

Odd sizes: a stride-2 down gives ceil(H/2); the up's 2*ceil(H/2) rows are cropped to the skip's.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radardistill_ros.model.dcn import ModulatedDeformConv2d


class GRN(nn.Module):
    """Global Response Normalization on channels-last (B, H, W, C): gamma*(x*N(x)) + beta + x."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: Tensor) -> Tensor:
        gx = torch.linalg.vector_norm(x, ord=2, dim=(1, 2), keepdim=True)   # L2 over H, W
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    """dwconv 7x7 -> LayerNorm (channels-last, eps 1e-6) -> Linear C->eC -> GELU -> GRN(eC) ->
    Linear eC->C -> + residual. (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, expansion * dim)
        self.grn = GRN(expansion * dim)
        self.pwconv2 = nn.Linear(expansion * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(y)))))
        return x + y.permute(0, 3, 1, 2)


class Down(nn.Module):
    """DCNv2 3x3 s2 (C -> C) followed by ``blocks`` ConvNeXt V2 blocks: (B,C,H,W) -> (B,C,H/2,W/2)."""

    def __init__(self, dim: int, expansion: int, blocks: int):
        super().__init__()
        self.dcn = ModulatedDeformConv2d(dim, dim, 3, stride=2, padding=1, bias=False)
        self.blocks = nn.Sequential(*[ConvNeXtV2Block(dim, expansion) for _ in range(blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(self.dcn(x))


class Up(nn.Module):
    """ConvTranspose2d(C, C, 4, 2, 1) + BN + GELU, cropped to ``size``: (B,C,h,w) -> (B,C,*size)."""

    def __init__(self, dim: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(dim, dim, 4, 2, 1)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        y = F.gelu(self.bn(self.deconv(x)))
        if y.shape[-2:] != size:
            y = y[..., : size[0], : size[1]]
        return y


class Agg(nn.Module):
    """Skip aggregation: concat (2C) -> Conv 1x1 -> BN -> GELU (C)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * dim, dim, 1)
        self.bn = nn.BatchNorm2d(dim)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return F.gelu(self.bn(self.conv(torch.cat((a, b), dim=1))))


class CMAOutput(NamedTuple):
    """F^{a(1)} and F^{a(2)}, both (B, C, H, W) like the input F^l."""

    aligned1: Tensor
    aligned2: Tensor


class CMA(nn.Module):
    """Cross-Modality Alignment: F^l (B, C, H, W) -> (F^{a(1)}, F^{a(2)})."""

    def __init__(self, dim: int, expansion: int, down_blocks: int):
        super().__init__()
        self.down1, self.down2, self.down3 = (Down(dim, expansion, down_blocks) for _ in range(3))
        self.up1, self.up2, self.up3 = Up(dim), Up(dim), Up(dim)
        self.agg1, self.agg2, self.agg3 = Agg(dim), Agg(dim), Agg(dim)

    def forward(self, x4: Tensor) -> CMAOutput:
        full = (x4.shape[-2], x4.shape[-1])
        en16 = self.down1(x4)
        half = (en16.shape[-2], en16.shape[-1])
        f_a1 = self.agg1(self.up1(en16, full), x4)
        en32 = self.down2(en16)
        de16 = self.agg2(self.up2(en32, half), self.down3(f_a1))
        f_a2 = self.agg3(self.up3(de16, full), f_a1)
        return CMAOutput(f_a1, f_a2)
