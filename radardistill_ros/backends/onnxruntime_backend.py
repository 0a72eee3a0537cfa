"""ONNX Runtime backend for the exported dense part: CPU execution provider (CUDA EP where
onnxruntime-gpu is installed), fixed intra-op threads, thread spinning during a run (stopped
between runs), all graph optimisations.

The model's metadata is checked against the runtime config before the first frame; per frame
the path is numpy in, ``session.run``, numpy out (no torch ops, no autograd).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from radardistill_ros.backends.base import (
    INPUT_NAME,
    BackendError,
    BackendUnavailable,
    HeadMaps,
    ModelMismatchError,
    as_input_array,
    group_outputs,
    input_shape,
)
from radardistill_ros.backends.metadata import check_metadata, decode_metadata
from radardistill_ros.config import Config


def import_onnxruntime():
    """``import onnxruntime`` or :class:`BackendUnavailable` naming the package."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise BackendUnavailable("onnxruntime not found: pip install onnxruntime (CPU) or onnxruntime-gpu "
                                 f"(CUDA) ({e})") from e
    return ort


def session_options(num_threads: int, spinning: bool = True):
    """Session options: ``num_threads`` intra-op threads, sequential execution, graph optimisation
    level ALL, intra-op thread spinning on by default (waking sleeping workers for each of the
    graph's ~600 small kernels cost the lite dense part ~30%: 13-14 vs 18-21 ms in process) but
    stopped as soon as a ``run`` returns (``session.force_spinning_stop``): a pool thread that
    kept spinning between runs burned ~35 ms of CPU per frame in the node, stolen from the front
    end, decode and the executor on 2 cores (node CPU per trigger 114-127 -> 78-82 ms, e2e p99
    154-415 -> 85-93 ms, docs/benchmarks.md). ``spinning=False`` for processes that must not
    busy-wait at all."""
    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = num_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return so


class OnnxRuntimeBackend:
    """Dense part from an ONNX file written by ``export.onnx``."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, cfg: Config, device: str = "cpu", num_threads: int = 2):
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path} (export it with `python -m export.onnx`)")
        if device == "cpu":
            providers: list = ["CPUExecutionProvider"]
        elif device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable(
                    "onnxruntime has no CUDA execution provider (available: "
                    f"{ort.get_available_providers()}): pip install onnxruntime-gpu matching your CUDA "
                    "version, or use device='cpu'")
            dev_id = int(device.split(":", 1)[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": dev_id}), "CPUExecutionProvider"]
        else:
            raise BackendError(f"unsupported device {device!r}: use 'cpu' or 'cuda[:N]'")
        try:
            self.session = ort.InferenceSession(str(path), session_options(num_threads), providers=providers)
        except Exception as e:  # onnxruntime raises its own pybind exception types
            raise BackendError(f"onnxruntime {ort.__version__} could not load {path}: {e}") from e
        self.metadata = decode_metadata(self.session.get_modelmeta().custom_metadata_map, source=str(path))
        check_metadata(self.metadata, cfg, source=str(path))
        self.shape = input_shape(cfg)
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME] or tuple(inputs[0].shape) != self.shape:
            raise ModelMismatchError(f"{path}: graph input {[(i.name, i.shape) for i in inputs]}, expected "
                                     f"[({INPUT_NAME!r}, {list(self.shape)})]")
        self.output_names = [o.name for o in self.session.get_outputs()]
        if self.output_names != self.metadata["output_names"]:
            raise ModelMismatchError(f"{path}: graph outputs {self.output_names} differ from its metadata "
                                     f"{self.metadata['output_names']}")
        self.device = device
        self.name = f"onnxruntime-{'cuda' if device.startswith('cuda') else 'cpu'}"

    def infer(self, x_conv4: np.ndarray) -> HeadMaps:
        x = as_input_array(x_conv4, self.shape)
        flat = self.session.run(self.output_names, {INPUT_NAME: x})
        return group_outputs(flat, self.output_names)
