#!/usr/bin/env python3
"""Loader throughput on a nuScenes-format dataset (default: a freshly generated synthetic world).

Measures, per sample (after one warm-up pass over the same samples, so files are in the page cache):

* ``student``: radar input, 5 radars x ``radar_sweeps`` (.pcd read via the devkit + accumulation);
* ``teacher``: LiDAR input, ``lidar_sweeps`` sweeps (.pcd.bin read + accumulation);
* ``student_item`` / ``teacher_item``: the full training item (loader + augmentation + range mask +
  CenterPoint targets at the config's BEV grid);
* ``accumulate_radar``: the node path alone — :class:`SweepAccumulator.accumulate` over 5 radars x
  ``radar_sweeps`` sweeps already in memory (what the ROS node runs per trigger at ~13 Hz).

Prints a table and writes JSON (samples/s, median and p99 ms, mean point counts, machine) to --out.

    .venv/bin/python scripts/bench_loader.py --out results/bench_loader.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radardistill_ros.config import load_config
from radardistill_ros.geometry import transform_from_pose
from radardistill_ros.sweeps import SweepAccumulator
from training.dataset import DetectionDataset
from training.nuscenes_data import NuScenesLoader


def _time(fn: Callable[[int], object], n: int, repeats: int = 1) -> tuple[np.ndarray, list[object]]:
    """Wall times [s] of fn(i) for i in range(n), repeated; returns (times, last outputs)."""
    times, outs = [], []
    for _ in range(repeats):
        outs = []
        for i in range(n):
            t0 = time.perf_counter()
            outs.append(fn(i))
            times.append(time.perf_counter() - t0)
    return np.asarray(times), outs


def _stats(times: np.ndarray) -> dict[str, float]:
    return {"samples_per_s": float(1.0 / times.mean()), "median_ms": float(np.median(times) * 1e3),
            "p99_ms": float(np.percentile(times, 99) * 1e3), "runs": len(times)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", help="existing dataset root (default: generate a synthetic world)")
    p.add_argument("--version", default="v1.0-synth")
    p.add_argument("--split", default=None, help="split name (default: all samples)")
    p.add_argument("--config", default="paper", help="config variant or YAML path (sweeps, grid)")
    p.add_argument("--scenes", type=int, default=2, help="scenes to generate when --root is not given")
    p.add_argument("--scene-seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples", type=int, default=16, help="samples to time (first N of the split)")
    p.add_argument("--accumulate-runs", type=int, default=300)
    p.add_argument("--out", required=True, help="JSON results file")
    args = p.parse_args()

    cfg = load_config(args.config)
    tmp = None
    root = args.root
    if root is None:
        from training.synth import generate_world

        tmp = tempfile.TemporaryDirectory(prefix="bench_loader_")
        t0 = time.perf_counter()
        root = str(generate_world(Path(tmp.name) / "world", version=args.version, scenes=args.scenes,
                                  seed=args.seed, scene_seconds=args.scene_seconds, show_progress=False))
        print(f"generated {args.scenes} scenes x {args.scene_seconds} s in {time.perf_counter() - t0:.1f} s")
    loader = NuScenesLoader(root, args.version, cfg.data, cfg.grid)
    tokens = loader.sample_tokens(args.split)[: args.samples]
    n = len(tokens)
    if n == 0:
        print("no samples", file=sys.stderr)
        return 1

    results: dict[str, object] = {
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "dataset": {"root": root if tmp is None else "generated", "version": args.version, "samples": n,
                    "radar_sweeps": cfg.data.radar_sweeps, "lidar_sweeps": cfg.data.lidar_sweeps,
                    "config": cfg.name},
    }

    def student(i: int):
        return loader.load(tokens[i], radar=True, lidar=False)

    def teacher(i: int):
        return loader.load(tokens[i], radar=False, lidar=True)

    benches: dict[str, dict[str, float]] = {}
    for name, fn in (("student", student), ("teacher", teacher)):
        _time(fn, n)  # warm-up: page cache, devkit lookups
        times, outs = _time(fn, n)
        pts = [len(o.radar if name == "student" else o.lidar) for o in outs]
        benches[name] = {**_stats(times), "mean_points": float(np.mean(pts))}

    for name, mode in (("student_item", "student"), ("teacher_item", "teacher")):
        ds = DetectionDataset(loader, tokens=tokens, grid=cfg.grid, targets=cfg.targets, mode=mode,
                              augment=cfg.data.augment, seed=args.seed)
        _time(ds.__getitem__, min(n, 2))
        times, _ = _time(ds.__getitem__, n)
        benches[name] = _stats(times)

    # node path: accumulation only, sweeps in memory
    acc = SweepAccumulator(cfg.data.radar_sweeps, kind="radar")
    for ch in cfg.data.radar_channels:
        acc.extend(loader.radar_sweeps(tokens[-1], ch)[::-1])
    t_ref, ego_t, ego_q = loader.reference(tokens[-1])
    pose = transform_from_pose(ego_t, ego_q)
    acc.accumulate(pose, t_ref)
    times, outs = _time(lambda _i: acc.accumulate(pose, t_ref), args.accumulate_runs)
    benches["accumulate_radar"] = {**_stats(times), "points": len(outs[-1]),
                                   "sweeps": len(acc.sweeps())}
    results["benchmarks"] = benches

    print(f"loader throughput, {n} samples, config {cfg.name}, {os.cpu_count()} cpus ({platform.node()})")
    print(f"{'bench':<18}{'samples/s':>11}{'median ms':>11}{'p99 ms':>9}  extra")
    for name, b in benches.items():
        extra = {k: v for k, v in b.items() if k not in ("samples_per_s", "median_ms", "p99_ms", "runs")}
        print(f"{name:<18}{b['samples_per_s']:>11.1f}{b['median_ms']:>11.2f}{b['p99_ms']:>9.2f}  {extra}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
