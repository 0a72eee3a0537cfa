"""Inference form of the front end: batch norms folded into the layer before them.

In eval mode ``BN(y) = gamma * (y - mu) / sqrt(var + eps) + beta`` is affine per channel, so for
``y = W x + b`` it folds into ``W' = s * W``, ``b' = s * (b - mu) + beta`` with ``s = gamma /
sqrt(var + eps)`` (s scales the output-channel axis: dim 0 of a sparse conv's ``(Cout, k, k,
Cin)`` weight and of a ``Linear``). The sparse encoder's SparseConv2d -> SparseBatchNorm pairs
and the VFE's Linear -> BatchNorm1d pair are folded; the batch norms become identities. Equal to
the unfolded module in eval mode up to float rounding; the dense part needs no such pass (ONNX
Runtime and TensorRT fold Conv + BatchNormalization themselves).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from radardistill_ros.model.backbone import SparseBasicBlock, SparseDown
from radardistill_ros.model.sparse import SparseConv2d, SparseTensor
from radardistill_ros.model.vfe import PillarVFE

__all__ = ["SparseIdentity", "fold_bn_into", "fold_front_end"]


class SparseIdentity(nn.Module):
    """Stands in for a folded :class:`SparseBatchNorm`: returns its input."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x


def fold_bn_into(weight: Tensor, bias: Tensor | None, bn: nn.modules.batchnorm._BatchNorm
                 ) -> tuple[Tensor, Tensor]:
    """(W', b') of ``bn(W x + b)`` in eval mode; output channels on dim 0 of ``weight``."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    b = bias if bias is not None else torch.zeros_like(bn.running_mean)
    w = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    return w, (b - bn.running_mean) * scale + bn.bias


def _fold_sparse(conv: SparseConv2d, bn: nn.Module) -> SparseConv2d:
    out = SparseConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.subm, bias=True, backend=conv.backend)
    w, b = fold_bn_into(conv.weight, conv.bias, bn)
    out.weight.data.copy_(w)
    out.bias.data.copy_(b)
    return out


@torch.no_grad()
def fold_front_end(front_end: nn.Module) -> nn.Module:
    """A copy of a :class:`~radardistill_ros.model.detector.PillarFrontEnd` (in eval mode) with
    every batch norm folded; the original is not modified."""
    fe = copy.deepcopy(front_end).eval()
    for m in fe.modules():
        if isinstance(m, SparseBasicBlock):
            m.conv1, m.bn1 = _fold_sparse(m.conv1, m.bn1), SparseIdentity()
            m.conv2, m.bn2 = _fold_sparse(m.conv2, m.bn2), SparseIdentity()
        elif isinstance(m, SparseDown):
            m.conv, m.bn = _fold_sparse(m.conv, m.bn), SparseIdentity()
        elif isinstance(m, PillarVFE) and isinstance(m.norm, nn.BatchNorm1d):
            w, b = fold_bn_into(m.linear.weight, m.linear.bias, m.norm)
            linear = nn.Linear(m.linear.in_features, m.linear.out_features, bias=True)
            linear.weight.data.copy_(w)
            linear.bias.data.copy_(b)
            m.linear, m.norm = linear, nn.Identity()
    for p in fe.parameters():
        p.requires_grad_(False)
    return fe
