"""Modulated deformable convolution (DCNv2) in plain torch; no compiled extension.

Semantics of ``torchvision.ops.deform_conv2d`` (one offset group, dilation 1): for output (oy, ox)
and kernel tap k = (i, j) the input is sampled bilinearly at
``(oy*s - p + i + dy_k, ox*s - p + j + dx_k)`` (corners outside the map count as zero),
multiplied by the mask m_k and contracted with the weight. ``offset`` (B, 2*k*k, Ho, Wo)
interleaves (dy_k, dx_k) per tap, taps row-major; ``mask`` (B, k*k, Ho, Wo).

Two formulations, equal up to float rounding:

* ``"gather"`` (default): each of the four bilinear corners of every sample is gathered from
  the channels-last input with one ``index_select`` (the input has a zero border and sample
  positions are limited to it, so out-of-map corners read zeros without a bounds test),
  weighted by bilinear weight x mask and summed into the columns, then one GEMM. ONNX:
  Gather + Mul + Add + MatMul (platform.md: 2-3x faster than GridSample in ONNX Runtime; also
  ~3x faster in eager torch on CPU here). Summing corner by corner instead of stacking the four
  corners and reducing them avoids a 4x-sized temporary (ONNX Runtime ReduceSum over it cost
  ~40% of the DCN time).
* ``"grid_sample"``: ``F.grid_sample`` (bilinear, zeros padding, align_corners=False) of all
  k*k taps, mask multiply, one GEMM. ONNX: GridSample (opset >= 16).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMPLS = ("gather", "grid_sample")


def deform_conv2d(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride: int = 1, padding: int = 0, impl: str = "gather") -> Tensor:
    """DCNv2: x (B, Cin, H, W), weight (Cout, Cin, k, k) -> (B, Cout, Ho, Wo)."""
    if impl == "gather":
        return _deform_conv2d_gather(x, offset, mask, weight, bias, stride, padding)
    if impl != "grid_sample":
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    b, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    kk = kh * kw
    ho, wo = offset.shape[-2:]
    dev, dt = x.device, x.dtype
    oy = torch.arange(ho, device=dev, dtype=dt) * stride - padding
    ox = torch.arange(wo, device=dev, dtype=dt) * stride - padding
    ky, kx = torch.meshgrid(torch.arange(kh, device=dev, dtype=dt), torch.arange(kw, device=dev, dtype=dt),
                            indexing="ij")
    off = offset.view(b, kk, 2, ho, wo)
    py = ky.reshape(1, kk, 1, 1) + oy.view(1, 1, ho, 1) + off[:, :, 0]      # (B, K, Ho, Wo)
    px = kx.reshape(1, kk, 1, 1) + ox.view(1, 1, 1, wo) + off[:, :, 1]
    # align_corners=False: pixel centre i sits at (2i + 1)/size - 1
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)  # (B, K, Ho, Wo, 2)
    cols = F.grid_sample(x, grid.view(b, kk * ho, wo, 2), mode="bilinear", padding_mode="zeros",
                         align_corners=False)                                # (B, Cin, K*Ho, Wo)
    cols = cols.view(b, cin, kk, ho * wo) * mask.reshape(b, 1, kk, ho * wo)
    out = torch.matmul(weight.reshape(cout, cin * kk), cols.view(b, cin * kk, ho * wo))
    out = out.view(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, cout, 1, 1)
    return out


def _deform_conv2d_gather(x: Tensor, offset: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None,
                          stride: int, padding: int) -> Tensor:
    b, cin, h, w = x.shape
    cout, _, kh, kw = weight.shape
    kk = kh * kw
    ho, wo = offset.shape[-2:]
    dev, dt = x.device, x.dtype
    ky, kx = torch.meshgrid(torch.arange(kh, device=dev, dtype=dt), torch.arange(kw, device=dev, dtype=dt),
                            indexing="ij")
    off = offset.view(b, kk, 2, ho, wo).permute(0, 3, 4, 1, 2)                # (B, Ho, Wo, K, 2)
    py = (torch.arange(ho, device=dev, dtype=dt) * stride - padding).view(1, ho, 1, 1) \
        + ky.reshape(1, 1, 1, kk) + off[..., 0]                              # (B, Ho, Wo, K)
    px = (torch.arange(wo, device=dev, dtype=dt) * stride - padding).view(1, 1, wo, 1) \
        + kx.reshape(1, 1, 1, kk) + off[..., 1]
    m = mask.permute(0, 2, 3, 1)                                             # (B, Ho, Wo, K)
    # Zero border (1 before, 2 after each axis) and sample positions limited to [-1, H] x
    # [-1, W]: every corner then lies in the padded map, so no per-corner bounds test or
    # redirect to a zero row is needed; the limit changes no value (a position at or beyond -1
    # or H has bilinear value 0, as the limited one has) and maps NaN to -1 (comparisons are False).
    py = torch.where(py > -1.0, py, -1.0)
    py = torch.where(py < float(h), py, float(h))
    px = torch.where(px > -1.0, px, -1.0)
    px = torch.where(px < float(w), px, float(w))
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    hp, wp = h + 3, w + 3
    base = (torch.arange(b, device=dev) * (hp * wp)).view(b, 1, 1, 1)
    top_left = base + (y0.long() + 1) * wp + (x0.long() + 1)                # (B, Ho, Wo, K)
    rows = F.pad(x, (1, 2, 1, 2)).permute(0, 2, 3, 1).reshape(b * hp * wp, cin)
    n = b * ho * wo * kk
    cols = None
    for step, wc in ((0, (1 - ly) * (1 - lx)), (1, (1 - ly) * lx), (wp, ly * (1 - lx)), (wp + 1, ly * lx)):
        corner = rows.index_select(0, (top_left + step).reshape(-1))
        term = corner * (wc * m).reshape(n, 1)
        cols = term if cols is None else cols + term                         # (B*Ho*Wo*K, Cin)
    out = cols.view(b * ho * wo, kk * cin) @ weight.permute(0, 2, 3, 1).reshape(cout, kk * cin).t()
    if bias is not None:
        out = out + bias
    return out.view(b, ho, wo, cout).permute(0, 3, 1, 2)


class ModulatedDeformConv2d(nn.Module):
    """DCNv2 layer with its offset/mask predictor: Conv k x k (same stride) -> 3*k*k channels
    (dy/dx interleaved halves o1, o2 and mask logits), mask = sigmoid; predictor zero-initialised
    (a plain conv with mask 0.5 at start). ``impl``: formulation (not part of the state dict)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False, impl: str = "gather"):
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.stride, self.padding, self.kernel_size, self.impl = stride, padding, kernel_size, impl
        kk = kernel_size * kernel_size
        self.conv_offset_mask = nn.Conv2d(in_channels, 3 * kk, kernel_size, stride, padding, bias=True)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        o1, o2, m = torch.chunk(self.conv_offset_mask(x), 3, dim=1)
        return deform_conv2d(x, torch.cat((o1, o2), dim=1), torch.sigmoid(m), self.weight, self.bias,
                             self.stride, self.padding, self.impl)
