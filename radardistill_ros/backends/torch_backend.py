"""Eager torch backend for the dense part: CPU fp32, or CUDA with optional FP16 autocast and
CUDA graphs. The reference the exported backends are checked against (export.check)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radardistill_ros.backends.base import (
    BackendError,
    BackendUnavailable,
    HeadMaps,
    as_input_array,
    input_shape,
)
from radardistill_ros.config import Config
from radardistill_ros.model.checkpoint import load_checkpoint
from radardistill_ros.model.detector import DensePart, PillarNetDetector
from radardistill_ros.model.fuse import fuse_dense


def resolve_torch_device(device: str) -> torch.device:
    """``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` -> torch.device; CUDA absent -> BackendUnavailable."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailable(f"device {device!r} requested but torch.cuda.is_available() is False "
                                 f"(torch {torch.__version__}): install a CUDA build of torch and an NVIDIA "
                                 "driver, or use device='cpu'")
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"unsupported device {device!r}: use 'cpu' or 'cuda[:N]'")
    return dev


class TorchBackend:
    """Dense part in eager torch (the module is put in eval mode; inference mode per frame).

    ``fp16``: CUDA autocast to float16 (outputs returned as float32). ``cuda_graphs``: the
    forward is captured once into a CUDA graph on a static input buffer and replayed per frame.
    ``num_threads`` sets torch's intra-op threads (process-wide) when given. ``fuse``: serve the
    inference form (``model.fuse.fuse_dense``, what the exported graph computes); False serves
    the module as trained (export.check's reference, so fusing is checked too).
    """

    name = "torch"

    def __init__(self, dense: nn.Module, cfg: Config, device: str = "cpu", fp16: bool = False,
                 cuda_graphs: bool = False, num_threads: int | None = None, fuse: bool = True):
        self.device = resolve_torch_device(device)
        if (fp16 or cuda_graphs) and self.device.type != "cuda":
            raise BackendError("fp16 and cuda_graphs need device='cuda' for the torch backend "
                               f"(got device={device!r})")
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.cfg = cfg
        self.fp16, self.cuda_graphs = fp16, cuda_graphs
        self.shape = input_shape(cfg)
        # a copy, so the caller's module is not changed or moved; by default the inference form
        # (CenterHead branches merged, as in the exported graph), fuse=False: the module as is
        self.module = (fuse_dense(dense) if fuse else copy.deepcopy(dense).eval()).to(self.device)
        self.name = (f"torch-{self.device.type}" + ("-fp16" if fp16 else "")
                     + ("-graphs" if cuda_graphs else ""))
        self._graph: torch.cuda.CUDAGraph | None = None
        if cuda_graphs:
            self._capture()

    @classmethod
    def from_checkpoint(cls, path: str | Path, cfg: Config, **kwargs) -> TorchBackend:
        """Load the radar student of ``cfg`` from a checkpoint (digest checked) and serve its dense part."""
        model, _ = load_checkpoint(path, cfg=cfg, modality="radar")
        return cls(model.dense, cfg, **kwargs)

    @classmethod
    def from_module(cls, module: nn.Module, cfg: Config, **kwargs) -> TorchBackend:
        """Serve a :class:`DensePart` or the dense part of a :class:`PillarNetDetector`."""
        if isinstance(module, PillarNetDetector):
            module = module.dense
        if not isinstance(module, DensePart):
            raise BackendError(f"expected a DensePart or PillarNetDetector, got {type(module).__name__}")
        return cls(module, cfg, **kwargs)

    def _forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            return self.module(x)

    def _capture(self) -> None:
        """Warm up on a side stream, then capture the forward into a CUDA graph."""
        self._static_in = torch.zeros(self.shape, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):
                self._forward(self._static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self._graph):
            self._static_out = self._forward(self._static_in)

    def infer_tensor(self, x_conv4: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Head outputs as tensors on the backend's device (float32)."""
        if tuple(x_conv4.shape) != self.shape:
            raise ValueError(f"x_conv4 has shape {tuple(x_conv4.shape)}, the model expects {self.shape}")
        x = x_conv4.to(self.device, torch.float32, non_blocking=True)
        if self._graph is not None:
            self._static_in.copy_(x)
            self._graph.replay()  # outputs cloned: the next replay overwrites the static buffers
            out = [{k: v.clone() for k, v in task.items()} for task in self._static_out]
        else:
            with torch.inference_mode():
                out = self._forward(x)
        return [{k: v.float() for k, v in task.items()} for task in out]

    def infer(self, x_conv4: np.ndarray) -> HeadMaps:
        if not isinstance(x_conv4, torch.Tensor):
            x_conv4 = torch.from_numpy(as_input_array(x_conv4, self.shape))
        out = self.infer_tensor(x_conv4)
        return [{k: v.cpu().numpy() for k, v in task.items()} for task in out]
