"""Inference backends for the dense part (CMA + DenseEnc + CenterHead): one interface,
``infer(x_conv4 (1, C4, H, W) float32) -> head outputs`` (list over tasks of dicts of numpy
maps, keys as the model's), served by eager torch, ONNX Runtime or TensorRT.

The sparse front end (pillarise, VFE, sparse encoder) always runs in torch before the backend:
its shapes and indices depend on the data (unique pillars, scatter, neighbour hashing), so it
is not part of the exported graph (see ``export/onnx.py``).

    backend = create_backend("onnxruntime", cfg, "model.onnx", num_threads=2)
    heads = backend.infer(x_conv4)              # -> decode.decode(heads, cfg.grid, cfg.post)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from radardistill_ros.backends.base import (
    BACKEND_KINDS,
    INPUT_NAME,
    BackendError,
    BackendUnavailable,
    HeadMaps,
    InferenceBackend,
    ModelMismatchError,
    input_shape,
)
from radardistill_ros.config import Config

__all__ = [
    "BACKEND_KINDS", "INPUT_NAME", "BackendError", "BackendUnavailable", "HeadMaps", "InferenceBackend",
    "ModelMismatchError", "create_backend", "input_shape",
]


def create_backend(kind: str, cfg: Config, model_path: str | Path | Any, device: str = "cpu",
                   fp16: bool = False, cuda_graphs: bool = False, num_threads: int = 2,
                   workspace_mb: int = 1024) -> InferenceBackend:
    """Open the dense part of ``cfg`` on backend ``kind``.

    * ``"torch"``: ``model_path`` = a checkpoint (``model.checkpoint``, digest checked) or an
      already built ``DensePart`` / ``PillarNetDetector``; CPU fp32, or ``device="cuda"`` with
      optional ``fp16`` (autocast) and ``cuda_graphs``.
    * ``"onnxruntime"``: ``model_path`` = ONNX from ``export.onnx`` (metadata checked); CPU EP,
      CUDA EP with ``device="cuda"`` (onnxruntime-gpu). fp32 only.
    * ``"tensorrt"``: ``model_path`` = an ONNX file (engine built/reused next to it as
      ``<stem>.<fp32|fp16>.engine``) or an engine with its sidecar (rebuilt from the ONNX the
      sidecar names when TensorRT, GPU or ONNX changed). Needs TensorRT >= 8.6 and CUDA.

    ``num_threads``: CPU intra-op threads (torch: process-wide). Unknown kind -> ``ValueError``;
    missing runtime -> :class:`BackendUnavailable` naming what to install; a model exported for
    another config -> :class:`ModelMismatchError` naming both digests.
    """
    if kind == "torch":
        from radardistill_ros.backends.torch_backend import TorchBackend

        kwargs = {"device": device, "fp16": fp16, "cuda_graphs": cuda_graphs, "num_threads": num_threads}
        if isinstance(model_path, (str, Path)):
            return TorchBackend.from_checkpoint(model_path, cfg, **kwargs)
        return TorchBackend.from_module(model_path, cfg, **kwargs)
    if kind == "onnxruntime":
        if fp16 or cuda_graphs:
            raise BackendError("the onnxruntime backend runs the fp32 graph without CUDA graphs; "
                               "fp16/cuda_graphs are options of the torch (CUDA) and tensorrt backends")
        from radardistill_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(model_path, cfg, device=device, num_threads=num_threads)
    if kind == "tensorrt":
        if cuda_graphs:
            raise BackendError("cuda_graphs is an option of the torch backend; TensorRT engines run as built")
        from radardistill_ros.backends.tensorrt_backend import (
            TensorRTBackend,
            import_tensorrt,
            read_sidecar,
            require_cuda,
        )

        import_tensorrt()
        require_cuda("cuda" if device == "cpu" else device)
        from export.tensorrt import default_engine_path, ensure_engine

        path = Path(model_path)
        if path.suffix == ".onnx":
            engine = ensure_engine(path, default_engine_path(path, fp16), fp16=fp16,
                                   workspace_mb=workspace_mb).path
        else:
            sidecar = read_sidecar(path) or {}
            onnx_path = Path(sidecar.get("onnx_path", ""))
            if onnx_path.suffix == ".onnx" and onnx_path.is_file():  # rebuild if stale
                precision = sidecar.get("key", {}).get("precision", "fp16" if fp16 else "fp32")
                engine = ensure_engine(onnx_path, path, fp16=precision == "fp16",
                                       workspace_mb=workspace_mb).path
            else:
                engine = path
        return TensorRTBackend(engine, cfg, device="cuda" if device == "cpu" else device)
    raise ValueError(f"unknown inference backend {kind!r}; expected one of {BACKEND_KINDS}")
