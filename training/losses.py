"""Losses of RadarDistill (CVPR 2024): detection (CenterPoint head with IoU branch), AFD, PFD.

Pure functions of tensors; symbols follow the paper (reference digest sections 2, 4, 5, 6):

    L = L_det + gamma * L_AFD + delta * L_PFD                      (gamma = 5, delta = 25)

LiDAR (teacher) inputs are detached inside the distillation losses: gradients reach the radar
(student) features only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from radardistill_ros.box_ops import diou3d_aligned, iou3d_aligned
from radardistill_ros.config import GridConfig, LossConfig
from radardistill_ros.decode import gather_cells, head_regression, regression_to_boxes

__all__ = ["afd_loss", "detection_loss", "focal_heatmap_loss", "pfd_loss", "total_loss"]

#: Heatmap probability clamp (CenterNet focal loss, PFD class-agnostic map).
_P_MIN, _P_MAX = 1e-4, 1.0 - 1e-4


def afd_loss(aligned: Sequence[Tensor], lidar_low: Tensor, alpha: float = 3e-4, beta: float = 5e-5) -> Tensor:
    """Activation-based Feature Distillation L_AFD, eqs. 4-12.

    For each aligned radar map F^{a(n)} ``(B, C, H, W)`` against the LiDAR low-level map
    F^{ldr} ``(B, C, H, W)``: channel sums F_ij = sum_c F_cij, active masks M = (F_ij > 0);
    AR(n) = M^{a(n)} & M^{ldr}, IR(n) = M^{a(n)} & ~M^{ldr}; rho(n) = N_AR / N_IR (counted over
    the batch; 0 when N_IR = 0, where IR is empty and rho unused);
    M^sep = alpha on AR, rho * beta on IR, 0 elsewhere;
    L_low(n) = sum_{c,i,j} M^sep_ij (F^{ldr}_cij - F^{a(n)}_cij)^2 / B;
    L_mask(n) = mean_{b,i,j} |M^{ldr}_ij - sigmoid(F^{a(n)}_ij)|;
    L_AFD = 1/2 * sum_n (L_low(n) + L_mask(n)).
    """
    f_ldr = lidar_low.detach().float()
    m_ldr = f_ldr.sum(dim=1) > 0  # (B, H, W)
    total = f_ldr.new_zeros(())
    for f_a in aligned:
        if f_a.shape != f_ldr.shape:
            raise ValueError(f"afd_loss: aligned map {tuple(f_a.shape)} != LiDAR map {tuple(f_ldr.shape)}")
        f_a = f_a.float()
        s_a = f_a.sum(dim=1)  # (B, H, W)
        with torch.no_grad():
            m_a = s_a > 0
            ar = m_a & m_ldr
            ir = m_a & ~m_ldr
            n_ar, n_ir = ar.sum().float(), ir.sum().float()
            rho = torch.where(n_ir > 0, n_ar / n_ir.clamp_min(1.0), torch.zeros_like(n_ar))
            m_sep = ar.float() * alpha + ir.float() * (rho * beta)
        l_low = (m_sep[:, None] * (f_ldr - f_a) ** 2).sum() / f_a.shape[0]
        l_mask = (m_ldr.float() - torch.sigmoid(s_a)).abs().mean()
        total = total + l_low + l_mask
    return 0.5 * total


def pfd_loss(
    radar_high: Sequence[Tensor],
    lidar_high: Sequence[Tensor],
    gt_heatmap: Tensor,
    radar_heatmap_logits: Tensor,
    sigma: float = 0.1,
    lambda1: float = 5.0,
    lambda2: float = 1.0,
    tau: float = 0.5,
) -> Tensor:
    """Proposal-based Feature Distillation L_PFD, eqs. 13-19.

    Class-agnostic maps (all classes of all tasks concatenated, ``(B, K, H, W)``):
    H_GT = max_k GT heatmap, H_rdr = max_k clamp(sigmoid(logits), 1e-4, 1 - 1e-4).
    TP = (H_GT > sigma) & (H_rdr > sigma); FP = (H_GT < sigma) & (H_rdr > sigma);
    FN = (H_GT > sigma) & (H_rdr < sigma); counts N over the whole batch.
    M^scale = lambda1 / (N_TP + N_FN) on TP u FN, lambda2 / N_FP on FP, 0 elsewhere (an empty
    region contributes 0). S = softmax_c(F / tau);
    L_high(m) = sum_{b,c,i,j} M^scale_ij |S^{ldr}_cij - S^{h(m)}_cij|;  L_PFD = 1/2 sum_m L_high(m).
    """
    if len(radar_high) != len(lidar_high):
        raise ValueError(f"pfd_loss: {len(radar_high)} radar maps vs {len(lidar_high)} LiDAR maps")
    with torch.no_grad():
        h_gt = gt_heatmap.float().amax(dim=1)  # (B, H, W)
        h_rdr = torch.sigmoid(radar_heatmap_logits.float()).clamp(_P_MIN, _P_MAX).amax(dim=1)
        tp = (h_gt > sigma) & (h_rdr > sigma)
        fp = (h_gt < sigma) & (h_rdr > sigma)
        fn = (h_gt > sigma) & (h_rdr < sigma)
        pos = tp | fn
        n_pos, n_fp = pos.sum().float(), fp.sum().float()
        m_scale = (pos.float() * (lambda1 / n_pos.clamp_min(1.0))
                   + fp.float() * (lambda2 / n_fp.clamp_min(1.0)))
    total = h_gt.new_zeros(())
    for f_h, f_l in zip(radar_high, lidar_high):
        if f_h.shape != f_l.shape or f_h.shape[-2:] != m_scale.shape[-2:]:
            raise ValueError(f"pfd_loss: shapes radar {tuple(f_h.shape)}, LiDAR {tuple(f_l.shape)}, "
                             f"heatmap {tuple(m_scale.shape)} do not match")
        s_h = torch.softmax(f_h.float() / tau, dim=1)
        s_l = torch.softmax(f_l.detach().float() / tau, dim=1)
        total = total + (m_scale[:, None] * (s_l - s_h).abs()).sum()
    return 0.5 * total


def focal_heatmap_loss(logits: Tensor, target: Tensor) -> Tensor:
    """CenterNet focal loss (alpha = 2, beta = 4) of heatmap logits vs gaussian targets
    ``(B, K, H, W)``, summed and divided by the number of positives (target == 1; by 1 if none).

    L = -1/N_pos sum [ (1-p)^2 log p  if y = 1;  (1-y)^4 p^2 log(1-p)  otherwise ],
    p = clamp(sigmoid(logits), 1e-4, 1 - 1e-4).
    """
    p = torch.sigmoid(logits.float()).clamp(_P_MIN, _P_MAX)
    target = target.float()
    pos = target.eq(1).float()
    pos_loss = torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = torch.log(1 - p) * p ** 2 * (1 - target) ** 4 * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp_min(1.0)


def detection_loss(
    head_outputs: Sequence[Mapping[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    grid: GridConfig,
    loss_cfg: LossConfig,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CenterHead loss L_det summed over the task groups (docs/architecture.md tables).

    Per task: hm_weight * focal(hm, heatmap); reg_weight * sum_c w_c * sum |reg_pred - reg| / N_obj
    (code weights w over dx, dy, z, log l, log w, log h, cos, sin, vx, vy; at the target cells
    ``ind`` of valid objects ``mask``); iou_weight * sum |iou_pred - (2 IoU3D(b_pred.detach(), b_gt) - 1)|
    / N_obj; diou_weight * sum (1 - DIoU3D(b_pred, b_gt)) / N_obj, with b_pred decoded at the
    target cells. N_obj = max(number of valid objects of the task in the batch, 1).
    Returns (total, components ``hm``, ``reg``, ``iou``, ``diou`` detached, weighted, summed over tasks).
    """
    if len(head_outputs) != len(targets):
        raise ValueError(f"detection_loss: {len(head_outputs)} head tasks vs {len(targets)} target tasks")
    parts = {k: None for k in ("hm", "reg", "iou", "diou")}

    def add(key: str, value: Tensor) -> None:
        parts[key] = value if parts[key] is None else parts[key] + value

    for out, tgt in zip(head_outputs, targets):
        hm = out["hm"]
        add("hm", loss_cfg.hm_weight * focal_heatmap_loss(hm, tgt["heatmap"]))
        ind, mask = tgt["ind"].long(), tgt["mask"].bool()
        n_obj = mask.sum().float().clamp_min(1.0)
        maskf = mask.float()[..., None]
        reg_pred = gather_cells(head_regression(out).float(), ind)  # (B, M, 10)
        reg_tgt = tgt["reg"].float()
        code_w = reg_pred.new_tensor(loss_cfg.code_weights)
        l1 = ((reg_pred - reg_tgt).abs() * maskf).sum(dim=(0, 1)) / n_obj  # (10,)
        add("reg", loss_cfg.reg_weight * (l1 * code_w).sum())

        if bool(mask.any()):
            b_pred = regression_to_boxes(reg_pred[mask], ind[mask], grid)  # (N_obj, 9)
            b_gt = tgt["boxes"].float()[mask]
            if "iou" in out:
                iou_pred = gather_cells(out["iou"].float(), ind)[..., 0][mask]
                with torch.no_grad():
                    iou_tgt = 2.0 * iou3d_aligned(b_pred.detach(), b_gt) - 1.0
                add("iou", loss_cfg.iou_weight * (iou_pred - iou_tgt).abs().sum() / n_obj)
            add("diou", loss_cfg.diou_weight * (1.0 - diou3d_aligned(b_pred, b_gt)).sum() / n_obj)
        else:  # keep the graph connected and the value exactly 0
            zero = hm.sum() * 0.0
            if "iou" in out:
                add("iou", zero + out["iou"].sum() * 0.0)
            add("diou", zero + reg_pred.sum() * 0.0)

    zero = head_outputs[0]["hm"].new_zeros(()).float()
    comps = {k: (v if v is not None else zero) for k, v in parts.items()}
    total = comps["hm"] + comps["reg"] + comps["iou"] + comps["diou"]
    return total, {k: v.detach() for k, v in comps.items()}


def total_loss(
    l_det: Tensor, l_afd: Tensor, l_pfd: Tensor, gamma: float = 5.0, delta: float = 25.0
) -> Tensor:
    """L = L_det + gamma * L_AFD + delta * L_PFD (gamma = 5, delta = 25)."""
    return l_det + gamma * l_afd + delta * l_pfd
