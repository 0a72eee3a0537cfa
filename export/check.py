"""Parity check of every available inference backend against the torch reference.

    python -m export.check --config lite --checkpoint student.pt [--onnx model.onnx]
        [--engine model.engine] [--inputs recorded.npz | --synthetic N] [--save-inputs x.npz]

The same x_conv4 inputs -- recorded (``.npz`` with ``x_conv4`` of shape (N, C4, H, W)) or
produced by the real front end (pillarise + VFE + sparse encoder) from synthetic nuScenes-like
radar frames -- run through torch CPU fp32 (the reference) and every backend that is available
here: ONNX Runtime CPU (the ONNX is exported to a temp dir when ``--onnx`` is not given), ONNX
Runtime CUDA, torch CUDA fp32 / fp16 / CUDA graphs, TensorRT. Per backend it compares

* head outputs: max |diff| over all maps and frames (fp32 <= 1e-4; fp16 <= 5e-2),
* decoded detections (``decode.decode``, the node's decoding): same count, boxes matched per
  label with 3D IoU >= 0.99 (fp16: 0.9) via ``box_ops.iou3d``, scores within 1e-3 (fp16: 2e-2).
  Detections whose reference score lies within the score tolerance of the threshold are left
  out on both sides (a legitimate 1e-6 difference can move them across it).

Prints a table and the backends skipped with the reason; exit status 1 if any backend fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from radardistill_ros.backends import BackendError, BackendUnavailable, HeadMaps, create_backend, input_shape
from radardistill_ros.backends.torch_backend import TorchBackend
from radardistill_ros.box_ops import iou3d
from radardistill_ros.config import Config, load_config
from radardistill_ros.decode import Detections, decode

#: (head max |diff|, min matched IoU, max score diff) per precision.
TOLERANCES: dict[str, tuple[float, float, float]] = {"fp32": (1e-4, 0.99, 1e-3), "fp16": (5e-2, 0.9, 2e-2)}

#: Mounting (x, y, yaw) of the five nuScenes radars on the ego (base_link), approximately.
RADAR_MOUNTS: tuple[tuple[float, float, float], ...] = (
    (3.4, 0.0, 0.0), (2.4, 0.8, math.radians(80)), (2.4, -0.8, math.radians(-80)),
    (-0.6, 0.9, math.radians(160)), (-0.6, -0.9, math.radians(-160)))


def synthetic_radar_points(seed: int, sweeps: int = 6, returns_per_sweep: int = 55,
                           half_range: float = 54.0) -> np.ndarray:
    """A nuScenes-like accumulated radar frame ``(N, 7)`` float32 = [batch 0, x, y, z, rcs,
    vx_comp, vy_comp] in the ego frame: 5 radars x ``sweeps`` sweeps (~1.5k points), returns of
    ~60 objects (car-sized clusters, Doppler-consistent velocities, shifted along their motion
    per older sweep) in each radar's +-60 deg field of view, plus 25% clutter, within +-54 m."""
    rng = np.random.default_rng(seed)
    n_obj = 60
    obj_xy = rng.uniform(-half_range + 2, half_range - 2, (n_obj, 2)) * rng.uniform(0.25, 1.0, (n_obj, 1))
    obj_v = rng.normal(0, 4.0, (n_obj, 2)) * (rng.random((n_obj, 1)) < 0.5)
    obj_rcs = rng.normal(8.0, 6.0, n_obj)
    pts = []
    for mx, my, myaw in RADAR_MOUNTS:
        rel = obj_xy - (mx, my)
        az = np.arctan2(rel[:, 1], rel[:, 0]) - myaw
        az = (az + np.pi) % (2 * np.pi) - np.pi
        visible = np.flatnonzero(np.abs(az) < math.radians(60))
        for s in range(sweeps):
            dt = -s * 0.0769  # 13 Hz
            n_tgt = int(0.75 * returns_per_sweep)
            which = rng.choice(visible, n_tgt) if visible.size else np.zeros(0, int)
            xy = obj_xy[which] + obj_v[which] * dt + rng.normal(0, 0.7, (which.size, 2))
            v = obj_v[which] + rng.normal(0, 0.3, (which.size, 2))
            rcs = obj_rcs[which] + rng.normal(0, 3, which.size)
            n_cl = returns_per_sweep - which.size
            ang = myaw + rng.uniform(-math.radians(60), math.radians(60), n_cl)
            rr = rng.uniform(1.0, half_range * 1.2, n_cl)
            cl_xy = np.stack((mx + rr * np.cos(ang), my + rr * np.sin(ang)), 1)
            xy = np.concatenate((xy, cl_xy))
            v = np.concatenate((v, rng.normal(0, 0.5, (n_cl, 2))))
            rcs = np.concatenate((rcs, rng.normal(-5, 5, n_cl)))
            z = rng.normal(0.6, 0.5, xy.shape[0])
            pts.append(np.column_stack((np.zeros(xy.shape[0]), xy, z, rcs, v)))
    out = np.concatenate(pts).astype(np.float32)
    inside = (np.abs(out[:, 1]) < half_range) & (np.abs(out[:, 2]) < half_range)
    return out[inside]


#: (std, mean) the head output maps of :func:`random_student` are scaled to: spread scores
#: (no saturated sigmoid, no near-ties) and plausible box sizes, so that parity is not vacuous.
PARITY_HEAD_STATS: dict[str, tuple[float, float]] = {
    "hm": (1.0, -1.0), "center": (0.2, 0.5), "center_z": (0.5, 0.5), "dim": (0.25, 0.4), "rot": (0.7, 0.0),
    "vel": (1.0, 0.0), "iou": (0.3, 0.2)}


@torch.no_grad()
def random_student(cfg: Config, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised radar student whose every path is exercised: all weights and BN
    statistics random (the default init zeroes the DCN offset predictors and GRN), and each head
    output conv rescaled on a synthetic frame to :data:`PARITY_HEAD_STATS`. Deterministic in
    ``seed``; eval mode. (A default-initialised model emits near-constant maps whose top-k and
    NMS order is decided by 1e-7 ties, which would make a detection-level parity check noise.)"""
    from torch import nn

    from radardistill_ros.model import build_model

    torch.manual_seed(seed)
    model = build_model(cfg, "radar").eval()
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
        elif name.endswith(("weight", "gamma")) and ".grn." not in name:
            p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    for name, b in model.named_buffers():
        if name.endswith("running_mean"):
            b.copy_(0.1 * torch.randn(b.shape, generator=g))
        elif name.endswith("running_var"):
            b.copy_(0.5 + torch.rand(b.shape, generator=g))
    out = model.dense(model.front_end(torch.from_numpy(synthetic_radar_points(seed)), 1))
    for task_head, task_out in zip(model.dense.head.task_heads, out):
        for key, (std, mean) in PARITY_HEAD_STATS.items():
            conv = [m for m in task_head.outputs[key].modules() if isinstance(m, nn.Conv2d)][-1]
            y = task_out[key] - conv.bias.view(1, -1, 1, 1)
            conv.weight.mul_(std / y.std().clamp_min(1e-12))
            conv.bias.copy_(mean + 0.1 * std * torch.randn(conv.bias.shape, generator=g))
    return model


@torch.inference_mode()
def synthetic_inputs(model: torch.nn.Module, n: int, seed: int = 0) -> np.ndarray:
    """x_conv4 ``(n, C4, H, W)`` from the model's real front end on ``n`` synthetic radar frames."""
    model.eval()
    xs = [model.front_end(torch.from_numpy(synthetic_radar_points(seed + i)), 1).numpy() for i in range(n)]
    return np.concatenate(xs).astype(np.float32)


def load_inputs(path: str | Path, cfg: Config) -> np.ndarray:
    """x_conv4 frames ``(N, C4, H, W)`` from an npz (key ``x_conv4``, or its only array)."""
    with np.load(path) as f:
        arr = f["x_conv4"] if "x_conv4" in f.files else f[f.files[0]]
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 5:
        arr = arr.reshape(-1, *arr.shape[2:])
    if arr.shape[1:] != input_shape(cfg)[1:]:
        raise ValueError(f"{path}: x_conv4 frames have shape {arr.shape[1:]}, config {cfg.name!r} expects "
                         f"{input_shape(cfg)[1:]}")
    return arr


def head_max_diff(ref: HeadMaps, out: HeadMaps) -> tuple[float, str]:
    """(max |diff|, name of the worst map ``task{t}.{key}``) over all head maps."""
    worst, name = 0.0, ""
    for t, (a, b) in enumerate(zip(ref, out)):
        for k in a:
            d = float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
            if not np.isfinite(d) or d > worst:
                worst, name = (math.inf if not np.isfinite(d) else d), f"task{t}.{k}"
    return worst, name


def compare_detections(ref: Detections, out: Detections, threshold: float, iou_min: float,
                       score_tol: float) -> dict[str, Any]:
    """Match ``out`` to ``ref`` (same label, best 3D IoU); counts, min IoU, max score diff, ok."""
    keep_r = np.abs(ref.scores - threshold) > score_tol
    keep_o = np.abs(out.scores - threshold) > score_tol
    rb, rs, rl = ref.boxes[keep_r], ref.scores[keep_r], ref.labels[keep_r]
    ob, os_, ol = out.boxes[keep_o], out.scores[keep_o], out.labels[keep_o]
    res: dict[str, Any] = {"ref_count": len(rb), "count": len(ob), "min_iou": 1.0, "max_score_diff": 0.0,
                           "borderline": int((~keep_r).sum())}
    if len(rb) != len(ob):
        res["ok"] = False
        return res
    if len(rb):
        iou = iou3d(torch.from_numpy(rb), torch.from_numpy(ob)).numpy()
        iou[rl[:, None] != ol[None, :]] = -1.0
        used = np.zeros(len(ob), bool)
        for i in range(len(rb)):
            cand = np.where(used, -2.0, iou[i])
            j = int(np.argmax(cand))
            used[j] = True
            res["min_iou"] = min(res["min_iou"], float(cand[j]))
            res["max_score_diff"] = max(res["max_score_diff"], float(abs(rs[i] - os_[j])))
    res["ok"] = res["min_iou"] >= iou_min and res["max_score_diff"] <= score_tol
    return res


@dataclass
class BackendResult:
    """Parity of one backend against the torch reference over all frames."""

    backend: str
    precision: str
    ok: bool
    head_max_diff: float
    worst_output: str
    ref_detections: int
    detections: int
    min_iou: float
    max_score_diff: float
    frames: int
    message: str = ""


@dataclass
class CheckReport:
    """:func:`check_backends` result: one row per backend run, and the skipped ones with why."""

    config: str
    digest: str
    frames: int
    results: list[BackendResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.ok for r in self.results)

    def table(self) -> str:
        """Markdown table of the results plus the skipped backends."""
        lines = [f"config {self.config} (digest {self.digest[:16]}), {self.frames} frames, "
                 "reference torch-cpu fp32",
                 "", "| backend | precision | head max abs diff (worst map) | detections ref/backend "
                 "| min IoU | max score diff | result |", "|---|---|---|---|---|---|---|"]
        for r in self.results:
            lines.append(f"| {r.backend} | {r.precision} | {r.head_max_diff:.2e} ({r.worst_output}) "
                         f"| {r.ref_detections}/{r.detections} | {r.min_iou:.4f} | {r.max_score_diff:.2e} "
                         f"| {'ok' if r.ok else 'FAIL'}{': ' + r.message if r.message else ''} |")
        for name, why in self.skipped:
            lines.append(f"skipped {name}: {why}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"config": self.config, "digest": self.digest, "frames": self.frames, "ok": self.ok,
                "results": [asdict(r) for r in self.results],
                "skipped": [{"backend": n, "reason": w} for n, w in self.skipped]}


def _run(backend: Any, inputs: np.ndarray) -> list[HeadMaps]:
    return [backend.infer(x[None]) for x in inputs]


def _compare(name: str, precision: str, ref_heads: list[HeadMaps], ref_dets: list[Detections],
             heads: list[HeadMaps], cfg: Config) -> BackendResult:
    head_tol, iou_min, score_tol = TOLERANCES[precision]
    worst, worst_name = 0.0, ""
    n_ref = n_out = 0
    min_iou, max_sd, det_ok = 1.0, 0.0, True
    for rh, rd, h in zip(ref_heads, ref_dets, heads):
        d, nm = head_max_diff(rh, h)
        if d >= worst:
            worst, worst_name = d, nm
        det = decode(h, cfg.grid, cfg.post)[0]
        c = compare_detections(rd, det, cfg.post.score_threshold, iou_min, score_tol)
        n_ref, n_out = n_ref + c["ref_count"], n_out + c["count"]
        min_iou, max_sd = min(min_iou, c["min_iou"]), max(max_sd, c["max_score_diff"])
        det_ok &= c["ok"]
    problems = []
    if not worst <= head_tol:
        problems.append(f"head diff > {head_tol:g}")
    if n_ref != n_out:
        problems.append("detection count differs")
    elif not det_ok:
        problems.append(f"matched IoU < {iou_min} or score diff > {score_tol:g}")
    return BackendResult(name, precision, not problems, worst, worst_name, n_ref, n_out, min_iou, max_sd,
                         len(heads), "; ".join(problems))


def check_backends(cfg: Config, model: torch.nn.Module, inputs: np.ndarray,
                   onnx_path: str | Path | None = None, engine_path: str | Path | None = None,
                   num_threads: int = 2, workdir: str | Path | None = None,
                   verbose: bool = False) -> CheckReport:
    """Run ``inputs`` (N, C4, H, W) through every available backend and compare with torch CPU
    running the module as trained (the backends run its inference form, ``fuse_dense``).

    ``model``: the radar student (``PillarNetDetector``) or its ``DensePart``. ``onnx_path``:
    exported model (exported into ``workdir``/a temp dir when None). ``engine_path``: a TensorRT
    engine (else one is built from the ONNX when TensorRT and CUDA are present).
    """
    dense = getattr(model, "dense", model)
    report = CheckReport(cfg.name, cfg.digest(), len(inputs))
    ref = TorchBackend(dense, cfg, device="cpu", num_threads=num_threads, fuse=False)  # as trained
    ref_heads = _run(ref, inputs)
    ref_dets = [decode(h, cfg.grid, cfg.post)[0] for h in ref_heads]
    tmp = tempfile.TemporaryDirectory(prefix="radardistill_check_") if workdir is None else None
    work = Path(workdir or tmp.name)
    try:
        if onnx_path is None:
            from export.onnx import export_onnx

            onnx_path = export_onnx(dense, cfg, work / f"{cfg.name}_dense.onnx", verbose=verbose)
        candidates: list[tuple[str, str, dict[str, Any]]] = [
            ("onnxruntime", "fp32", {"device": "cpu"}),
            ("onnxruntime", "fp32", {"device": "cuda"}),
            ("torch", "fp32", {"device": "cuda"}),
            ("torch", "fp16", {"device": "cuda", "fp16": True}),
            ("torch", "fp16", {"device": "cuda", "fp16": True, "cuda_graphs": True}),
            ("tensorrt", "fp32", {"device": "cuda"}),
        ]
        for kind, precision, kw in candidates:
            label = f"{kind}-{kw['device']}" + ("-fp16" if kw.get("fp16") else "") + \
                ("-graphs" if kw.get("cuda_graphs") else "")
            if kind == "tensorrt":
                path: Any = engine_path or onnx_path
            else:
                path = dense if kind == "torch" else onnx_path
            try:
                backend = create_backend(kind, cfg, path, num_threads=num_threads, **kw)
            except BackendUnavailable as e:
                report.skipped.append((label, str(e)))
                continue
            if kind == "tensorrt":
                precision = getattr(backend, "precision", precision)
            try:
                heads = _run(backend, inputs)
            except (BackendError, RuntimeError) as e:
                report.results.append(BackendResult(label, precision, False, math.inf, "", 0, 0, 0.0,
                                                    math.inf, 0, f"inference failed: {e}"))
                continue
            report.results.append(_compare(label, precision, ref_heads, ref_dets, heads, cfg))
            if verbose:
                print(f"[export.check] {label}: done", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="variant name (lite, paper) or YAML path")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="student checkpoint (config digest checked)")
    src.add_argument("--random-weights", type=int, metavar="SEED",
                     help="random student (export.check.random_student), as `export.onnx --random-weights`")
    ap.add_argument("--onnx", help="exported dense part (default: export to a temp dir)")
    ap.add_argument("--engine", help="TensorRT engine (default: built from the ONNX if TensorRT is present)")
    inp = ap.add_mutually_exclusive_group()
    inp.add_argument("--inputs", help="npz with x_conv4 (N, C4, H, W)")
    inp.add_argument("--synthetic", type=int, default=3, metavar="N",
                     help="N synthetic radar frames through the real front end (default 3)")
    ap.add_argument("--save-inputs", help="write the x_conv4 inputs used to this npz")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="write the report as JSON")
    args = ap.parse_args(argv)

    from radardistill_ros.model import CheckpointError, load_checkpoint

    cfg = load_config(args.config)
    torch.set_num_threads(args.threads)
    try:
        if args.checkpoint:
            model, _ = load_checkpoint(args.checkpoint, cfg=cfg, modality="radar")
        else:
            model = random_student(cfg, args.random_weights)
        inputs = load_inputs(args.inputs, cfg) if args.inputs else synthetic_inputs(model, args.synthetic)
    except (CheckpointError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.save_inputs:
        np.savez_compressed(args.save_inputs, x_conv4=inputs)
    try:
        report = check_backends(cfg, model, inputs, args.onnx, args.engine, args.threads, verbose=True)
    except (BackendError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=1))
    print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
