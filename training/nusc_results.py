"""Detections in the ego frame -> nuScenes detection results -> official ``DetectionEval``.

Shared by ``training.evaluate`` and the node's replay evaluation, so that every scored box goes
through one conversion:

* :func:`detections_to_results`: per-sample ego-frame boxes ``(K, 9)`` (x, y, z, l, w, h, yaw,
  vx, vy), scores, labels and the ego pose ``T_global_from_ego`` of the reference time ->
  ``{sample_token: [box dict, ...]}`` in the global frame through
  :func:`radardistill_ros.geometry.ego_boxes_to_global` (size ``[w, l, h]``, quaternion
  ``[w, x, y, z]``, global velocity ``(vx, vy)``), ``detection_name`` = class name,
  ``attribute_name`` by :func:`default_attribute`.
* :func:`results_document` / :func:`write_results`: the submission JSON (``meta`` + ``results``).
* :func:`run_detection_eval`: ``nuscenes.eval.detection.evaluate.DetectionEval`` with
  ``config_factory('detection_cvpr_2019')`` on a split (predefined or the dataset's
  ``splits.json``), or on a subset of its samples; returns the metrics summary dict
  (``mean_ap``, ``nd_score``, ``mean_dist_aps`` per class, ``tp_errors``, ...) and writes
  ``metrics_summary.json`` / ``metrics_details.json`` (the per-class, per-threshold metric data
  ``md_list`` that :func:`training.visualize.plot_pr_curves` reads).

Attribute rule (documented choice, as mmdetection3d / CenterPoint do): speed ``|v| > 0.2`` m/s
gives ``vehicle.moving`` for car, truck, bus, trailer, construction_vehicle, ``cycle.with_rider``
for bicycle and motorcycle, ``pedestrian.moving`` for pedestrians; slower boxes get
``vehicle.parked`` (bus: ``vehicle.stopped``), ``cycle.without_rider``, ``pedestrian.standing``;
barrier and traffic_cone have no attribute (``''``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radardistill_ros.conventions import CLASS_NAMES
from radardistill_ros.geometry import ego_boxes_to_global

__all__ = [
    "MAX_BOXES_PER_SAMPLE",
    "MOVING_SPEED",
    "default_attribute",
    "detections_to_results",
    "format_summary",
    "results_document",
    "run_detection_eval",
    "write_results",
]

#: DetectionEval refuses samples with more boxes than this (detection_cvpr_2019).
MAX_BOXES_PER_SAMPLE = 500
#: Speed [m/s] above which a box gets the "moving" attribute of its class.
MOVING_SPEED = 0.2

_VEHICLES = ("car", "truck", "bus", "trailer", "construction_vehicle")
_CYCLES = ("bicycle", "motorcycle")


def default_attribute(name: str, speed: float) -> str:
    """nuScenes ``attribute_name`` of a detection of class ``name`` moving at ``speed`` [m/s]."""
    moving = bool(speed > MOVING_SPEED)
    if name in _VEHICLES:
        if moving:
            return "vehicle.moving"
        return "vehicle.stopped" if name == "bus" else "vehicle.parked"
    if name in _CYCLES:
        return "cycle.with_rider" if moving else "cycle.without_rider"
    if name == "pedestrian":
        return "pedestrian.moving" if moving else "pedestrian.standing"
    if name in CLASS_NAMES:
        return ""
    raise KeyError(f"unknown detection class {name!r}; expected one of {CLASS_NAMES}")


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def detections_to_results(
    sample_tokens: Sequence[str],
    detections: Sequence[Sequence[Any]],
    ego_translations: Sequence[Any],
    ego_rotations: Sequence[Any],
    max_boxes: int = MAX_BOXES_PER_SAMPLE,
) -> dict[str, list[dict[str, Any]]]:
    """Per-sample ego-frame detections -> nuScenes ``results`` dict.

    Args:
        sample_tokens: one token per sample.
        detections: per sample ``(boxes (K, 9), scores (K,), labels (K,))`` (e.g.
            :class:`radardistill_ros.decode.Detections`; numpy or torch), boxes in the ego frame of
            the sample's reference time, labels indexing ``CLASS_NAMES``.
        ego_translations, ego_rotations: per sample the ego pose ``T_global_from_ego`` (translation
            (3,), quaternion (4,) [w, x, y, z]) of the reference time.
        max_boxes: keep the highest-scoring ``max_boxes`` boxes of a sample.

    Returns:
        ``{token: [{"sample_token", "translation", "size" (w, l, h), "rotation", "velocity" (2,),
        "detection_name", "detection_score", "attribute_name"}, ...]}``; every token is present,
        samples without detections map to ``[]``.
    """
    n = len(sample_tokens)
    if not (len(detections) == len(ego_translations) == len(ego_rotations) == n):
        raise ValueError(f"detections_to_results: {n} tokens, {len(detections)} detections, "
                         f"{len(ego_translations)} translations, {len(ego_rotations)} rotations")
    results: dict[str, list[dict[str, Any]]] = {}
    for token, det, ego_t, ego_q in zip(sample_tokens, detections, ego_translations, ego_rotations):
        boxes, scores, labels = (_numpy(det[0]), _numpy(det[1]), _numpy(det[2]))
        boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.size else 9).astype(np.float64)
        scores = scores.reshape(-1).astype(np.float64)
        labels = labels.reshape(-1).astype(np.int64)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(f"sample {token}: {len(boxes)} boxes, {len(scores)} scores, "
                             f"{len(labels)} labels")
        finite = np.isfinite(boxes[:, :9]).all(axis=1) & np.isfinite(scores)
        order = np.argsort(-scores[finite], kind="stable")[:max_boxes]
        boxes, scores, labels = boxes[finite][order], scores[finite][order], labels[finite][order]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
            raise ValueError(f"sample {token}: labels must index CLASS_NAMES, "
                             f"got {labels.min()}..{labels.max()}")
        centers, sizes, rotations, velocities = ego_boxes_to_global(
            boxes, _numpy(ego_t).astype(np.float64), _numpy(ego_q).astype(np.float64))
        entries = []
        for i in range(len(boxes)):
            name = CLASS_NAMES[int(labels[i])]
            vel = velocities[i, :2]
            entries.append({
                "sample_token": token,
                "translation": [float(v) for v in centers[i]],
                "size": [float(v) for v in sizes[i]],
                "rotation": [float(v) for v in rotations[i]],
                "velocity": [float(v) for v in vel],
                "detection_name": name,
                "detection_score": float(scores[i]),
                "attribute_name": default_attribute(name, float(np.hypot(vel[0], vel[1]))),
            })
        results[token] = entries
    return results


def results_document(results: Mapping[str, list[dict[str, Any]]], use_radar: bool = True,
                     use_lidar: bool = False) -> dict[str, Any]:
    """The nuScenes submission dict: ``{"meta": {use_camera, use_lidar, use_radar, use_map,
    use_external}, "results": results}``."""
    meta = {"use_camera": False, "use_lidar": bool(use_lidar), "use_radar": bool(use_radar),
            "use_map": False, "use_external": False}
    return {"meta": meta, "results": dict(results)}


def write_results(path: str | os.PathLike, results: Mapping[str, list[dict[str, Any]]],
                  use_radar: bool = True, use_lidar: bool = False) -> Path:
    """Write the submission JSON (:func:`results_document`) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results_document(results, use_radar, use_lidar)))
    return path


def _subset_eval(nusc: Any, config: Any, result_path: str, sample_tokens: Sequence[str],
                 output_dir: str, verbose: bool) -> Any:
    """A ``DetectionEval`` over the given samples: the devkit's own loaders
    (``load_prediction_of_sample_tokens`` / ``load_gt_of_sample_tokens``), centre distances and
    ``filter_eval_boxes``, then its unchanged ``evaluate``."""
    from nuscenes.eval.common.loaders import (
        add_center_dist,
        filter_eval_boxes,
        load_gt_of_sample_tokens,
        load_prediction_of_sample_tokens,
    )
    from nuscenes.eval.detection.data_classes import DetectionBox
    from nuscenes.eval.detection.evaluate import DetectionEval

    ev = DetectionEval.__new__(DetectionEval)
    ev.nusc, ev.result_path, ev.eval_set, ev.output_dir, ev.verbose, ev.cfg = (
        nusc, result_path, "custom", output_dir, verbose, config)
    ev.plot_dir = os.path.join(output_dir, "plots")
    os.makedirs(ev.plot_dir, exist_ok=True)
    tokens = list(sample_tokens)
    ev.pred_boxes, ev.meta = load_prediction_of_sample_tokens(
        result_path, config.max_boxes_per_sample, DetectionBox, sample_tokens=tokens, verbose=verbose)
    ev.gt_boxes = load_gt_of_sample_tokens(nusc, tokens, DetectionBox, verbose=verbose)
    ev.pred_boxes = filter_eval_boxes(nusc, add_center_dist(nusc, ev.pred_boxes), config.class_range,
                                      verbose=verbose)
    ev.gt_boxes = filter_eval_boxes(nusc, add_center_dist(nusc, ev.gt_boxes), config.class_range,
                                    verbose=verbose)
    ev.sample_tokens = ev.gt_boxes.sample_tokens
    return ev


def run_detection_eval(
    results: Mapping[str, list[dict[str, Any]]] | str | os.PathLike,
    nusc: Any,
    split: str | None,
    out_dir: str | os.PathLike,
    *,
    version: str | None = None,
    sample_tokens: Sequence[str] | None = None,
    use_radar: bool = True,
    use_lidar: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Score ``results`` with the official nuScenes detection evaluation (detection_cvpr_2019).

    Args:
        results: the ``results`` dict (written to ``out_dir/results_nusc.json``) or the path of a
            submission JSON.
        nusc: a ``NuScenes`` instance, or its dataroot (then ``version`` is required).
        split: split name (predefined nuScenes split or one in ``<dataroot>/<version>/splits.json``);
            ignored when ``sample_tokens`` is given.
        out_dir: where ``metrics_summary.json`` and ``metrics_details.json`` are written.
        sample_tokens: evaluate exactly these samples (a subset of a split) instead of ``split``.

    Returns:
        the devkit's metrics summary (``DetectionMetrics.serialize()``: ``mean_ap``, ``nd_score``,
        ``mean_dist_aps``, ``label_aps``, ``tp_errors``, ``label_tp_errors``, ...) plus ``meta``.
    """
    from nuscenes.eval.common.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    from nuscenes.nuscenes import NuScenes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(nusc, (str, os.PathLike)):
        if version is None:
            raise ValueError("run_detection_eval: give version with a dataroot")
        nusc = NuScenes(version=version, dataroot=str(nusc), verbose=False)
    if isinstance(results, (str, os.PathLike)):
        result_path = Path(results)
    else:
        result_path = write_results(out / "results_nusc.json", results, use_radar, use_lidar)
    config = config_factory("detection_cvpr_2019")
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        if sample_tokens is not None:
            ev = _subset_eval(nusc, config, str(result_path), sample_tokens, str(out), verbose)
        else:
            if split is None:
                raise ValueError("run_detection_eval: give split or sample_tokens")
            ev = DetectionEval(nusc, config=config, result_path=str(result_path), eval_set=split,
                               output_dir=str(out), verbose=verbose)
        metrics, md_list = ev.evaluate()
    summary = metrics.serialize()
    summary["meta"] = dict(ev.meta)
    summary["num_samples"] = len(ev.sample_tokens)
    (out / "metrics_summary.json").write_text(json.dumps(summary, indent=2))
    (out / "metrics_details.json").write_text(json.dumps(md_list.serialize()))
    return summary


def format_summary(metrics: Mapping[str, Any]) -> str:
    """A plain-text table of a metrics summary: mAP, NDS, TP errors, per-class AP and errors."""
    names = {"trans_err": "mATE", "scale_err": "mASE", "orient_err": "mAOE", "vel_err": "mAVE",
             "attr_err": "mAAE"}
    lines = [f"mAP: {metrics['mean_ap']:.4f}   NDS: {metrics['nd_score']:.4f}"]
    lines.append("   ".join(f"{names[k]}: {v:.4f}" for k, v in metrics["tp_errors"].items()))
    lines.append(f"{'class':<22}{'AP':>7}{'ATE':>7}{'ASE':>7}{'AOE':>7}{'AVE':>7}{'AAE':>7}")
    for cls, ap in metrics["mean_dist_aps"].items():
        tp = metrics["label_tp_errors"][cls]
        errs = "".join(f"{tp[k]:>7.3f}" for k in names)
        lines.append(f"{cls:<22}{ap:>7.3f}{errs}")
    return "\n".join(lines)
