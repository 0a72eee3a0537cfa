"""Evaluation path: ego detections -> nuScenes results (training.nusc_results) -> DetectionEval, and
the ``training.evaluate`` CLI on the hand-made tiny dataset (test/_tiny_nuscenes.py)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import _tiny_nuscenes as tiny  # test/ helper (pytest puts test/ on sys.path)
import numpy as np
import pytest
import torch
from nuscenes.eval.common.loaders import load_prediction
from nuscenes.eval.detection.data_classes import DetectionBox

from radardistill_ros.config import DataConfig, load_config
from radardistill_ros.conventions import CLASS_NAMES
from radardistill_ros.decode import decode
from radardistill_ros.geometry import quat_from_yaw
from radardistill_ros.model import build_model, save_checkpoint
from radardistill_ros.model.checkpoint import CheckpointError
from training import evaluate as ev
from training.dataset import DetectionDataset, collate
from training.nusc_results import (
    default_attribute,
    detections_to_results,
    format_summary,
    run_detection_eval,
    write_results,
)
from training.nuscenes_data import NuScenesLoader

LITE = load_config("lite")


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small ops are much faster than with 2 threads on shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("tiny_eval") / "data")


@pytest.fixture(scope="module")
def loader(tiny_root: Path) -> NuScenesLoader:
    return NuScenesLoader(tiny_root, tiny.VERSION, DataConfig(radar_sweeps=2, lidar_sweeps=3), LITE.grid)


def _gt_detections(loader: NuScenesLoader, tokens: list[str]) -> tuple[list, list, list]:
    dets, ego_t, ego_q = [], [], []
    for tok in tokens:
        s = loader.load(tok, radar=False, lidar=False)
        dets.append((s.boxes, np.ones(len(s.boxes), np.float32), s.labels))
        ego_t.append(s.ego_translation)
        ego_q.append(s.ego_rotation)
    return dets, ego_t, ego_q


def test_default_attribute_rule() -> None:
    assert default_attribute("car", 5.0) == "vehicle.moving"
    assert default_attribute("car", 0.1) == "vehicle.parked"
    assert default_attribute("bus", 0.0) == "vehicle.stopped"
    assert default_attribute("bicycle", 1.0) == "cycle.with_rider"
    assert default_attribute("motorcycle", 0.0) == "cycle.without_rider"
    assert default_attribute("pedestrian", 1.0) == "pedestrian.moving"
    assert default_attribute("pedestrian", 0.0) == "pedestrian.standing"
    assert default_attribute("barrier", 3.0) == "" and default_attribute("traffic_cone", 0.0) == ""
    with pytest.raises(KeyError, match="animal"):
        default_attribute("animal", 0.0)


def test_results_by_hand_and_valid_for_devkit(tmp_path: Path) -> None:
    """Ego at global (10, 5, 0) yawed +90 deg; a car 10 m ahead heading along ego +x at 2 m/s."""
    ego_t, ego_q = np.array([10.0, 5.0, 0.0]), quat_from_yaw(np.pi / 2)
    boxes = np.array([[10.0, 0.0, 1.0, 4.5, 2.0, 1.7, 0.0, 2.0, 0.0],
                      [5.0, 5.0, 0.5, 0.5, 0.5, 1.0, 0.0, 0.0, 0.0]], np.float32)
    res = detections_to_results(["tok"], [(boxes, np.array([0.3, 0.9]), np.array([0, 9]))], [ego_t], [ego_q])
    cone, car = res["tok"]  # sorted by score
    assert cone["detection_name"] == "traffic_cone" and cone["attribute_name"] == ""
    np.testing.assert_allclose(car["translation"], [10.0, 15.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(car["size"], [2.0, 4.5, 1.7], atol=1e-6)          # w, l, h
    np.testing.assert_allclose(car["rotation"], quat_from_yaw(np.pi / 2), atol=1e-6)
    np.testing.assert_allclose(car["velocity"], [0.0, 2.0], atol=1e-6)
    assert car["attribute_name"] == "vehicle.moving" and car["detection_score"] == pytest.approx(0.3)
    path = write_results(tmp_path / "r.json", res)
    boxes_loaded, meta = load_prediction(str(path), 500, DetectionBox)
    assert meta["use_radar"] and not meta["use_lidar"]
    assert len(boxes_loaded["tok"]) == 2
    # empty samples stay present; non-finite boxes are dropped; max_boxes keeps the best scores
    nan_box = np.full((1, 9), np.nan, np.float32)
    res = detections_to_results(["a", "b"], [(np.zeros((0, 9)), np.zeros(0), np.zeros(0, int)),
                                             (np.concatenate([boxes, nan_box]), np.array([0.1, 0.2, 0.9]),
                                              np.array([0, 0, 0]))], [ego_t] * 2, [ego_q] * 2, max_boxes=1)
    assert res["a"] == [] and len(res["b"]) == 1 and res["b"][0]["detection_score"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="labels"):
        detections_to_results(["a"], [(boxes, np.ones(2), np.array([0, 10]))], [ego_t], [ego_q])


def test_gt_as_prediction_scores_ap_1(loader: NuScenesLoader, tmp_path: Path) -> None:
    """GT boxes from the loader (ego frame) through detections_to_results score AP 1 (split and subset)."""
    tokens = loader.sample_tokens(tiny.SPLIT)
    dets, ego_t, ego_q = _gt_detections(loader, tokens)
    res = detections_to_results(tokens, dets, ego_t, ego_q)
    for kwargs in ({"split": tiny.SPLIT}, {"split": None, "sample_tokens": tokens[1:2]}):
        m = run_detection_eval(res, loader.nusc, out_dir=tmp_path / str(len(kwargs)), **kwargs)
        for cls in ("car", "pedestrian"):
            assert m["mean_dist_aps"][cls] >= 0.999, (kwargs, cls, m["mean_dist_aps"])
            assert m["label_tp_errors"][cls]["trans_err"] < 1e-4
        assert m["label_tp_errors"]["car"]["vel_err"] < 1e-3
        assert m["label_tp_errors"]["car"]["attr_err"] == 0.0  # moving car -> vehicle.moving
        assert (tmp_path / str(len(kwargs)) / "metrics_details.json").is_file()
    assert "car" in format_summary(m)
    # a shifted prediction (1.5 m) matches only at the 2 m and 4 m thresholds
    shifted = [(b + np.array([1.5, 0, 0, 0, 0, 0, 0, 0, 0], np.float32), s, lab) for b, s, lab in dets]
    m = run_detection_eval(detections_to_results(tokens, shifted, ego_t, ego_q), loader.nusc, tiny.SPLIT,
                           tmp_path / "shifted")
    aps = m["label_aps"]["car"]
    assert aps[0.5] == 0.0 and aps[1.0] == 0.0 and aps[2.0] >= 0.999 and aps[4.0] >= 0.999


def test_perfect_head_outputs_through_decode_score_ap_1(loader: NuScenesLoader, tmp_path: Path) -> None:
    """Targets -> ideal head maps -> decode (the node's decoding) -> results -> DetectionEval: AP 1."""
    tokens = loader.sample_tokens(tiny.SPLIT)
    ds = DetectionDataset(loader, tokens=tokens, grid=LITE.grid, targets=LITE.targets, mode="student")
    batch = collate([ds[i] for i in range(len(ds))])
    head = []
    for t in batch["targets"]:
        b, _, h, w = t["heatmap"].shape
        reg = torch.zeros(b, 10, h * w)
        for i in range(b):
            m = t["mask"][i]
            reg[i][:, t["ind"][i][m]] = t["reg"][i][m].T
        reg = reg.reshape(b, 10, h, w)
        head.append({"hm": torch.logit(t["heatmap"].clamp(1e-6, 1 - 1e-6)), "center": reg[:, 0:2],
                     "center_z": reg[:, 2:3], "dim": reg[:, 3:6], "rot": reg[:, 6:8], "vel": reg[:, 8:10],
                     "iou": torch.ones(b, 1, h, w)})
    dets = decode(head, LITE.grid, LITE.post)
    res = detections_to_results(batch["tokens"], dets, batch["ego_translation"], batch["ego_rotation"])
    m = run_detection_eval(res, loader.nusc, tiny.SPLIT, tmp_path)
    # gaussian neighbours of a peak that score above the threshold and survive NMS are low-score
    # false positives: AP ~0.989 instead of 1
    assert m["mean_dist_aps"]["car"] >= 0.98 and m["mean_dist_aps"]["pedestrian"] >= 0.98
    assert m["label_tp_errors"]["car"]["trans_err"] < 0.01


def test_evaluate_cli_writes_metrics_and_plots(tiny_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    cfg = dataclasses.replace(LITE, data=DataConfig(radar_sweeps=2, lidar_sweeps=3))
    ckpt = tmp_path / "model.pt"
    save_checkpoint(ckpt, build_model(cfg, "radar"), cfg, "radar")
    out = tmp_path / "eval"
    assert ev.main(["--checkpoint", str(ckpt), "--dataroot", str(tiny_root), "--version", tiny.VERSION,
                    "--split", tiny.SPLIT, "--out", str(out), "--plots", "2", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mAP" in printed and "NDS" in printed and "car" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 3 and metrics["modality"] == "radar"
    assert set(metrics["mean_dist_aps"]) == set(CLASS_NAMES)
    assert 0.0 <= metrics["mean_ap"] <= 1.0 and 0.0 <= metrics["nd_score"] <= 1.0
    results = json.loads((out / "results_nusc.json").read_text())
    assert set(results["results"]) == {"s0", "s1", "s2"}
    assert len(list((out / "bev").glob("*.png"))) == 2
    assert (out / "pr" / "pr_car.png").stat().st_size > 1000
    # --config is checked against the checkpoint's digest
    with pytest.raises(CheckpointError, match="digest"):
        ev.evaluate(ckpt, tiny_root, tiny.VERSION, tiny.SPLIT, tmp_path / "x", cfg=LITE)
    # a subset (max_samples) goes through the subset evaluation
    m = ev.evaluate(ckpt, tiny_root, tiny.VERSION, tiny.SPLIT, tmp_path / "sub", cfg=cfg, max_samples=2)
    assert m["samples"] == 2 and m["num_samples"] == 2
