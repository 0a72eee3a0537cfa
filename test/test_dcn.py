"""DCNv2 (gather and grid_sample formulations) against an explicit bilinear-interpolation reference
with torchvision.ops.deform_conv2d semantics."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from radardistill_ros.model.dcn import IMPLS, ModulatedDeformConv2d, deform_conv2d


def bilinear(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """img (C, H, W) at (y, x); corners outside the map count as zero; (C,)."""
    c, h, w = img.shape
    out = torch.zeros(c, dtype=img.dtype)
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return out
    y0, x0 = math.floor(y), math.floor(x)
    for yy in (y0, y0 + 1):
        for xx in (x0, x0 + 1):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + (1 - abs(y - yy)) * (1 - abs(x - xx)) * img[:, yy, xx]
    return out


def reference_dcn(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
    """Explicit loops: out[b, :, oy, ox] = sum_k W_k m_k x(p_0 + p_k + dp_k) + bias."""
    b_, _, _, _ = x.shape
    cout, _, kh, kw = weight.shape
    ho, wo = offset.shape[-2:]
    out = torch.zeros(b_, cout, ho, wo, dtype=x.dtype)
    for b in range(b_):
        for oy in range(ho):
            for ox in range(wo):
                acc = bias.clone()
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        py = oy * stride - padding + i + float(offset[b, 2 * k, oy, ox])
                        px = ox * stride - padding + j + float(offset[b, 2 * k + 1, oy, ox])
                        v = bilinear(x[b], py, px) * mask[b, k, oy, ox]
                        acc = acc + weight[:, :, i, j] @ v
                out[b, :, oy, ox] = acc
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("stride", "padding"), [(1, 1), (2, 1)])
def test_dcn_matches_explicit_reference(stride: int, padding: int, impl: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64)
    ho = (5 + 2 * padding - 3) // stride + 1
    wo = (6 + 2 * padding - 3) // stride + 1
    offset = 1.5 * torch.randn(2, 18, ho, wo, dtype=torch.float64)   # some samples leave the map
    offset[0, 0, 0, 0] = -7.0                                           # fully outside
    mask = torch.rand(2, 9, ho, wo, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    bias = torch.randn(4, dtype=torch.float64)
    got = deform_conv2d(x, offset, mask, weight, bias, stride, padding, impl)
    ref = reference_dcn(x, offset, mask, weight, bias, stride, padding)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_zero_offsets_unit_mask_is_a_plain_conv(impl: str) -> None:
    torch.manual_seed(1)
    x = torch.randn(1, 4, 7, 7)
    w = torch.randn(5, 4, 3, 3)
    off = torch.zeros(1, 18, 4, 4)
    got = deform_conv2d(x, off, torch.ones(1, 9, 4, 4), w, None, stride=2, padding=1, impl=impl)
    torch.testing.assert_close(got, F.conv2d(x, w, stride=2, padding=1), rtol=1e-5, atol=1e-5)


def test_gather_non_finite_offsets_read_zero_and_leave_other_outputs_alone() -> None:
    # a NaN/inf offset must not become an out-of-range gather index: that tap reads zero (the
    # sample is at or beyond the border), every other output is the reference's
    torch.manual_seed(4)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    offset = 0.8 * torch.randn(1, 18, 5, 5, dtype=torch.float64)
    mask = torch.rand(1, 9, 5, 5, dtype=torch.float64)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64)
    bad = offset.clone()
    bad[0, 0, 1, 1], bad[0, 3, 2, 2], bad[0, 5, 3, 3] = math.nan, math.inf, -math.inf
    got = deform_conv2d(x, bad, mask, weight, None, 1, 1, "gather")
    for oy, ox, tap in ((1, 1, 0), (2, 2, 1), (3, 3, 2)):
        offset[0, 2 * tap:2 * tap + 2, oy, ox] = -9.0  # the same tap fully outside the map
    ref = reference_dcn(x, offset, mask, weight, torch.zeros(3, dtype=torch.float64), 1, 1)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradients_reach_input_offsets_mask_and_weight(impl: str) -> None:
    torch.manual_seed(2)
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    offset = (0.7 * torch.randn(1, 18, 4, 4, dtype=torch.float64)).requires_grad_(True)
    mask = torch.rand(1, 9, 4, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    out = deform_conv2d(x, offset, mask, weight, None, 1, 1, impl)
    grads = torch.autograd.grad(out.square().sum(), (x, offset, mask, weight))
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    # numerically right too (offsets are away from integer kinks with probability 1)
    assert torch.autograd.gradcheck(lambda *a: deform_conv2d(*a, None, 1, 1, impl), (x, offset, mask, weight),
                                    eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_module_predicts_offsets_and_mask_and_trains(impl: str) -> None:
    torch.manual_seed(3)
    m = ModulatedDeformConv2d(4, 6, 3, stride=2, padding=1, impl=impl)
    x = torch.randn(1, 4, 9, 9)
    y = m(x)
    assert y.shape == (1, 6, 5, 5)
    # zero-initialised predictor: mask = sigmoid(0) = 0.5, offsets 0
    torch.testing.assert_close(y, 0.5 * F.conv2d(x, m.weight, stride=2, padding=1), rtol=1e-5, atol=1e-5)
    y.square().sum().backward()
    assert m.weight.grad is not None and m.conv_offset_mask.weight.grad is not None
    assert m.conv_offset_mask.weight.grad.abs().sum() > 0
