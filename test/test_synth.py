"""The synthetic nuScenes-format world: devkit loading, file formats, determinism, physics, stats."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

nuscenes = pytest.importorskip("nuscenes")
from nuscenes import NuScenes  # noqa: E402
from nuscenes.utils.data_classes import LidarPointCloud, RadarPointCloud  # noqa: E402
from nuscenes.utils.geometry_utils import points_in_box  # noqa: E402
from nuscenes.utils.splits import get_scenes_of_split, is_predefined_split  # noqa: E402

from radardistill_ros.conventions import (  # noqa: E402
    CATEGORY_TO_CLASS,
    LIDAR_CHANNEL,
    NUSCENES_RADAR_FIELDS,
    RADAR_CHANNELS,
)
from training.synth import TRAIN_SPLIT, VAL_SPLIT, generate_world, radar_pcd_bytes, read_radar_pcd  # noqa: E402
from training.synth import radar as radar_mod  # noqa: E402
from training.synth.__main__ import main as cli_main  # noqa: E402
from training.synth.lidar import RoadIndex  # noqa: E402
from training.synth.stats import check_stats, compute_stats  # noqa: E402
from training.synth.world import KIND_BUILDING  # noqa: E402
from training.synth.writer import scenario_for, token  # noqa: E402

VERSION = "v1.0-synth"
SEED = 0
SECONDS = 3.0
RADAR_DTYPE = np.dtype(list(NUSCENES_RADAR_FIELDS))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_world(tmp_path_factory.mktemp("synth") / "world", version=VERSION, scenes=2, seed=SEED,
                          scene_seconds=SECONDS, show_progress=False)


@pytest.fixture(scope="module")
def nusc(world: Path) -> NuScenes:
    return NuScenes(version=VERSION, dataroot=str(world), verbose=False)


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_devkit_loads_all_tables_and_key_frames(nusc: NuScenes) -> None:
    assert len(nusc.scene) == 2
    assert len(nusc.sample) == 2 * round(2 * SECONDS)
    assert {s["channel"] for s in nusc.sensor} == {LIDAR_CHANNEL, *RADAR_CHANNELS}
    for sample in nusc.sample:
        assert set(sample["data"]) == {LIDAR_CHANNEL, *RADAR_CHANNELS}
        lidar = nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])
        assert lidar["timestamp"] == sample["timestamp"] and lidar["is_key_frame"]
        for ch in RADAR_CHANNELS:
            sd = nusc.get("sample_data", sample["data"][ch])
            assert abs(sd["timestamp"] - sample["timestamp"]) <= 40_000  # closest sweep of a ~13 Hz radar
            assert sd["filename"].startswith(f"samples/{ch}/") and sd["filename"].endswith(".pcd")
        assert len(sample["anns"]) > 0
    for sd in nusc.sample_data:
        pose = nusc.get("ego_pose", sd["ego_pose_token"])
        assert pose["timestamp"] == sd["timestamp"]
        assert (Path(nusc.dataroot) / sd["filename"]).is_file()


def test_sample_data_chains_and_rates(nusc: NuScenes) -> None:
    for scene in nusc.scene:
        first = nusc.get("sample", scene["first_sample_token"])
        rates = [(LIDAR_CHANNEL, 50_000, 0), *[(c, 1e6 / 13, 0.011 * 1e6 / 13) for c in RADAR_CHANNELS]]
        for ch, period, tol in rates:
            rec = nusc.get("sample_data", first["data"][ch])
            while rec["prev"]:
                rec = nusc.get("sample_data", rec["prev"])
            stamps, keys = [], 0
            while True:
                stamps.append(rec["timestamp"])
                keys += rec["is_key_frame"]
                if not rec["next"]:
                    break
                nxt = nusc.get("sample_data", rec["next"])
                assert nxt["prev"] == rec["token"]
                rec = nxt
            assert keys == scene["nbr_samples"]
            dt = np.diff(stamps)
            assert np.all(np.abs(dt - period) <= tol + 1), ch
            # History before the first key frame: 10 LiDAR sweeps, ~6 radar sweeps.
            assert first["timestamp"] - stamps[0] >= (450_000 if ch == LIDAR_CHANNEL else 380_000)


def test_splits_resolve(nusc: NuScenes) -> None:
    assert not is_predefined_split(TRAIN_SPLIT) and not is_predefined_split(VAL_SPLIT)
    train = get_scenes_of_split(TRAIN_SPLIT, nusc)
    val = get_scenes_of_split(VAL_SPLIT, nusc)
    assert train and val and not set(train) & set(val)
    assert set(train) | set(val) == {s["name"] for s in nusc.scene}


def test_annotations_categories_attributes_visibility(nusc: NuScenes) -> None:
    attr_name = {a["token"]: a["name"] for a in nusc.attribute}
    assert {v["level"] for v in nusc.visibility} == {"v0-40", "v40-60", "v60-80", "v80-100"}
    seen = set()
    for ann in nusc.sample_annotation:
        cls = CATEGORY_TO_CLASS[ann["category_name"]]
        seen.add(cls)
        names = [attr_name[t] for t in ann["attribute_tokens"]]
        if cls in ("barrier", "traffic_cone"):
            assert names == []
        else:
            assert len(names) == 1
            prefix = {"pedestrian": "pedestrian.", "bicycle": "cycle.", "motorcycle": "cycle."}.get(
                cls, "vehicle.")
            assert names[0].startswith(prefix)
        assert ann["visibility_token"] in {"1", "2", "3", "4"}
        w, l, h = ann["size"]
        assert 0.2 < w < 4.0 and 0.2 < l < 20.0 and 0.5 < h < 5.0
        assert abs(np.linalg.norm(ann["rotation"]) - 1.0) < 1e-9
    assert {"car", "pedestrian", "bicycle"} <= seen


def test_instances_linked_and_velocities_match_simulation(nusc: NuScenes) -> None:
    for inst in nusc.instance:
        toks, tok = [], inst["first_annotation_token"]
        while tok:
            toks.append(tok)
            tok = nusc.get("sample_annotation", tok)["next"]
        assert len(toks) == inst["nbr_annotations"] and toks[-1] == inst["last_annotation_token"]
    checked = 0
    for idx, scene in enumerate(nusc.scene):
        scn = scenario_for(SEED, idx, SECONDS)
        inst_of = {token(SEED, "instance", idx, a): a for a in range(len(scn.actors))}
        t0 = nusc.get("sample", scene["first_sample_token"])["timestamp"]
        for ann in nusc.sample_annotation:
            a = inst_of.get(ann["instance_token"])
            if a is None:
                continue
            t = (nusc.get("sample", ann["sample_token"])["timestamp"] - t0) * 1e-6
            xy, _ = scn.actors.pose(scn.road, t)
            assert np.allclose(ann["translation"][:2], xy[a], atol=1e-6)
            v_true = scn.actors.velocity(scn.road, t)[a]
            v = nusc.box_velocity(ann["token"])
            if inst_of and (ann["prev"] or ann["next"]):
                assert np.all(np.isfinite(v))
                assert np.linalg.norm(v[:2] - v_true) <= 0.1 * np.linalg.norm(v_true) + 0.2
                checked += np.linalg.norm(v_true) > 1.0
    assert checked > 20


def test_radar_files_read_back_exactly(nusc: NuScenes) -> None:
    RadarPointCloud.disable_filters()
    try:
        n_files = 0
        for sd in nusc.sample_data:
            if sd["sensor_modality"] != "radar" or n_files >= 60:
                continue
            path = Path(nusc.dataroot) / sd["filename"]
            rec = read_radar_pcd(path)
            assert rec.dtype == RADAR_DTYPE and rec.dtype.itemsize == 43
            assert radar_pcd_bytes(rec) == path.read_bytes()
            pc = RadarPointCloud.from_file(str(path))
            assert pc.points.shape == (18, len(rec))
            for i, name in enumerate(RADAR_DTYPE.names):
                np.testing.assert_array_equal(pc.points[i], rec[name].astype(np.float64), err_msg=name)
            n_files += 1
        assert n_files == 60
    finally:
        RadarPointCloud.default_filters()


def test_radar_pcd_codec_edge_cases(tmp_path: Path) -> None:
    rec = np.zeros(3, dtype=RADAR_DTYPE)
    rec["x"], rec["id"], rec["rcs"], rec["ambig_state"] = [1, 2, 3], [0, 1, 2], -4.5, 3
    data = radar_pcd_bytes(rec)
    assert data.count(b"\n", 0, data.index(b"DATA binary\n") + 12) == 11 and data.endswith(b"\n")
    (tmp_path / "a.pcd").write_bytes(data)
    np.testing.assert_array_equal(read_radar_pcd(tmp_path / "a.pcd"), rec)
    assert RadarPointCloud.from_file(str(tmp_path / "a.pcd")).nbr_points() == 3
    (tmp_path / "e.pcd").write_bytes(radar_pcd_bytes(rec[:0]))  # empty sweep -> one NaN record
    assert RadarPointCloud.from_file(str(tmp_path / "e.pcd")).nbr_points() == 0
    with pytest.raises(TypeError):
        radar_pcd_bytes(np.zeros(2, dtype=np.float32))


def test_radar_fields_plausible(nusc: NuScenes) -> None:
    recs = [read_radar_pcd(Path(nusc.dataroot) / sd["filename"])
            for sd in nusc.sample_data if sd["sensor_modality"] == "radar"]
    rec = np.concatenate(recs)
    rec = rec[np.isfinite(rec["x"])]  # an empty sweep is stored as one NaN record
    assert len(rec) > 100 and np.all(rec["z"] == 0.0)
    r = np.hypot(rec["x"], rec["y"])
    az = np.degrees(np.arctan2(rec["y"], rec["x"]))
    assert r.max() <= 251.0 and np.all(np.abs(az) <= 60.5)
    assert np.all(np.abs(az[r > 70.5]) <= 9.5)
    assert np.mean(rec["ambig_state"] == 3) > 0.8 and np.mean(rec["invalid_state"] == 0) > 0.8
    assert set(np.unique(rec["dyn_prop"])) <= set(range(8)) and -30 < rec["rcs"].min() < rec["rcs"].max() < 40
    # (vx, vy) and (vx_comp, vy_comp) are radial: parallel to the line of sight.
    u = np.column_stack([rec["x"], rec["y"]]) / r[:, None]
    for a, b in (("vx", "vy"), ("vx_comp", "vy_comp")):
        v = np.column_stack([rec[a], rec[b]]).astype(np.float64)
        assert np.allclose(v[:, 0] * u[:, 1] - v[:, 1] * u[:, 0], 0.0, atol=1e-3)
    for r_ in recs:
        assert np.isnan(r_["x"][0]) or np.array_equal(r_["id"], np.arange(len(r_)))
    # Stationary targets seen from a moving ego: the compensated Doppler is ~0, the raw one is not.
    stat = rec["dyn_prop"] == 1
    assert np.median(np.hypot(rec["vx_comp"][stat], rec["vy_comp"][stat])) < 0.3


def test_lidar_files_and_box_counts(nusc: NuScenes) -> None:
    sample = nusc.sample[len(nusc.sample) // 2]
    path, boxes, _ = nusc.get_sample_data(sample["data"][LIDAR_CHANNEL])
    raw = np.fromfile(path, dtype=np.float32)
    assert raw.size % 5 == 0 and raw.size // 5 > 10_000
    pts = raw.reshape(-1, 5)
    assert set(np.unique(pts[:, 4])) <= set(range(32)) and 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255
    pc = LidarPointCloud.from_file(path)
    for box in boxes:
        ann = nusc.get("sample_annotation", box.token)
        assert int(points_in_box(box, pc.points[:3]).sum()) == ann["num_lidar_pts"]
    assert sum(nusc.get("sample_annotation", b.token)["num_lidar_pts"] > 0 for b in boxes) > 5


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = generate_world(tmp_path / "a", scenes=1, seed=11, scene_seconds=1.0, show_progress=False)
    b = generate_world(tmp_path / "b", scenes=1, seed=11, scene_seconds=1.0, show_progress=False)
    c = generate_world(tmp_path / "c", scenes=1, seed=12, scene_seconds=1.0, show_progress=False)
    assert _tree_hash(a) == _tree_hash(b)
    assert _tree_hash(a) != _tree_hash(c)
    # Regenerating into a previous synthetic world is allowed and gives the same bytes.
    generate_world(tmp_path / "a", scenes=1, seed=11, scene_seconds=1.0, show_progress=False)
    assert _tree_hash(a) == _tree_hash(b)


def test_stats_thresholds_hold(world: Path, nusc: NuScenes) -> None:
    stats = compute_stats(world, VERSION, nusc=nusc)
    assert check_stats(stats) == []
    # The bound, at 0.075 m pillars (5 radars x 6 sweeps vs LiDAR x 10 sweeps).
    assert 0.05 <= stats["pillar_ratio"] <= 0.20
    assert stats["pillar_ratio"] < stats["bev_cell_ratio"]
    # ARS 408-like, unfiltered: ~60-125+ clusters per radar sweep, mostly static background.
    assert 60 < stats["radar_points_per_sweep"] < 200
    assert 0.10 <= stats["fp_share"] <= 0.95 and stats["share_objects_0_5_returns"] >= 0.5
    assert 15_000 < stats["lidar_points_per_sweep"] < 35_000


def test_check_stats_flags_violations() -> None:
    good = {"pillar_ratio": 0.08, "bev_cell_ratio": 0.4, "fp_share": 0.8, "share_objects_0_5_returns": 0.9}
    assert check_stats(good) == []
    for key, value in (("pillar_ratio", 0.03), ("pillar_ratio", 0.25), ("fp_share", 0.05),
                       ("fp_share", 0.99), ("share_objects_0_5_returns", 0.3)):
        assert len(check_stats({**good, key: value})) == 1, key
    assert check_stats({**good, "bev_cell_ratio": 0.01}) == []  # the 0.6 m cell ratio is information only


def test_radar_static_environment_model() -> None:
    """Facades give several returns, point scatterers are detected unless hidden, all stationary."""
    rng = np.random.default_rng(3)
    # A 30 m building facade 15 m ahead (broadside), nothing else.
    xy, yaw, wlh = np.array([[22.5, 0.0]]), np.array([np.pi / 2]), np.array([[15.0, 30.0, 10.0]])
    kind = np.array([KIND_BUILDING])
    n = [len(radar_mod.simulate(xy, yaw, wlh, kind, np.zeros((1, 2)), np.zeros(1, bool), np.array([5.0, 0.0]),
                                rng).records) for _ in range(20)]
    assert np.mean(n) > 20  # ~1 return per degree of angular extent, plus a few false alarms
    # 200 scatterers 5-40 m ahead; half of them behind the facade (hidden), half in front.
    sx = np.concatenate([rng.uniform(5.0, 14.0, 100), rng.uniform(31.0, 40.0, 100)])
    s_xy = np.column_stack([sx, rng.uniform(-4.0, 4.0, 200)])
    scat = (s_xy, np.zeros(200), np.full(200, 0.9), np.full(200, 0.05))
    sweep = radar_mod.simulate(xy, yaw, wlh, kind, np.zeros((1, 2)), np.zeros(1, bool), np.array([5.0, 0.0]),
                               rng, scatterers=scat)
    src = sweep.source
    rec = sweep.records[src == radar_mod.SRC_SCATTERER]
    assert 60 < len(rec) <= 100 and np.all(rec["x"] < 15.0)
    static = (src == 0) | (src == radar_mod.SRC_SCATTERER)  # the facade and the scatterers
    assert np.all(np.isin(sweep.records["dyn_prop"][static], (1, 3)))
    assert np.all(np.hypot(sweep.records["vx_comp"][static], sweep.records["vy_comp"][static]) < 0.6)


def test_scatterers_follow_the_roadside_and_seed() -> None:
    a, b = scenario_for(SEED, 0, SECONDS), scenario_for(SEED, 0, SECONDS)
    np.testing.assert_array_equal(a.scatterers.xy, b.scatterers.xy)
    assert len(a.scatterers) > 500 and np.all(np.isfinite(a.scatterers.xy))
    # Every scatterer lies beside the carriageway (kerb line or beyond), never on a lane.
    ri = RoadIndex(a.road)
    _, d = ri.sd(a.scatterers.xy)
    edge = np.where(d < 0, a.road.edge(-1), a.road.edge(1))
    assert np.all(np.abs(d) >= edge - 0.1)


def test_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in (["--scenes", "0"], ["--seed", "-1"], ["--scene-seconds", "0.2"], ["--scenes", "x"]):
        with pytest.raises(SystemExit) as exc:
            cli_main(["--out", str(tmp_path / "w"), *bad])
        assert exc.value.code == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert cli_main(["--out", str(foreign), "--scenes", "1", "--scene-seconds", "1", "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError):
        generate_world(tmp_path / "v", version="../x", scenes=1, scene_seconds=1.0, show_progress=False)
