#!/usr/bin/env python3
"""Training throughput on CPU: time per epoch and samples/s of the real training loop
(``training.train``: data loading, forward, losses, backward, clip, Adam step) for the
teacher, the radar baseline and the distilled student.

    .venv/bin/python scripts/bench_train.py --config lite --samples 8 --batch-size 2 \\
        --threads 2 --out results/bench_train.json [--dataroot D --version V --split S]

Without ``--dataroot`` a synthetic world (2 scenes x 4 s, seed 0) is generated in a temp dir.
Each stage trains one epoch over the first ``--samples`` samples of the split (no augmentation
change: the config's); the distilled student uses the teacher just trained. Reported per stage:
epoch wall time, samples/s over the epoch, the median iteration time without the first iteration
(warm-up) and the samples/s it implies, process CPU time over wall time (< threads means the cores
were busy with other work) and the 1-minute load average; written as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radardistill_ros.config import load_config
from training.train import train

VERSION_SYNTH = "v1.0-synth"


def _stage_stats(run: Path, wall: float, cpu: float) -> dict:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    iters = [r for r in recs if r["type"] == "iter"]
    epoch = [r for r in recs if r["type"] == "epoch"][-1]
    steady = [r["iter_time_s"] for r in iters[1:]] or [iters[0]["iter_time_s"]]
    bsz = iters[0]["batch_size"]
    med = statistics.median(steady)
    return {"epoch_time_s": epoch["epoch_time_s"], "samples": epoch["samples"],
            "samples_per_s": epoch["samples_per_s"], "iterations": epoch["iterations"],
            "median_iter_s_after_first": med, "steady_samples_per_s": bsz / med,
            "first_iter_s": iters[0]["iter_time_s"], "final_loss": iters[-1]["loss"],
            "process_cpu_over_wall": cpu / max(wall, 1e-9), "loadavg_1m_after": os.getloadavg()[0]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="lite")
    p.add_argument("--dataroot")
    p.add_argument("--version", default=VERSION_SYNTH)
    p.add_argument("--split", help="default: the synthetic world's train split")
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stages", default="teacher,baseline,distill")
    p.add_argument("--workdir", help="run directories (default: a temp dir)")
    p.add_argument("--out", required=True, help="JSON results file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_train_"))
    dataroot, split = args.dataroot, args.split
    if dataroot is None:
        from training.synth import TRAIN_SPLIT, generate_world

        dataroot = str(generate_world(work / "world", version=VERSION_SYNTH, scenes=2, seed=0,
                                      scene_seconds=4.0, show_progress=False))
        split = split or TRAIN_SPLIT
    if split is None:
        raise SystemExit("--split is required with --dataroot")
    stages = args.stages.split(",")
    results: dict = {"config": cfg.name, "machine": f"{platform.processor() or platform.machine()}, "
                     f"{os.cpu_count()} logical CPUs", "torch": torch.__version__, "threads": args.threads,
                     "samples": args.samples, "batch_size": args.batch_size, "dataroot": dataroot,
                     "split": split, "stages": {}}
    teacher = None
    for stage in stages:
        run = work / stage
        if stage == "distill" and teacher is None:
            raise SystemExit("distill needs the teacher stage first (--stages teacher,...,distill)")
        t0, c0 = time.perf_counter(), time.process_time()
        final = train(cfg, stage, dataroot, args.version, split, run,
                      teacher=teacher if stage == "distill" else None, epochs=1,
                      batch_size=args.batch_size, max_samples=args.samples, num_workers=0,
                      show_progress=False, overwrite=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if stage == "teacher":
            teacher = final
        results["stages"][stage] = _stage_stats(run, wall, cpu)
        s = results["stages"][stage]
        print(f"{stage:9s} epoch {s['epoch_time_s']:7.1f} s  {s['samples_per_s']:.3f} samples/s  "
              f"steady {s['steady_samples_per_s']:.3f} samples/s "
              f"(median iter {s['median_iter_s_after_first']:.2f} s)"
              f"  cpu/wall {s['process_cpu_over_wall']:.2f}  load {s['loadavg_1m_after']:.1f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
