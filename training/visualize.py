"""Bird's-eye-view plots (matplotlib, Agg backend) for evaluation, tests and the demo.

* :func:`plot_bev`: one sample in the ego frame (x forward = up on the page, y left = left):
  accumulated radar points coloured by RCS with velocity arrows (vx_comp, vy_comp), optional LiDAR
  points (light grey, reference only), GT boxes (green) and detections (red, score printed),
  drawn as oriented rectangles with a heading tick from the centre to the front edge.
* :func:`plot_pr_curves`: one precision-recall figure per class from DetectionEval's metric data
  (``md_list``: a ``DetectionMetricDataList`` or the ``metrics_details.json`` it serialises to),
  one curve per centre-distance threshold, with the AP of each threshold in the legend.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from radardistill_ros.conventions import CLASS_NAMES

__all__ = ["box_outline", "plot_bev", "plot_pr_curves"]


def box_outline(box: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """BEV corners ``(5, 2)`` (closed polygon) and heading tick ``(2, 2)`` (centre -> front edge
    centre) of a box ``(x, y, z, l, w, h, yaw, ...)``."""
    x, y, _, length, width, _, yaw = (float(v) for v in box[:7])
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[0.5, 0.5], [0.5, -0.5], [-0.5, -0.5], [-0.5, 0.5], [0.5, 0.5]]) * [length, width]
    rot = np.array([[c, -s], [s, c]])
    corners = local @ rot.T + [x, y]
    tick = np.array([[x, y], [x + 0.5 * length * c, y + 0.5 * length * s]])
    return corners, tick


def _numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _draw_boxes(ax: Any, boxes: np.ndarray, labels: np.ndarray | None, scores: np.ndarray | None,
                color: str, lw: float) -> None:
    for i, box in enumerate(boxes):
        corners, tick = box_outline(box)
        # page coordinates: horizontal = -y (left is left), vertical = x (forward is up)
        ax.plot(-corners[:, 1], corners[:, 0], color=color, lw=lw)
        ax.plot(-tick[:, 1], tick[:, 0], color=color, lw=lw)
        if scores is not None:
            name = CLASS_NAMES[int(labels[i])] if labels is not None else ""
            ax.text(-box[1], box[0], f"{name[:3]} {scores[i]:.2f}", color=color, fontsize=5,
                    ha="left", va="bottom")


def plot_bev(
    path: str | os.PathLike,
    radar: Any = None,
    lidar: Any = None,
    gt_boxes: Any = None,
    gt_labels: Any = None,
    det_boxes: Any = None,
    det_scores: Any = None,
    det_labels: Any = None,
    *,
    extent: float = 54.0,
    score_threshold: float = 0.0,
    title: str | None = None,
    velocity_scale: float = 0.5,
) -> Path:
    """Save a BEV figure of one sample (ego frame) as PNG; returns the path.

    Args:
        radar: ``(N, >=6)`` x, y, z, rcs, vx_comp, vy_comp (RCS colour, velocity arrows of length
            ``velocity_scale`` s * v).
        lidar: ``(N, >=3)`` points, drawn light grey under everything else.
        gt_boxes / det_boxes: ``(M, >=7)`` x, y, z, l, w, h, yaw[, vx, vy] in the ego frame;
            ``gt_labels`` / ``det_labels`` index ``CLASS_NAMES`` (labels with -1 are padding and
            skipped); detections below ``score_threshold`` are not drawn.
        extent: half width of the plotted square [m].
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 7), dpi=120)
    try:
        lidar = _numpy(lidar)
        if lidar is not None and len(lidar):
            ax.scatter(-lidar[:, 1], lidar[:, 0], s=0.05, c="0.8", linewidths=0, rasterized=True)
        radar = _numpy(radar)
        if radar is not None and len(radar):
            sc = ax.scatter(-radar[:, 1], radar[:, 0], s=4, c=radar[:, 3], cmap="viridis", linewidths=0)
            fig.colorbar(sc, ax=ax, fraction=0.04, pad=0.02, label="RCS [dBsm]")
            if radar.shape[1] >= 6:
                v = radar[:, 4:6] * velocity_scale
                ax.quiver(-radar[:, 1], radar[:, 0], -v[:, 1], v[:, 0], angles="xy", scale_units="xy",
                          scale=1.0, width=0.0015, color="tab:blue", alpha=0.7)
        gt = _numpy(gt_boxes)
        if gt is not None and len(gt):
            gl = _numpy(gt_labels)
            keep = np.ones(len(gt), bool) if gl is None else gl.reshape(-1) >= 0
            _draw_boxes(ax, gt[keep], None, None, "tab:green", 1.0)
        det = _numpy(det_boxes)
        if det is not None and len(det):
            ds = _numpy(det_scores)
            dl = _numpy(det_labels)
            keep = np.ones(len(det), bool) if ds is None else ds.reshape(-1) >= score_threshold
            _draw_boxes(ax, det[keep], None if dl is None else dl[keep], None if ds is None else ds[keep],
                        "tab:red", 0.8)
        ax.plot([0], [0], marker="^", color="k", ms=6)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_aspect("equal")
        ax.set_xlabel("-y (left) [m]")
        ax.set_ylabel("x (forward) [m]")
        ax.grid(alpha=0.2)
        handles = [plt.Line2D([], [], color="tab:green", label="ground truth"),
                   plt.Line2D([], [], color="tab:red", label="detections")]
        ax.legend(handles=handles, loc="upper right", fontsize=7)
        if title:
            ax.set_title(title, fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _serialized(md_list: Any) -> dict[str, Any]:
    """``{"<class>:<dist>": metric data dict}`` from a DetectionMetricDataList, its serialised
    dict or the path of ``metrics_details.json``."""
    if isinstance(md_list, (str, os.PathLike)):
        return json.loads(Path(md_list).read_text())
    if isinstance(md_list, Mapping):
        return dict(md_list)
    return md_list.serialize()


def plot_pr_curves(
    md_list: Any,
    out_dir: str | os.PathLike,
    classes: Sequence[str] | None = None,
    min_recall: float = 0.1,
    min_precision: float = 0.1,
) -> list[Path]:
    """One PNG per class (``pr_<class>.png``) with the precision-recall curve of each distance
    threshold; AP per threshold as DetectionEval's ``calc_ap`` computes it (area of the precision
    above ``min_precision`` for recall above ``min_recall``, normalised). Returns the paths."""
    from nuscenes.eval.detection.algo import calc_ap
    from nuscenes.eval.detection.data_classes import DetectionMetricData

    data = {}
    for key, md in _serialized(md_list).items():
        name, dist = key.rsplit(":", 1)
        data[(name, float(dist))] = DetectionMetricData.deserialize(md)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(classes) if classes is not None else sorted({k[0] for k in data}, key=_class_order)
    paths = []
    for name in names:
        fig, ax = plt.subplots(figsize=(4.5, 4), dpi=120)
        try:
            for (cls, dist), md in sorted(data.items(), key=lambda kv: kv[0][1]):
                if cls != name:
                    continue
                ap = calc_ap(md, min_recall, min_precision)
                ax.plot(md.recall, md.precision, label=f"{dist:g} m: AP {ap:.3f}")
            ax.axvline(min_recall, color="0.6", ls="--", lw=0.8)
            ax.axhline(min_precision, color="0.6", ls="--", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.set_title(f"{name}: precision-recall", fontsize=9)
            ax.legend(fontsize=7, loc="upper right")
            ax.grid(alpha=0.3)
            fig.tight_layout()
            p = out / f"pr_{name}.png"
            fig.savefig(p)
            paths.append(p)
        finally:
            plt.close(fig)
    return paths


def _class_order(name: str) -> int:
    return CLASS_NAMES.index(name) if name in CLASS_NAMES else len(CLASS_NAMES)
