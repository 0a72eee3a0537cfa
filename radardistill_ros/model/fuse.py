"""Inference forms: the same function in fewer operations, built from a trained module.

* :func:`fold_front_end`: batch norms folded into the layer before them. In eval mode ``BN(y) =
  gamma * (y - mu) / sqrt(var + eps) + beta`` is affine per channel, so for ``y = W x + b`` it
  folds into ``W' = s * W``, ``b' = s * (b - mu) + beta`` with ``s = gamma / sqrt(var + eps)`` (s
  scales the output-channel axis: dim 0 of a sparse conv's ``(Cout, k, k, Cin)`` weight and of a
  ``Linear``). The sparse encoder's SparseConv2d -> SparseBatchNorm pairs and the VFE's Linear ->
  BatchNorm1d pair are folded; the batch norms become identities.
* :func:`fuse_dense` / :class:`FusedCenterHead`: the CenterHead's branches merged into three
  convolutions and one split (a conv's output channels are independent, so concatenating convs
  along their outputs, or stacking them as the groups of a grouped conv, changes nothing but the
  number of operations). What the ONNX export and the torch backend run: for ``lite`` the graph
  has 49 fewer nodes (6 task convs and 42 output convs with their layout reorders become 2
  convs and a split). ONNX Runtime and TensorRT fold Conv + BatchNormalization themselves.

Each equals its source module in eval mode up to float rounding (``test/test_fuse.py``).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radardistill_ros.model.backbone import SparseBasicBlock, SparseDown
from radardistill_ros.model.head import HEAD_KEYS, CenterHead, HeadOutput
from radardistill_ros.model.sparse import SparseConv2d, SparseTensor
from radardistill_ros.model.vfe import PillarVFE

__all__ = ["FusedCenterHead", "SparseIdentity", "fold_bn_into", "fold_front_end", "fuse_dense"]


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


def _conv(weight: Tensor, bias: Tensor, padding: int, groups: int = 1) -> nn.Conv2d:
    """A Conv2d (stride 1) holding ``weight (Cout, Cin / groups, k, k)`` and ``bias (Cout,)``."""
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], weight.shape[-1], 1, padding,
                     groups=groups, bias=True)
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


def _fold_conv_bn(seq: nn.Sequential) -> tuple[Tensor, Tensor]:
    """(W', b') of a ``Conv2d -> BatchNorm2d [-> ReLU]`` sequence in eval mode."""
    return fold_bn_into(seq[0].weight, seq[0].bias, seq[1])


class FusedCenterHead(nn.Module):
    """Inference form of a :class:`~radardistill_ros.model.head.CenterHead`: its maps from
    three convolutions and one split.

    ``shared``: the shared Conv3x3 (+ folded BN), ReLU. ``branch``: the first Conv3x3 + BN of
    every branch (one per task with ``shared_per_task``, else one per task and output)
    concatenated along the output channels, ReLU. ``out``: every branch's output conv(s) as the
    groups of ONE grouped conv (a branch's outputs stacked in :data:`HEAD_KEYS` order, zero
    rows up to the widest branch). The output channels are split back into the
    ``[{key: (B, C_key, H, W)}]`` head output (the zero rows are dropped). Batch norms fold
    with their running statistics (the eval-mode function); ``head`` itself is not changed.
    """

    def __init__(self, head: CenterHead):
        super().__init__()
        self.shared = _conv(*_fold_conv_bn(head.shared), padding=1)
        weights, biases, branches = [], [], []  # branches: [(task, key, output conv), ...] each
        for t, th in enumerate(head.task_heads):
            if th.shared_per_task:
                firsts = [(th.shared, [(t, k, th.outputs[k]) for k in HEAD_KEYS])]
            else:
                firsts = [(th.outputs[k][0], [(t, k, th.outputs[k][1])]) for k in HEAD_KEYS]
            for seq, outs in firsts:
                w, b = _fold_conv_bn(seq)
                weights.append(w)
                biases.append(b)
                branches.append(outs)
        k_first = weights[0].shape[-1]
        self.branch = _conv(torch.cat(weights), torch.cat(biases), padding=k_first // 2)
        width = max(sum(conv.out_channels for _, _, conv in outs) for outs in branches)
        k_out = branches[0][0][2].kernel_size[0]
        w_out = weights[0].new_zeros(len(branches) * width, weights[0].shape[0], k_out, k_out)
        b_out = weights[0].new_zeros(len(branches) * width)
        self.sizes: list[int] = []                       # channel counts of the split
        self.slots: list[tuple[int, str, int]] = []      # (task, key, index into the split)
        for g, outs in enumerate(branches):
            row = g * width
            for t, key, conv in outs:
                c = conv.out_channels
                w_out[row:row + c] = conv.weight
                b_out[row:row + c] = conv.bias
                self.slots.append((t, key, len(self.sizes)))
                self.sizes.append(c)
                row += c
            if row < (g + 1) * width:
                self.sizes.append((g + 1) * width - row)  # zero rows, dropped
        self.out = _conv(w_out, b_out, padding=k_out // 2, groups=len(branches))
        self.num_tasks = len(head.task_heads)

    def forward(self, x: Tensor) -> HeadOutput:
        y = self.out(F.relu(self.branch(F.relu(self.shared(x)))))
        parts = torch.split(y, self.sizes, dim=1)
        result: HeadOutput = [{} for _ in range(self.num_tasks)]
        for t, key, i in self.slots:
            result[t][key] = parts[i]
        return result


@torch.no_grad()
def fuse_dense(dense: nn.Module) -> nn.Module:
    """A copy of a dense part (in eval mode, no gradients) whose ``head``, if a
    :class:`~radardistill_ros.model.head.CenterHead`, is its :class:`FusedCenterHead`; the
    original is not modified."""
    out = copy.deepcopy(dense).eval()
    if isinstance(getattr(out, "head", None), CenterHead):
        out.head = FusedCenterHead(out.head)
    for p in out.parameters():
        p.requires_grad_(False)
    return out
