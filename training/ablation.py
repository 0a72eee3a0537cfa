"""The RadarDistill component ablation (paper Table 3, rows #1-#6) with one command, on any
nuScenes-format dataset.

    python -m training.ablation --config lite --dataroot D --version V --train-split S \\
        --val-split S2 --out DIR [--epochs N] [--lr LR] [--teacher CKPT] [--teacher-epochs N] [--rows 1,3,6]

Trains the LiDAR teacher once (unless ``--teacher`` is given), then each row, evaluates every
model on the validation split with the official metrics and prints / writes a markdown table
(mAP, NDS, car AP, with the published numbers beside them) and ``ablation.json``.

Rows (stage and flags of ``training.train``):

====  =====================  ========================================================
 #1   baseline               ``baseline --no-cma`` (PillarNet-18 radar, from scratch)
 #2   + CMA                  ``baseline`` (from scratch)
 #3   CMA + AFD              ``distill --no-pfd``
 #4   CMA + PFD              ``distill --no-afd``
 #5   AFD + PFD (no CMA)     ``distill --no-cma`` (AFD on the student's x_conv4)
 #6   CMA + AFD + PFD        ``distill`` (RadarDistill)
====  =====================  ========================================================

Rows #3-#6 use the distill stage and therefore also the inheriting initialisation from the
teacher (the paper's recipe for RadarDistill); rows #1-#2 start from scratch like the baseline.
Every run directory is resumable: re-running the command continues unfinished runs and reuses
finished ones (their ``final.pt`` and evaluation).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from radardistill_ros.config import Config, load_config
from training.evaluate import evaluate
from training.train import train

__all__ = ["PAPER_TABLE3", "ROWS", "AblationRow", "format_table", "main", "run_ablation"]


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 3: its number, name and the ``training.train`` stage and flags."""

    number: int
    name: str
    stage: str
    cma: bool
    afd: bool
    pfd: bool


ROWS: tuple[AblationRow, ...] = (
    AblationRow(1, "baseline", "baseline", cma=False, afd=False, pfd=False),
    AblationRow(2, "+CMA", "baseline", cma=True, afd=False, pfd=False),
    AblationRow(3, "CMA+AFD", "distill", cma=True, afd=True, pfd=False),
    AblationRow(4, "CMA+PFD", "distill", cma=True, afd=False, pfd=True),
    AblationRow(5, "AFD+PFD (no CMA)", "distill", cma=False, afd=True, pfd=True),
    AblationRow(6, "CMA+AFD+PFD", "distill", cma=True, afd=True, pfd=True),
)

#: Published Table 3 (nuScenes val, trained on 1/7 of train): row -> (mAP %, NDS %).
PAPER_TABLE3: dict[int, tuple[float, float]] = {1: (5.4, 27.3), 2: (6.4, 29.3), 3: (10.9, 33.7),
                                                4: (8.2, 32.3), 5: (7.0, 30.7), 6: (11.2, 34.7)}


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"mAP": metrics["mean_ap"], "NDS": metrics["nd_score"], "car_AP": metrics["mean_dist_aps"]["car"],
            "class_AP": dict(metrics["mean_dist_aps"]), "tp_errors": dict(metrics["tp_errors"]),
            "samples": metrics["samples"]}


def _train_and_eval(cfg: Config, stage: str, run_dir: Path, args: argparse.Namespace, *,
                    teacher: Path | None = None, cma: bool = True, afd: bool = True, pfd: bool = True,
                    epochs: int | None = None) -> tuple[Path, dict[str, Any], float]:
    """Train (resuming a partial run) and evaluate; reuses a finished evaluation."""
    metrics_path = run_dir / "eval" / "metrics.json"
    final = run_dir / "final.pt"
    t0 = time.perf_counter()
    if not final.exists():
        train(cfg, stage, args.dataroot, args.version, args.train_split, run_dir, teacher=teacher, cma=cma,
              afd=afd, pfd=pfd, epochs=epochs, batch_size=args.batch_size, resume=True, device=args.device,
              max_samples=args.max_samples, seed=args.seed, num_workers=args.num_workers,
              show_progress=args.show_progress, lr=getattr(args, "lr", None))
    train_s = time.perf_counter() - t0
    if metrics_path.exists() and json.loads(metrics_path.read_text()).get("checkpoint") == str(final):
        metrics = json.loads(metrics_path.read_text())
    else:
        metrics = evaluate(final, args.dataroot, args.version, args.val_split, run_dir / "eval",
                           plots=args.plots, device=args.device, max_samples=args.max_eval_samples,
                           show_progress=args.show_progress)
    return final, metrics, train_s


def format_table(result: dict[str, Any]) -> str:
    """Markdown table of an ablation result (ours in %, the paper's Table 3 beside)."""
    lines = ["| # | components | mAP | NDS | car AP | paper mAP | paper NDS |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    t = result.get("teacher")
    if t is not None:
        lines.append(f"| T | LiDAR teacher | {100 * t['mAP']:.1f} | {100 * t['NDS']:.1f} | "
                     f"{100 * t['car_AP']:.1f} | - | - |")
    for r in result["rows"]:
        pm, pn = PAPER_TABLE3[r["row"]]
        lines.append(f"| {r['row']} | {r['name']} | {100 * r['mAP']:.1f} | {100 * r['NDS']:.1f} | "
                     f"{100 * r['car_AP']:.1f} | {pm:.1f} | {pn:.1f} |")
    return "\n".join(lines)


def run_ablation(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    """Teacher (trained once or ``args.teacher``), then the selected rows; returns the result dict
    and writes ``ablation.json`` and ``ablation.md`` into ``args.out``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for r in ROWS if r.number in set(args.rows)]
    needs_teacher = any(r.stage == "distill" for r in rows)
    result: dict[str, Any] = {"config": cfg.name, "dataroot": str(args.dataroot), "version": args.version,
                              "train_split": args.train_split, "val_split": args.val_split,
                              "epochs": args.epochs, "rows": []}
    teacher: Path | None = Path(args.teacher) if args.teacher else None
    if teacher is None and needs_teacher:
        teacher, metrics, train_s = _train_and_eval(cfg, "teacher", out / "teacher", args,
                                                    epochs=args.teacher_epochs or args.epochs)
        result["teacher"] = {**_summary(metrics), "checkpoint": str(teacher), "train_s": train_s}
        print(f"[ablation] teacher: mAP {metrics['mean_ap']:.4f} NDS {metrics['nd_score']:.4f}", flush=True)
    result["teacher_checkpoint"] = str(teacher) if teacher else None
    for r in rows:
        run_dir = out / f"row{r.number}_{r.stage}{'' if r.cma else '_nocma'}{'_afd' if r.afd else ''}" \
                        f"{'_pfd' if r.pfd else ''}"
        final, metrics, train_s = _train_and_eval(
            cfg, r.stage, run_dir, args, teacher=teacher if r.stage == "distill" else None, cma=r.cma,
            afd=r.afd, pfd=r.pfd, epochs=args.epochs)
        result["rows"].append({"row": r.number, "name": r.name, "stage": r.stage, "cma": r.cma,
                               "afd": r.afd, "pfd": r.pfd, **_summary(metrics), "checkpoint": str(final),
                               "train_s": train_s})
        print(f"[ablation] #{r.number} {r.name}: mAP {metrics['mean_ap']:.4f} NDS {metrics['nd_score']:.4f} "
              f"car AP {metrics['mean_dist_aps']['car']:.4f}", flush=True)
        (out / "ablation.json").write_text(json.dumps(result, indent=2))
    table = format_table(result)
    (out / "ablation.md").write_text(table + "\n")
    (out / "ablation.json").write_text(json.dumps(result, indent=2))
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.ablation", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--dataroot", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--train-split", required=True)
    p.add_argument("--val-split", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, help="epochs of every row (default: the config's)")
    p.add_argument("--teacher", help="use this LiDAR teacher checkpoint instead of training one")
    p.add_argument("--teacher-epochs", type=int, help="teacher epochs (default: --epochs)")
    p.add_argument("--rows", default="1,2,3,4,5,6", type=lambda s: [int(x) for x in s.split(",")],
                   help="comma-separated Table 3 rows")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="max one-cycle learning rate of every run (default: config)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-samples", type=int, help="train on the first N samples of the train split")
    p.add_argument("--max-eval-samples", type=int, help="evaluate on the first N samples of the val split")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--plots", type=int, default=0, help="BEV plots per evaluation")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--no-progress", dest="show_progress", action="store_false")
    return p


def main(argv: Iterable[str] | None = None) -> int:
    args = build_parser().parse_args(None if argv is None else list(argv))
    bad = [r for r in args.rows if r not in PAPER_TABLE3]
    if bad:
        raise SystemExit(f"unknown rows {bad}; Table 3 has rows 1-6")
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run_ablation(load_config(args.config), args)
    print(format_table(result))
    print(f"[ablation] wrote {Path(args.out) / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
