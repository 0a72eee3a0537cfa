"""Sparse conv backends against a dense F.conv2d reference, and pillarisation by hand."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from radardistill_ros.config import load_config
from radardistill_ros.model import sparse as sp
from radardistill_ros.model.backbone import SparseEncoder
from radardistill_ros.model.pillars import pillarize, unique_keys
from radardistill_ros.model.sparse import SparseConv2d, SparseTensor, set_sparse_backend

CASES = [  # (subm, stride, padding)
    (True, 1, 1),
    (False, 2, 1),
]


def random_sparse(batch: int = 2, shape: tuple[int, int] = (13, 11), sites: int = 45, channels: int = 4,
                  seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    keys = torch.randperm(batch * h * w, generator=g)[:sites]
    idx = torch.stack((keys // (h * w), (keys // w) % h, keys % w), dim=1)
    return SparseTensor(torch.randn(sites, channels, generator=g), idx, shape, batch)


def dense_reference(x: SparseTensor, conv: SparseConv2d, out: SparseTensor) -> torch.Tensor:
    """F.conv2d on the densified input, read at ``out``'s active sites: (P_out, Cout)."""
    ref = F.conv2d(x.dense(), conv.conv2d_weight(), conv.bias, stride=conv.stride, padding=conv.padding)
    i = out.indices
    return ref.permute(0, 2, 3, 1)[i[:, 0], i[:, 1], i[:, 2]]


def expected_out_sites(x: SparseTensor, conv: SparseConv2d) -> set[tuple[int, int, int]]:
    """Regular conv: output sites whose receptive field holds an active input (dense max-pool)."""
    occ = torch.zeros(x.batch_size, 1, *x.spatial_shape)
    occ[x.indices[:, 0], 0, x.indices[:, 1], x.indices[:, 2]] = 1.0
    hit = F.conv2d(occ, torch.ones(1, 1, conv.kernel_size, conv.kernel_size), stride=conv.stride,
                   padding=conv.padding)[:, 0] > 0
    return {tuple(v) for v in hit.nonzero().tolist()}


@pytest.mark.parametrize("gather_gemm", [True, False])
@pytest.mark.parametrize("lookup", ["cpu_kernels", "dense", "sorted"])
@pytest.mark.parametrize(("subm", "stride", "padding"), CASES)
def test_torch_backend_matches_dense_conv(subm: bool, stride: int, padding: int, lookup: str,
                                          gather_gemm: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # neighbour plan: compiled CPU loops, torch dense key table, or torch sort + searchsorted
    monkeypatch.setattr(sp, "CPU_PLAN_KERNELS", lookup == "cpu_kernels")
    monkeypatch.setattr(sp, "DENSE_LOOKUP_MAX_CELLS", 0 if lookup == "sorted" else 1 << 30)
    # gather + one GEMM (small inputs) or the pair rulebook (large inputs)
    monkeypatch.setattr(sp, "GATHER_GEMM_MAX_ELEMS", 1 << 30 if gather_gemm else 0)
    torch.manual_seed(0)
    x = random_sparse()
    conv = SparseConv2d(4, 5, 3, stride, padding, subm=subm, bias=True, backend="torch")
    y = conv(x)
    if subm:
        assert torch.equal(y.indices, x.indices) and y.spatial_shape == x.spatial_shape
    else:
        assert {tuple(v) for v in y.indices.tolist()} == expected_out_sites(x, conv)
        assert y.spatial_shape == (7, 6)
    torch.testing.assert_close(y.features, dense_reference(x, conv, y), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gather_gemm", [True, False])
@pytest.mark.parametrize(("subm", "stride", "padding"), CASES)
def test_torch_backend_gradients_match_dense_conv(subm: bool, stride: int, padding: int, gather_gemm: bool,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sp, "GATHER_GEMM_MAX_ELEMS", 1 << 30 if gather_gemm else 0)
    torch.manual_seed(1)
    x = random_sparse(seed=1)
    x.features.requires_grad_(True)
    conv = SparseConv2d(4, 3, 3, stride, padding, subm=subm, bias=True)
    y = conv(x)
    r = torch.randn_like(y.features)
    grads = torch.autograd.grad((y.features * r).sum(), (x.features, conv.weight, conv.bias))
    ref = dense_reference(x, conv, y)
    ref_grads = torch.autograd.grad((ref * r).sum(), (x.features, conv.weight, conv.bias))
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("k", "stride", "padding"), [(3, 1, 1), (3, 2, 1), (3, 2, 0), (2, 2, 0), (5, 3, 2),
                                                     (1, 1, 0)])
def test_cpu_plan_kernels_equal_torch_plan(k: int, stride: int, padding: int,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled CPU neighbour plan is the torch plan, entry for entry (sites in the same
    order, absent neighbours -> the zero row P_in), for several conv geometries and a batch."""
    x = random_sparse(batch=3, shape=(17, 23), sites=140, seed=3)
    plans = {}
    for kernels in (True, False):
        monkeypatch.setattr(sp, "CPU_PLAN_KERNELS", kernels)
        for subm in ((True, False) if (stride, padding) == (1, k // 2) else (False,)):
            plans[kernels, subm] = sp.build_neighbour_plan(x.indices, x.spatial_shape, 3, k, stride, padding,
                                                           subm)
    for subm in {s for _, s in plans}:
        a, b = plans[True, subm], plans[False, subm]
        assert a.out_shape == b.out_shape
        assert torch.equal(a.out_indices, b.out_indices) and torch.equal(a.rows, b.rows)
        assert a.rows.dtype == torch.int64 and a.out_indices.dtype == torch.int64


@pytest.mark.parametrize("kernels", [True, False])
def test_strided_plan_by_hand(kernels: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """k3 s2 p1 on a 5 x 5 grid, inputs (y, x) = (0, 0) and (3, 4): outputs o with
    2o - 1 <= y <= 2o + 1 per axis -> (0, 0), (1, 2), (2, 2); tap (ky, kx) of output (oy, ox)
    reads input (2oy - 1 + ky, 2ox - 1 + kx): (0, 0) via tap 4, (3, 4) via taps 7 and 1."""
    monkeypatch.setattr(sp, "CPU_PLAN_KERNELS", kernels)
    plan = sp.build_neighbour_plan(torch.tensor([[0, 0, 0], [0, 3, 4]]), (5, 5), 1, 3, 2, 1, False)
    assert plan.out_shape == (3, 3)
    assert plan.out_indices.tolist() == [[0, 0, 0], [0, 1, 2], [0, 2, 2]]
    rows = torch.full((3, 9), 2)  # absent -> the zero row P_in = 2
    rows[0, 4], rows[1, 7], rows[2, 1] = 0, 1, 1
    assert torch.equal(plan.rows, rows.reshape(-1))


def test_compiled_gather_and_reused_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """gather_rows == index_select on the zero-padded features (rows == P read zeros); the
    neighbour table kept between calls is left clean (a second, different site set is right)."""
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 3, generator=g)
    rows = torch.tensor([4, 0, 5, 2, 5, 1])
    out = torch.full((6, 3), 7.0)
    sp.sparse_plan_cpu.gather_rows(feats.numpy(), rows.numpy(), out.numpy())
    assert torch.equal(out, torch.cat((feats, torch.zeros(1, 3))).index_select(0, rows))
    a, b = random_sparse(shape=(17, 23), sites=140, seed=5), random_sparse(shape=(17, 23), sites=30, seed=6)
    for x in (a, b, a):  # a then b then a again: no entry of an earlier call leaks into the next
        got = sp.build_neighbour_plan(x.indices, x.spatial_shape, 2, 3, 1, 1, True)
        monkeypatch.setattr(sp, "CPU_PLAN_KERNELS", False)
        ref = sp.build_neighbour_plan(x.indices, x.spatial_shape, 2, 3, 1, 1, True)
        monkeypatch.setattr(sp, "CPU_PLAN_KERNELS", True)
        assert torch.equal(got.rows, ref.rows)
    # the conv's columns: compiled gather (no gradient) == the torch gather (with gradient)
    x = random_sparse(shape=(17, 23), sites=60, seed=7)
    cols, _ = sp.gather_columns(x, 3, 1, 1, True, row_multiple=8)
    x.features.requires_grad_(True)
    cols_grad, _ = sp.gather_columns(x, 3, 1, 1, True, row_multiple=8)
    assert cols.shape == cols_grad.shape == (64, 36) and cols_grad.requires_grad
    assert torch.equal(cols, cols_grad.detach()) and not cols[60:].any()


def test_empty_and_isolated_sites() -> None:
    conv = SparseConv2d(2, 3, 3, 2, 1, subm=False)
    empty = SparseTensor(torch.zeros(0, 2), torch.zeros(0, 3, dtype=torch.int64), (8, 8), 1)
    out = conv(empty)
    assert out.features.shape == (0, 3) and out.spatial_shape == (4, 4)
    assert out.dense().shape == (1, 3, 4, 4)
    sub = SparseConv2d(2, 3, 3, 1, 1, subm=True)
    one = SparseTensor(torch.ones(1, 2), torch.tensor([[0, 3, 3]]), (8, 8), 1)
    torch.testing.assert_close(sub(one).features, torch.ones(1, 2) @ sub.weight[:, 1, 1].t())


def _spconv_skip_reason() -> str | None:
    ok, why = sp.spconv_status()
    if not ok:
        return why
    try:
        conv = SparseConv2d(2, 2, 3, 1, 1, subm=True, backend="spconv")
        with torch.no_grad():
            conv(random_sparse(1, (5, 5), 4, 2))
    except Exception as e:  # any failure means "cannot run here"
        return f"spconv forward fails here: {type(e).__name__}: {e}"
    return None


@pytest.fixture(scope="module")
def spconv_ready() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reason = _spconv_skip_reason()
    if reason is not None:
        print(f"skipping spconv comparison: {reason}")
        pytest.skip(reason)


@pytest.mark.parametrize(("subm", "stride", "padding"), CASES)
def test_spconv_backend_matches_torch_backend(spconv_ready: None, subm: bool, stride: int,
                                              padding: int) -> None:
    """Forward only on CPU (spconv backward needs CUDA torch); 2 threads (the race case)."""
    torch.manual_seed(2)
    x = random_sparse(seed=2)
    a = SparseConv2d(4, 5, 3, stride, padding, subm=subm, bias=True, backend="torch")
    b = SparseConv2d(4, 5, 3, stride, padding, subm=subm, bias=True, backend="spconv")
    b.load_state_dict(a.state_dict())
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.no_grad():
            ya, yb = a(x), b(x)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(yb.dense(), ya.dense(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ya.features, dense_reference(x, a, ya), rtol=1e-5, atol=1e-5)


def test_spconv_and_torch_encoders_share_checkpoints(spconv_ready: None) -> None:
    torch.manual_seed(3)
    enc = SparseEncoder((8, 8, 16, 16), (1, 1, 1, 1), backend="torch").eval()
    x = random_sparse(2, (32, 32), 120, 8, seed=3)
    other = SparseEncoder((8, 8, 16, 16), (1, 1, 1, 1), backend="spconv").eval()
    other.load_state_dict(enc.state_dict(), strict=True)
    with torch.no_grad():
        ref = enc(x)
        got = other(x)
        set_sparse_backend(enc, "spconv")
        switched = enc(x)
    assert ref.shape == (2, 16, 4, 4)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(switched, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only torch behaviour")
def test_backend_auto_is_torch_on_cpu_only_torch_and_spconv_training_refused(spconv_ready: None) -> None:
    assert sp.resolve_backend("auto") == "torch"
    conv = SparseConv2d(4, 4, 3, 1, 1, subm=True, backend="spconv")
    with pytest.raises(RuntimeError, match="backward fails on CPU-only torch"):
        conv(random_sparse())


def test_pillarize_by_hand() -> None:
    grid = load_config("paper").grid                     # 0.075 m pillars from (-54, -54), 1440^2
    pts = torch.tensor([
        [0, 0.01, 0.02, 0.0, 1, 0, 0],      # pillar (ix 720, iy 720)
        [0, 0.07, 0.07, 1.0, 2, 0, 0],      # same pillar
        [1, -54.0, 53.99, 0.0, 3, 0, 0],    # batch 1, pillar (0, 1439)
        [0, 60.0, 0.0, 0.0, 4, 0, 0],       # out of x range: dropped
        [0, 0.0, 0.0, 9.0, 5, 0, 0],        # above z range: dropped
    ])
    p = pillarize(pts, grid, batch_size=2)
    assert p.grid == (1440, 1440)
    assert p.coords.tolist() == [[0, 720, 720], [1, 1439, 0]]
    assert p.point_pillar.tolist() == [0, 0, 1]
    assert p.points[:, 4].tolist() == [1, 2, 3]


def test_unique_keys_equals_torch_unique() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (0, 1, 7, 500):
        keys = torch.randint(-20, 60, (n,), generator=gen)
        ref, ref_inv = torch.unique(keys, sorted=True, return_inverse=True)
        got, inv = unique_keys(keys, return_inverse=True)
        assert torch.equal(got, ref) and torch.equal(inv, ref_inv)
        assert torch.equal(unique_keys(keys)[0], ref) and unique_keys(keys)[1] is None
