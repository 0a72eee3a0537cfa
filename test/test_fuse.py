"""Inference forms (front end with batch norms folded, CenterHead branches merged) equal the
trained modules."""

from __future__ import annotations

import pytest
import torch
from test_model import radar_points, shrink  # test/ helpers (pytest puts test/ on sys.path)

from radardistill_ros.config import load_config
from radardistill_ros.model import build_model
from radardistill_ros.model.fuse import FusedCenterHead, fold_bn_into, fold_front_end, fuse_dense
from radardistill_ros.model.head import HEAD_KEYS, CenterHead
from radardistill_ros.model.sparse import SparseBatchNorm


def test_fold_bn_into_by_hand() -> None:
    bn = torch.nn.BatchNorm1d(2, eps=0.0).eval()
    bn.weight.data = torch.tensor([2.0, 1.0])
    bn.bias.data = torch.tensor([0.5, -1.0])
    bn.running_mean = torch.tensor([1.0, 3.0])
    bn.running_var = torch.tensor([4.0, 1.0])
    w, b = fold_bn_into(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1.0, 1.0]), bn)
    # channel 0: s = 2 / 2 = 1 -> W row (1, 2), b = 1 * (1 - 1) + 0.5; channel 1: s = 1 -> b = (1 - 3) - 1
    assert w.tolist() == [[1.0, 2.0], [3.0, 4.0]] and b.tolist() == [0.5, -3.0]


def test_folded_front_end_equals_original() -> None:
    cfg = shrink(load_config("lite"), 13.5)
    torch.manual_seed(0)
    model = build_model(cfg, "radar")
    gen = torch.Generator().manual_seed(1)
    for m in model.front_end.modules():  # non-trivial statistics and affine parameters
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean = torch.randn(m.num_features, generator=gen) * 0.3
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen) * 0.2
    fe = model.front_end.eval()
    folded = fold_front_end(fe)
    assert not any(isinstance(m, (SparseBatchNorm, torch.nn.BatchNorm1d)) for m in folded.modules())
    assert any(isinstance(m, SparseBatchNorm) for m in fe.modules())  # the original is untouched
    pts = radar_points(400, 2, 13.5)
    with torch.no_grad():
        ref, got = fe(pts, 2), folded(pts, 2)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def _random_bn_statistics(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean = torch.randn(m.num_features, generator=gen) * 0.3
            m.running_var = torch.rand(m.num_features, generator=gen) + 0.5
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen) * 0.2


@pytest.mark.parametrize("shared_per_task", [True, False])
def test_fused_center_head_equals_original(shared_per_task: bool) -> None:
    # lite's form (one conv per task, 1x1 outputs) and the published one (conv per output, 3x3)
    torch.manual_seed(0)
    tasks = (("car",), ("truck", "construction_vehicle"), ("pedestrian", "traffic_cone", "barrier"))
    head = CenterHead(12, 10, 8, shared_per_task, tasks)
    _random_bn_statistics(head, 2)
    head.eval()
    fused = FusedCenterHead(head)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in fused.modules()) == 3
    branches = len(tasks) * (1 if shared_per_task else len(HEAD_KEYS))
    assert fused.branch.out_channels == branches * 8 and fused.out.groups == branches
    x = torch.randn(2, 12, 9, 7, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, got = head(x), fused(x)
    assert len(got) == len(tasks)
    for t in range(len(tasks)):
        assert list(got[t]) == list(HEAD_KEYS)
        for k in HEAD_KEYS:
            assert got[t][k].shape == ref[t][k].shape
            torch.testing.assert_close(got[t][k], ref[t][k], atol=1e-5, rtol=1e-5)


def test_fuse_dense_copies_and_fuses_only_the_head() -> None:
    cfg = shrink(load_config("lite"), 13.5)
    torch.manual_seed(0)
    dense = build_model(cfg, "radar").dense
    _random_bn_statistics(dense, 4)
    dense.train()
    fused = fuse_dense(dense)
    assert isinstance(fused.head, FusedCenterHead) and isinstance(dense.head, CenterHead)
    assert dense.training and not fused.training  # the original keeps its mode and head
    assert not any(p.requires_grad for p in fused.parameters())
    x = torch.randn(1, cfg.model.backbone_channels[3], *cfg.grid.bev_shape,
                    generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref, got = dense.eval()(x), fused(x)
    for r, g in zip(ref, got):
        for k in HEAD_KEYS:
            torch.testing.assert_close(g[k], r[k], atol=1e-5, rtol=1e-5)
