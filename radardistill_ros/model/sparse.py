"""Sparse 2D pillar tensors and sparse convolution with two interchangeable backends.

:class:`SparseTensor` holds the active sites of a BEV pillar grid: ``features (P, C)`` and
``indices (P, 3)`` = (batch, y, x) int64 on a grid of ``spatial_shape`` = (H, W).

:class:`SparseConv2d` is one module (submanifold 3x3 or strided regular sparse conv) with one
weight layout, spconv's ``(Cout, kh, kw, Cin)``, and two backends:

* ``"torch"``: plain torch. Active sites are hashed to int64 keys on the grid padded by the
  conv's padding; the neighbour table ``(P_out, kh*kw)`` of a conv is one key lookup (a dense
  key -> row table on small grids, sorted keys + ``searchsorted`` on large ones) of each output's
  base key plus a constant per-tap offset (CPU tensors on dense-table grids: the same table
  and the strided conv's output sites from the compiled loops of :mod:`.sparse_plan_cpu`, ~10x
  cheaper than these ~25 small ops per conv). It is built once per site set and conv geometry and
  cached on the :class:`SparseTensor` (every submanifold conv of a stage shares it). Small
  inputs (the radar front end) then gather every output's neighbours into ``(P_out,
  kh*kw*Cin)`` (absent neighbours read an appended zero row) and do ONE GEMM with the weight as
  ``(kh*kw*Cin, Cout)``: a handful of ops per conv, no scatter. Large inputs use a rulebook of
  (input, output) pairs per kernel tap instead (pairs gathered with ``index_select``, one GEMM
  per tap batched in one ``bmm``, the submanifold centre tap a plain GEMM, one ``index_add``),
  so work and memory follow the actual neighbour pairs. Either way equal to ``F.conv2d`` on the
  densified input at the active output sites (up to float summation order). CPU and CUDA,
  forward and backward.
* ``"spconv"``: spconv 2.x ``SubMConv2d`` / ``SparseConv2d``, ``algo=ConvAlgo.Native`` on CPU
  (strided convs race with more than one torch thread otherwise), spconv's default on CUDA.
  spconv's backward calls ``torch.cuda`` before its CPU branch and fails on CPU-only torch, so
  ``auto`` picks it only where CUDA is available.

Both backends own the same ``weight``/``bias`` parameters, so checkpoints load in either.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radardistill_ros.model import sparse_plan_cpu
from radardistill_ros.model.pillars import unique_keys

BACKENDS = ("torch", "spconv")


@dataclass
class SparseTensor:
    """Active sites of a (B, C, H, W) BEV grid.

    ``features`` (P, C); ``indices`` (P, 3) int64 = (batch, y, x); ``spatial_shape`` (H, W);
    ``cache`` holds neighbour tables shared by every tensor on the same sites (submanifold convs
    keep the sites, so consecutive layers reuse the table).
    """

    features: Tensor
    indices: Tensor
    spatial_shape: tuple[int, int]
    batch_size: int
    cache: dict[Any, Any] = field(default_factory=dict)

    def replace_features(self, features: Tensor) -> SparseTensor:
        """Same sites (and neighbour-table cache), new features (P, C')."""
        return SparseTensor(features, self.indices, self.spatial_shape, self.batch_size, self.cache)

    def keys(self) -> Tensor:
        """int64 site keys ``(b*H + y)*W + x`` (P,)."""
        return site_keys(self.indices, self.spatial_shape)

    def dense(self) -> Tensor:
        """Densify to (B, C, H, W) by scattering the features (zeros elsewhere)."""
        h, w = self.spatial_shape
        c = self.features.shape[1]
        flat = self.features.new_zeros(self.batch_size * h * w, c)
        flat = flat.index_copy(0, self.keys(), self.features)
        return flat.view(self.batch_size, h, w, c).permute(0, 3, 1, 2).contiguous()


def site_keys(indices: Tensor, spatial_shape: tuple[int, int]) -> Tensor:
    """int64 keys ``(b*H + y)*W + x`` of (P, 3) (batch, y, x) indices."""
    h, w = spatial_shape
    idx = indices.long()
    return (idx[:, 0] * h + idx[:, 1]) * w + idx[:, 2]


def _kernel_offsets(k: int, device: torch.device) -> Tensor:
    """(k*k, 2) kernel offsets (ky, kx), ky major (the order of the weight's (kh, kw) dims)."""
    r = torch.arange(k, device=device)
    return torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).reshape(-1, 2)


#: Grids with at most this many cells (batch included) use a dense int32 key -> row lookup
#: table (O(1) gathers); larger ones use sort + searchsorted (O(log P), no grid-sized allocation).
DENSE_LOOKUP_MAX_CELLS = 1 << 23

#: CPU tensors on such grids get their output sites and neighbour tables from the compiled loops
#: of :mod:`.sparse_plan_cpu` (same results, ~10x less time on radar frames); False: torch ops.
CPU_PLAN_KERNELS = True


def _use_cpu_kernels(indices: Tensor, n_cells: int) -> bool:
    return CPU_PLAN_KERNELS and indices.device.type == "cpu" and n_cells <= DENSE_LOOKUP_MAX_CELLS


def _np_indices(indices: Tensor) -> np.ndarray:
    """(P, 3) int64 numpy view (copy only if the tensor is not already contiguous int64)."""
    return indices.long().contiguous().numpy()


def dense_lookup_table(keys: Tensor, n_cells: int, missing: int = -1) -> Tensor:
    """int32 table of ``n_cells`` entries: the row of each key in ``keys``, ``missing`` elsewhere."""
    table = torch.full((n_cells,), missing, dtype=torch.int32, device=keys.device)
    table[keys] = torch.arange(keys.shape[0], dtype=torch.int32, device=keys.device)
    return table


def lookup_rows(keys: Tensor, queries: Tensor, n_cells: int, dense: bool | None = None,
                missing: int = -1) -> Tensor:
    """Row of each query key in ``keys`` (unique int64, any order), or ``missing`` where absent.

    ``queries`` must lie in [0, n_cells). ``dense``: force the lookup strategy (None = by size).
    """
    p = keys.shape[0]
    if p == 0:
        return torch.full_like(queries, missing)
    if dense if dense is not None else n_cells <= DENSE_LOOKUP_MAX_CELLS:
        return dense_lookup_table(keys, n_cells, missing)[queries].long()
    sorted_keys, order = torch.sort(keys)
    pos = torch.searchsorted(sorted_keys, queries).clamp_(max=p - 1)
    return torch.where(sorted_keys[pos] == queries, order[pos], missing)


def _neighbour_table(in_indices: Tensor, in_shape: tuple[int, int], batch_size: int, out_indices: Tensor,
                     k: int, stride: int, padding: int, missing: int = -1,
                     cache: dict[Any, Any] | None = None) -> Tensor:
    """Input row feeding output site o through kernel tap (ky, kx), or ``missing`` where none.

    Input position of tap (ky, kx) at output (y, x) is (y*s - p + ky, x*s - p + kx) (F.conv2d's
    cross-correlation). Sites are keyed on the grid padded by p on every side, (H + 2p, W + 2p),
    where every tap of every output lands inside (the padding holds no active site), so a tap's
    key is the output's base key plus a constant offset ``ky*(W + 2p) + kx``.
    ``cache`` (the input's :attr:`SparseTensor.cache`), torch path only: the dense key -> row table
    is kept there and reused by every conv with the same padding on these input sites (a stage's
    submanifold convs and the strided conv that leaves it); the compiled CPU path refills its own
    table per plan (~20-40 us on radar grids, cheaper than keeping it). Returns (P_out, k*k) int64.
    """
    h, w = in_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    n_cells = batch_size * hp * wp
    if _use_cpu_kernels(in_indices, n_cells):
        return torch.from_numpy(sparse_plan_cpu.neighbour_rows(
            _np_indices(in_indices), h, w, batch_size, _np_indices(out_indices), k, stride, padding, missing))
    idx = in_indices.long()
    in_keys = (idx[:, 0] * hp + idx[:, 1] + padding) * wp + idx[:, 2] + padding
    o = out_indices.long()
    base = (o[:, 0] * hp + o[:, 1] * stride) * wp + o[:, 2] * stride
    r = torch.arange(k, device=in_indices.device)
    off = (r[:, None] * wp + r[None, :]).reshape(-1)                   # (K,), ky major
    queries = base[:, None] + off[None]
    if cache is None or n_cells > DENSE_LOOKUP_MAX_CELLS:
        return lookup_rows(in_keys, queries, n_cells, missing=missing)
    key = ("lookup", padding, missing)
    if key not in cache:
        cache[key] = dense_lookup_table(in_keys, n_cells, missing)
    return cache[key][queries].long()


def _strided_out_sites(indices: Tensor, in_shape: tuple[int, int], batch_size: int, k: int, stride: int,
                       padding: int) -> tuple[Tensor, tuple[int, int]]:
    """Active output sites of a regular (non-submanifold) conv: every output position whose
    receptive field holds an active input. Returns sorted (P_out, 3) indices and (H_out, W_out).

    Per axis, input coordinate y feeds the outputs o with ``y + p - t = o * s`` for a tap t in
    [0, k), i.e. o in [ceil((y + p - k + 1) / s), floor((y + p) / s)] (clipped to the map): at
    most ``m = ceil(k / s)`` outputs per axis, so each input proposes m*m candidate sites (4 for
    k3 s2, instead of testing all k*k taps), made unique by marking them in a boolean (B, Ho, Wo)
    map on small grids (its nonzero positions are the sorted sites; ~2.5x faster than a sort of
    ~6k keys) or by :func:`unique_keys` on large ones. Intermediates are laid out (m, [m,] P), P
    innermost: CPU kernels vectorise over P (broadcasts with a trailing dim of 2 ran ~10x slower).
    """
    h, w = in_shape
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    if _use_cpu_kernels(indices, batch_size * ho * wo):
        sites = sparse_plan_cpu.strided_out_sites(_np_indices(indices), h, w, batch_size, k, stride, padding)
        return torch.from_numpy(sites), (ho, wo)
    j = torch.arange(-(-k // stride), device=indices.device)[:, None]  # (m, 1)

    def axis(c: Tensor, n_out: int) -> tuple[Tensor, Tensor]:
        """Candidate outputs (m, P) along one axis and whether each exists."""
        c = c + padding
        lo = torch.div(c - (k - 1) + (stride - 1), stride, rounding_mode="floor").clamp_(min=0)
        hi = torch.div(c, stride, rounding_mode="floor").clamp_(max=n_out - 1)
        o = lo + j
        return o, o <= hi

    oy, vy = axis(indices[:, 1], ho)
    ox, vx = axis(indices[:, 2], wo)
    keys = (indices[:, 0] * ho + oy)[:, None] * wo + ox[None]           # (m, m, P)
    keys = keys[vy[:, None] & vx[None]]
    if batch_size * ho * wo <= DENSE_LOOKUP_MAX_CELLS:  # mark a (B, Ho, Wo) map; nonzero = sorted sites
        mask = torch.zeros(batch_size, ho, wo, dtype=torch.bool, device=indices.device)
        mask.view(-1)[keys] = True
        return mask.nonzero(), (ho, wo)
    keys, _ = unique_keys(keys)
    return torch.stack((keys // (ho * wo), (keys // wo) % ho, keys % wo), dim=1), (ho, wo)


@dataclass(frozen=True)
class Rulebook:
    """Gather/GEMM/scatter plan of one conv on one site set.

    The (input row -> output row) pairs of kernel tap ``taps[t]`` fill slots ``t*M .. t*M + n_t``
    of ``gather_idx`` / ``scatter_idx`` (M = the largest pair count of a tap); unused slots gather
    the appended zero row (index P_in) and scatter onto row 0, adding exact zeros. For a
    submanifold conv the centre tap (identity) is left out (``centre`` = its index, else -1).
    """

    gather_idx: Tensor
    scatter_idx: Tensor
    taps: Tensor
    max_pairs: int
    centre: int
    out_indices: Tensor
    out_shape: tuple[int, int]


def build_rulebook(indices: Tensor, spatial_shape: tuple[int, int], batch_size: int, k: int, stride: int,
                   padding: int, subm: bool) -> Rulebook:
    """Neighbour table (site-key lookup) -> per-tap pair lists, padded to a common length."""
    if subm:
        out_idx, out_shape = indices, spatial_shape
    else:
        out_idx, out_shape = _strided_out_sites(indices, spatial_shape, batch_size, k, stride, padding)
    table = _neighbour_table(indices, spatial_shape, batch_size, out_idx, k, stride, padding)
    table = table.t()                                                                 # (K, P_out)
    centre = (k // 2) * k + k // 2 if subm else -1
    taps = torch.arange(k * k, device=indices.device)
    if centre >= 0:
        taps = taps[taps != centre]
        table = table[taps]
    found = table >= 0
    counts = found.sum(1)
    m = int(counts.max()) if counts.numel() else 0
    slot = (torch.cumsum(found, dim=1) - 1 + taps.new_tensor(range(len(taps)))[:, None] * m)[found]
    gather = torch.full((len(taps) * m,), indices.shape[0], dtype=torch.int64, device=indices.device)
    scatter = torch.zeros(len(taps) * m, dtype=torch.int64, device=indices.device)
    gather[slot] = table[found]
    scatter[slot] = found.nonzero()[:, 1]
    return Rulebook(gather, scatter, taps, m, centre, out_idx, out_shape)


#: Gather-GEMM ("implicit GEMM") path while the gathered (P_out, k*k*Cin) matrix stays under
#: this many elements: one neighbour gather + one GEMM per conv (a few ops, no scatter); larger
#: inputs use the pair rulebook (work and memory follow the actual neighbour pairs).
GATHER_GEMM_MAX_ELEMS = 1 << 24


@dataclass(frozen=True)
class NeighbourPlan:
    """Neighbour table of one conv on one site set: ``rows`` (P_out * k*k,) int64, the input row
    of each (output site, tap) with absent neighbours pointing at the appended zero row P_in."""

    rows: Tensor
    out_indices: Tensor
    out_shape: tuple[int, int]


def build_neighbour_plan(indices: Tensor, spatial_shape: tuple[int, int], batch_size: int, k: int,
                         stride: int, padding: int, subm: bool,
                         cache: dict[Any, Any] | None = None) -> NeighbourPlan:
    """Output sites and their (P_out, k*k) neighbour rows, -1 -> P_in (the zero row);
    ``cache``: see :func:`_neighbour_table`."""
    if subm:
        out_idx, out_shape = indices, spatial_shape
    else:
        out_idx, out_shape = _strided_out_sites(indices, spatial_shape, batch_size, k, stride, padding)
    rows = _neighbour_table(indices, spatial_shape, batch_size, out_idx, k, stride, padding,
                            missing=indices.shape[0], cache=cache)
    return NeighbourPlan(rows.reshape(-1), out_idx, out_shape)


def torch_sparse_conv(x: SparseTensor, weight: Tensor, bias: Tensor | None, stride: int,
                      padding: int, subm: bool) -> SparseTensor:
    """Plain-torch sparse conv; ``weight`` (Cout, k, k, Cin); see the module docstring.

    Small inputs: gather every output site's k*k neighbours into (P_out, k*k*Cin) (absent ones
    read an appended zero row) and do one GEMM with the weight as (k*k*Cin, Cout). Large inputs:
    the pair rulebook (gather pairs per tap, one batched GEMM, one ``index_add``). The neighbour
    plan / rulebook is built once per site set and conv geometry and cached on the tensor (every
    submanifold conv of a stage shares it; a strided conv's output shares one cache per frame).
    """
    k = weight.shape[1]
    cout, cin = weight.shape[0], weight.shape[3]
    feats = x.features
    if gather_fits(x, k, subm):
        cols, plan = gather_columns(x, k, stride, padding, subm)
        w2 = weight.reshape(cout, k * k * cin).t()
        out = torch.addmm(bias, cols, w2) if bias is not None else cols @ w2
        out_indices, out_shape = plan.out_indices, plan.out_shape
    else:
        key = ("rulebook", k, stride, padding, subm)
        rb = x.cache.get(key)
        if rb is None:
            rb = build_rulebook(x.indices, x.spatial_shape, x.batch_size, k, stride, padding, subm)
            x.cache[key] = rb
        w = weight.reshape(cout, k * k, cin)                                         # (Cout, K, Cin)
        if rb.centre >= 0:
            out = feats @ w[:, rb.centre].t()
        else:
            out = feats.new_zeros(rb.out_indices.shape[0], cout)
        if rb.max_pairs:
            padded = torch.cat((feats, feats.new_zeros(1, cin)), dim=0)
            cols = padded.index_select(0, rb.gather_idx).view(len(rb.taps), rb.max_pairs, cin)
            prod = torch.bmm(cols, w[:, rb.taps].permute(1, 2, 0))                   # (K', M, Cout)
            out = out.index_add(0, rb.scatter_idx, prod.reshape(-1, cout))
        if bias is not None:
            out = out + bias
        out_indices, out_shape = rb.out_indices, rb.out_shape
    return conv_output(x, out, out_indices, out_shape, k, stride, padding, subm)


def gather_fits(x: SparseTensor, k: int, subm: bool) -> bool:
    """Whether the gather-GEMM form's (P_out, k*k*Cin) column matrix stays under
    :data:`GATHER_GEMM_MAX_ELEMS` (else the pair rulebook is used)."""
    n_out_est = x.indices.shape[0] * (1 if subm else k * k)
    return n_out_est * k * k * x.features.shape[1] <= GATHER_GEMM_MAX_ELEMS


def gather_columns(x: SparseTensor, k: int, stride: int, padding: int, subm: bool, row_multiple: int = 1
                   ) -> tuple[Tensor, NeighbourPlan]:
    """The gather-GEMM form's columns ``(P_out, k*k*Cin)`` (row o = the features of output o's
    k*k neighbours, tap-major, zeros where absent) and the neighbour plan (built once per site
    set and conv geometry, cached on ``x``): ``conv = columns @ W.reshape(Cout, k*k*Cin).T``.
    ``row_multiple`` > 1 appends zero rows up to the next multiple (kernels specialised per
    shape, see ``front_end_infer``); rows past ``plan.out_indices`` are then not sites."""
    key = ("nbr", k, stride, padding, subm)
    plan = x.cache.get(key)
    if plan is None:
        plan = build_neighbour_plan(x.indices, x.spatial_shape, x.batch_size, k, stride, padding, subm,
                                    x.cache)
        x.cache[key] = plan
    feats = x.features
    cin = feats.shape[1]
    rows = plan.rows
    if row_multiple > 1:
        n_out = plan.out_indices.shape[0]
        extra = -n_out % row_multiple
        if extra:
            pkey = ("nbr_rows", k, stride, padding, subm, row_multiple)
            rows = x.cache.get(pkey)
            if rows is None:  # the extra rows read the zero row (index P_in)
                rows = torch.cat((plan.rows, plan.rows.new_full((extra * k * k,), feats.shape[0])))
                x.cache[pkey] = rows
    if CPU_PLAN_KERNELS and feats.device.type == "cpu" and feats.dtype == torch.float32 \
            and not (feats.requires_grad and torch.is_grad_enabled()):
        cols = torch.empty(rows.shape[0], cin)  # compiled gather: no zero-row concatenation
        sparse_plan_cpu.gather_rows(feats.detach().contiguous().numpy(), rows.numpy(), cols.numpy())
        return cols.view(-1, k * k * cin), plan
    padded = torch.cat((feats, feats.new_zeros(1, cin)), dim=0)
    return padded.index_select(0, rows).view(-1, k * k * cin), plan


def conv_output(x: SparseTensor, out: Tensor, out_indices: Tensor, out_shape: tuple[int, int], k: int,
                stride: int, padding: int, subm: bool) -> SparseTensor:
    """The sparse tensor of a conv's output features: the input's sites (and plan cache) for a
    submanifold conv, else the strided output sites with one shared cache per frame."""
    if subm:
        return x.replace_features(out)
    cache = x.cache.setdefault(("out_cache", k, stride, padding), {})
    return SparseTensor(out, out_indices, out_shape, x.batch_size, cache)


# ------------------------------------------------------------------------------------------
# spconv backend


@functools.lru_cache(maxsize=1)
def spconv_status() -> tuple[bool, str]:
    """(usable, reason): spconv imports and its forward runs on this machine."""
    try:
        import spconv.pytorch as spconv  # noqa: F401
    except Exception as e:  # ImportError, OSError (missing CUDA libs), ...
        return False, f"spconv not importable: {type(e).__name__}: {e}"
    return True, "spconv importable"


def spconv_backward_ok() -> bool:
    """spconv backward needs CUDA-enabled torch (CPU-only torch: AssertionError in backward)."""
    return torch.cuda.is_available()


def resolve_backend(name: str) -> str:
    """``auto`` -> ``spconv`` where CUDA torch and spconv work, else ``torch``."""
    if name == "auto":
        return "spconv" if spconv_backward_ok() and spconv_status()[0] else "torch"
    if name not in BACKENDS:
        raise ValueError(f"sparse backend must be auto|torch|spconv, got {name!r}")
    if name == "spconv" and not spconv_status()[0]:
        raise RuntimeError(f"sparse_backend 'spconv' unavailable ({spconv_status()[1]}); "
                           "install spconv (e.g. spconv-cu120) or use sparse_backend: torch")
    return name


def _spconv_forward(conv: SparseConv2d, x: SparseTensor) -> SparseTensor:
    import spconv.pytorch as spconv
    from spconv.core import ConvAlgo

    if x.features.device.type == "cpu" and torch.is_grad_enabled() and conv.weight.requires_grad \
            and not torch.cuda.is_available():
        raise RuntimeError("spconv backward fails on CPU-only torch; use sparse_backend 'torch' "
                           "for training, or run under torch.no_grad()")
    cls = spconv.SubMConv2d if conv.subm else spconv.SparseConv2d
    # Native on CPU (the other algorithms race / are GPU-only there); spconv's default on CUDA.
    algo = ConvAlgo.Native if x.features.device.type == "cpu" else None
    impl = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
               padding=conv.padding, bias=conv.bias is not None, algo=algo,
               indice_key=f"subm{conv.kernel_size}" if conv.subm else None)
    # Share our parameters (not registered as a submodule: the state dict stays ours).
    del impl.weight
    impl.weight = conv.weight
    if conv.bias is not None:
        del impl.bias
        impl.bias = conv.bias
    impl.train(conv.training)
    st = spconv.SparseConvTensor(x.features.contiguous(), x.indices.int().contiguous(),
                                 list(x.spatial_shape), x.batch_size)
    st.indice_dict = x.cache.setdefault("spconv", {}) if conv.subm else {}
    out = impl(st)
    if conv.subm:
        x.cache["spconv"].update(out.indice_dict)
        return x.replace_features(out.features)
    shape = tuple(int(s) for s in out.spatial_shape)
    return SparseTensor(out.features, out.indices.long(), shape, x.batch_size)


# ------------------------------------------------------------------------------------------
# module


class SparseConv2d(nn.Module):
    """Sparse 2D convolution, weight (Cout, k, k, Cin) (spconv layout), backend-independent.

    ``subm=True``: submanifold conv (stride 1, padding k//2; output sites = input sites).
    ``subm=False``: regular sparse conv; output sites = every position whose receptive field
    holds an active input (spconv ``SparseConv2d``), shape as F.conv2d(stride, padding).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, subm: bool = False, bias: bool = False, backend: str = "torch"):
        super().__init__()
        if subm and (stride != 1 or padding != kernel_size // 2):
            raise ValueError("submanifold conv needs stride 1 and padding kernel_size // 2")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.subm = kernel_size, stride, padding, subm
        self.weight = nn.Parameter(torch.empty(out_channels, kernel_size, kernel_size, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.backend = resolve_backend(backend)
        fan_in = in_channels * kernel_size * kernel_size
        nn.init.kaiming_uniform_(self.weight.view(out_channels, -1), a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, k={self.kernel_size}, s={self.stride}, "
                f"p={self.padding}, subm={self.subm}, backend={self.backend}")

    def conv2d_weight(self) -> Tensor:
        """The same weight in F.conv2d layout (Cout, Cin, k, k)."""
        return self.weight.permute(0, 3, 1, 2)

    def forward(self, x: SparseTensor) -> SparseTensor:
        if self.backend == "spconv":
            return _spconv_forward(self, x)
        return torch_sparse_conv(x, self.weight, self.bias, self.stride, self.padding, self.subm)


def set_sparse_backend(module: nn.Module, backend: str) -> None:
    """Switch every :class:`SparseConv2d` in ``module`` to ``backend`` (weights unchanged)."""
    name = resolve_backend(backend)
    for m in module.modules():
        if isinstance(m, SparseConv2d):
            m.backend = name


class SparseBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d over the active sites' features (P, C)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace_features(super().forward(x.features))


def sparse_relu(x: SparseTensor) -> SparseTensor:
    """ReLU on the active sites."""
    return x.replace_features(F.relu(x.features))
