"""Benchmark the synthetic world generator: time per scene, size on disk and radar-likeness stats.

    .venv/bin/python scripts/bench_synth.py --scenes 2 --scene-seconds 20 --out results/bench_synth.json

Prints a summary and writes a JSON file. Timings are wall-clock on whatever machine runs it
(recorded with the CPU count and load average, and as CPU seconds): share the machine and the
wall-clock numbers move. The summary repeats the radar-likeness headline numbers of
``training.synth.stats``: the radar/LiDAR non-empty pillar ratio at 0.075 m (checked, 5-20 %), the
0.6 m BEV cell ratio (information), radar points per sweep and the false-positive share.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.synth.stats import check_stats, compute_stats, format_stats
from training.synth.writer import generate_world


def _dir_size(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=2)
    p.add_argument("--scene-seconds", type=float, default=20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="JSON results file")
    p.add_argument("--keep", default=None, help="directory to keep the generated world in (default: temp)")
    args = p.parse_args(argv)
    if args.scenes < 1:
        p.error("--scenes must be >= 1")
    tmp = None
    if args.keep:
        root = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="bench_synth_")
        root = Path(tmp) / "world"
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        generate_world(root, scenes=args.scenes, seed=args.seed, scene_seconds=args.scene_seconds,
                       show_progress=False, overwrite=True)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        size, n_files = _dir_size(root)
        t0 = time.perf_counter()
        stats = compute_stats(root, "v1.0-synth")
        t_stats = time.perf_counter() - t0
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_1m": os.getloadavg()[0]},
        "scenes": args.scenes, "scene_seconds": args.scene_seconds, "seed": args.seed,
        "generation_s_total": total, "generation_s_per_scene": total / args.scenes,
        "generation_cpu_s_per_scene": cpu / args.scenes,
        "size_bytes": size, "size_mb_per_scene": size / args.scenes / 1e6, "files": n_files,
        "stats_s": t_stats, "stats": stats, "checks": check_stats(stats),
        "headline": {"pillar_ratio_0075m": stats["pillar_ratio"],
                     "bev_cell_ratio_06m": stats["bev_cell_ratio"],
                     "radar_points_per_sweep": stats["radar_points_per_sweep"],
                     "lidar_points_per_sweep": stats["lidar_points_per_sweep"], "fp_share": stats["fp_share"],
                     "share_objects_0_5_returns": stats["share_objects_0_5_returns"]},
    }
    print(f"{args.scenes} scene(s) x {args.scene_seconds:.0f} s: {total:.1f} s total, "
          f"{total / args.scenes:.1f} s per scene (CPU {cpu / args.scenes:.1f} s); "
          f"{size / 1e6:.1f} MB in {n_files} files "
          f"({size / args.scenes / 1e6:.1f} MB per scene); stats in {t_stats:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(format_stats(stats))
    print(f"headline: 0.075 m pillar ratio {100 * stats['pillar_ratio']:.1f}%, 0.6 m cell ratio "
          f"{100 * stats['bev_cell_ratio']:.1f}%, radar {stats['radar_points_per_sweep']:.0f} points per "
          f"sweep, "
          f"false positives {100 * stats['fp_share']:.0f}%")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
