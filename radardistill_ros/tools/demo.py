"""The end-to-end demo (``make demo``): synthetic world -> rosbag2 -> detector node -> latency, mAP, pictures.

    python -m radardistill_ros.tools.demo [--out out/demo] [--scenes 2] [--scene-seconds 15] [--seed 1000]
        [--backend onnxruntime|torch] [--model radardistill_ros/models/lite_demo.pt] [--rate 1.0]

Steps, each the project's own implementation:

1. world: :func:`training.synth.generate_world` with a held-out seed (the shipped model was trained
   on another seed, see ``radardistill_ros/models/MODEL_CARD.md``);
2. bags: :func:`radardistill_ros.tools.nuscenes_to_bag.convert` (5 radar PointCloud2 topics, TF,
   odometry, ground truth), one per scene (the synthetic scenes lie an hour apart in time);
3. export (``--backend onnxruntime``): :func:`export.onnx.export_onnx` of the model's dense part;
4. node: ``python -m radardistill_ros.node --ros-args --params-file config/detector.yaml -p ...``
   (:func:`radardistill_ros.tools.replay_evaluate.start_node`) in its own process, with
   loopback-only DDS in a domain of its own (:func:`radardistill_ros.ros_env.loopback_ros_env`);
5. replay + record in another process (:func:`radardistill_ros.tools.replay_evaluate.run_replay`:
   the scene bags one after another at their original rate, every Detection3DArray with its
   receive time, the node's per-frame ``~/debug/stage_times``);
6. report: per-frame summary, latency p50/p95/p99 (radar message published -> detections
   received, over DDS), frames sent/answered/dropped, and mAP/NDS/per-class AP of the online
   detections from the official ``DetectionEval`` (the replay evaluation's key-frame scoring);
7. pictures: BEV of a few key frames (:func:`training.visualize.plot_bev`), precision-recall per
   class (:func:`training.visualize.plot_pr_curves`), a latency histogram.

Every process it starts (node, replay worker) is stopped by pid on exit, errors and Ctrl-C.
Exit status 0 on success, 1 when a step fails (the message names the step), 2 for bad options.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "radardistill_ros" / "models" / "lite_demo.pt"
DEFAULT_PARAMS = ROOT / "config" / "detector.yaml"
VERSION = "v1.0-synth"
#: Held-out world seed of the demo (the shipped model's training world uses another one).
DEMO_SEED = 1000
STAGE_TOPIC = "/radardistill_detector/debug/stage_times"
STEPS = ("world", "bag", "export", "node", "replay", "evaluate", "pictures")

__all__ = ["DEMO_SEED", "STEPS", "DemoError", "DemoResult", "build_parser", "main", "run_demo"]


class DemoError(RuntimeError):
    """A demo step failed; ``step`` names it."""

    def __init__(self, step: str, message: str):
        super().__init__(f"step '{step}' failed: {message}")
        self.step = step


@dataclass
class DemoResult:
    """What the demo measured and wrote (also saved as ``summary.json``)."""

    out: Path
    frames: list[dict[str, Any]] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    frames_sent: int = 0
    frames_answered: int = 0
    frames_dropped: int = 0
    node_counters: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    pictures: list[Path] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)
    summary_text: str = ""


def _say(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------------------- steps
def _step(name: str, res: DemoResult, fn: Callable[[], Any]) -> Any:
    """Run one step with a progress line and its wall time; wraps failures in :class:`DemoError`."""
    i = STEPS.index(name) + 1
    _say(f"[demo {i}/{len(STEPS)}] {name} ...")
    t0 = time.perf_counter()
    try:
        out = fn()
    except DemoError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        raise DemoError(name, f"{type(exc).__name__}: {exc}") from exc
    res.step_seconds[name] = time.perf_counter() - t0
    _say(f"[demo {i}/{len(STEPS)}] {name} done in {res.step_seconds[name]:.1f} s")
    return out


def _make_world(out: Path, scenes: int, seconds: float, seed: int) -> Path:
    from training.synth import generate_world

    return generate_world(out / "world", version=VERSION, scenes=scenes, seed=seed, scene_seconds=seconds,
                          show_progress=True, overwrite=True)


def _make_bags(world: Path, bags: Path) -> tuple[Any, list[Path], Path]:
    """One bag per scene (``bags/<scene>``, replayed one after another: the synthetic scenes lie an
    hour apart in time, which a real-time replay of one bag would wait through) and one bag of all
    scenes (``bags/all``: the evaluation reads the key-frame stamps of every scene from it)."""
    import shutil

    from nuscenes.nuscenes import NuScenes

    from radardistill_ros.tools.nuscenes_to_bag import convert

    nusc = NuScenes(version=VERSION, dataroot=str(world), verbose=False)
    if bags.exists():
        shutil.rmtree(bags)
    bags.mkdir(parents=True)
    per_scene = []
    for scene in sorted(nusc.scene, key=lambda sc: nusc.get("sample", sc["first_sample_token"])["timestamp"]):
        result = convert(nusc, [scene], bags / scene["name"], show_progress=True)
        per_scene.append(bags / scene["name"])
        _say(f"    bag {per_scene[-1]}: {sum(result.counts.values())} messages")
    convert(nusc, list(nusc.scene), bags / "all", show_progress=False)
    return nusc, per_scene, bags / "all"


def _export(model: Path, onnx_path: Path) -> Path:
    from export.onnx import export_onnx
    from radardistill_ros.model import load_checkpoint
    from radardistill_ros.pipeline import file_sha256

    net, cfg = load_checkpoint(model, modality="radar")
    weights = {"source": "checkpoint", "file": model.name, "sha256": file_sha256(model)}
    return export_onnx(net.dense, cfg, onnx_path, weights=weights, verbose=False)


class _PidWatch:
    """``poll()`` of a process this process cannot wait on (the node, seen from the replay worker)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = "X"
        if state in ("Z", "X"):
            self.returncode = -1
        return self.returncode


def _replay_worker(bags: list[str], det_topic: str, trigger_topic: str, rate: float, node_pid: int,
                   env: dict[str, str], node_timeout: float, settle: float, result_path: str) -> None:
    """Replay the bags one after another and record the answers, in its own process (rclpy lives
    here, not in the demo's main process)."""
    os.environ.clear()
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from radardistill_ros.tools.replay_evaluate import run_replay

    stages: dict[int, dict[str, float]] = {}

    def setup(node: Any) -> None:
        def on_stage(msg: Any) -> None:
            try:
                stages[int(msg.message)] = {kv.key: float(kv.value) for kv in msg.values}
            except ValueError:
                pass

        node.create_subscription(DiagnosticStatus, STAGE_TOPIC, on_stage,
                                 QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE))

    def log(msg: str) -> None:
        print(f"    {msg}", flush=True)

    out: dict[str, Any] = {"publishes": [], "frames": {}, "counters": {}, "stages": stages, "duplicates": 0}
    for bag in bags:
        log(f"bag {bag}")
        publishes, recorder, counters = run_replay(bag, det_topic, trigger_topic, rate, _PidWatch(node_pid),
                                                   node_timeout, settle, log=log, setup=setup)
        out["publishes"] += [(p.topic, p.stamp_ns, p.publish_s) for p in publishes
                             if p.topic == trigger_topic]
        out["frames"].update(recorder.parsed())
        out["counters"] = counters  # the node's counters are cumulative
        out["duplicates"] += recorder.duplicates
    with open(result_path, "wb") as f:
        pickle.dump(out, f)


def _stop_worker(proc: multiprocessing.process.BaseProcess, timeout: float = 10.0) -> None:
    if proc.is_alive() and proc.pid is not None:
        os.kill(proc.pid, signal.SIGINT)
        proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join(5.0)


# ------------------------------------------------------------------------------------- report
def _frames_table(publishes: list[tuple], frames: dict[int, tuple], stages: dict[int, dict[str, float]],
                  key_stamps: set[int]) -> list[dict[str, Any]]:
    rows = []
    t0 = publishes[0][1] if publishes else 0
    for _, stamp, publish_s in publishes:
        st = stages.get(stamp, {})
        f = frames.get(stamp)
        rows.append({"stamp_ns": stamp, "t_s": (stamp - t0) * 1e-9, "key_frame": stamp in key_stamps,
                     "points": int(st["points"]) if "points" in st else None,
                     "detections": len(f[3]) if f is not None else None,
                     "detections_0.3": int((f[2] >= 0.3).sum()) if f is not None else None,
                     "latency_ms": (f[0] - publish_s) * 1e3 if f is not None else None,
                     "node_ms": st.get("receive_to_publish")})
    return rows


def _format_frames(rows: list[dict[str, Any]], limit: int) -> str:
    """Per-frame table: every frame if ``limit`` is 0 or covers them, else ``limit`` evenly spaced rows
    (key frames first choice)."""
    sel = rows
    if 0 < limit < len(rows):
        idx = np.unique(np.linspace(0, len(rows) - 1, limit).round().astype(int))
        sel = [rows[i] for i in idx]
    lines = [f"{'t [s]':>7} {'stamp [s]':>18} {'key':>3} {'points':>7} {'dets':>5} {'>=0.3':>6} "
             f"{'latency [ms]':>13} {'node [ms]':>10}"]
    for r in sel:
        if r["latency_ms"] is None:
            lines.append(f"{r['t_s']:7.2f} {r['stamp_ns'] * 1e-9:18.6f} {'*' if r['key_frame'] else '':>3} "
                         f"{'':>7} {'':>5} {'':>6} {'not answered':>13}")
            continue
        pts = "?" if r["points"] is None else str(r["points"])
        node = "?" if r["node_ms"] is None else f"{r['node_ms']:.1f}"
        lines.append(f"{r['t_s']:7.2f} {r['stamp_ns'] * 1e-9:18.6f} {'*' if r['key_frame'] else '':>3} "
                     f"{pts:>7} {r['detections']:>5} {r['detections_0.3']:>6} {r['latency_ms']:>13.1f} "
                     f"{node:>10}")
    if len(sel) < len(rows):
        lines.append(f"({len(sel)} of {len(rows)} trigger frames shown; all in frames.csv)")
    return "\n".join(lines)


def _latency_histogram(path: Path, latencies: Sequence[float], stats: dict[str, float], title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    try:
        ax.hist(latencies, bins=min(60, max(10, len(latencies) // 5)), color="tab:blue", alpha=0.8)
        for k, c in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            if k in stats:
                ax.axvline(stats[k], color=c, ls="--", lw=1, label=f"{k} {stats[k]:.1f} ms")
        ax.set_xlabel("end-to-end latency [ms] (radar message published -> detections received)")
        ax.set_ylabel("frames")
        ax.set_title(title, fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def _key_frame_detections(nusc: Any, channel: str, frames: dict[int, tuple], tokens: Sequence[str]
                          ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The online detections the evaluation scores, per key frame: the answer to the key frame's
    trigger sweep, moved by v*dt to the key-frame time (``replay_evaluate.align_boxes``)."""
    from radardistill_ros.tools.replay_evaluate import align_boxes

    out = {}
    for tok in tokens:
        s = nusc.get("sample", tok)
        sd = nusc.get("sample_data", s["data"][channel])
        f = frames.get(sd["timestamp"] * 1000)
        if f is not None:
            out[tok] = (align_boxes(f[1], (s["timestamp"] - sd["timestamp"]) * 1e-6), f[2], f[3])
    return out


def _bev_pictures(out: Path, world: Path, model: Path, nusc: Any, channel: str, frames: dict[int, tuple],
                  tokens: Sequence[str], count: int, min_score: float) -> list[Path]:
    """BEV PNGs of ``count`` answered key frames (evenly spaced): the accumulated radar points of the
    key frame (dataset path, the same accumulation), LiDAR for reference, ground truth and the
    online detections at or above ``min_score`` as scored."""
    from radardistill_ros.config import config_from_dict
    from radardistill_ros.model.checkpoint import read_checkpoint
    from training.nuscenes_data import NuScenesLoader
    from training.visualize import plot_bev

    cfg = config_from_dict(read_checkpoint(model)["config"])
    loader = NuScenesLoader(world, VERSION, cfg.data, cfg.grid)
    dets = _key_frame_detections(nusc, channel, frames, tokens)
    answered = [t for t in tokens if t in dets]
    if not answered or count <= 0:
        return []
    idx = np.unique(np.linspace(0, len(answered) - 1, min(count, len(answered))).round().astype(int))
    paths = []
    extent = max(abs(v) for v in cfg.grid.point_cloud_range[:2])
    for n, i in enumerate(idx):
        tok = answered[i]
        s = loader.load(tok, radar=True, lidar=True)
        b, sc, lb = dets[tok]
        keep = sc >= min_score
        scene = nusc.get("scene", nusc.get("sample", tok)["scene_token"])
        t_scene = s.timestamp - nusc.get("sample", scene["first_sample_token"])["timestamp"] * 1e-6
        paths.append(plot_bev(out / f"bev_{n:02d}_{s.scene_name}.png", radar=s.radar, lidar=s.lidar,
                              gt_boxes=s.boxes, gt_labels=s.labels, det_boxes=b, det_scores=sc, det_labels=lb,
                              extent=extent, score_threshold=min_score,
                              title=f"{s.scene_name} t={t_scene:.1f} s: {len(s.radar)} radar points "
                                    f"({cfg.data.radar_sweeps} sweeps x 5 radars), {len(s.boxes)} GT (green),"
                                    " "
                                    f"{int(keep.sum())} detections >= {min_score:g} (red; {len(sc)} in all)"))
    return paths


def _format_report(res: DemoResult, backend: str, model: Path) -> str:
    lat = res.latency_ms
    lines = ["", "=" * 78, f"radardistill_ros demo: model {model.name}, backend {backend}", "=" * 78,
             "latency (end to end, radar message published -> Detection3DArray received, DDS loopback):"]
    if lat.get("count"):
        lines.append(f"  {'frames':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8} {'max':>8}   [ms]")
        lines.append(f"  {lat['count']:>8} {lat['p50']:>8.1f} {lat['p95']:>8.1f} {lat['p99']:>8.1f} "
                     f"{lat['mean']:>8.1f} {lat['max']:>8.1f}")
    else:
        lines.append("  no frame answered")
    c = res.node_counters
    lines.append(f"frames sent {res.frames_sent}, answered {res.frames_answered}, dropped (not answered) "
                 f"{res.frames_dropped}  [node counters: dropped {c.get('dropped', '?')}, rejected "
                 f"{c.get('rejected', '?')}]")
    if res.metrics:
        from training.nusc_results import format_summary

        m = res.metrics
        lines.append(f"official nuScenes DetectionEval (detection_cvpr_2019) of the online detections, "
                     f"{m.get('key_frames', '?')} key frames:")
        lines.append(format_summary(m))
        off = m.get("offline_every_key_frame")
        if off:
            lines.append(f"the same model offline on every key frame (no drops): mAP {off['mean_ap']:.4f}  "
                         f"NDS {off['nd_score']:.4f}  car AP {off['car_ap']:.3f}; online frames that the "
                         f"node dropped count as misses above ({m.get('key_frames_answered', '?')} of "
                         f"{m.get('key_frames', '?')} key frames answered)")
    lines.append("=" * 78)
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main path
def run_demo(out: Path, scenes: int = 2, scene_seconds: float = 15.0, seed: int = DEMO_SEED,
             backend: str = "onnxruntime", model: Path = DEFAULT_MODEL, rate: float = 1.0,
             params_file: Path = DEFAULT_PARAMS, bev_frames: int = 4, bev_score: float = 0.2,
             print_frames: int = 40,
             node_timeout: float = 180.0, domain_id: int | None = None) -> DemoResult:
    """Run every step (see the module docstring); raises :class:`DemoError` naming a failed step."""
    from radardistill_ros.ros_env import loopback_ros_env
    from radardistill_ros.tools.replay_evaluate import (
        latency_stats,
        load_node_params,
        start_node,
        stop_process,
    )

    out.mkdir(parents=True, exist_ok=True)
    model = model.resolve()
    if not model.is_file():
        raise DemoError("model", f"model {model} not found (the shipped model is produced by "
                                 "`make train-demo`)")
    res = DemoResult(out=out)
    pics = out / "pictures"
    pics.mkdir(exist_ok=True)
    for old in pics.rglob("*.png"):
        old.unlink()
    world = _step("world", res, lambda: _make_world(out, scenes, scene_seconds, seed))
    nusc, scene_bags, all_bag = _step("bag", res, lambda: _make_bags(world, out / "bags"))
    if backend == "onnxruntime":
        onnx_path = out / f"{model.stem}.onnx"
        model_path = _step("export", res, lambda: _export(model, onnx_path))
    else:
        _say(f"[demo 3/{len(STEPS)}] export skipped (backend {backend} serves the checkpoint)")
        model_path = model
    overrides = {"model_path": str(model_path), "checkpoint_path": str(model), "backend": backend}
    params = load_node_params(params_file, overrides)
    trigger_topic = params.get("trigger_topic", "/radar/front/points")
    env = loopback_ros_env(out / "ros_log", domain_id)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    node_log = out / "node.log"
    result_path = out / "replay.pkl"
    result_path.unlink(missing_ok=True)
    node = None
    worker = None
    try:
        def launch() -> Any:
            p = start_node(params_file, overrides, node_log, env=env)
            _say(f"    node pid {p.pid} (ROS_DOMAIN_ID {env['ROS_DOMAIN_ID']}, loopback only), backend "
                 f"{backend}, model {model_path}; log {node_log}")
            return p

        node = _step("node", res, launch)

        def replay() -> dict[str, Any]:
            nonlocal worker
            ctx = multiprocessing.get_context("spawn")
            worker = ctx.Process(target=_replay_worker, name="radardistill-demo-replay",
                                 args=([str(b) for b in scene_bags], "/detections", trigger_topic, rate,
                                       node.pid, env, node_timeout, 5.0, str(result_path)))
            worker.start()
            _say(f"    replay + recorder pid {worker.pid}: waiting for the node, then the bag at rate {rate}")
            # bounded: the node's start-up, each bag in real time / rate, the settle time, a margin
            limit = node_timeout + len(scene_bags) * (scene_seconds / rate + 5.0 + 30.0) + 120.0
            worker.join(limit)
            if worker.is_alive():
                _stop_worker(worker)
                raise RuntimeError(f"the replay process did not finish within {limit:.0f} s; stopped it")
            if worker.exitcode != 0 or not result_path.is_file():
                tail = node_log.read_text(errors="replace")[-2000:] if node_log.is_file() else ""
                raise RuntimeError(f"the replay process exited with status {worker.exitcode}; node "
                                   f"{'exited ' + str(node.poll()) if node.poll() is not None else 'running'}"
                                   f"; node log tail:\n{tail}")
            with open(result_path, "rb") as f:
                return pickle.load(f)

        rec = _step("replay", res, replay)
    finally:
        if worker is not None:
            _stop_worker(worker)
        if node is not None:
            rc = stop_process(node)
            _say(f"    node (pid {node.pid}) stopped, exit status {rc}")

    publishes, frames, stages = rec["publishes"], rec["frames"], rec["stages"]
    res.node_counters = rec["counters"]
    latencies = [(frames[s][0] - t) * 1e3 for _, s, t in publishes if s in frames]
    res.latency_ms = latency_stats(latencies)
    res.frames_sent, res.frames_answered = len(publishes), len(latencies)
    res.frames_dropped = res.frames_sent - res.frames_answered

    channel, key_tokens = _key_frames(nusc, trigger_topic)
    key_stamps = {nusc.get("sample_data", nusc.get("sample", t)["data"][channel])["timestamp"] * 1000
                  for t in key_tokens}
    res.frames = _frames_table(publishes, frames, stages, key_stamps)

    def evaluate() -> dict[str, Any]:
        from radardistill_ros.tools import replay_evaluate

        args = argparse.Namespace(bag=str(all_bag), dataroot=str(world), version=VERSION, no_time_align=False,
                                  offline=True, keyframe_offline=False)
        sent = [_Sent(topic, stamp, t) for topic, stamp, t in publishes]
        r = replay_evaluate.evaluate_replay(args, params, sent, frames, out / "eval")
        m = json.loads((out / "eval" / "online" / "metrics_summary.json").read_text())
        m["key_frames"] = r["key_frames"]
        m["key_frames_answered"] = r["key_frames_answered"]
        # the same model and inputs on every key frame (as if none were dropped): the model's accuracy
        off = r.get("offline_at_trigger")
        if off:
            m["offline_every_key_frame"] = {"mean_ap": off["mean_ap"], "nd_score": off["nd_score"],
                                            "car_ap": off["mean_dist_aps"].get("car")}
        return m

    res.metrics = _step("evaluate", res, evaluate)

    def pictures() -> list[Path]:
        from training.visualize import plot_pr_curves

        paths = _bev_pictures(pics / "bev", world, model, nusc, channel, frames, key_tokens, bev_frames,
                              bev_score)
        paths += plot_pr_curves(out / "eval" / "online" / "metrics_details.json", pics / "pr")
        if latencies:
            paths.append(_latency_histogram(pics / "latency_histogram.png", latencies, res.latency_ms,
                                            f"{len(latencies)} frames, backend {backend}, rate {rate}"))
        return paths

    res.pictures = _step("pictures", res, pictures)
    _write_outputs(res, backend, model, print_frames)
    return res


@dataclass
class _Sent:
    """The fields of a :class:`radardistill_ros.tools.replay.PublishRecord` the evaluation reads."""

    topic: str
    stamp_ns: int
    publish_s: float


def _key_frames(nusc: Any, trigger_topic: str) -> tuple[str, list[str]]:
    """(trigger radar channel, key-frame sample tokens in time order)."""
    from radardistill_ros.conventions import RADAR_CHANNELS
    from radardistill_ros.tools.nuscenes_to_bag import radar_topic

    channel = next((c for c in RADAR_CHANNELS if radar_topic(c) == trigger_topic), None)
    if channel is None:
        raise DemoError("evaluate", f"trigger topic {trigger_topic!r} is not a nuScenes radar topic")
    return channel, [s["token"] for s in sorted(nusc.sample, key=lambda s: s["timestamp"])]


def _write_outputs(res: DemoResult, backend: str, model: Path, print_frames: int) -> None:
    import csv

    out = res.out
    with open(out / "frames.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(res.frames[0]) if res.frames else ["stamp_ns"])
        w.writeheader()
        w.writerows(res.frames)
    per_frame = _format_frames(res.frames, print_frames)
    report = _format_report(res, backend, model)
    res.summary_text = "per-frame summary (trigger frames; * = key frame, scored):\n" + per_frame + report
    summary = {"latency_ms": res.latency_ms, "frames_sent": res.frames_sent,
               "frames_answered": res.frames_answered, "frames_dropped": res.frames_dropped,
               "node_counters": res.node_counters, "backend": backend, "model": str(model),
               "mean_ap": res.metrics.get("mean_ap"), "nd_score": res.metrics.get("nd_score"),
               "per_class_ap": res.metrics.get("mean_dist_aps"), "tp_errors": res.metrics.get("tp_errors"),
               "key_frames": res.metrics.get("key_frames"), "step_seconds": res.step_seconds,
               "pictures": [str(p) for p in res.pictures]}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    (out / "summary.txt").write_text(res.summary_text + "\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m radardistill_ros.tools.demo",
                                description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="out/demo", help="output directory (world, bag, logs, pictures)")
    p.add_argument("--scenes", type=int, default=2, help="scenes of the synthetic world")
    p.add_argument("--scene-seconds", type=float, default=15.0, help="seconds per scene (1-600)")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="world seed (held out from training)")
    p.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime")
    p.add_argument("--model", default=str(DEFAULT_MODEL.relative_to(ROOT)), help="radar student checkpoint")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (1 = real time)")
    p.add_argument("--params-file", default=str(DEFAULT_PARAMS.relative_to(ROOT)), help="node parameters")
    p.add_argument("--bev-frames", type=int, default=4, help="key frames drawn as BEV pictures")
    p.add_argument("--bev-score", type=float, default=0.2, help="detections drawn from this score on")
    p.add_argument("--print-frames", type=int, default=40, help="per-frame rows printed (0: all)")
    p.add_argument("--node-timeout", type=float, default=180.0, help="seconds to wait for the node")
    p.add_argument("--domain-id", type=int, default=None, help="ROS_DOMAIN_ID (default: from the pid)")
    return p


def _check_seed(model: Path, seed: int) -> None:
    card = model.with_suffix(".json")
    if card.is_file():
        try:
            train_seed = json.loads(card.read_text())["data"]["seed"]
        except (KeyError, ValueError):
            return
        if int(train_seed) == seed:
            _say(f"warning: --seed {seed} is the training world's seed of {model.name}: the demo then runs "
                 "on training scenes, not held-out ones")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    if args.scenes < 1 or not 1.0 <= args.scene_seconds <= 600.0 or args.rate <= 0 or args.seed < 0:
        print("error: --scenes >= 1, --scene-seconds in [1, 600], --rate > 0 and --seed >= 0 are required",
              file=sys.stderr)
        return 2
    model = Path(args.model)
    if not model.is_absolute() and not model.exists():
        model = ROOT / model
    params = Path(args.params_file)
    if not params.is_absolute() and not params.exists():
        params = ROOT / params
    _check_seed(model, args.seed)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Ctrl-C must stop the demo (and, by exec, the children get the default action) even when the
    # caller started it with SIGINT ignored (a background job of a non-interactive shell).
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.perf_counter()
    try:
        res = run_demo(Path(args.out), args.scenes, args.scene_seconds, args.seed, args.backend, model,
                       args.rate, params, args.bev_frames, args.bev_score, args.print_frames,
                       args.node_timeout, args.domain_id)
    except DemoError as exc:
        print(f"\nerror: demo {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started was stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    _say(res.summary_text)
    _say(f"pictures ({len(res.pictures)} PNG) in {res.out.resolve() / 'pictures'}:")
    for p in res.pictures:
        _say(f"  {p}")
    _say(f"summary: {res.out / 'summary.txt'}, {res.out / 'summary.json'}, per-frame "
         f"{res.out / 'frames.csv'}; demo wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
