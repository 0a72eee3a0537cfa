"""PillarRes18BackBone8x: the sparse 2D ResNet-18 SparseEnc (F^{2D} -> F^l = x_conv4) and its
dense stage 5 (x_conv4 -> x_conv5).

Stage 1: ``blocks[0]`` x SparseBasicBlock(c1), submanifold, stride 1.
Stages 2-4: SparseConv k3 s2 p1 (c_{i-1} -> c_i) + BN + ReLU, then ``blocks[i]`` SparseBasicBlocks.
x_conv4 = densified stage 4, (B, c4, H/8, W/8). Stage 5 (dense): Conv3x3 s2 + BN + ReLU and
``conv5_blocks`` BasicBlocks -> x_conv5 (B, c4, H/16, W/16). BN eps 1e-3, momentum 0.01.
Convs feeding a BN have no bias.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from radardistill_ros.model.sparse import SparseBatchNorm, SparseConv2d, SparseTensor, sparse_relu

BN_EPS, BN_MOMENTUM = 1e-3, 0.01


def bn2d(c: int) -> nn.BatchNorm2d:
    """BatchNorm2d with the PillarNet/CenterPoint constants."""
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class SparseBasicBlock(nn.Module):
    """Residual block of two submanifold 3x3 convs: relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, channels: int, backend: str):
        super().__init__()
        self.conv1 = SparseConv2d(channels, channels, 3, 1, 1, subm=True, backend=backend)
        self.bn1 = SparseBatchNorm(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.conv2 = SparseConv2d(channels, channels, 3, 1, 1, subm=True, backend=backend)
        self.bn2 = SparseBatchNorm(channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: SparseTensor) -> SparseTensor:
        out = self.bn2(self.conv2(sparse_relu(self.bn1(self.conv1(x)))))
        return out.replace_features(F.relu(out.features + x.features))


class SparseDown(nn.Module):
    """Strided sparse conv k3 s2 p1 + BN + ReLU."""

    def __init__(self, cin: int, cout: int, backend: str):
        super().__init__()
        self.conv = SparseConv2d(cin, cout, 3, 2, 1, subm=False, backend=backend)
        self.bn = SparseBatchNorm(cout, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_relu(self.bn(self.conv(x)))


class SparseEncoder(nn.Module):
    """SparseEnc: F^{2D} (sparse, c1 channels, pillar grid) -> F^l = x_conv4 (B, c4, H/8, W/8)."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[int], backend: str):
        super().__init__()
        if len(channels) != 4 or len(blocks) != 4:
            raise ValueError("PillarRes18BackBone8x needs 4 stage widths and 4 block counts")
        stages: list[nn.Module] = []
        for i, (c, n) in enumerate(zip(channels, blocks)):
            layers: list[nn.Module] = [] if i == 0 else [SparseDown(channels[i - 1], c, backend)]
            layers += [SparseBasicBlock(c, backend) for _ in range(n)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = channels[-1]

    def forward(self, x: SparseTensor) -> Tensor:
        for stage in self.stages:
            x = stage(x)
        return x.dense()


class BasicBlock(nn.Module):
    """Dense ResNet basic block (3x3 convs, BN, ReLU, identity shortcut)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn1 = bn2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = bn2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + x)


class Conv5(nn.Module):
    """Dense stage 5: x_conv4 (B, C, H, W) -> x_conv5 (B, C, ceil(H/2), ceil(W/2))."""

    def __init__(self, channels: int, blocks: int):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(channels, channels, 3, 2, 1, bias=False), bn2d(channels),
                                  nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*[BasicBlock(channels) for _ in range(blocks)])

    def forward(self, x_conv4: Tensor) -> Tensor:
        return self.blocks(self.down(x_conv4))
