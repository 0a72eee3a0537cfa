"""TensorRT backend: a serialized engine of the exported dense part, run with the TensorRT >= 8.6
named-tensor API (``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``) on CUDA
memory owned by torch tensors.

Engines are built and cached by ``export.tensorrt`` (``ensure_engine``); the JSON sidecar next to
an engine (``<engine>.json``) carries the cache key and the ONNX metadata, which is checked
against the runtime config here exactly as the ONNX Runtime backend checks ``metadata_props``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from radardistill_ros.backends.base import (
    BackendError,
    BackendUnavailable,
    HeadMaps,
    ModelMismatchError,
    as_input_array,
    group_outputs,
    input_shape,
)
from radardistill_ros.backends.metadata import check_metadata
from radardistill_ros.config import Config

TRT_MISSING = ("TensorRT not found: install TensorRT >= 8.6 with its Python bindings "
               "(pip install tensorrt on a machine with NVIDIA's index) and a CUDA GPU")
MIN_TRT_VERSION = (8, 6)


def import_tensorrt() -> Any:
    """``import tensorrt`` (>= 8.6) or :class:`BackendUnavailable` with :data:`TRT_MISSING`."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as e:
        raise BackendUnavailable(f"{TRT_MISSING} ({type(e).__name__}: {e})") from e
    version = getattr(trt, "__version__", None)
    if not version or not hasattr(trt, "Runtime"):
        raise BackendUnavailable(f"{TRT_MISSING} (the installed 'tensorrt' package is a stub without "
                                 "bindings)")
    if tuple(int(p) for p in version.split(".")[:2]) < MIN_TRT_VERSION:
        raise BackendUnavailable(f"TensorRT {version} is too old: this backend needs >= 8.6 "
                                 "(named I/O tensors, execute_async_v3)")
    return trt


def require_cuda(device: str = "cuda") -> Any:
    """torch with a usable CUDA device, or :class:`BackendUnavailable`."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs a CUDA GPU: torch.cuda.is_available() is False "
                                 "(install an NVIDIA driver and a CUDA build of torch)")
    if not device.startswith("cuda"):
        raise BackendError(f"the tensorrt backend runs on CUDA; got device={device!r}")
    return torch


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.engine`` -> ``model.engine.json`` (cache key + ONNX metadata)."""
    p = Path(engine_path)
    return p.with_name(p.name + ".json")


def read_sidecar(engine_path: str | Path) -> dict[str, Any] | None:
    """The engine's sidecar dict, or None if it is missing or unreadable."""
    p = sidecar_path(engine_path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


class TensorRTBackend:
    """Runs a TensorRT engine built by ``export.tensorrt`` (sidecar checked against ``cfg``)."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, cfg: Config, device: str = "cuda"):
        trt = import_tensorrt()
        torch = require_cuda(device)
        self._torch = torch
        engine_path = Path(engine_path)
        if not engine_path.is_file():
            raise FileNotFoundError(f"TensorRT engine not found: {engine_path} (build it with "
                                    "`python -m export.tensorrt --onnx model.onnx --out model.engine`)")
        sidecar = read_sidecar(engine_path)
        if sidecar is None or "onnx_metadata" not in sidecar:
            raise ModelMismatchError(f"{engine_path}: no readable sidecar {sidecar_path(engine_path).name}, "
                                     "so the engine's config cannot be verified; rebuild it with "
                                     "`python -m export.tensorrt`")
        self.metadata = sidecar["onnx_metadata"]
        check_metadata(self.metadata, cfg, source=str(engine_path))
        self.precision = sidecar.get("key", {}).get("precision", "fp32")
        self.name = f"tensorrt-{self.precision}"
        self.shape = input_shape(cfg)
        self.device = torch.device(device)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise BackendError(f"{engine_path}: TensorRT {trt.__version__} could not deserialize the engine "
                               "(built with another TensorRT version or GPU?); rebuild it with "
                               "`python -m export.tensorrt`")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(self.device)
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if self.input_names != self.metadata["input_names"] or \
                sorted(self.output_names) != sorted(self.metadata["output_names"]):
            raise ModelMismatchError(f"{engine_path}: engine I/O {self.input_names} -> {self.output_names} "
                                     "differs from its metadata; rebuild the engine")
        self.output_names = list(self.metadata["output_names"])  # documented order
        for n in self.input_names:
            if -1 in tuple(self.engine.get_tensor_shape(n)):
                self.context.set_input_shape(n, self.shape)
        self._buffers: dict[str, Any] = {}
        for n in self.input_names + self.output_names:
            shape = tuple(self.context.get_tensor_shape(n))
            dtype = dtypes.get(self.engine.get_tensor_dtype(n))
            if dtype is None:
                raise BackendError(f"{engine_path}: tensor {n} has unsupported dtype "
                                   f"{self.engine.get_tensor_dtype(n)}")
            if n in self.input_names and shape != self.shape:
                raise ModelMismatchError(f"{engine_path}: input {n} shape {shape}, "
                                         f"config expects {self.shape}")
            buf = torch.empty(shape, dtype=dtype, device=self.device)
            self._buffers[n] = buf
            self.context.set_tensor_address(n, buf.data_ptr())

    def infer(self, x_conv4: np.ndarray) -> HeadMaps:
        torch = self._torch
        if not isinstance(x_conv4, torch.Tensor):
            x_conv4 = torch.from_numpy(as_input_array(x_conv4, self.shape))
        x = x_conv4
        if tuple(x.shape) != self.shape:
            raise ValueError(f"x_conv4 has shape {tuple(x.shape)}, the engine expects {self.shape}")
        with torch.cuda.stream(self.stream):
            self._buffers[self.input_names[0]].copy_(x, non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed")
            outs = [self._buffers[n].float().cpu() for n in self.output_names]
        self.stream.synchronize()
        return group_outputs([o.numpy() for o in outs], self.output_names)
