"""Evaluate a checkpoint with the official nuScenes detection metrics (mAP, NDS, TP errors).

    python -m training.evaluate --config lite --checkpoint RUN/final.pt --dataroot D --version V \\
        --split S [--out DIR] [--plots K] [--device cpu|cuda] [--max-samples N] [--batch-size B]

Path: dataset (no augmentation; radar for radar checkpoints, LiDAR for a teacher) -> the model's
real front end (pillars, VFE, sparse encoder) and dense part (stage 5, CMA, DenseEnc, CenterHead)
-> :func:`radardistill_ros.decode.decode` (the decoding the node uses) -> ego-frame boxes ->
:func:`training.nusc_results.detections_to_results` (global frame through
``radardistill_ros.geometry.ego_boxes_to_global``) -> ``DetectionEval`` (detection_cvpr_2019).

Writes to ``--out`` (default: ``<checkpoint dir>/eval_<split>``): ``results_nusc.json``,
``metrics_summary.json``, ``metrics_details.json``, ``metrics.json`` (summary + run info),
``bev/<token>.png`` for ``--plots`` samples and ``pr/pr_<class>.png``; prints a summary table.

``--config`` must describe the checkpoint: its digest must equal the checkpoint's, either as is or
with ``model.cma.enabled: false`` (a ``--no-cma`` run of that config). Without ``--config`` the
checkpoint's own config is used.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from radardistill_ros.config import Config, config_from_dict, load_config
from radardistill_ros.decode import decode
from radardistill_ros.model import load_checkpoint
from radardistill_ros.model.checkpoint import CheckpointError, read_checkpoint
from training.dataset import DetectionDataset, collate
from training.nusc_results import detections_to_results, format_summary, run_detection_eval
from training.nuscenes_data import NuScenesLoader
from training.train import stage_config
from training.visualize import plot_bev, plot_pr_curves

__all__ = ["checkpoint_config", "evaluate", "main", "predict"]


def checkpoint_config(checkpoint: str | os.PathLike, cfg: Config | None = None) -> Config:
    """The config a checkpoint was trained with, checked against ``cfg`` (as is, or with CMA off
    as ``--no-cma`` runs store it); raises :class:`CheckpointError` naming both digests."""
    ckpt = read_checkpoint(checkpoint)
    if cfg is None:
        return config_from_dict(ckpt["config"])
    candidates = [cfg, stage_config(cfg, "baseline", cma=False)]
    for c in candidates:
        if c.digest() == ckpt["digest"]:
            return c
    raise CheckpointError(f"{checkpoint}: trained with config {ckpt['config'].get('name')!r} (digest "
                          f"{ckpt['digest'][:12]}), which is not {cfg.name!r} (digest {cfg.digest()[:12]}) "
                          "with or without CMA; omit --config to use the checkpoint's own")


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: DetectionDataset, cfg: Config, device: torch.device,
            batch_size: int = 4, show_progress: bool = False
            ) -> tuple[list[str], list[Any], list[Any], list[Any]]:
    """Run model + decode over a dataset; returns (tokens, detections (numpy boxes/scores/labels
    per sample), ego translations, ego rotations)."""
    from tqdm import tqdm

    modality = model.modality
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)
    model.eval()
    tokens, dets, ego_t, ego_q = [], [], [], []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not show_progress, leave=False):
        bsz = len(batch["tokens"])
        points = batch["lidar" if modality == "lidar" else "radar"].to(device)
        head = model(points, bsz).head
        for d in decode(head, cfg.grid, cfg.post):
            dets.append(tuple(x.cpu().numpy() for x in d))
        tokens.extend(batch["tokens"])
        ego_t.extend(batch["ego_translation"].numpy())
        ego_q.extend(batch["ego_rotation"].numpy())
    return tokens, dets, ego_t, ego_q


def evaluate(
    checkpoint: str | os.PathLike,
    dataroot: str | os.PathLike,
    version: str,
    split: str,
    out: str | os.PathLike | None = None,
    *,
    cfg: Config | None = None,
    plots: int = 0,
    device: str = "cpu",
    max_samples: int | None = None,
    tokens: Sequence[str] | None = None,
    batch_size: int = 4,
    show_progress: bool = False,
    verbose: bool = False,
) -> dict[str, Any]:
    """Predict on ``split`` (or its first ``max_samples`` samples, or exactly ``tokens``), score
    with DetectionEval and return the metrics summary (``mean_ap``, ``nd_score``,
    ``mean_dist_aps``, ``tp_errors``, ``label_tp_errors``, ...) plus run info (``checkpoint``,
    ``modality``, ``samples``, ``predict_s``, ``samples_per_s``)."""
    run_cfg = checkpoint_config(checkpoint, cfg)
    model, _ = load_checkpoint(checkpoint, cfg=run_cfg)
    dev = torch.device(device)
    model.to(dev)
    out_dir = Path(out) if out is not None else Path(checkpoint).parent / f"eval_{split}"
    out_dir.mkdir(parents=True, exist_ok=True)
    loader = NuScenesLoader(dataroot, version, run_cfg.data, run_cfg.grid)
    all_tokens = list(tokens) if tokens is not None else loader.sample_tokens(split)
    subset = tokens is not None or (max_samples is not None and max_samples < len(all_tokens))
    if max_samples is not None:
        all_tokens = all_tokens[:max_samples]
    mode = "teacher" if model.modality == "lidar" else "student"
    dataset = DetectionDataset(loader, tokens=all_tokens, grid=run_cfg.grid, targets=run_cfg.targets,
                               mode=mode)
    t0 = time.perf_counter()
    toks, dets, ego_t, ego_q = predict(model, dataset, run_cfg, dev, batch_size, show_progress)
    predict_s = time.perf_counter() - t0
    results = detections_to_results(toks, dets, ego_t, ego_q)
    metrics = run_detection_eval(results, loader.nusc, split, out_dir, sample_tokens=toks if subset else None,
                                 use_radar=model.modality == "radar", use_lidar=model.modality == "lidar",
                                 verbose=verbose)
    metrics.update({"checkpoint": str(checkpoint), "config": run_cfg.name, "digest": run_cfg.digest(),
                    "modality": model.modality, "split": split, "samples": len(toks), "predict_s": predict_s,
                    "samples_per_s": len(toks) / max(predict_s, 1e-9),
                    "num_detections": int(sum(len(d[1]) for d in dets))})
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_pr_curves(out_dir / "metrics_details.json", out_dir / "pr")
    if plots > 0:
        by_token = dict(zip(toks, dets))
        step = max(1, len(toks) // plots)
        for tok in toks[::step][:plots]:
            s = loader.load(tok, radar=True, lidar=True)
            b, sc, lb = by_token[tok]
            plot_bev(out_dir / "bev" / f"{tok}.png", radar=s.radar, lidar=s.lidar, gt_boxes=s.boxes,
                     gt_labels=s.labels, det_boxes=b, det_scores=sc, det_labels=lb,
                     extent=max(abs(v) for v in run_cfg.grid.point_cloud_range[:2]),
                     title=f"{tok} ({model.modality}, {len(sc)} detections)")
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", help="config variant/YAML the checkpoint was trained with (checked)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", help="output directory (default: <checkpoint dir>/eval_<split>)")
    p.add_argument("--plots", type=int, default=0, help="BEV plots of K samples")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-samples", type=int, help="evaluate the first N samples of the split only")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--no-progress", dest="show_progress", action="store_false")
    p.add_argument("--threads", type=int, help="torch CPU threads (torch.set_num_threads)")
    return p


def main(argv: Iterable[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    cfg = load_config(args.config) if args.config else None
    if args.threads:
        torch.set_num_threads(args.threads)
    m = evaluate(args.checkpoint, args.dataroot, args.version, args.split, args.out, cfg=cfg,
                 plots=args.plots, device=args.device, max_samples=args.max_samples,
                 batch_size=args.batch_size, show_progress=args.show_progress)
    print(f"{m['modality']} checkpoint {m['checkpoint']} on {args.split} ({m['samples']} samples, "
          f"{m['num_detections']} detections, {m['samples_per_s']:.2f} samples/s predict)")
    print(format_summary(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
