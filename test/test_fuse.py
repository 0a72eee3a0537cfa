"""Batch-norm folding of the front end: the inference form equals the trained module."""

from __future__ import annotations

import torch
from test_model import radar_points, shrink  # test/ helpers (pytest puts test/ on sys.path)

from radardistill_ros.config import load_config
from radardistill_ros.model import build_model
from radardistill_ros.model.fuse import fold_bn_into, fold_front_end
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
