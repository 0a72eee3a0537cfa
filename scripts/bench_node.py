"""End-to-end benchmark of the detector node at the real nuScenes rate.

    .venv/bin/python scripts/bench_node.py [--out bench_node.json] [--scene-seconds 30] \\
        [--backend onnxruntime|torch] [--checkpoint student.pt] [--config lite] [--cores 0,1] \\
        [--keep DIR | --bag DIR/bag] [--interference PERCENT] [--markers]

1. Data: a synthetic nuScenes-format world (5 ARS408-like radars at ~13 Hz, 20 Hz LiDAR) written
   to a rosbag2 (``nuscenes_to_bag``), or ``--bag`` with an existing one.
2. Model: ``--checkpoint`` (a trained student), else a random-weight ``--config`` student with
   calibrated BatchNorm statistics (so detections follow the points, a few tens per frame
   rather than the hundreds of a fresh initialisation); exported to ONNX for ``--backend
   onnxruntime`` (``export.onnx``).
3. The node runs as its own process (``python -m radardistill_ros.node --ros-args
   --params-file ...``), pinned to ``--cores`` with ``taskset`` where available, 2 threads.
4. This process replays the bag at rate 1 (``tools.replay``: raw CDR, original timing) and
   records, for every RADAR_FRONT trigger, the publish time -> receive time of its
   Detection3DArray over DDS (end-to-end latency), plus the node's per-frame stage times from
   ``~/debug/stage_times``: node overhead = input decode (the trigger's callback) + accumulate
   (transforms + sweep accumulation) + output (Detection3DArray and velocity cloud built and
   published); model = front end + dense part + decode. ``pose_wait`` (waiting for the ego pose
   at the trigger stamp to arrive on /tf) and ``wait`` (trigger waiting for the worker) are
   reported apart: they are waiting for data or for the previous frame, not work.

``--interference P`` emulates a busy host: on each node core a SCHED_FIFO process
(``scripts/_interference.py``) takes P% of the core in 1-4 ms bursts, as host steal or a
higher-priority task would; the same disturbance in every run, unlike the host's own steal.

Prints a table and writes JSON (``--out``). Measure on an otherwise idle machine: p99 on shared
machines moves by +-10 % between runs (platform.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _interference import start_interference, stop_interference
from _machine import cpu_jiffies, process_cpu_s, process_faults, process_memory_mib, steal_share, thread_cpu_s

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

TRIGGER = "/radar/front/points"


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, float)
    if not len(v):
        return {"count": 0}
    return {"count": len(v), "mean": float(v.mean()), "p50": float(np.percentile(v, 50)),
            "p95": float(np.percentile(v, 95)), "p99": float(np.percentile(v, 99)), "max": float(v.max())}


def _prepare(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path, str]:
    """(bag, checkpoint, dense model path, config name)."""
    import torch

    from radardistill_ros.config import load_config
    from radardistill_ros.pipeline import file_sha256

    if args.bag:
        bag = Path(args.bag)
    else:
        from radardistill_ros.tools.nuscenes_to_bag import main as to_bag
        from training.synth import generate_world

        t = time.perf_counter()
        root = generate_world(work / "world", version="v1.0-synth", scenes=1, seed=args.seed,
                              scene_seconds=args.scene_seconds, show_progress=False)
        bag = work / "bag"
        if to_bag(["--dataroot", str(root), "--version", "v1.0-synth", "--out", str(bag), "--no-progress",
                   "--no-odom"]) != 0:
            raise SystemExit("bag conversion failed")
        print(f"[bench] synthetic world + bag in {time.perf_counter() - t:.1f} s")
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        cfg_name = ""
    else:
        from _node_helpers import make_checkpoint

        torch.set_num_threads(2)
        ckpt = make_checkpoint(work / f"{args.config}_random.pt", seed=args.seed, hm_bias=args.hm_bias,
                               cfg=load_config(args.config))
        cfg_name = args.config
    if args.backend == "torch":
        return bag, ckpt, ckpt, cfg_name
    from export.onnx import export_onnx
    from radardistill_ros.model import load_checkpoint

    model, cfg = load_checkpoint(ckpt, modality="radar")
    onnx_path = work / f"{cfg.name}.onnx"
    t = time.perf_counter()
    export_onnx(model.dense, cfg, onnx_path, weights={"source": "checkpoint", "file": ckpt.name,
                                                       "sha256": file_sha256(ckpt)})
    print(f"[bench] exported {onnx_path.name} in {time.perf_counter() - t:.1f} s")
    return bag, ckpt, onnx_path, cfg_name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_node.json")
    ap.add_argument("--bag", help="existing bag (default: a synthetic world is generated)")
    ap.add_argument("--scene-seconds", type=float, default=30.0, help="length of the synthetic scene [s]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--config", default="lite", help="model variant of the random-weight student")
    ap.add_argument("--checkpoint", help="a trained student checkpoint instead of random weights")
    ap.add_argument("--hm-bias", type=float, default=-3.0, help="heatmap bias of the random student")
    ap.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    ap.add_argument("--cores", default="0,1", help="CPU cores of the node process (taskset); '' = no pinning")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--keep", help="keep the work directory here")
    ap.add_argument("--load-nice", type=int, default=0,
                    help="niceness added to this process (bag replay + recording) once the node runs, so "
                         "the node under test gets the CPU first, as a perception node would next to "
                         "logging on a vehicle (0: equal priority, the default)")
    ap.add_argument("--markers", action="store_true",
                    help="also subscribe to the RViz markers, as an open RViz would (the node builds them "
                         "only while someone subscribes)")
    ap.add_argument("--interference", type=float, default=0.0, metavar="PERCENT",
                    help="emulated host interference: on each node core a SCHED_FIFO process takes this "
                         "share of the core in 1-4 ms bursts, as host steal or a higher-priority task would "
                         "(scripts/_interference.py; needs root or CAP_SYS_NICE; 0: none, the default)")
    args = ap.parse_args(argv)
    cores = [int(c) for c in args.cores.split(",") if c.strip()] or list(range(os.cpu_count() or 1))

    from radardistill_ros.ros_env import apply_loopback_ros_env

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_node_"))
    work.mkdir(parents=True, exist_ok=True)
    apply_loopback_ros_env(work / "ros_log")
    from _node_helpers import write_params

    from radardistill_ros.tools.replay_evaluate import run_replay, start_node, stop_process

    bag, ckpt, dense, cfg_name = _prepare(args, work)
    params = write_params(work / "params.yaml", model_path=str(dense), checkpoint_path=str(ckpt),
                          backend=args.backend, model_config=cfg_name, num_threads=args.threads)
    log = work / "node.log"
    env = dict(os.environ)
    proc = start_node(params, {}, log, env=env)
    if args.cores and shutil.which("taskset"):
        os.system(f"taskset -a -p -c {args.cores} {proc.pid} > /dev/null")
    if args.load_nice:
        os.nice(args.load_nice)
    stages: dict[int, dict[str, float]] = {}
    markers: list[bytes] = []
    lock = threading.Lock()

    def setup(node) -> None:
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.qos import QoSProfile

        def on_stage(msg) -> None:
            with lock:
                stages[int(msg.message)] = {kv.key: float(kv.value) for kv in msg.values}

        node.create_subscription(DiagnosticStatus, "/radardistill_detector/debug/stage_times", on_stage,
                                 QoSProfile(depth=200))
        if args.markers:
            from visualization_msgs.msg import MarkerArray

            node.create_subscription(MarkerArray, "/detections/markers", markers.append,
                                     QoSProfile(depth=200), raw=True)

    cpu0: list[float] = []  # node and bench CPU seconds when the replay starts (node loaded)
    faults0: list[float] = []  # node minor faults and system seconds then
    threads0: dict[str, float] = {}

    jiffies0: list[int] = []

    def on_start() -> None:
        cpu0[:] = [process_cpu_s(proc.pid), time.process_time()]
        faults0[:] = process_faults(proc.pid)
        jiffies0[:] = cpu_jiffies()
        threads0.update(thread_cpu_s(proc.pid))

    bursts = start_interference(cores, args.interference / 100.0) if args.interference else []
    try:
        publishes, recorder, counters = run_replay(bag, "/detections", TRIGGER, args.rate, proc, 300.0, 10.0,
                                                   setup=setup, on_start=on_start,
                                                   log=lambda m: print(f"[bench] {m}"))
        node_cpu = process_cpu_s(proc.pid) - cpu0[0]
        node_faults = [b - a for a, b in zip(faults0, process_faults(proc.pid))]
        node_threads = {k: v - threads0.get(k, 0.0) for k, v in thread_cpu_s(proc.pid).items()}
        bench_cpu = time.process_time() - cpu0[1]
        steal = steal_share(jiffies0, cpu_jiffies())
        node_rss, node_peak = process_memory_mib(proc.pid)
        burst_cpu = sum(process_cpu_s(b.pid) for b in bursts)
    finally:
        stop_interference(bursts)
        status = stop_process(proc)
    if status not in (0, None):
        print(log.read_text()[-3000:], file=sys.stderr)
    sent = [p for p in publishes if p.topic == TRIGGER]
    frames = recorder.frames_by_stamp
    e2e = [(frames[p.stamp_ns].receive_s - p.publish_s) * 1e3 for p in sent if p.stamp_ns in frames]
    st = [stages[s] for s in sorted(stages)]
    overhead = [s["input_decode"] + s["accumulate"] + s["output"] for s in st]
    def cpu_ms(seconds: float) -> float:
        return seconds * 1e3 / max(len(sent), 1)

    result = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores_total": os.cpu_count(),
                    "node_cores": args.cores, "threads": args.threads, "load_avg_1m": os.getloadavg()[0],
                    "load_nice": args.load_nice, "host_steal_share": steal,
                    "interference_percent_per_core": args.interference},
        "backend": args.backend, "checkpoint": str(ckpt), "dense_model": str(dense),
        "bag": str(bag), "rate": args.rate,
        "frames_sent": len(sent), "frames_answered": len(e2e), "frames_dropped": len(sent) - len(e2e),
        "node_counters": counters,
        # CPU time (all threads) per sent trigger: the node's work, and the load generator's
        "cpu_ms_per_trigger": {"node": node_cpu * 1e3 / max(len(sent), 1),
                               "replay_and_recording": bench_cpu * 1e3 / max(len(sent), 1),
                               "interference": burst_cpu * 1e3 / max(len(sent), 1),
                               "node_system": node_faults[1] * 1e3 / max(len(sent), 1),
                               "node_by_thread": {k: v * 1e3 / max(len(sent), 1) for k, v in
                                                  sorted(node_threads.items(), key=lambda kv: -kv[1])}},
        "node_minor_faults_per_trigger": node_faults[0] / max(len(sent), 1),
        "node_memory_mib": {"resident": node_rss, "peak_resident": node_peak},
        "end_to_end_ms": _stats(e2e),
        "node_overhead_ms": _stats(overhead),
        "stages_ms": {k: _stats([s[k] for s in st]) for k in
                      ("input_decode", "wait", "pose_wait", "accumulate", "front_end", "dense", "decode",
                       "output", "receive_to_publish")},
        "points_per_frame": _stats([s["points"] for s in st]),
        "detections_per_frame": _stats([s["detections"] for s in st]),
        "marker_messages": len(markers) if args.markers else None,
        "targets": {"end_to_end_p99_ms": 60.0, "drops": 0, "node_overhead_p99_ms": 5.0},
        # every frame's stage times [ms] (trigger stamp order), for finding what makes the tails
        "per_frame_stages": st,
    }
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nnode: {args.backend}, {args.threads} threads, cores {args.cores or 'any'}; "
          f"load avg {result['machine']['load_avg_1m']:.1f}; triggers sent {len(sent)}, answered {len(e2e)}, "
          f"dropped {len(sent) - len(e2e)}; load nice {args.load_nice}; host steal "
          + (f"{100 * steal:.1f}% of CPU time" if steal is not None else "unknown")
          + (f"; emulated interference {args.interference:g}% per core ({cpu_ms(burst_cpu):.1f} ms CPU per "
             "trigger)" if bursts else "")
          + (f"; {len(markers)} marker arrays received" if args.markers else ""))
    cpu = result["cpu_ms_per_trigger"]
    print(f"CPU time per trigger (all threads): node {cpu['node']:.1f} ms, replay + recording "
          f"{cpu['replay_and_recording']:.1f} ms (the trigger period is {1e3 / 13:.0f} ms per core); node by "
          "thread: " + ", ".join(f"{k} {v:.1f}" for k, v in list(cpu["node_by_thread"].items())[:6]))
    print(f"node: {result['node_minor_faults_per_trigger']:.0f} minor page faults and "
          f"{cpu['node_system']:.1f} ms system CPU time per trigger; resident memory {node_rss:.0f} MiB "
          f"(peak {node_peak:.0f} MiB)")
    print(f"{'metric [ms]':<34}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}")
    rows = [("end-to-end (publish -> receive)", result["end_to_end_ms"]),
            ("node overhead (in+acc+out)", result["node_overhead_ms"])]
    rows += [(f"  stage {k}", v) for k, v in result["stages_ms"].items()]
    for name, s in rows:
        if s.get("count"):
            print(f"{name:<34}{s['p50']:>8.2f}{s['p95']:>8.2f}{s['p99']:>8.2f}{s['max']:>8.2f}")
    print(f"points/frame p50 {result['points_per_frame'].get('p50', 0):.0f}, detections/frame p50 "
          f"{result['detections_per_frame'].get('p50', 0):.0f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
