"""ONNX export of the dense part: single file, checker-clean, metadata, ONNX Runtime parity
against torch (head maps and decoded detections), refusal of a model exported for another config."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from export.check import check_backends, load_inputs, random_student, synthetic_inputs
from export.check import main as check_main
from export.onnx import MIN_OPSET, check_metadata, export_onnx, file_sha256, read_onnx_metadata
from export.onnx import main as onnx_main
from radardistill_ros.backends import ModelMismatchError, create_backend, input_shape
from radardistill_ros.backends.metadata import FORMAT, output_shapes
from radardistill_ros.backends.torch_backend import TorchBackend
from radardistill_ros.config import load_config
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from radardistill_ros.model import build_model, head_output_names, save_checkpoint


@pytest.fixture(scope="module")
def lite(tmp_path_factory):
    """lite random student, its checkpoint and its ONNX exported through the CLI."""
    cfg = load_config("lite")
    model = random_student(cfg, 0)
    d = tmp_path_factory.mktemp("lite")
    ckpt = d / "student.pt"
    save_checkpoint(ckpt, model, cfg, "radar")
    t0 = time.perf_counter()
    assert onnx_main(["--config", "lite", "--checkpoint", str(ckpt), "--out", str(d / "lite.onnx")]) == 0
    print(f"lite export (CLI, incl. checkpoint load): {time.perf_counter() - t0:.1f} s")
    return SimpleNamespace(cfg=cfg, model=model, ckpt=ckpt, onnx=d / "lite.onnx", dir=d)


def _dims(vi: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in vi.type.tensor_type.shape.dim]


def test_lite_export_single_file_checker_clean(lite):
    onnx.checker.check_model(str(lite.onnx), full_check=True)
    model = onnx.load(str(lite.onnx))
    assert sorted(p.name for p in lite.dir.iterdir()) == ["lite.onnx", "student.pt"]  # no external data
    assert all(t.data_location != TensorProto.EXTERNAL for t in model.graph.initializer)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= MIN_OPSET
    assert [i.name for i in model.graph.input] == ["x_conv4"]
    assert _dims(model.graph.input[0]) == list(input_shape(lite.cfg)) == [1, 32, 48, 48]
    names = [o.name for o in model.graph.output]
    assert names == head_output_names() and names[:2] == ["task0.hm", "task0.center"]
    assert {o.name: _dims(o) for o in model.graph.output} == output_shapes(lite.cfg)


def test_metadata_round_trip(lite):
    meta = read_onnx_metadata(lite.onnx)
    cfg = lite.cfg
    assert meta["format"] == FORMAT
    assert meta["config_digest"] == cfg.digest() and meta["config_name"] == "lite"
    assert meta["class_names"] == list(CLASS_NAMES) and meta["tasks"] == [list(t) for t in TASKS]
    assert meta["grid"]["bev_shape"] == [48, 48] and meta["grid"]["out_stride"] == 8
    assert meta["grid"]["point_cloud_range"] == list(cfg.grid.point_cloud_range)
    assert meta["input_names"] == ["x_conv4"] and meta["output_names"] == head_output_names()
    assert meta["weights"] == {"source": "checkpoint", "file": "student.pt", "sha256": file_sha256(lite.ckpt)}
    assert meta["exporter"]["opset"] == 17 and "torchscript" in meta["exporter"]["exporter"]
    check_metadata(meta, cfg)


def test_onnxruntime_parity_lite(lite):
    inputs = synthetic_inputs(lite.model, 2)
    assert inputs.shape == (2, 32, 48, 48) and (inputs != 0).any()
    report = check_backends(lite.cfg, lite.model, inputs, onnx_path=lite.onnx)
    print(report.table())
    assert report.ok, report.table()
    ort_row = next(r for r in report.results if r.backend == "onnxruntime-cpu")
    assert ort_row.head_max_diff <= 1e-4 and ort_row.min_iou >= 0.99 and ort_row.max_score_diff <= 1e-3
    assert ort_row.ref_detections == ort_row.detections > 50  # a non-vacuous comparison
    skipped = dict(report.skipped)
    if "tensorrt-cuda" in skipped:
        assert "TensorRT" in skipped["tensorrt-cuda"] or "CUDA" in skipped["tensorrt-cuda"]


def test_model_for_another_config_is_refused(lite):
    paper = load_config("paper")
    with pytest.raises(ModelMismatchError) as e:
        create_backend("onnxruntime", paper, lite.onnx)
    msg = str(e.value)
    print(msg)
    assert lite.cfg.digest()[:16] in msg and paper.digest()[:16] in msg
    assert "'lite'" in msg and "'paper'" in msg
    head = dataclasses.replace(lite.cfg.model.head, head_channels=16)
    tweaked = dataclasses.replace(lite.cfg, model=dataclasses.replace(lite.cfg.model, head=head))
    with pytest.raises(ModelMismatchError,
                       match=r"model\.head\.head_channels: 32 \(model\) != 16 \(runtime\)"):
        create_backend("onnxruntime", tweaked, lite.onnx)
    # decoding runs outside the engine: another score threshold or peak window is accepted
    serving = dataclasses.replace(lite.cfg, post=dataclasses.replace(lite.cfg.post, score_threshold=0.3,
                                                                     peak_kernel=0))
    backend = create_backend("onnxruntime", serving, lite.onnx)
    assert len(backend.infer(np.zeros(input_shape(lite.cfg), np.float32))) == len(TASKS)


def test_check_metadata_rejects_tampered_fields(lite):
    meta = read_onnx_metadata(lite.onnx)
    with pytest.raises(ModelMismatchError, match="format"):
        check_metadata(dict(meta, format="radardistill_ros.dense_part/0"), lite.cfg)
    with pytest.raises(ModelMismatchError, match="tasks"):
        check_metadata(dict(meta, tasks=[["car"]]), lite.cfg)
    with pytest.raises(ModelMismatchError, match="output_names"):
        check_metadata(dict(meta, output_names=meta["output_names"][::-1]), lite.cfg)


def test_foreign_onnx_refused(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "foreign.onnx"))
    with pytest.raises(ModelMismatchError, match="not a dense part exported by radardistill_ros"):
        read_onnx_metadata(tmp_path / "foreign.onnx")
    with pytest.raises(ModelMismatchError, match="not a dense part"):
        create_backend("onnxruntime", load_config("lite"), tmp_path / "foreign.onnx")


def test_opset_below_17_rejected(lite, tmp_path):
    with pytest.raises(ValueError, match="opset 16"):
        export_onnx(lite.model.dense, lite.cfg, tmp_path / "x.onnx", opset=16)


def test_paper_export_reduced_grid(tmp_path):
    """The paper architecture (full widths, 20 M parameters) on a 24 x 24 BEV grid: a full-size
    paper export traces a 180 x 180 forward and took ~40 s on the shared 2 cores."""
    paper = load_config("paper")
    small = dataclasses.replace(paper, grid=dataclasses.replace(
        paper.grid, point_cloud_range=(-7.2, -7.2, -3.2, 7.2, 7.2, 4.8)))
    assert small.grid.bev_shape == (24, 24)
    torch.manual_seed(0)
    model = build_model(small, "radar").eval()
    n_params = sum(p.numel() for p in model.dense.parameters())
    assert n_params > 15_000_000
    t0 = time.perf_counter()
    path = export_onnx(model.dense, small, tmp_path / "paper_small.onnx", verbose=False)
    print(f"paper (24x24 grid) export: {time.perf_counter() - t0:.1f} s, "
          f"{path.stat().st_size / 2**20:.1f} MiB")
    # export_onnx ran onnx.checker (full_check) on the written file
    assert path.stat().st_size > 3.5 * n_params  # weights inline (BN folded into convs)
    ort = create_backend("onnxruntime", small, path)
    x = np.random.default_rng(0).standard_normal(input_shape(small)).astype(np.float32)
    ref, out = TorchBackend(model.dense, small).infer(x), ort.infer(x)
    diff = max(float(np.abs(ref[t][k] - out[t][k]).max()) for t in range(len(TASKS)) for k in ref[t])
    print(f"paper (24x24) ORT vs torch max |diff| {diff:.2e}")
    assert diff <= 1e-4


def test_cli_refuses_checkpoint_of_another_config(lite, tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    assert onnx_main(["--config", "paper", "--checkpoint", str(lite.ckpt), "--out", out]) == 2
    assert "digest" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_check_cli_and_recorded_inputs(lite, tmp_path, capsys):
    saved = tmp_path / "x.npz"
    rc = check_main(["--config", "lite", "--checkpoint", str(lite.ckpt), "--onnx", str(lite.onnx),
                     "--synthetic", "1", "--save-inputs", str(saved), "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    print(out)
    assert rc == 0 and "| onnxruntime-cpu | fp32 |" in out and "PASS" in out and "skipped" in out
    assert load_inputs(saved, lite.cfg).shape == (1, 32, 48, 48)
    with pytest.raises(ValueError, match="expects"):
        load_inputs(saved, load_config("paper"))
