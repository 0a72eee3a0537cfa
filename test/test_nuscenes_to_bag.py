"""nuScenes-format dataset -> rosbag2 on a tiny synthetic world, read back with rosbags."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from radardistill_ros.conventions import CATEGORY_TO_CLASS, EGO_FRAME, LIDAR_CHANNEL, RADAR_CHANNELS
from radardistill_ros.geometry import compose, transform_from_pose
from radardistill_ros.pointcloud import decode_pointcloud2
from radardistill_ros.tf_buffer import TransformBuffer
from radardistill_ros.tools.bag_io import read_messages, topic_summary
from radardistill_ros.tools.nuscenes_to_bag import (
    GT_TOPIC,
    LIDAR_TOPIC,
    ODOM_TOPIC,
    TF_STATIC_TOPIC,
    TF_TOPIC,
    convert,
    main,
    radar_topic,
    select_scenes,
)

VERSION = "v1.0-synth"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A one-scene synthetic world (seed 0) and its devkit handle."""
    from nuscenes.nuscenes import NuScenes

    from training.synth import generate_world

    root = tmp_path_factory.mktemp("synth")
    generate_world(root, version=VERSION, scenes=1, seed=0, scene_seconds=2.0, show_progress=False)
    return root, NuScenes(version=VERSION, dataroot=str(root), verbose=False)


@pytest.fixture(scope="module")
def bags(world: tuple[Path, object], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The world as an mcap bag (API, with LiDAR) and a sqlite3 bag (command line, no LiDAR)."""
    root, nusc = world
    out = tmp_path_factory.mktemp("bags")
    res = convert(nusc, select_scenes(nusc), out / "mcap", storage="mcap", with_lidar=True,
                  show_progress=False)
    assert res.scenes == [nusc.scene[0]["name"]] and res.counts
    rc = main(["--dataroot", str(root), "--version", VERSION, "--scenes", nusc.scene[0]["name"],
               "--out", str(out / "sqlite3"), "--storage", "sqlite3", "--no-progress"])
    assert rc == 0
    assert main(["--dataroot", str(root), "--version", VERSION, "--out", str(out / "sqlite3")]) == 2  # exists
    return {"mcap": out / "mcap", "sqlite3": out / "sqlite3"}


def scene_sample_data(nusc) -> list[dict]:
    samples = {s["token"] for s in nusc.sample if s["scene_token"] == nusc.scene[0]["token"]}
    return [sd for sd in nusc.sample_data if sd["sample_token"] in samples]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_topics_and_counts_match_the_sample_data(world, bags, storage: str) -> None:
    _, nusc = world
    sds = scene_sample_data(nusc)
    per_channel = Counter(sd["channel"] for sd in sds)
    poses = {sd["ego_pose_token"] for sd in sds if sd["channel"] in (*RADAR_CHANNELS, LIDAR_CHANNEL)}
    want = {radar_topic(ch): per_channel[ch] for ch in RADAR_CHANNELS}
    want.update({TF_TOPIC: len(poses), ODOM_TOPIC: len(poses), TF_STATIC_TOPIC: 1,
                 GT_TOPIC: sum(s["scene_token"] == nusc.scene[0]["token"] for s in nusc.sample)})
    if storage == "mcap":
        want[LIDAR_TOPIC] = per_channel[LIDAR_CHANNEL]
    got = topic_summary(bags[storage])
    assert {t: s.count for t, s in got.items()} == want
    assert all(n > 0 for n in want.values())
    assert got[radar_topic("RADAR_FRONT")].msgtype == "sensor_msgs/msg/PointCloud2"
    assert got[GT_TOPIC].msgtype == "vision_msgs/msg/Detection3DArray"
    # bag time = header stamp = data time, non-decreasing
    last = 0
    for m in read_messages(bags[storage], [radar_topic("RADAR_FRONT"), TF_TOPIC, GT_TOPIC]):
        msg = m.msg
        stamp = msg.transforms[0].header.stamp if m.topic == TF_TOPIC else msg.header.stamp
        assert stamp.sec * 10**9 + stamp.nanosec == m.timestamp
        assert m.timestamp >= last
        last = m.timestamp


def test_radar_message_is_exactly_the_pcd_records(world, bags) -> None:
    from nuscenes.utils.data_classes import RadarPointCloud

    root, nusc = world
    by_key = {(sd["channel"], sd["timestamp"] * 1000): sd for sd in scene_sample_data(nusc)}
    checked = 0
    for m in read_messages(bags["mcap"], [radar_topic(ch) for ch in RADAR_CHANNELS]):
        sd = by_key[(m.msg.header.frame_id, m.timestamp)]
        cloud = m.msg
        assert cloud.point_step == 43 and cloud.height == 1 and not cloud.is_bigendian
        arr = decode_pointcloud2(cloud)
        raw = (root / sd["filename"]).read_bytes()
        body = raw[raw.index(b"DATA binary\n") + len(b"DATA binary\n"):]
        assert arr.tobytes() == body[: len(arr) * 43] and len(body) - len(arr) * 43 < 43
        # the devkit reads the same values with its filters switched off
        pc = RadarPointCloud.from_file(str(root / sd["filename"]), invalid_states=list(range(18)),
                                       dynprop_states=list(range(8)), ambig_states=list(range(5)))
        assert pc.points.shape[1] == len(arr)
        for i, name in enumerate(arr.dtype.names):
            np.testing.assert_array_equal(pc.points[i], arr[name].astype(np.float32), err_msg=name)
        checked += len(arr) > 0
        if checked >= 3:
            break
    assert checked == 3


def test_tf_static_has_every_sensor_and_tf_chain_matches_the_tables(world, bags) -> None:
    _, nusc = world
    static = [m for m in read_messages(bags["mcap"], [TF_STATIC_TOPIC])]
    assert len(static) == 1
    frames = {t.child_frame_id: t for t in static[0].msg.transforms}
    assert set(RADAR_CHANNELS) | {LIDAR_CHANNEL} == set(frames)
    assert {t.header.frame_id for t in frames.values()} == {EGO_FRAME}

    buf = TransformBuffer()
    buf.add_tf_message(static[0].msg, static=True)
    buf.add_tf_messages(m.msg for m in read_messages(bags["mcap"], [TF_TOPIC]))
    for sd in scene_sample_data(nusc)[::7]:
        if sd["channel"] not in RADAR_CHANNELS:
            continue
        ego = nusc.get("ego_pose", sd["ego_pose_token"])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        want = compose(transform_from_pose(ego["translation"], ego["rotation"]),
                       transform_from_pose(cs["translation"], cs["rotation"]))
        np.testing.assert_allclose(buf.lookup("map", sd["channel"], sd["timestamp"] * 1000), want, atol=1e-9)


def test_ground_truth_per_key_frame_matches_the_annotations(world, bags) -> None:
    from nuscenes.utils.data_classes import Box
    from pyquaternion import Quaternion

    _, nusc = world
    samples = {s["timestamp"] * 1000: s for s in nusc.sample}
    n_boxes = 0
    for m in read_messages(bags["sqlite3"], [GT_TOPIC]):
        sample = samples[m.timestamp]
        anns = [nusc.get("sample_annotation", t) for t in sample["anns"]]
        anns = [a for a in anns if a["category_name"] in CATEGORY_TO_CLASS]
        dets = m.msg.detections
        assert m.msg.header.frame_id == EGO_FRAME and len(dets) == len(anns)
        assert Counter(d.results[0].hypothesis.class_id for d in dets) == \
            Counter(CATEGORY_TO_CLASS[a["category_name"]] for a in anns)
        ego = nusc.get("ego_pose", nusc.get("sample_data", sample["data"][LIDAR_CHANNEL])["ego_pose_token"])
        for det, ann in zip(dets, anns):
            assert det.id == ann["instance_token"] and det.results[0].hypothesis.score == 1.0
            # the devkit's own global -> ego move of the box
            box = Box(ann["translation"], ann["size"], Quaternion(ann["rotation"]))
            box.translate(-np.asarray(ego["translation"]))
            box.rotate(Quaternion(ego["rotation"]).inverse)
            c, s = det.bbox.center.position, det.bbox.size
            np.testing.assert_allclose([c.x, c.y, c.z], box.center, atol=1e-6)
            np.testing.assert_allclose([s.x, s.y, s.z], [box.wlh[1], box.wlh[0], box.wlh[2]], atol=1e-6)
            q = det.bbox.center.orientation
            yaw = 2 * np.arctan2(q.z, q.w)
            assert abs((yaw - box.orientation.yaw_pitch_roll[0] + np.pi) % (2 * np.pi) - np.pi) < 1e-6
            n_boxes += 1
    assert n_boxes > 0


def test_lidar_topic_and_raw_bytes_replay_through_rclpy(bags) -> None:
    msgs = list(read_messages(bags["mcap"], [LIDAR_TOPIC]))
    first = msgs[0].msg
    assert first.header.frame_id == LIDAR_CHANNEL and first.point_step == 20
    arr = decode_pointcloud2(first, required=("x", "y", "z", "intensity", "ring"))
    assert len(arr) > 0 and arr.dtype["ring"] == np.float32
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    radar = next(read_messages(bags["mcap"], [radar_topic("RADAR_FRONT")]))
    back = deserialize_message(radar.rawdata, PointCloud2)
    np.testing.assert_array_equal(decode_pointcloud2(back), decode_pointcloud2(radar.msg))


def test_scene_selection_errors(world) -> None:
    _, nusc = world
    with pytest.raises(ValueError, match="scene-nope"):
        select_scenes(nusc, scenes=["scene-nope"])
    with pytest.raises(ValueError, match="not both"):
        select_scenes(nusc, split="x", scenes=["y"])
