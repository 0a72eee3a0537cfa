#!/usr/bin/env python3
"""Per-stage latency of the radar student on each available inference backend.

    .venv/bin/python scripts/bench_inference.py --variants lite paper --out results/bench_inference.json

Stages per frame: pillarisation, VFE, sparse encoder (the torch front end, shared by every
backend), dense part (stage 5 + CMA + DenseEnc + CenterHead) on each backend, decode. Input: a
pool of synthetic nuScenes-like accumulated radar frames (5 radars x 6 sweeps, ~1.6k points over
+-54 m with the default ``--returns-per-sweep 55``; 97 gives the ~2.9k points per frame of
``bench_node.py``'s synthetic bag; ``export.check.synthetic_radar_points``), cycled. Weights:
``--checkpoint`` (a trained student, for the first variant) or ``export.check.random_student``
(random, head outputs scaled to a spread of scores; latency does not depend on the values except
through the number of boxes decode/NMS sees, which random heads make worst-case-like). The front
end is the CPU inference form the node runs (``--front-end inference``:
``model/front_end_infer.py``, compiled pillar kernels and fused GEMMs, batch norms folded;
``module``: the folded torch module) and, like decode, runs on ``--front-threads`` torch threads.
Backends run interleaved on the same frames (torch eager, ONNX
Runtime; on a CUDA machine also torch CUDA fp32/fp16/CUDA graphs), so the ORT/eager ratio is
measured under the same load. Whole model = front end + dense + decode of the same frame (its p99
is over frames, not a sum of p99s). Prints a markdown table, writes JSON.

On cores shared with other processes, torch's OpenMP threads spin-wait at every parallel region;
when the cores are oversubscribed this makes eager torch (and decode, many small ops) several
times slower. ``OMP_WAIT_POLICY=PASSIVE`` (set before the process starts) avoids it, as
``allow_spinning=0`` does for ONNX Runtime; the value used is recorded in the JSON.

Like the node, the process first keeps freed heap memory mapped
(``malloc_tuning.retain_freed_memory``); ``--no-retain-freed-memory`` measures glibc's default
(freed per-frame tensors are unmapped and page-fault again). Minor page faults and system time
per frame are recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_jiffies, steal_share

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.check import random_student, synthetic_radar_points
from export.onnx import export_onnx
from radardistill_ros.backends import BackendUnavailable, create_backend
from radardistill_ros.backends.torch_backend import TorchBackend
from radardistill_ros.config import load_config
from radardistill_ros.decode import DECODE_IMPLS, decode
from radardistill_ros.malloc_tuning import retain_freed_memory
from radardistill_ros.model import load_checkpoint
from radardistill_ros.model.front_end_infer import InferenceFrontEnd
from radardistill_ros.model.fuse import fold_front_end
from radardistill_ros.model.pillars import pillarize
from radardistill_ros.model.sparse import SparseTensor

FRONT_STAGES = ("pillarise", "vfe", "sparse_encoder")
TARGETS = {"lite_cpu_whole_p99_ms": 50.0, "front_end_p99_ms": 10.0, "paper_gpu_whole_p99_ms": 5.0}


def stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "max_ms": float(a.max()), "runs": int(a.size)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_backends(cfg, model, onnx_path: Path, threads: int) -> tuple[dict, dict[str, str]]:
    """Available backends by label, and the skipped ones with the reason."""
    backends = {"torch-cpu": TorchBackend(model.dense, cfg, device="cpu", num_threads=threads)}
    skipped = {}
    try:
        backends["onnxruntime-cpu"] = create_backend("onnxruntime", cfg, onnx_path, num_threads=threads)
    except BackendUnavailable as e:
        skipped["onnxruntime-cpu"] = str(e)
    gpu = [("torch-cuda-fp32", {}), ("torch-cuda-fp16", {"fp16": True}),
           ("torch-cuda-fp16-graphs", {"fp16": True, "cuda_graphs": True})]
    for label, kw in gpu:
        try:
            backends[label] = create_backend("torch", cfg, model.dense, device="cuda", num_threads=threads,
                                             **kw)
        except BackendUnavailable as e:
            skipped[label] = str(e)
    try:
        backends["tensorrt-fp16"] = create_backend("tensorrt", cfg, onnx_path, device="cuda", fp16=True)
    except BackendUnavailable as e:
        skipped["tensorrt-fp16"] = str(e)
    return backends, skipped


@torch.inference_mode()
def bench_variant(name: str, frames: int, threads: int, pool: int, warmup: int, workdir: Path,
                  front_threads: int = 1, checkpoint: str | None = None,
                  only: Sequence[str] = (), returns_per_sweep: int = 55, decode_impl: str = "auto",
                  front_end: str = "inference") -> dict:
    cfg = load_config(name)
    if checkpoint:  # a trained student: decode sees the detections a real model makes
        model, cfg = load_checkpoint(checkpoint, cfg=cfg, modality="radar")
    else:
        model = random_student(cfg, 0)
    t0 = time.perf_counter()
    onnx_path = export_onnx(model.dense, cfg, workdir / f"{name}.onnx", verbose=False)
    export_s = time.perf_counter() - t0
    backends, skipped = make_backends(cfg, model, onnx_path, threads)
    if only:
        for label in [b for b in backends if b not in only]:
            del backends[label]
            skipped[label] = "not in --backends"
    clouds = [torch.from_numpy(synthetic_radar_points(1000 + i, returns_per_sweep=returns_per_sweep))
              for i in range(pool)]
    fe = fold_front_end(model.front_end)  # batch norms folded
    if front_end == "inference":  # what RadarDetector (the node) runs on CPU, warmed up as there
        fe = InferenceFrontEnd(fe)
        fe.warm_up()
    ny, nx = cfg.grid.pillar_grid[1], cfg.grid.pillar_grid[0]

    def pillars_of(pts: torch.Tensor):
        return fe.pillars(pts, 1) if front_end == "inference" else pillarize(pts, cfg.grid, 1)

    def vfe_of(p) -> torch.Tensor:
        return fe.vfe(*p) if front_end == "inference" else fe.vfe(p)

    def encode(p, f: torch.Tensor) -> torch.Tensor:
        if front_end == "inference":
            return fe.encoder(SparseTensor(f, torch.from_numpy(p[0]), (ny, nx), 1))
        return fe.encoder(SparseTensor(f, p.coords, p.grid, 1))

    # the split is the front end's forward stage by stage; prove it is the same computation
    p = pillars_of(clouds[0])
    assert torch.equal(encode(p, vfe_of(p)), fe(clouds[0], 1))

    times: dict[str, list[float]] = {s: [] for s in FRONT_STAGES}
    for b in backends:
        times[f"dense/{b}"], times[f"decode/{b}"], times[f"whole/{b}"] = [], [], []
    n_points, n_pillars, n_dets = [], [], []
    cpu: dict[str, list[float]] = {}  # process CPU time (all threads): load-independent work per frame
    labels = list(backends)
    for i in range(warmup + frames):
        if i == warmup:
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
        pts = clouds[i % pool]
        torch.set_num_threads(front_threads)  # as RadarDetector: front end and decode on front_threads
        c0, t0 = time.process_time(), time.perf_counter()
        p = pillars_of(pts)
        t1 = time.perf_counter()
        f = vfe_of(p)
        t2 = time.perf_counter()
        x4 = encode(p, f)
        t3, c3 = time.perf_counter(), time.process_time()
        x = x4.numpy()
        front = [t1 - t0, t2 - t1, t3 - t2]
        order = labels if i % 2 == 0 else labels[::-1]  # alternate, so neither backend always runs first
        per_backend = {}
        for b in order:
            torch.set_num_threads(threads if b == "torch-cpu" else front_threads)
            q0, s0 = time.process_time(), time.perf_counter()
            heads = backends[b].infer(x)
            s1, q1 = time.perf_counter(), time.process_time()
            torch.set_num_threads(front_threads)
            dets = decode(heads, cfg.grid, cfg.post, impl=decode_impl)[0]
            s2, q2 = time.perf_counter(), time.process_time()
            per_backend[b] = (s1 - s0, s2 - s1, len(dets.scores), q1 - q0, q2 - q1)
        if i < warmup:
            continue
        for s, dt in zip(FRONT_STAGES, front):
            times[s].append(dt * 1e3)
        for b, (dd, dc, _, qd, qc) in per_backend.items():
            times[f"dense/{b}"].append(dd * 1e3)
            times[f"decode/{b}"].append(dc * 1e3)
            times[f"whole/{b}"].append((sum(front) + dd + dc) * 1e3)
            cpu.setdefault(f"dense/{b}", []).append(qd * 1e3)
            cpu.setdefault(f"decode/{b}", []).append(qc * 1e3)
            cpu.setdefault(f"whole/{b}", []).append((c3 - c0 + qd + qc) * 1e3)
        times.setdefault("front_end", []).append(sum(front) * 1e3)
        cpu.setdefault("front_end", []).append((c3 - c0) * 1e3)
        n_points.append(len(pts))
        n_pillars.append(int((p[0] if front_end == "inference" else p.coords).shape[0]))
        if labels:
            n_dets.append(per_backend[labels[0]][2])
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    res = {"variant": name, "checkpoint": checkpoint, "returns_per_sweep": returns_per_sweep,
           "front_end": front_end if front_end == "module" else f"inference ({fe.gemm} GEMMs)",
           "minor_faults_per_frame": (ru1.ru_minflt - ru0.ru_minflt) / frames,
           "system_ms_per_frame": (ru1.ru_stime - ru0.ru_stime) * 1e3 / frames,
           "digest": cfg.digest(), "frames": frames,
           "warmup": warmup, "export_s": export_s,
           "onnx_mib": onnx_path.stat().st_size / 2**20, "x_conv4_shape": list(x4.shape),
           "params_dense": sum(q.numel() for q in model.dense.parameters()),
           "points_mean": float(np.mean(n_points)), "pillars_mean": float(np.mean(n_pillars)),
           "detections_mean": float(np.mean(n_dets)) if n_dets else None,
           "stages": {k: stats(v) for k, v in times.items()},
           "cpu_time": {k: stats(v) for k, v in cpu.items()}, "skipped": skipped}
    if "onnxruntime-cpu" in backends and "torch-cpu" in backends:
        st = res["stages"]
        res["ort_over_torch"] = {
            "dense_p50": st["dense/onnxruntime-cpu"]["p50_ms"] / st["dense/torch-cpu"]["p50_ms"],
            "whole_p50": st["whole/onnxruntime-cpu"]["p50_ms"] / st["whole/torch-cpu"]["p50_ms"]}
    return res


def table(results: list[dict]) -> str:
    lines = ["| variant | stage | backend | p50 ms | p99 ms | CPU ms p50 (all threads) | runs |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for key, s in r["stages"].items():
            stage, _, backend = key.partition("/")
            c = r["cpu_time"].get(key)
            cpu_p50 = f"{c['p50_ms']:.1f}" if c else "-"
            lines.append(f"| {r['variant']} | {stage} | {backend or 'torch (shared)'} | {s['p50_ms']:.2f} "
                         f"| {s['p99_ms']:.2f} | {cpu_p50} | {s['runs']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["lite", "paper"])
    ap.add_argument("--frames", type=int, default=300, help="timed frames for lite (and other variants)")
    ap.add_argument("--paper-frames", type=int, default=10, help="timed frames for paper (slow on CPU)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--pool", type=int, default=20, help="distinct synthetic frames, cycled")
    ap.add_argument("--threads", type=int, default=2, help="threads of the dense part (ORT session / torch)")
    ap.add_argument("--backends", nargs="+", default=[],
                    help="only these backend labels (e.g. onnxruntime-cpu: the node's configuration alone; "
                         "none: the front end alone)")
    ap.add_argument("--checkpoint", help="trained student for the first variant (default: random weights)")
    ap.add_argument("--front-threads", type=int, default=1,
                    help="torch threads of the front end and decode (the node uses 1)")
    ap.add_argument("--returns-per-sweep", type=int, default=55,
                    help="radar returns per radar and sweep of the synthetic frames (5 x 6 sweeps: 55 -> "
                         "~1.6k points; 97 -> ~2.9k, the density of bench_node's synthetic bag)")
    ap.add_argument("--no-retain-freed-memory", dest="retain_freed_memory", action="store_false",
                    help="leave glibc's malloc thresholds as they are (the node fixes them)")
    ap.add_argument("--decode-impl", choices=DECODE_IMPLS, default="auto",
                    help="decode implementation (auto = compiled loops on CPU, as the node)")
    ap.add_argument("--front-end", choices=("inference", "module"), default="inference",
                    help="inference: the CPU inference form the node runs (model/front_end_infer.py); "
                         "module: the batch-norm-folded torch module")
    ap.add_argument("--out", default="results/bench_inference.json")
    args = ap.parse_args(argv)

    malloc_msg = retain_freed_memory()[1] if args.retain_freed_memory else "glibc malloc defaults (not tuned)"

    torch.set_num_threads(args.threads)
    env = {"machine": f"{cpu_name()}, {os.cpu_count()} cores visible, {platform.platform()}",
           "threads": args.threads, "front_threads": args.front_threads,
           "torch": torch.__version__, "cuda": torch.cuda.is_available(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "malloc": malloc_msg,
           "decode_impl": args.decode_impl,
           "loadavg_start": os.getloadavg()}
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        env["onnxruntime"] = None
    results = []
    jiffies0 = cpu_jiffies()
    with tempfile.TemporaryDirectory(prefix="bench_inference_") as tmp:
        for v in args.variants:
            frames = args.paper_frames if v == "paper" else args.frames
            warmup = min(args.warmup, 2) if v == "paper" else args.warmup
            print(f"[bench] {v}: {frames} frames ...", file=sys.stderr, flush=True)
            ckpt = args.checkpoint if args.checkpoint and v == args.variants[0] else None
            results.append(bench_variant(v, frames, args.threads, args.pool, warmup, Path(tmp),
                                         args.front_threads, ckpt, args.backends, args.returns_per_sweep,
                                         args.decode_impl, args.front_end))
    env["loadavg_end"] = os.getloadavg()
    env["host_steal_share"] = steal_share(jiffies0, cpu_jiffies())
    checks = {}
    for r in results:
        st = r["stages"]
        checks[f"{r['variant']}_front_end_p99_ms"] = st["front_end"]["p99_ms"]
        for b in ("torch-cpu", "onnxruntime-cpu"):
            if f"whole/{b}" in st:
                checks[f"{r['variant']}_whole_{b}_p99_ms"] = st[f"whole/{b}"]["p99_ms"]
    out = {"env": env, "targets": TARGETS, "measured": checks, "results": results}
    print(table(results))
    print()
    for r in results:
        if "ort_over_torch" in r:
            o = r["ort_over_torch"]
            print(f"{r['variant']}: ORT / eager torch p50: dense {o['dense_p50']:.2f}, "
                  f"whole {o['whole_p50']:.2f}; export {r['export_s']:.1f} s; {r['points_mean']:.0f} points, "
                  f"{r['pillars_mean']:.0f} pillars, {r['detections_mean']:.0f} detections per frame")
        print(f"{r['variant']}: {r['minor_faults_per_frame']:.0f} minor page faults and "
              f"{r['system_ms_per_frame']:.2f} ms system time per frame ({env['malloc']})")
        for b, why in r["skipped"].items():
            print(f"{r['variant']}: skipped {b}: {why}")
    steal = env["host_steal_share"]
    print(f"machine: {env['machine']}; load average start {env['loadavg_start']} end {env['loadavg_end']}; "
          "host steal " + (f"{100 * steal:.1f}% of CPU time" if steal is not None else "unknown"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
