"""Inference backends: one interface, backend selection, errors naming what to install, ONNX
Runtime session settings and parity with torch, checkpoint loading through the model's loader."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from export.check import random_student
from export.onnx import export_onnx
from radardistill_ros.backends import (
    BACKEND_KINDS,
    BackendError,
    BackendUnavailable,
    InferenceBackend,
    create_backend,
    input_shape,
)
from radardistill_ros.backends.base import group_outputs
from radardistill_ros.backends.onnxruntime_backend import OnnxRuntimeBackend, session_options
from radardistill_ros.backends.torch_backend import TorchBackend
from radardistill_ros.config import load_config
from radardistill_ros.conventions import TASKS
from radardistill_ros.model import HEAD_KEYS, CheckpointError, save_checkpoint


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The lite architecture on a 12 x 12 BEV grid (+-13.5 m): random student, checkpoint, ONNX."""
    lite = load_config("lite")
    cfg = dataclasses.replace(lite, grid=dataclasses.replace(
        lite.grid, point_cloud_range=(-13.5, -13.5, -3.2, 13.5, 13.5, 4.8)))
    assert cfg.grid.bev_shape == (12, 12)
    model = random_student(cfg, 1)
    d = tmp_path_factory.mktemp("small")
    save_checkpoint(d / "student.pt", model, cfg, "radar")
    onnx_path = export_onnx(model.dense, cfg, d / "small.onnx", verbose=False)
    x = np.random.default_rng(0).standard_normal(input_shape(cfg)).astype(np.float32)
    return SimpleNamespace(cfg=cfg, model=model, ckpt=d / "student.pt", onnx=onnx_path, x=x)


def _max_diff(a, b) -> float:
    return max(float(np.abs(a[t][k] - b[t][k]).max()) for t in range(len(a)) for k in a[t])


def _check_layout(out, cfg):
    h, w = cfg.grid.bev_shape
    assert len(out) == len(TASKS)
    for t, names in enumerate(TASKS):
        assert list(out[t]) == list(HEAD_KEYS)
        assert out[t]["hm"].shape == (1, len(names), h, w) and out[t]["hm"].dtype == np.float32
        assert out[t]["dim"].shape == (1, 3, h, w) and out[t]["iou"].shape == (1, 1, h, w)


def test_unknown_kind(small):
    with pytest.raises(ValueError, match=r"unknown inference backend .openvino.*torch.*tensorrt"):
        create_backend("openvino", small.cfg, small.onnx)
    assert BACKEND_KINDS == ("torch", "onnxruntime", "tensorrt")


def test_tensorrt_absent_names_what_to_install(small):
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        pass
    else:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendUnavailable) as e:
        create_backend("tensorrt", small.cfg, small.onnx, device="cuda")
    print(e.value)
    assert "TensorRT not found: install TensorRT >= 8.6 with its Python bindings" in str(e.value)
    assert "pip install tensorrt" in str(e.value) and "CUDA GPU" in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_absent_errors(small):
    with pytest.raises(BackendUnavailable, match="CUDA build of torch"):
        create_backend("torch", small.cfg, small.ckpt, device="cuda")
    with pytest.raises(BackendUnavailable, match="onnxruntime-gpu"):
        create_backend("onnxruntime", small.cfg, small.onnx, device="cuda")
    with pytest.raises(BackendError, match="need device='cuda'"):
        create_backend("torch", small.cfg, small.ckpt, fp16=True)


def test_option_errors(small, tmp_path):
    with pytest.raises(BackendError, match="fp16/cuda_graphs"):
        create_backend("onnxruntime", small.cfg, small.onnx, fp16=True)
    with pytest.raises(FileNotFoundError, match=r"export\.onnx"):
        create_backend("onnxruntime", small.cfg, tmp_path / "missing.onnx")
    with pytest.raises(BackendError, match="unsupported device"):
        create_backend("onnxruntime", small.cfg, small.onnx, device="tpu")


def test_torch_backend_from_checkpoint(small):
    backend = create_backend("torch", small.cfg, small.ckpt, num_threads=2)
    assert isinstance(backend, InferenceBackend) and backend.name == "torch-cpu"
    assert not backend.module.training
    out = backend.infer(small.x)
    _check_layout(out, small.cfg)
    direct = TorchBackend.from_module(small.model, small.cfg).infer(torch.from_numpy(small.x))
    assert _max_diff(out, direct) == 0.0
    with pytest.raises(CheckpointError, match="digest"):
        create_backend("torch", load_config("lite"), small.ckpt)


def test_onnxruntime_backend(small):
    backend = create_backend("onnxruntime", small.cfg, small.onnx, num_threads=2)
    assert isinstance(backend, InferenceBackend) and backend.name == "onnxruntime-cpu"
    opts = backend.session.get_session_options()
    assert opts.intra_op_num_threads == 2
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert opts.get_session_config_entry("session.force_spinning_stop") == "1"  # no spinning between runs
    quiet = session_options(1, spinning=False)
    assert quiet.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert backend.session.get_providers() == ["CPUExecutionProvider"]
    assert backend.metadata["config_digest"] == small.cfg.digest()
    out = backend.infer(small.x)
    _check_layout(out, small.cfg)
    ref = TorchBackend(small.model.dense, small.cfg).infer(small.x)
    diff = _max_diff(ref, out)
    print(f"ORT vs torch (12x12 lite) max |diff| {diff:.2e}")
    assert diff <= 1e-4
    assert _max_diff(out, backend.infer(torch.from_numpy(small.x))) == 0.0  # tensors accepted
    c4 = small.cfg.model.backbone_channels[3]
    expected = rf"shape \(1, {c4}, 96, 96\), the model expects \(1, {c4}, 12, 12\)"
    with pytest.raises(ValueError, match=expected):
        backend.infer(np.zeros((1, c4, 96, 96), np.float32))


def test_two_sessions_share_the_process(small):
    """Spinning off: a second idle session must not slow the first (platform.md)."""
    a = OnnxRuntimeBackend(small.onnx, small.cfg, num_threads=2)
    b = OnnxRuntimeBackend(small.onnx, small.cfg, num_threads=2)
    assert _max_diff(a.infer(small.x), b.infer(small.x)) == 0.0


def test_group_outputs_order():
    names = [f"task{t}.{k}" for t in range(len(TASKS)) for k in HEAD_KEYS]
    flat = [np.full(1, i) for i in range(len(names))]
    out = group_outputs(flat, names)
    assert out[1]["hm"][0] == len(HEAD_KEYS) and out[5]["iou"][0] == len(names) - 1
