"""Build a TensorRT engine from the exported ONNX dense part, with an engine cache that rebuilds
instead of loading a stale engine.

    python -m export.tensorrt --onnx model.onnx --out model.engine [--fp16] [--workspace-mb N] [--build-only]

Builder: explicit-batch network, ONNX parser, workspace memory-pool limit, FP16 flag on request
(LayerNorm/reduction layers pinned to fp32 so the ConvNeXt V2 statistics do not overflow), one
optimisation profile with min = opt = max = the static x_conv4 shape.

Cache: the engine's JSON sidecar ``<engine>.json`` stores the cache key -- TensorRT version,
GPU name, compute capability, ONNX sha256, precision (and the sidecar format) -- plus the ONNX
metadata (config digest etc.) that the runtime checks. :func:`rebuild_reason` (pure) compares it
with the current key; any difference, a missing engine or an unreadable sidecar rebuilds
(as Autoware's engines carry their TensorRT version). ``--build-only`` builds (or validates the
cache) and exits, for deployment pipelines; without it the engine is also loaded and run once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from radardistill_ros.backends.base import BackendError, BackendUnavailable
from radardistill_ros.backends.tensorrt_backend import (
    import_tensorrt,
    read_sidecar,
    require_cuda,
    sidecar_path,
)

#: Version of the sidecar layout; a change rebuilds every cached engine.
SIDECAR_FORMAT = "radardistill_ros.engine_cache/1"
KEY_FIELDS: tuple[str, ...] = ("sidecar_format", "tensorrt_version", "gpu_name", "compute_capability",
                               "onnx_sha256", "precision")
PRECISIONS = ("fp32", "fp16")


def cache_key(tensorrt_version: str, gpu_name: str, compute_capability: str, onnx_sha256: str,
              precision: str) -> dict[str, str]:
    """The engine cache key (pure)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return {"sidecar_format": SIDECAR_FORMAT, "tensorrt_version": tensorrt_version, "gpu_name": gpu_name,
            "compute_capability": compute_capability, "onnx_sha256": onnx_sha256, "precision": precision}


def rebuild_reason(engine_exists: bool, sidecar: Mapping[str, Any] | None,
                   key: Mapping[str, str]) -> str | None:
    """None if the cached engine can be used for ``key``, else why it must be rebuilt (pure)."""
    if not engine_exists:
        return "no engine file"
    if sidecar is None:
        return "no readable sidecar"
    stored = sidecar.get("key")
    if not isinstance(stored, Mapping):
        return "sidecar has no cache key"
    changed = [f"{f}: {stored.get(f)!r} -> {key.get(f)!r}" for f in KEY_FIELDS if stored.get(f) != key.get(f)]
    if "onnx_metadata" not in sidecar:
        changed.append("sidecar has no ONNX metadata")
    return "; ".join(changed) or None


def default_engine_path(onnx_path: str | Path, fp16: bool) -> Path:
    """``model.onnx`` -> ``model.fp16.engine`` / ``model.fp32.engine`` next to it."""
    p = Path(onnx_path)
    return p.with_name(f"{p.stem}.{'fp16' if fp16 else 'fp32'}.engine")


def detect_environment(device_index: int = 0) -> dict[str, str]:
    """TensorRT version, GPU name and compute capability here, or :class:`BackendUnavailable`."""
    trt = import_tensorrt()
    torch = require_cuda(f"cuda:{device_index}")
    major, minor = torch.cuda.get_device_capability(device_index)
    return {"tensorrt_version": trt.__version__, "gpu_name": torch.cuda.get_device_name(device_index),
            "compute_capability": f"{major}.{minor}"}


def build_engine(onnx_path: str | Path, input_shapes: Mapping[str, list[int]], fp16: bool,
                 workspace_mb: int, log: Callable[[str], None] = print) -> bytes:
    """Parse the ONNX file and build a serialized engine (TensorRT >= 8.6)."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(trt.__version__.split(".")[0])
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {onnx_path}:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if fp16:
        if not builder.platform_has_fast_fp16:
            log("warning: this GPU has no fast fp16; building fp16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = {t for t in (getattr(trt.LayerType, "NORMALIZATION", None), trt.LayerType.REDUCE)
                  if t is not None}
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type in pinned:
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(input_shapes[tensor.name])
        profile.set_shape(tensor.name, shape, shape, shape)
    config.add_optimization_profile(profile)
    log(f"building {'fp16' if fp16 else 'fp32'} engine ({network.num_layers} layers, "
        f"workspace {workspace_mb} MiB)")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} "
                           "(see the TensorRT log above)")
    return bytes(serialized)


@dataclass(frozen=True)
class EngineResult:
    """Outcome of :func:`ensure_engine`: the engine path, whether it was (re)built, and why."""

    path: Path
    rebuilt: bool
    reason: str | None


def ensure_engine(onnx_path: str | Path, engine_path: str | Path | None = None, fp16: bool = False,
                  workspace_mb: int = 1024, force: bool = False, env: Mapping[str, str] | None = None,
                  build_fn: Callable[..., bytes] | None = None,
                  log: Callable[[str], None] = lambda m: print(f"[export.tensorrt] {m}", file=sys.stderr)
                  ) -> EngineResult:
    """Reuse the cached engine if its sidecar key matches, else build and write engine + sidecar.

    ``env`` (TensorRT version, GPU name, compute capability; default :func:`detect_environment`)
    and ``build_fn`` (default :func:`build_engine`) are injectable so the cache logic is testable
    without TensorRT. The engine is written atomically before its sidecar.
    """
    from export.onnx import file_sha256, read_onnx_metadata

    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path else default_engine_path(onnx_path, fp16)
    meta = read_onnx_metadata(onnx_path)
    env = dict(env) if env is not None else detect_environment()
    key = cache_key(env["tensorrt_version"], env["gpu_name"], env["compute_capability"],
                    file_sha256(onnx_path), "fp16" if fp16 else "fp32")
    reason = "forced" if force else rebuild_reason(engine_path.is_file(), read_sidecar(engine_path), key)
    if reason is None:
        log(f"cached engine {engine_path} matches (TensorRT {key['tensorrt_version']}, {key['gpu_name']}, "
            f"sm {key['compute_capability']}, {key['precision']}, onnx {key['onnx_sha256'][:12]})")
        return EngineResult(engine_path, False, None)
    log(f"building {engine_path}: {reason}")
    t0 = time.perf_counter()
    build = build_fn or build_engine
    shapes = {n: meta["input_shape"] for n in meta["input_names"]}
    data = build(onnx_path, shapes, fp16, workspace_mb, log=log)
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, engine_path)
    sidecar = {"key": key, "onnx_path": str(onnx_path.resolve()), "onnx_metadata": meta,
               "build": {"workspace_mb": workspace_mb, "seconds": round(time.perf_counter() - t0, 2),
                         "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                         "reason": reason}}
    sidecar_path(engine_path).write_text(json.dumps(sidecar, indent=1, sort_keys=True))
    log(f"wrote {engine_path} ({len(data) / 2**20:.1f} MiB) and {sidecar_path(engine_path).name} in "
        f"{time.perf_counter() - t0:.1f} s")
    return EngineResult(engine_path, True, reason)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m export.tensorrt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True, help="ONNX dense part from `python -m export.onnx`")
    ap.add_argument("--out", help="engine path (default <onnx stem>.<fp32|fp16>.engine)")
    ap.add_argument("--fp16", action="store_true", help="allow fp16 kernels")
    ap.add_argument("--workspace-mb", type=int, default=1024, help="builder workspace memory-pool limit")
    ap.add_argument("--build-only", action="store_true", help="build (or validate the cache) and exit")
    ap.add_argument("--force", action="store_true", help="rebuild even if the cache matches")
    args = ap.parse_args(argv)
    try:
        res = ensure_engine(args.onnx, args.out, fp16=args.fp16, workspace_mb=args.workspace_mb,
                            force=args.force)
        if not args.build_only:
            import numpy as np

            from radardistill_ros.backends.tensorrt_backend import TensorRTBackend
            from radardistill_ros.config import config_from_dict

            meta = read_sidecar(res.path)["onnx_metadata"]
            backend = TensorRTBackend(res.path, config_from_dict(meta["config"]))
            x = np.zeros(backend.shape, np.float32)
            backend.infer(x)
            times = []
            for _ in range(20):
                t0 = time.perf_counter()
                backend.infer(x)
                times.append((time.perf_counter() - t0) * 1e3)
            print(f"[export.tensorrt] {backend.name}: loaded and ran; median {sorted(times)[10]:.2f} ms "
                  "(incl. host copies)", file=sys.stderr)
    except (BackendUnavailable, BackendError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(res.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
