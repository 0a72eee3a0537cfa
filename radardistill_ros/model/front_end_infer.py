"""The pillar front end's CPU inference form: the same function as a batch-norm-folded
:class:`~radardistill_ros.model.detector.PillarFrontEnd` in fewer, cheaper steps.

What the node and the benchmarks run on CPU (:class:`~radardistill_ros.pipeline.RadarDetector`);
training, evaluation's reference and CUDA run the module itself. Per frame:

1. pillars: range filter, sorted unique pillar keys, each point's pillar and the decorated point
   features in one compiled loop (:func:`.pillars_cpu.pillar_points`; torch: ``pillarize`` +
   ``PillarVFE.point_features``, ~40 ops);
2. VFE: ``max over the pillar's points of relu(W x + b)``: one fused linear + ReLU and a compiled
   per-pillar max (:func:`.pillars_cpu.scatter_max`);
3. sparse encoder: per conv the same neighbour plan and column gather as the torch backend
   (:func:`.sparse.gather_columns`), then ONE fused GEMM: ``relu(cols W^T + b)`` for the first
   conv of a block and the strided downs, ``relu(cols W^T + b + x)`` (residual) for the second;
   (a block whose input is too large for the column matrix, ~100k pillars, runs as the module);
4. x_conv4 = the densified last stage (``SparseTensor.dense``).

The fused GEMMs are oneDNN's linear primitive with a pre-packed weight and the bias, ReLU and
residual add as post-ops (``torch.ops.mkldnn._linear_pointwise``, the kernel torch's inductor
emits for CPU linears). On the 2-core AMD EPYC development VM it ran the encoder's GEMM shapes
(P ~1.4-3k sites, K = 9 Cin = 144-288, N = 16-32) 1.2-1.5x faster than ``torch.addmm`` (MKL), and it
drops the separate bias/ReLU/add passes. Where torch has no oneDNN (or the op is missing) the
same arithmetic runs as ``addmm`` + in-place add/ReLU (:attr:`InferenceFrontEnd.gemm`). Results
equal the module's up to float summation order (``test/test_front_end_infer.py``: max |diff|
~1e-5 on x_conv4 maps of magnitude ~10).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor, nn

from radardistill_ros.model import pillars_cpu
from radardistill_ros.model.backbone import SparseBasicBlock, SparseDown
from radardistill_ros.model.sparse import SparseConv2d, SparseTensor, conv_output, gather_columns, gather_fits
from radardistill_ros.model.vfe import PillarVFE

__all__ = ["ROW_MULTIPLE", "FusedLinear", "InferenceFrontEnd", "onednn_linear_status"]

#: oneDNN builds (JIT-compiles) a kernel per GEMM shape and caches it: a frame with a new number
#: of active sites cost ~2.3x (1.27 vs 0.56 ms for a 2.2k x 216 x 24 GEMM). The column matrices
#: are padded with zero rows to a multiple of this, so frames reuse ~20-30 shapes per conv
#: (<= 127 extra rows, ~3% more arithmetic on radar frames).
ROW_MULTIPLE = 128


@functools.lru_cache(maxsize=1)
def onednn_linear_status() -> tuple[bool, str]:
    """(usable, reason): torch's oneDNN fused linear runs here and matches ``addmm``."""
    if not torch.backends.mkldnn.is_available():
        return False, "torch built without oneDNN (mkldnn)"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")):
        return False, "torch.ops.mkldnn._linear_pointwise / _reorder_linear_weight missing"
    try:
        g = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(s, generator=g) for s in ((7, 18), (5, 18), (5,)))
        r = torch.randn(7, 5, generator=g)
        packed = ops._reorder_linear_weight(w, None)
        ref = torch.addmm(b, x, w.t())
        ok = (torch.allclose(ops._linear_pointwise(x, packed, b, "relu", [], ""), ref.relu(), atol=1e-5)
              and torch.allclose(ops._linear_pointwise.binary(x, r, packed, b, "add"), ref + r, atol=1e-5))
    except Exception as e:  # RuntimeError from oneDNN on an unsupported CPU, ...
        return False, f"oneDNN linear failed: {type(e).__name__}: {e}"
    return (True, "oneDNN fused linear") if ok else (False, "oneDNN linear differs from addmm")


class FusedLinear:
    """``y = relu(x W^T + b [+ residual])`` for ``x (P, K)``, ``W (Cout, K)``, ``b (Cout,)``:
    oneDNN with a packed weight and fused post-ops where available, else ``addmm``."""

    def __init__(self, weight: Tensor, bias: Tensor, use_onednn: bool):
        self.weight_t = weight.detach().reshape(weight.shape[0], -1).t().contiguous()  # (K, Cout)
        self.bias = bias.detach().clone()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight_t.t().contiguous(), None) \
            if use_onednn else None

    def __call__(self, x: Tensor, residual: Tensor | None = None, rows: int | None = None) -> Tensor:
        """``rows``: only the first ``rows`` rows of ``x`` are wanted (the others pad ``x`` to a
        shape oneDNN has a kernel for); the result has ``rows`` rows (default: all of ``x``)."""
        n = x.shape[0] if rows is None else rows
        if self.packed is not None and x.shape[0] > 0:
            ops = torch.ops.mkldnn
            if residual is None:
                return ops._linear_pointwise(x, self.packed, self.bias, "relu", [], "")[:n]
            y = ops._linear_pointwise(x, self.packed, self.bias, "none", [], "")[:n]
        else:
            y = torch.addmm(self.bias, x[:n], self.weight_t)
        if residual is not None:
            y += residual
        return y.relu_()

    def warm_up(self, max_rows: int, row_multiple: int) -> None:
        """Create the kernels for every padded row count up to ``max_rows``."""
        for n in range(row_multiple, max_rows + 1, row_multiple):
            self(torch.zeros(n, self.weight_t.shape[0]))


class _FusedConv:
    """A folded :class:`SparseConv2d` (bias = the folded BN) with a fused ReLU [and residual]."""

    def __init__(self, conv: SparseConv2d, use_onednn: bool):
        if conv.bias is None:
            raise ValueError("InferenceFrontEnd needs batch-norm-folded convs (model.fuse.fold_front_end)")
        self.k, self.stride, self.padding, self.subm = conv.kernel_size, conv.stride, conv.padding, conv.subm
        self.linear = FusedLinear(conv.weight, conv.bias, use_onednn)  # weight (Cout, k, k, Cin) -> (Cout, K)

    def fits(self, x: SparseTensor) -> bool:
        """Whether ``x`` is small enough for the gather-GEMM form (:func:`.sparse.gather_fits`)."""
        return gather_fits(x, self.k, self.subm)

    def __call__(self, x: SparseTensor, residual: Tensor | None = None) -> SparseTensor:
        multiple = ROW_MULTIPLE if self.linear.packed is not None else 1
        cols, plan = gather_columns(x, self.k, self.stride, self.padding, self.subm, multiple)
        out = self.linear(cols, residual, rows=plan.out_indices.shape[0])
        return conv_output(x, out, plan.out_indices, plan.out_shape, self.k, self.stride, self.padding,
                           self.subm)


class InferenceFrontEnd:
    """CPU inference form of a batch-norm-folded ``PillarFrontEnd`` (module docstring).

    ``InferenceFrontEnd(fold_front_end(model.front_end))(points, batch_size)`` equals
    ``fold_front_end(model.front_end)(points, batch_size)`` (and the unfolded module in eval mode)
    up to float summation order. Stages for benchmarks: :meth:`pillars`, :meth:`vfe`,
    :meth:`encoder`. ``onednn``: None = use oneDNN where :func:`onednn_linear_status` says it works.
    """

    def __init__(self, front_end: nn.Module, onednn: bool | None = None):
        vfe = front_end.vfe
        if not isinstance(vfe, PillarVFE) or not isinstance(vfe.norm, nn.Identity):
            raise ValueError("InferenceFrontEnd needs a batch-norm-folded front end "
                             "(model.fuse.fold_front_end)")
        use = onednn_linear_status()[0] if onednn is None else bool(onednn)
        if use and not onednn_linear_status()[0]:
            raise RuntimeError(f"oneDNN linear unavailable: {onednn_linear_status()[1]}")
        self.gemm = "onednn" if use else "addmm"
        self.grid = front_end.grid
        r = self.grid.point_cloud_range
        self._range_min = np.asarray(r[:3], np.float32)
        self._range_max = np.asarray(r[3:], np.float32)
        self._pillar_size = np.asarray(self.grid.pillar_size, np.float32)
        self._z_centre = float(vfe.z_centre)
        self.num_point_features = vfe.num_point_features
        self.vfe_linear = FusedLinear(vfe.linear.weight, vfe.linear.bias, use)
        # (folded block, its fused convs): a block whose input is too large for the gather-GEMM
        # form (a pathological cloud: ~100k pillars) runs as the module (pair rulebook) instead
        self.layers: list[tuple[nn.Module, tuple[_FusedConv, ...]]] = []
        for stage in front_end.encoder.stages:
            for block in stage:
                if isinstance(block, SparseDown):
                    self.layers.append((block, (_FusedConv(block.conv, use),)))
                elif isinstance(block, SparseBasicBlock):
                    self.layers.append((block, (_FusedConv(block.conv1, use), _FusedConv(block.conv2, use))))
                else:
                    raise ValueError(f"unexpected encoder block {type(block).__name__}")

    def pillars(self, points: Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Points ``(N, 1 + F)`` -> (coords (P, 3) int64, point_pillar (N',) int64, decorated
        point features (N', F + 9) float32), as ``pillarize`` + ``PillarVFE.point_features``."""
        if points.device.type != "cpu":
            raise ValueError("InferenceFrontEnd runs on CPU tensors; use the front-end module on CUDA")
        if points.dim() != 2 or points.shape[1] != 1 + self.num_point_features:
            raise ValueError(f"points must be (N, 1 + {self.num_point_features}), got {tuple(points.shape)}")
        nx, ny = self.grid.pillar_grid
        pts = np.ascontiguousarray(points.detach().numpy(), dtype=np.float32)
        return pillars_cpu.pillar_points(pts, self._range_min, self._range_max, self._pillar_size, nx, ny,
                                         int(batch_size), self._z_centre)

    def vfe(self, coords: np.ndarray, point_pillar: np.ndarray, decorated: np.ndarray) -> Tensor:
        """Pillar features F^{2D} ``(P, C)``, rows aligned with ``coords``."""
        x = torch.from_numpy(decorated)
        n = x.shape[0]
        if self.vfe_linear.packed is not None and n % ROW_MULTIPLE:
            x = torch.cat((x, x.new_zeros(-n % ROW_MULTIPLE, x.shape[1])))
        y = self.vfe_linear(x, rows=n)
        return torch.from_numpy(pillars_cpu.scatter_max(y.numpy(), point_pillar, coords.shape[0]))

    def warm_up(self, max_rows: int = 4096) -> None:
        """Build the oneDNN kernels of every padded shape up to ``max_rows`` points / sites (a
        node's start-up, ~0.5 s), so that a frame with a new site count does not pay for it;
        also compiles the pillar kernels. Nothing to build for the ``addmm`` path."""
        self(torch.zeros(1, 1 + self.num_point_features), 1)
        if self.gemm != "onednn":
            return
        with torch.inference_mode():
            for linear in [self.vfe_linear] + [c.linear for _, convs in self.layers for c in convs]:
                linear.warm_up(max_rows, ROW_MULTIPLE)

    def encoder(self, x: SparseTensor) -> Tensor:
        """SparseEnc: F^{2D} -> x_conv4 (B, C4, H/8, W/8)."""
        for block, convs in self.layers:
            if not convs[0].fits(x):
                x = block(x)
            elif len(convs) == 1:
                x = convs[0](x)
            else:
                x = convs[1](convs[0](x), residual=x.features)
        return x.dense()

    def __call__(self, points: Tensor, batch_size: int) -> Tensor:
        """Points ``(N, 1 + F)`` [batch, features] -> x_conv4 = F^l ``(B, C4, H/8, W/8)``."""
        with torch.inference_mode():
            coords, point_pillar, decorated = self.pillars(points, batch_size)
            f2d = self.vfe(coords, point_pillar, decorated)
            ny, nx = self.grid.pillar_grid[1], self.grid.pillar_grid[0]
            return self.encoder(SparseTensor(f2d, torch.from_numpy(coords), (ny, nx), int(batch_size)))
