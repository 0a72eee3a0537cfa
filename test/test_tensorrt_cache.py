"""TensorRT engine cache: key, rebuild decision (every field), ensure_engine with an injected
builder, and the TensorRT build/run path (skipped with the reason where TensorRT is absent)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from export.tensorrt import (
    KEY_FIELDS,
    SIDECAR_FORMAT,
    cache_key,
    default_engine_path,
    ensure_engine,
    main,
    rebuild_reason,
)
from radardistill_ros.backends import BackendUnavailable, create_backend
from radardistill_ros.backends.base import input_shape
from radardistill_ros.backends.metadata import build_metadata, encode_metadata
from radardistill_ros.backends.tensorrt_backend import (
    TRT_MISSING,
    import_tensorrt,
    read_sidecar,
    sidecar_path,
)
from radardistill_ros.config import load_config

ENV = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
KEY = cache_key(ENV["tensorrt_version"], ENV["gpu_name"], ENV["compute_capability"], "ab" * 32, "fp16")
CHANGED = {"sidecar_format": "radardistill_ros.engine_cache/0", "tensorrt_version": "8.6.1",
           "gpu_name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0", "onnx_sha256": "cd" * 32,
           "precision": "fp32"}


def test_cache_key_fields():
    assert set(KEY) == set(KEY_FIELDS)
    assert KEY["sidecar_format"] == SIDECAR_FORMAT and KEY["precision"] == "fp16"
    with pytest.raises(ValueError, match="precision"):
        cache_key("10.3.0", "gpu", "9.0", "00", "int8")


def test_matching_sidecar_is_reused():
    assert rebuild_reason(True, {"key": dict(KEY), "onnx_metadata": {}}, KEY) is None


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_every_key_field_change_rebuilds(field):
    stored = dict(KEY, **{field: CHANGED[field]})
    reason = rebuild_reason(True, {"key": stored, "onnx_metadata": {}}, KEY)
    assert reason is not None and reason.startswith(f"{field}:"), reason
    assert repr(CHANGED[field]) in reason and repr(KEY[field]) in reason


@pytest.mark.parametrize("exists,sidecar,why", [
    (False, {"key": KEY, "onnx_metadata": {}}, "no engine file"),
    (True, None, "no readable sidecar"),
    (True, {"onnx_metadata": {}}, "sidecar has no cache key"),
    (True, {"key": KEY}, "sidecar has no ONNX metadata"),
])
def test_missing_pieces_rebuild(exists, sidecar, why):
    assert rebuild_reason(exists, sidecar, KEY) == why


def _tiny_onnx(path, cfg):
    """A one-node ONNX carrying the dense-part metadata of ``cfg`` (the cache reads only that)."""
    x = helper.make_tensor_value_info("x_conv4", TensorProto.FLOAT, [1, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x_conv4"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph)
    meta = build_metadata(cfg, {"source": "test"}, {"exporter": "test"})
    for k, v in encode_metadata(meta).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path


def test_ensure_engine_builds_reuses_and_rebuilds(tmp_path):
    cfg = load_config("lite")
    onnx_path = _tiny_onnx(tmp_path / "m.onnx", cfg)
    calls = []

    def fake_build(onnx_file, shapes, fp16, workspace_mb, log):
        calls.append((shapes, fp16, workspace_mb))
        return b"engine-%d" % len(calls)

    engine = default_engine_path(onnx_path, fp16=True)
    assert engine.name == "m.fp16.engine"
    logs: list[str] = []
    r1 = ensure_engine(onnx_path, engine, fp16=True, workspace_mb=256, env=ENV, build_fn=fake_build,
                       log=logs.append)
    assert r1.rebuilt and r1.reason == "no engine file" and engine.read_bytes() == b"engine-1"
    assert calls == [({"x_conv4": [1, 32, 48, 48]}, True, 256)]
    side = json.loads(sidecar_path(engine).read_text())
    assert side["key"]["precision"] == "fp16" and side["key"]["tensorrt_version"] == "10.3.0"
    assert side["onnx_metadata"]["config_digest"] == cfg.digest()

    r2 = ensure_engine(onnx_path, engine, fp16=True, env=ENV, build_fn=fake_build, log=logs.append)
    assert not r2.rebuilt and len(calls) == 1  # cache hit

    r3 = ensure_engine(onnx_path, engine, fp16=True, env=dict(ENV, tensorrt_version="10.4.0"),
                       build_fn=fake_build, log=logs.append)  # TensorRT upgraded
    assert r3.rebuilt and "tensorrt_version" in r3.reason and engine.read_bytes() == b"engine-2"

    onnx_path.write_bytes(onnx_path.read_bytes() + b"")  # same content: still a hit
    assert not ensure_engine(onnx_path, engine, fp16=True, env=dict(ENV, tensorrt_version="10.4.0"),
                             build_fn=fake_build, log=logs.append).rebuilt
    _tiny_onnx(onnx_path, load_config("paper"))  # re-exported ONNX (other content)
    r4 = ensure_engine(onnx_path, engine, fp16=True, env=dict(ENV, tensorrt_version="10.4.0"),
                       build_fn=fake_build, log=logs.append)
    assert r4.rebuilt and "onnx_sha256" in r4.reason
    assert read_sidecar(engine)["onnx_metadata"]["config_name"] == "paper"

    sidecar_path(engine).write_text("{not json")  # corrupt sidecar
    r5 = ensure_engine(onnx_path, engine, fp16=True, env=dict(ENV, tensorrt_version="10.4.0"),
                       build_fn=fake_build, log=logs.append)
    assert r5.rebuilt and r5.reason == "no readable sidecar"
    assert any("building" in m for m in logs) and any("matches" in m for m in logs)


def _tensorrt_or_skip():
    try:
        return import_tensorrt()
    except BackendUnavailable as e:
        print(f"TensorRT tests skipped: {e}")
        pytest.skip(str(e))


def test_tensorrt_absent_is_a_clear_error(tmp_path, capsys):
    try:
        import_tensorrt()
    except BackendUnavailable as e:
        assert str(e).startswith(TRT_MISSING)
        onnx_path = _tiny_onnx(tmp_path / "m.onnx", load_config("lite"))
        assert main(["--onnx", str(onnx_path), "--build-only"]) == 2
        assert "TensorRT not found" in capsys.readouterr().err
        with pytest.raises(BackendUnavailable, match="TensorRT not found"):
            create_backend("tensorrt", load_config("lite"), onnx_path)
    else:
        pytest.skip("TensorRT is installed here")


def test_tensorrt_build_and_run(tmp_path):
    """Real build + inference + parity (needs TensorRT and a CUDA GPU)."""
    _tensorrt_or_skip()
    from export.check import random_student
    from export.onnx import export_onnx
    from radardistill_ros.backends.torch_backend import TorchBackend

    cfg = load_config("lite")
    model = random_student(cfg, 0)
    onnx_path = export_onnx(model.dense, cfg, tmp_path / "lite.onnx", verbose=False)
    try:
        backend = create_backend("tensorrt", cfg, onnx_path, device="cuda")
    except BackendUnavailable as e:
        pytest.skip(str(e))
    x = np.random.default_rng(0).standard_normal(input_shape(cfg)).astype(np.float32)
    ref = TorchBackend(model.dense, cfg).infer(x)
    out = backend.infer(x)
    assert max(float(np.abs(ref[t][k] - out[t][k]).max()) for t in range(len(ref)) for k in ref[t]) < 1e-3
    assert main(["--onnx", str(onnx_path), "--build-only"]) == 0  # cache hit
