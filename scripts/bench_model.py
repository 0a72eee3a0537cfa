#!/usr/bin/env python3
"""Latency of the model's two parts in eager torch (no_grad, BN eval, 2 threads by default).

    .venv/bin/python scripts/bench_model.py --variants lite paper --out results/bench_model.json

Front end: pillarise + VFE + sparse encoder on a synthetic radar frame (~1500 points over
+-54 m: clustered returns of ~300 targets accumulated over 5 radars x 6 sweeps, plus clutter).
Dense part: stage 5 + CMA + DenseEnc + CenterHead on x_conv4 (B=1). Prints p50/p99 per part and
their sum, the dense part's GFLOPs, the process CPU time per call (wall >> CPU / threads means
the cores were busy with other work) and the load average; writes JSON. Random weights (latency
does not depend on them). ``--malloc-tune`` (default on) keeps freed memory in the process
(glibc mmap/trim thresholds 1 GiB), which removes page-fault tails; the node can do the same.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from radardistill_ros.config import Config, load_config
from radardistill_ros.model import build_model


def synthetic_radar_points(n: int = 1500, seed: int = 0, half_range: float = 54.0) -> torch.Tensor:
    """(n, 7) float32 [batch 0, x, y, z, rcs, vx_comp, vy_comp]: 80% clustered target returns
    (~300 targets, range-weighted towards the ego), 20% uniform clutter."""
    rng = np.random.default_rng(seed)
    n_cl = int(0.8 * n)
    targets = rng.uniform(-half_range, half_range, size=(300, 2)) * rng.uniform(0.3, 1.0, size=(300, 1))
    which = rng.integers(0, len(targets), n_cl)
    xy = np.concatenate([targets[which] + rng.normal(0, 0.6, (n_cl, 2)),
                         rng.uniform(-half_range, half_range, (n - n_cl, 2))])
    xy = np.clip(xy, -half_range + 1e-3, half_range - 1e-3)
    z = rng.normal(0.5, 0.6, (n, 1))
    rcs = rng.normal(5.0, 8.0, (n, 1))
    v = rng.normal(0.0, 3.0, (n, 2))
    pts = np.concatenate([np.zeros((n, 1)), xy, z, rcs, v], axis=1).astype(np.float32)
    return torch.from_numpy(pts)


def malloc_tune() -> bool:
    """glibc: keep freed memory (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD = 1 GiB); False if not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, 1 << 30)) and bool(libc.mallopt(-1, 1 << 30))
    except OSError:
        return False


def _time(fn, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU milliseconds per call."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return wall, cpu


def _stats(timed: tuple[list[float], list[float]]) -> dict[str, float]:
    a, c = np.asarray(timed[0]), np.asarray(timed[1])
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "min_ms": float(a.min()), "cpu_p50_ms": float(np.percentile(c, 50)),
            "runs": len(a)}


def _loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def bench_variant(cfg: Config, runs: int, dense_runs: int, points: int) -> dict[str, object]:
    """Time front end and dense part of the radar student of ``cfg``."""
    torch.manual_seed(0)
    model = build_model(cfg, "radar").eval()
    pts = synthetic_radar_points(points)
    with torch.no_grad():
        x4 = model.front_end(pts, 1)
        front = _time(lambda: model.front_end(pts, 1), runs, warmup=10)
        dense = _time(lambda: model.dense(x4), dense_runs, warmup=1 if dense_runs < 10 else 3)
        flops = FlopCounterMode(display=False)
        with flops:
            model.dense(x4)
    n_params = sum(p.numel() for p in model.parameters())
    res = {"front_end": _stats(front), "dense_part": _stats(dense),
           "dense_part_gflops": flops.get_total_flops() / 1e9,
           "x_conv4_shape": list(x4.shape), "active_x_conv4_cells": int((x4.abs().sum(1) > 0).sum()),
           "params": n_params, "params_dense_part": sum(p.numel() for p in model.dense.parameters()),
           "points": points}
    res["sum_p50_ms"] = res["front_end"]["p50_ms"] + res["dense_part"]["p50_ms"]
    res["sum_p99_ms"] = res["front_end"]["p99_ms"] + res["dense_part"]["p99_ms"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["lite", "paper"])
    ap.add_argument("--runs", type=int, default=300, help="front-end runs (and lite dense-part runs)")
    ap.add_argument("--paper-runs", type=int, default=5, help="dense-part runs for the paper variant")
    ap.add_argument("--points", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-malloc-tune", action="store_true", help="leave glibc malloc defaults")
    ap.add_argument("--out", type=Path, default=Path("bench_model.json"))
    args = ap.parse_args()
    tuned = False if args.no_malloc_tune else malloc_tune()
    torch.set_num_threads(args.threads)
    results: dict[str, object] = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": args.threads},
        "mode": "eager torch, no_grad, eval (BN not folded), batch 1", "malloc_tuned": tuned,
        "loadavg_start": _loadavg(), "variants": {}}
    for name in args.variants:
        cfg = load_config(name)
        dense_runs = args.paper_runs if name == "paper" else args.runs
        r = bench_variant(cfg, args.runs, dense_runs, args.points)
        results["variants"][name] = r  # type: ignore[index]
        fe, dp = r["front_end"], r["dense_part"]
        print(f"{name:6s} params {r['params'] / 1e6:.2f} M  x_conv4 {r['x_conv4_shape']}  "
              f"dense {r['dense_part_gflops']:.2f} GFLOP", flush=True)
        for label, st in (("front end ", fe), ("dense part", dp)):
            print(f"       {label} p50/p99 {st['p50_ms']:.1f}/{st['p99_ms']:.1f} ms  "
                  f"(process CPU p50 {st['cpu_p50_ms']:.1f} ms, {st['runs']} runs)", flush=True)
        print(f"       sum p50/p99 {r['sum_p50_ms']:.1f}/{r['sum_p99_ms']:.1f} ms  loadavg {_loadavg()}",
              flush=True)
    results["loadavg_end"] = _loadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
