"""The CPU inference form of the front end (compiled pillar kernels, fused GEMMs) computes what
the trained module computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_fuse import _random_bn_statistics
from test_model import radar_points, shrink  # test/ helpers (pytest puts test/ on sys.path)

from radardistill_ros.config import load_config
from radardistill_ros.model import build_model, pillars_cpu, sparse
from radardistill_ros.model.front_end_infer import FusedLinear, InferenceFrontEnd, onednn_linear_status
from radardistill_ros.model.fuse import fold_front_end
from radardistill_ros.model.pillars import pillarize

HALF = 13.5  # +-13.5 m: 96^2 pillars of the lite grid, cheap


def _needs_onednn() -> None:
    ok, why = onednn_linear_status()
    if not ok:
        pytest.skip(f"oneDNN fused linear not usable with this torch build: {why}")


@pytest.fixture(scope="module")
def front_ends() -> tuple:
    cfg = shrink(load_config("lite"), HALF)
    torch.manual_seed(0)
    model = build_model(cfg, "radar")
    _random_bn_statistics(model.front_end, 3)
    fe = model.front_end.eval()
    return cfg, fe, fold_front_end(fe)


def _cloud(n: int, batch: int, seed: int) -> torch.Tensor:
    pts = radar_points(n, batch, HALF + 2.0, seed)  # some points outside x/y
    pts[:7, 3] = torch.tensor([-3.2, 4.8, -3.3, 4.79, 0.0, 0.0, 0.0])  # z on / beyond the limits
    pts[7, 1:3] = torch.tensor([-HALF, HALF])  # exactly on the grid's edges
    pts[8, 1:3] = pts[9, 1:3]  # two points in one pillar
    return pts


@pytest.mark.parametrize("batch", [1, 2])
def test_pillar_kernel_equals_pillarize_and_point_features(front_ends, batch: int) -> None:
    cfg, fe, _ = front_ends
    pts = _cloud(600, batch, 1)
    p = pillarize(pts, cfg.grid, batch)
    ref = fe.vfe.point_features(p)
    inf = InferenceFrontEnd(fold_front_end(fe))
    coords, point_pillar, decorated = inf.pillars(pts, batch)
    assert 0 < len(decorated) < len(pts)  # some points were dropped by the range filter
    assert np.array_equal(coords, p.coords.numpy())
    assert np.array_equal(point_pillar, p.point_pillar.numpy())
    np.testing.assert_allclose(decorated, ref.numpy(), rtol=0, atol=2e-6)


def test_pillar_kernel_hand_case() -> None:
    """Two pillars of 1 m on a 2 x 2 grid over [0, 2) x [0, 2) m, z in [-1, 1): the point at
    y = 2.0 (the upper edge) and the one at z = 1.0 are outside."""
    pts = np.array([[0, 0.25, 0.5, 0.0, 5, 1, 2],
                    [0, 0.75, 0.5, 0.5, 6, 3, 4],
                    [0, 1.5, 1.5, -0.5, 7, 5, 6],
                    [0, 1.5, 2.0, 0.0, 8, 0, 0],
                    [0, 0.5, 0.5, 1.0, 9, 0, 0]], np.float32)
    coords, pp, dec = pillars_cpu.pillar_points(pts, np.array([0, 0, -1], np.float32),
                                                np.array([2, 2, 1], np.float32), np.array([1, 1], np.float32),
                                                2, 2, 1, 0.0)
    assert coords.tolist() == [[0, 0, 0], [0, 1, 1]] and pp.tolist() == [0, 0, 1]
    # point 0: centre (0.5, 0.5) -> offset (-0.25, 0, 0); mean of pillar 0 = (0.5, 0.5, 0.25)
    np.testing.assert_allclose(dec[0], [-0.25, 0, 0, 0.25, 0.5, 0, 5, 1, 2, -0.25, 0, -0.25, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(dec[2, 9:], [0, 0, 0, 1.5, 1.5, 0.5])


def test_scatter_max_equals_scatter_reduce() -> None:
    g = torch.Generator().manual_seed(0)
    values = torch.rand(50, 4, generator=g)
    owner = torch.randint(0, 7, (50,), generator=g)
    owner[owner == 3] = 2  # pillar 3 has no point: 0
    ref = torch.zeros(7, 4).scatter_reduce(0, owner[:, None].expand(-1, 4), values, "amax", include_self=True)
    got = pillars_cpu.scatter_max(values.numpy(), owner.numpy(), 7)
    assert np.array_equal(got, ref.numpy()) and not got[3].any()


@pytest.mark.parametrize("onednn", [False, True])
def test_fused_linear_equals_addmm(onednn: bool) -> None:
    if onednn:
        _needs_onednn()
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 3, 3, 5, generator=g), torch.randn(8, generator=g)  # a sparse conv's layout
    x, res = torch.randn(11, 45, generator=g), torch.randn(11, 8, generator=g)
    lin = FusedLinear(w, b, onednn)
    ref = torch.addmm(b, x, w.reshape(8, 45).t())
    torch.testing.assert_close(lin(x), ref.relu(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lin(x, res), (ref + res).relu(), atol=1e-5, rtol=1e-5)
    assert lin(torch.zeros(0, 45)).shape == (0, 8)


@pytest.mark.parametrize("onednn", [False, True])
def test_inference_front_end_equals_module(front_ends, onednn: bool) -> None:
    if onednn:
        _needs_onednn()
    _, fe, folded = front_ends
    inf = InferenceFrontEnd(folded, onednn=onednn)
    assert inf.gemm == ("onednn" if onednn else "addmm")
    pts = _cloud(900, 2, 2)
    with torch.no_grad():
        ref = fe(pts, 2)
    got = inf(pts, 2)
    assert got.shape == ref.shape and ref.abs().max() > 0.5
    # addmm: the module's own arithmetic; oneDNN: another summation order
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


def test_inference_front_end_large_input_runs_the_module(front_ends, monkeypatch) -> None:
    """A block whose column matrix would be too large runs as the (rulebook) module, same result."""
    folded = front_ends[2]
    inf = InferenceFrontEnd(folded, onednn=False)
    pts = _cloud(900, 1, 4)
    ref = inf(pts, 1)
    monkeypatch.setattr(sparse, "GATHER_GEMM_MAX_ELEMS", 1000)
    used = []
    real = sparse.build_rulebook
    monkeypatch.setattr(sparse, "build_rulebook", lambda *a, **k: used.append(1) or real(*a, **k))
    got = inf(pts, 1)
    assert used  # the module's pair rulebook ran
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


def test_inference_front_end_empty_and_bad_input(front_ends) -> None:
    cfg, fe, folded = front_ends
    inf = InferenceFrontEnd(folded)
    out = inf(torch.zeros(0, 7), 1)
    assert out.shape == (1, cfg.model.backbone_channels[3], *cfg.grid.bev_shape) and not out.any()
    far = torch.tensor([[0, 500.0, 0, 0, 1, 0, 0]])  # outside the grid: no pillar
    assert not inf(far, 1).any()
    with pytest.raises(ValueError, match=r"\(N, 1 \+ 6\)"):
        inf(torch.zeros(3, 5), 1)
    with pytest.raises(ValueError, match="folded"):
        InferenceFrontEnd(fe)  # batch norms not folded
