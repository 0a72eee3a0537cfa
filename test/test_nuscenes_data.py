"""nuScenes-format loader, torch Dataset/collate, and the end-to-end frame proof: ground truth
loaded in the ego frame, converted back with ``ego_boxes_to_global`` and scored by the official
``DetectionEval`` must give AP = 1 for every class present."""

from __future__ import annotations

import json
import re
from pathlib import Path

import _tiny_nuscenes as tiny  # test/ helper (pytest puts test/ on sys.path)
import numpy as np
import pytest
import torch
from nuscenes.eval.common.config import config_factory
from nuscenes.eval.detection.evaluate import DetectionEval
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud

from radardistill_ros.config import AugmentConfig, DataConfig, TargetConfig, load_config
from radardistill_ros.conventions import CLASS_NAMES, TASKS
from radardistill_ros.geometry import (
    ego_boxes_to_global,
    invert_transform,
    transform_from_pose,
    transform_points,
    yaw_from_quat,
)
from radardistill_ros.sweeps import radar_sweep_to_ref
from training.dataset import DetectionDataset, collate
from training.nuscenes_data import NuScenesLoader
from training.synth import VAL_SPLIT, generate_world

GRID = load_config("paper").grid


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="module")
def tiny_loader(tiny_root: Path) -> NuScenesLoader:
    return NuScenesLoader(tiny_root, tiny.VERSION, DataConfig(radar_sweeps=2, lidar_sweeps=3), GRID)


# ------------------------------------------------------------------------------------- hand cases


def test_tiny_sample_by_hand(tiny_loader: NuScenesLoader) -> None:
    assert tiny_loader.sample_tokens(tiny.SPLIT) == ["s0", "s1", "s2"]
    s = tiny_loader.load("s1")
    assert s.timestamp == pytest.approx(tiny.T0 * 1e-6 + 0.5)
    np.testing.assert_allclose(s.ego_translation, [5.0, 0.0, 0.0])
    # RADAR_FRONT_LEFT (ego (1, 0, .5), yaw 90 deg), point (2, 0, 0) with vx_comp 3, sweeps at 0.27 and
    # 0.52 s: ego at (10 t_s, 0, 0) -> global (10 t_s + 1, 2, .5) -> ref ego (10 t_s - 4, 2, .5);
    # velocity (0, 3) in ref; v*dt with dt = 0.5 - t_s -> y = 2 + 3 (0.5 - t_s)
    left = s.radar[np.abs(s.radar[:, 5] - 3.0) < 1e-6]
    np.testing.assert_allclose(left[np.argsort(left[:, 0])], [[-1.3, 2.69, 0.5, 7.0, 0.0, 3.0],
                                                              [1.2, 1.94, 0.5, 7.0, 0.0, 3.0]], atol=1e-5)
    assert len(s.radar) == 10  # 5 radars x 2 sweeps, "invalid" states kept (filters disabled)
    # RADAR_FRONT (ego (3.6, 0, .5)): (2, 0, 0) -> ref x = 10 t_s + 0.6
    front = s.radar[(np.abs(s.radar[:, 1]) < 1e-6) & (s.radar[:, 0] > 3.0)]
    np.testing.assert_allclose(np.sort(front[:, 0]), [3.3, 5.8], atol=1e-5)
    # LiDAR at ego (0, 0, 1.8), point (1, 0, 0), sweeps 0, 0.25, 0.5 s -> x = 10 t_s - 4, time_lag 0.5 - t_s
    np.testing.assert_allclose(s.lidar[np.argsort(s.lidar[:, 0])],
                               [[-4.0, 0, 1.8, 7, 0.5], [-1.5, 0, 1.8, 7, 0.25], [1.0, 0, 1.8, 7, 0.0]],
                               atol=1e-5)
    # GT: car (global (20, -2.5, 1), yaw 90, 5 m/s along +y) and the single-frame pedestrian; the
    # zero-point pedestrian, the animal and the car 195 m away are filtered
    np.testing.assert_allclose(s.boxes, [[15.0, -2.5, 1.0, 4.5, 2.0, 1.7, np.pi / 2, 0.0, 5.0],
                                         [5.0, 10.0, 0.9, 0.7, 0.7, 1.8, 0.3, 0.0, 0.0]], atol=1e-5)
    assert s.labels.tolist() == [CLASS_NAMES.index("car"), CLASS_NAMES.index("pedestrian")]
    assert s.velocity_valid.tolist() == [True, False]
    assert s.attributes == ("vehicle.moving", "pedestrian.standing")
    assert s.num_points.tolist() == [7, 3]
    # scene start: fewer sweeps than requested, no duplicates
    s0 = tiny_loader.load("s0", lidar=False)
    assert len(s0.radar) == 5 and s0.lidar is None


def test_errors_name_the_file_or_split(tiny_root: Path, tiny_loader: NuScenesLoader, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="nope"):
        tiny_loader.sample_tokens("nope")
    with pytest.raises(FileNotFoundError, match=re.escape("v1.0-missing")):
        NuScenesLoader(tiny_root, "v1.0-missing")
    victim = tiny_root / "sweeps" / "RADAR_FRONT" / "4.pcd"
    saved = victim.read_bytes()
    try:
        victim.write_bytes(b"garbage\n")
        with pytest.raises(ValueError, match=re.escape(str(victim))):
            tiny_loader.load("s2", lidar=False)
        victim.unlink()
        with pytest.raises(FileNotFoundError, match=re.escape(str(victim))):
            tiny_loader.load("s2", lidar=False)
    finally:
        victim.write_bytes(saved)


# --------------------------------------------------------------------------- GT scored as predictions


def _gt_as_results(loader: NuScenesLoader, tokens: list[str]) -> dict:
    results = {}
    for tok in tokens:
        s = loader.load(tok, radar=False, lidar=False)
        centers, sizes, rots, vels = ego_boxes_to_global(s.boxes, s.ego_translation, s.ego_rotation)
        results[tok] = [
            {"sample_token": tok, "translation": c.tolist(), "size": sz.tolist(), "rotation": q.tolist(),
             "velocity": v[:2].tolist(), "detection_name": CLASS_NAMES[lab], "detection_score": 1.0,
             "attribute_name": attr}
            for c, sz, q, v, lab, attr in zip(centers, sizes, rots, vels, s.labels, s.attributes)]
    return {"meta": {"use_camera": False, "use_lidar": False, "use_radar": True, "use_map": False,
                     "use_external": False}, "results": results}


def _score_gt(loader: NuScenesLoader, split: str, out: Path) -> tuple[dict, set[str], set[str]]:
    """Metrics, classes present in the filtered GT, classes with some finite GT velocity."""
    tokens = loader.sample_tokens(split)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(_gt_as_results(loader, tokens)))
    ev = DetectionEval(loader.nusc, config_factory("detection_cvpr_2019"), str(path), split, str(out),
                       verbose=False)
    gt = [b for t in ev.gt_boxes.sample_tokens for b in ev.gt_boxes[t]]
    present = {b.detection_name for b in gt}
    with_velocity = {b.detection_name for b in gt if np.isfinite(b.velocity).all()}
    metrics, _ = ev.evaluate()
    return metrics.serialize(), present, with_velocity


def _assert_perfect(m: dict, present: set[str], with_velocity: set[str]) -> None:
    assert present
    for cls in present:
        assert m["mean_dist_aps"][cls] >= 0.999, (cls, m["mean_dist_aps"][cls])
        tp = m["label_tp_errors"][cls]
        # boxes are float32 in the ego frame: ~4e-6 m resolution at 50 m
        assert tp["trans_err"] < 1e-4 and tp["scale_err"] < 1e-6, (cls, tp)
        if cls != "traffic_cone":  # DetectionEval defines no orientation error for cones (NaN)
            # barriers: orientation error is taken modulo 180 deg, still exact here
            assert tp["orient_err"] < 1e-3, (cls, tp)
        if cls in with_velocity and cls not in ("barrier", "traffic_cone"):
            assert tp["vel_err"] < 1e-3, (cls, tp)


def test_tiny_gt_scores_ap_1(tiny_loader: NuScenesLoader, tmp_path: Path) -> None:
    m, present, with_velocity = _score_gt(tiny_loader, tiny.SPLIT, tmp_path / "eval")
    assert present == {"car", "pedestrian"} and with_velocity == {"car"}
    _assert_perfect(m, present, with_velocity)


# ------------------------------------------------------------------------------- Dataset and collate


def test_dataset_modes_and_collate(tiny_loader: NuScenesLoader) -> None:
    cfg = TargetConfig()
    for mode, has_radar, has_lidar in (("student", True, False), ("teacher", False, True),
                                       ("distill", True, True)):
        ds = DetectionDataset(tiny_loader, tiny.SPLIT, grid=GRID, targets=cfg, mode=mode)
        batch = collate([ds[0], ds[1]])
        assert (batch["radar"] is not None) == has_radar and (batch["lidar"] is not None) == has_lidar
    assert batch["tokens"] == ["s0", "s1"]
    assert batch["radar"].shape == (5 + 10, 7) and batch["radar"][:5, 0].eq(0).all()
    assert batch["radar"][5:, 0].eq(1).all()
    assert batch["lidar"].shape == (1 + 3, 6)
    assert batch["gt_boxes"].shape == (2, 2, 9) and batch["gt_labels"].tolist() == [[0, -1], [0, 8]]
    assert len(batch["targets"]) == len(TASKS)
    car = batch["targets"][0]
    assert car["heatmap"].shape == (2, 1, 180, 180) and car["reg"].shape == (2, 500, 10)
    assert car["ind"].dtype == torch.int64 and car["mask"].dtype == torch.bool
    assert car["mask"].sum() == 2 and batch["targets"][5]["mask"].sum() == 1
    np.testing.assert_allclose(batch["aug_matrix"].numpy(), np.broadcast_to(np.eye(4), (2, 4, 4)))


def test_dataset_augmentation_deterministic_and_consistent(tiny_loader: NuScenesLoader) -> None:
    kw = dict(grid=GRID, targets=TargetConfig(), mode="distill", augment=AugmentConfig(), seed=3)
    a, b = DetectionDataset(tiny_loader, tiny.SPLIT, **kw), DetectionDataset(tiny_loader, tiny.SPLIT, **kw)
    ia, ib = a[1], b[1]
    np.testing.assert_array_equal(ia["radar"], ib["radar"])
    a.set_epoch(1)
    assert not np.allclose(a[1]["aug_matrix"], ia["aug_matrix"])
    plain = DetectionDataset(tiny_loader, tiny.SPLIT, grid=GRID, targets=TargetConfig(), mode="distill")[1]
    m = ia["aug_matrix"]
    np.testing.assert_allclose(ia["boxes"][:, :3], plain["boxes"][:, :3] @ m[:3, :3].T + m[:3, 3], atol=1e-4)
    np.testing.assert_allclose(ia["radar"][:, 4:6], plain["radar"][:, 4:6] @ m[:2, :2].T, atol=1e-4)


# ------------------------------------------------------------------------------- the synthetic world


@pytest.fixture(scope="module")
def synth_loader(tmp_path_factory: pytest.TempPathFactory) -> tuple[NuScenesLoader, str]:
    """A small synthetic world (2 scenes x 2 s: 4 + 4 key frames), full sweep counts."""
    root = tmp_path_factory.mktemp("synth") / "world"
    generate_world(root, version="v1.0-synth", scenes=2, seed=0, scene_seconds=2.0, show_progress=False)
    loader = NuScenesLoader(root, "v1.0-synth", DataConfig(radar_sweeps=6, lidar_sweeps=10), GRID)
    return loader, VAL_SPLIT


def test_synthetic_world_loads(synth_loader: tuple[NuScenesLoader, str]) -> None:
    loader, split = synth_loader
    tokens = loader.sample_tokens(split)
    assert tokens
    s = loader.load(tokens[len(tokens) // 2])
    assert s.radar.shape[1] == 6 and s.radar.dtype == np.float32 and len(s.radar) > 0
    assert s.lidar.shape[1] == 5 and len(s.lidar) > 0 and np.isfinite(s.lidar).all()
    assert (s.lidar[:, 4] >= -1e-3).all() and s.lidar[:, 4].max() < 0.6
    assert s.boxes.shape[1] == 9 and len(s.boxes) == len(s.labels) > 0
    assert (np.abs(s.boxes[:, :2]) < 54).all()
    # ego frame (base_link on the ground), not LIDAR_TOP: most LiDAR returns lie within a few metres of z = 0
    assert abs(float(np.median(s.lidar[:, 2]))) < 3.0


def test_synthetic_gt_scores_ap_1(synth_loader: tuple[NuScenesLoader, str], tmp_path: Path) -> None:
    loader, split = synth_loader
    m, present, with_velocity = _score_gt(loader, split, tmp_path / "eval")
    _assert_perfect(m, present, with_velocity)
    # yaw survives the round trip exactly for the (level) synthetic ego
    tok = loader.sample_tokens(split)[0]
    s = loader.load(tok, radar=False, lidar=False)
    _, _, q, _ = ego_boxes_to_global(s.boxes, s.ego_translation, s.ego_rotation)
    for k, ann_tok in enumerate(s.annotation_tokens):
        ann = loader.nusc.get("sample_annotation", ann_tok)
        d = (yaw_from_quat(q[k]) - yaw_from_quat(np.array(ann["rotation"])) + np.pi) % (2 * np.pi) - np.pi
        assert abs(d) < 1e-4


def test_synthetic_matches_devkit_multisweep(synth_loader: tuple[NuScenesLoader, str]) -> None:
    """Positions agree with the devkit's own ``from_file_multisweep`` (moved to LIDAR_TOP there; here
    the ego frame, and radar v*dt undone), LiDAR time lags too: an independent frame-chain check."""
    loader, split = synth_loader
    nusc = loader.nusc
    tok = loader.sample_tokens(split)[-1]
    rec = nusc.get("sample", tok)
    lidar_sd = nusc.get("sample_data", rec["data"]["LIDAR_TOP"])
    cs = nusc.get("calibrated_sensor", lidar_sd["calibrated_sensor_token"])
    t_lidar_from_ego = invert_transform(transform_from_pose(cs["translation"], cs["rotation"]))
    t_ref, ego_t, ego_q = loader.reference(tok)
    t_ref_from_global = invert_transform(transform_from_pose(ego_t, ego_q))
    n_radar = loader.data.radar_sweeps
    RadarPointCloud.disable_filters()
    try:
        for ch in loader.data.radar_channels:
            ref_pc, _ = RadarPointCloud.from_file_multisweep(nusc, rec, ch, "LIDAR_TOP", nsweeps=n_radar,
                                                             min_distance=0.0)
            sweeps = loader.radar_sweeps(tok, ch)  # newest first, as the devkit
            # dt = 0 (t_ref = t_sweep) undoes the v*dt shift, leaving the pure frame chain
            ours = np.concatenate([radar_sweep_to_ref(s, t_ref_from_global, s.timestamp) for s in sweeps])
            np.testing.assert_allclose(transform_points(t_lidar_from_ego, ours[:, :3]), ref_pc.points[:3].T,
                                       atol=1e-4)
            np.testing.assert_allclose(ours[:, 3], ref_pc.points[5], atol=1e-6)
    finally:
        RadarPointCloud.default_filters()
    ref_pc, times = LidarPointCloud.from_file_multisweep(nusc, rec, "LIDAR_TOP", "LIDAR_TOP",
                                                         nsweeps=loader.data.lidar_sweeps, min_distance=0.0)
    s = loader.load(tok, radar=False)
    ours = s.lidar[np.argsort(s.lidar[:, 4], kind="stable")]  # accumulator: oldest sweep first
    ref = ref_pc.points.T[np.argsort(times[0], kind="stable")]  # devkit: newest first
    np.testing.assert_allclose(transform_points(t_lidar_from_ego, ours[:, :3]), ref[:, :3], atol=1e-3)
    np.testing.assert_allclose(ours[:, 3], ref[:, 3])
    np.testing.assert_allclose(np.sort(s.lidar[:, 4]), np.sort(times[0]), atol=1e-6)
    assert t_ref == pytest.approx(lidar_sd["timestamp"] * 1e-6)
