"""Losses: AFD / PFD / detection against hand-computed cases, guards, gradient routing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from radardistill_ros.config import GridConfig, LossConfig, TargetConfig, load_config
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from training.losses import afd_loss, detection_loss, focal_heatmap_loss, pfd_loss, total_loss
from training.targets import build_targets


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --------------------------------------------------------------------------------------------
# AFD

# LiDAR F^ldr, C = 2, 3 x 3; channel sum [[2,0,0],[0,2,0],[0,0,3]] -> M^ldr active at (0,0),(1,1),(2,2)
F_LDR = torch.tensor([[[[1.0, 0, 0], [0, 2, 0], [0, 0, 0]],
                       [[1.0, 0, 0], [0, 0, 0], [0, 0, 3]]]])
# radar F^a, channel sum [[1,1,2],[1,3,0],[0,0,-1]] -> M^a active at (0,0),(0,1),(0,2),(1,0),(1,1)
F_A = torch.tensor([[[[1.0, 1, 2], [1, 0, 0], [0, 0, 0]],
                     [[0.0, 0, 0], [0, 3, 0], [0, 0, -1]]]])


def afd_by_hand(alpha: float, beta: float) -> float:
    # AR = {(0,0), (1,1)}: N_AR = 2;  IR = {(0,1), (0,2), (1,0)}: N_IR = 3;  rho = 2/3
    # (2,2) is LiDAR-active / radar-inactive: no feature term
    # sum_c (F^ldr - F^a)^2: (0,0) 0 + 1 = 1; (1,1) 4 + 9 = 13; (0,1) 1; (0,2) 4; (1,0) 1
    l_low = alpha * (1 + 13) + (2 / 3) * beta * (1 + 4 + 1)
    # |M^ldr - sigmoid(sum_c F^a)| over the 9 cells:
    # (0,0) 1-s(1); (0,1) s(1); (0,2) s(2); (1,0) s(1); (1,1) 1-s(3); (1,2),(2,0),(2,1) s(0)=0.5;
    # (2,2) 1-s(-1) = s(1)
    l_mask = ((1 - sig(1)) + sig(1) + sig(2) + sig(1) + (1 - sig(3)) + 1.5 + sig(1)) / 9
    return l_low, l_mask


def test_afd_hand_case() -> None:
    alpha, beta = 0.3, 0.15  # rho * beta = 0.1; l_low = 0.3 * 14 + 0.1 * 6 = 4.8
    l_low, l_mask = afd_by_hand(alpha, beta)
    assert l_low == pytest.approx(4.8)
    assert l_mask == pytest.approx(0.5433711, abs=1e-6)
    got = afd_loss([F_A], F_LDR, alpha=alpha, beta=beta)
    assert got.item() == pytest.approx(0.5 * (l_low + l_mask), rel=1e-6)
    # two aligned maps: the second equal to the LiDAR map adds only its mask term
    l_mask2 = ((1 - sig(2)) + (1 - sig(2)) + (1 - sig(3)) + 6 * 0.5) / 9
    got2 = afd_loss([F_A, F_LDR.clone()], F_LDR, alpha=alpha, beta=beta)
    assert got2.item() == pytest.approx(0.5 * (l_low + l_mask + l_mask2), rel=1e-6)
    # a batch of two copies: counts double (same rho), sums / B and means unchanged
    got_b = afd_loss([F_A.repeat(2, 1, 1, 1)], F_LDR.repeat(2, 1, 1, 1), alpha=alpha, beta=beta)
    assert got_b.item() == pytest.approx(got.item(), rel=1e-6)
    # paper defaults
    l_low, l_mask = afd_by_hand(3e-4, 5e-5)
    assert afd_loss([F_A], F_LDR).item() == pytest.approx(0.5 * (l_low + l_mask), rel=1e-6)


def test_afd_rho_guard_no_inactive_region() -> None:
    # radar active only where LiDAR is active: N_IR = 0 -> finite
    f_a = F_LDR * 0.5
    val = afd_loss([f_a], F_LDR)
    assert torch.isfinite(val)
    # nothing active anywhere: N_AR = N_IR = 0
    zeros = torch.zeros_like(F_LDR)
    val0 = afd_loss([zeros], zeros)
    assert torch.isfinite(val0) and val0.item() == pytest.approx(0.5 * 0.5)  # mask term |0 - s(0)|


def test_afd_gradients_reach_radar_only() -> None:
    gen = torch.Generator().manual_seed(0)
    f_a = [torch.randn(2, 4, 5, 5, generator=gen).requires_grad_(True) for _ in range(2)]
    f_l = torch.randn(2, 4, 5, 5, generator=gen).requires_grad_(True)
    afd_loss(f_a, f_l).backward()
    assert f_l.grad is None
    assert all(f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in f_a)


# --------------------------------------------------------------------------------------------
# PFD

def pfd_case() -> tuple[torch.Tensor, ...]:
    # GT heatmap, 2 classes on a 2 x 2 map; class-agnostic max [[1.0, 0.5], [0.0, 0.0]]
    gt = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]], [[0.2, 0.0], [0.05, 0.0]]]])
    # radar probabilities, max over classes [[0.9, 0.05], [0.6, 0.01]]
    p = torch.tensor([[[[0.9, 0.05], [0.6, 0.01]], [[0.3, 0.02], [0.01, 0.01]]]])
    logits = torch.log(p / (1 - p))
    # TP = (0,0); FN = (0,1); FP = (1,0); (1,1) nothing
    # M^scale: lambda1 / (N_TP + N_FN) = 5 / 2 on (0,0),(0,1); lambda2 / N_FP = 1 on (1,0)
    # features C = 2: with a = (f0 - f1) / tau the softmax is (s(a), 1 - s(a)),
    # sum_c |S^ldr - S^h| = 2 |s(a_ldr) - s(a_h)|
    f_ldr = torch.tensor([[[[1.0, 0.0], [0.5, 3.0]], [[0.0, 1.0], [0.0, 0.0]]]])  # a = 2, -2, 1, 6
    f_h = torch.tensor([[[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.5, 3.0]]]])    # a = 0, 0, -1, -6
    return gt, logits, f_ldr, f_h


def test_pfd_hand_case() -> None:
    gt, logits, f_ldr, f_h = pfd_case()
    d00 = 2 * abs(sig(2) - 0.5)      # 0.7615942
    d01 = 2 * abs(sig(-2) - 0.5)     # 0.7615942
    d10 = 2 * abs(sig(1) - sig(-1))  # 0.9242344
    l_high = 2.5 * (d00 + d01) + 1.0 * d10
    assert l_high == pytest.approx(4.7322054, abs=1e-6)
    got = pfd_loss([f_h], [f_ldr], gt, logits)
    assert got.item() == pytest.approx(0.5 * l_high, rel=1e-5)
    # two high-level maps (the second identical to the LiDAR one adds 0)
    got2 = pfd_loss([f_h, f_ldr.clone()], [f_ldr, f_ldr], gt, logits)
    assert got2.item() == pytest.approx(0.5 * l_high, rel=1e-5)


def test_pfd_empty_regions_finite() -> None:
    gt, logits, f_ldr, f_h = pfd_case()
    # radar silent everywhere: no TP, no FP; FN = (0,0),(0,1) with 5/2 each
    silent = torch.full_like(logits, -20.0)
    got = pfd_loss([f_h], [f_ldr], gt, silent)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(0.5 * 2.5 * (2 * abs(sig(2) - 0.5) + 2 * abs(sig(-2) - 0.5)), rel=1e-5)
    # no GT and no radar predictions at all -> 0
    zero = pfd_loss([f_h], [f_ldr], torch.zeros_like(gt), silent)
    assert torch.isfinite(zero) and zero.item() == 0.0


def test_pfd_gradients_reach_radar_features_only() -> None:
    gt, logits, f_ldr, f_h = pfd_case()
    f_h = f_h.clone().requires_grad_(True)
    f_ldr = f_ldr.clone().requires_grad_(True)
    logits = logits.clone().requires_grad_(True)
    pfd_loss([f_h], [f_ldr], gt, logits).backward()
    assert f_ldr.grad is None and logits.grad is None  # regions are a selection, not a target
    assert torch.isfinite(f_h.grad).all() and f_h.grad.abs().sum() > 0
    assert f_h.grad[0, :, 1, 1].abs().sum() == 0  # outside TP u FN u FP: no gradient


# --------------------------------------------------------------------------------------------
# detection

GRID = GridConfig(point_cloud_range=(-4.8, -4.8, -5.0, 4.8, 4.8, 3.0), pillar_size=(0.3, 0.3), out_stride=2)
H = W = 16


def test_focal_loss_hand_case() -> None:
    # p = 0.5 everywhere; y = 1: -(1 - p)^2 log p = 0.25 ln 2; y = 0.5: -(1 - y)^4 p^2 log(1 - p)
    logits = torch.zeros(1, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.5]]]])
    expected = 0.25 * math.log(2) + 0.0625 * 0.25 * math.log(2)
    assert focal_heatmap_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    # no positives: normalised by 1
    assert focal_heatmap_loss(logits, torch.zeros_like(target)).item() == pytest.approx(
        2 * 0.25 * math.log(2), rel=1e-6)


def one_task_case(max_objects: int = 3):
    gen = torch.Generator().manual_seed(0)
    iy, ix = 5, 7
    reg_t = torch.tensor([0.25, 0.5, 0.7, math.log(4.0), math.log(2.0), math.log(1.5), 1.0, 0.0, 2.0, 0.0])
    # x = -4.8 + 7.25 * 0.6 = -0.45, y = -4.8 + 5.5 * 0.6 = -1.5
    box_t = torch.tensor([-0.45, -1.5, 0.7, 4.0, 2.0, 1.5, 0.0, 2.0, 0.0])
    heatmap = torch.zeros(1, 1, H, W)
    heatmap[0, 0, iy, ix] = 1.0
    target = {
        "heatmap": heatmap,
        "ind": torch.tensor([[iy * W + ix, 0, 0][:max_objects]]),
        "mask": torch.tensor([[True, False, False][:max_objects]]),
        "cls": torch.zeros(1, max_objects, dtype=torch.long),
        "reg": torch.randn(1, max_objects, 10, generator=gen),  # padding slots hold garbage
        "boxes": torch.randn(1, max_objects, 9, generator=gen),
    }
    target["reg"][0, 0] = reg_t
    target["boxes"][0, 0] = box_t
    pred = reg_t.clone()
    pred[0] += 0.1   # dx off by 0.1 cell (0.06 m): weight 1
    pred[6] = 1.2    # cos off by 0.2 (yaw still 0): weight 0.2
    pred[8] += 0.5   # vx off by 0.5: weight 1
    out = {
        "hm": torch.zeros(1, 1, H, W),  # p = 0.5 everywhere
        "center": torch.zeros(1, 2, H, W), "center_z": torch.zeros(1, 1, H, W),
        "dim": torch.zeros(1, 3, H, W), "rot": torch.zeros(1, 2, H, W), "vel": torch.zeros(1, 2, H, W),
        "iou": torch.zeros(1, 1, H, W),
    }
    for key, sl in (("center", slice(0, 2)), ("center_z", slice(2, 3)), ("dim", slice(3, 6)),
                    ("rot", slice(6, 8)), ("vel", slice(8, 10))):
        out[key][0, :, iy, ix] = pred[sl]
    out["iou"][0, 0, iy, ix] = 0.5
    return out, target


def test_detection_loss_hand_case() -> None:
    out, target = one_task_case()
    total, parts = detection_loss([out], [target], GRID, LossConfig())
    # focal: 256 cells at p = 0.5, each 0.25 ln 2 (the positive and 255 negatives with y = 0), / 1
    assert parts["hm"].item() == pytest.approx(256 * 0.25 * math.log(2), rel=1e-5)
    # L1: 0.1 (dx) + 0.2 * 0.2 (cos) + 0.5 (vx) = 0.64, / 1 object, x 0.25
    assert parts["reg"].item() == pytest.approx(0.25 * 0.64, rel=1e-5)
    # pred box shifted 0.06 m along its length 4: IoU3D = 3.94 * 2 * 1.5 / (24 - 3.94 * 2 * 1.5)
    iou = 3.94 * 3.0 / (24.0 - 3.94 * 3.0)
    assert parts["iou"].item() == pytest.approx(abs(0.5 - (2 * iou - 1)), rel=1e-4)
    # DIoU: d^2 = 0.06^2, enclosing 4.06 x 2 x 1.5 -> c^2 = 4.06^2 + 4 + 2.25
    diou = iou - 0.06**2 / (4.06**2 + 4.0 + 2.25)
    assert parts["diou"].item() == pytest.approx(0.25 * (1 - diou), rel=1e-3, abs=1e-6)
    assert total.item() == pytest.approx(sum(v.item() for v in parts.values()), rel=1e-6)


def test_detection_loss_no_objects_finite_with_gradients() -> None:
    out, target = one_task_case()
    target["mask"][:] = False
    target["heatmap"].zero_()
    for v in out.values():
        v.requires_grad_(True)
    total, parts = detection_loss([out, out], [target, target], GRID, LossConfig())
    assert torch.isfinite(total)
    assert parts["reg"].item() == 0.0 and parts["iou"].item() == 0.0 and parts["diou"].item() == 0.0
    total.backward()
    assert all(v.grad is not None and torch.isfinite(v.grad).all() for v in out.values())


def test_detection_loss_gradients_through_boxes() -> None:
    out, target = one_task_case()
    for v in out.values():
        v.requires_grad_(True)
    total, _ = detection_loss([out], [target], GRID, LossConfig())
    total.backward()
    assert all(torch.isfinite(v.grad).all() for v in out.values())
    # the size channels get gradient only from DIoU (their L1 error is 0): the box path is live
    assert out["dim"].grad[0, :, 5, 7].abs().sum() > 0
    assert out["iou"].grad[0, 0, 5, 7].item() == pytest.approx(-1.0)  # d|0.5 - t| / d pred, pred < t


def test_detection_loss_zero_on_targets_from_target_builder() -> None:
    """Contract with training/targets.py: a head that outputs exactly the targets has zero
    regression, IoU (pred iou = 1) and DIoU loss, whatever the box position in its cell."""
    grid = load_config("paper").grid
    boxes = np.array([[1.0, -2.0, 0.9, 4.5, 1.9, 1.6, 0.5, 3.0, -1.0],
                      [-20.3, 7.7, 0.4, 0.6, 0.7, 1.8, -2.0, 0.5, 0.2]], dtype=np.float32)
    labels = np.array([CLASS_NAMES.index("car"), CLASS_NAMES.index("pedestrian")])
    tgts = build_targets(boxes, labels, grid, TargetConfig(max_objects=8))
    targets = [{k: torch.as_tensor(v)[None] for k, v in t.items()} for t in tgts]
    h, w = grid.bev_shape
    heads = []
    for names, t in zip(TASKS, targets):
        maps = torch.zeros(1, 10, h * w)
        ind, mask = t["ind"][0][t["mask"][0]], t["mask"][0]
        maps[0, :, ind] = t["reg"][0][mask].T
        maps = maps.reshape(1, 10, h, w)
        heads.append({"hm": torch.zeros(1, len(names), h, w), "center": maps[:, 0:2],
                      "center_z": maps[:, 2:3], "dim": maps[:, 3:6], "rot": maps[:, 6:8],
                      "vel": maps[:, 8:10], "iou": torch.ones(1, 1, h, w)})
    _, parts = detection_loss(heads, targets, grid, LossConfig())
    assert parts["reg"].item() < 1e-6
    assert parts["iou"].item() < 1e-4
    assert parts["diou"].item() < 1e-4


def test_total_loss() -> None:
    val = total_loss(torch.tensor(1.0), torch.tensor(0.1), torch.tensor(0.01))
    assert val.item() == pytest.approx(1.0 + 5 * 0.1 + 25 * 0.01)
    assert total_loss(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(1.0), gamma=2, delta=3).item() == 6.0
