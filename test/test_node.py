"""The detector node as its own process, started from the YAML config as ``ros2 launch`` would.

* invalid parameters end the process with status 2 and a message naming the parameter;
* a synthetic bag replayed into the node from this process: every trigger frame is answered or
  counted as dropped, and the online detections equal the offline path's (dataset loader +
  SweepAccumulator + RadarDetector) for the same key frames, box for box, and score the same mAP;
* malformed / odd input never stops the node: each bad cloud is counted and the next good one
  is answered.
"""

from __future__ import annotations

import array
import os
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _node_helpers import (
    ROOT,
    make_checkpoint,
    radar_cloud_array,
    tf_message,
    write_params,
)

from radardistill_ros.tools.replay_evaluate import (
    DetectionRecorder,
    box_difference,
    offline_trigger_detections,
    run_replay,
    start_node,
    stop_process,
)

pytestmark = pytest.mark.ros

TRIGGER = "/radar/front/points"


def _node_log(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else "<no log>"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight student (a few tens of boxes per synthetic frame)."""
    return make_checkpoint(tmp_path_factory.mktemp("node_ckpt") / "tiny.pt", seed=0, hm_bias=-6.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_ckpt: Path) -> dict:
    """A 1-scene synthetic world, its bag and the tiny checkpoint."""
    from radardistill_ros.tools.nuscenes_to_bag import main as to_bag
    from training.synth import generate_world

    tmp = tmp_path_factory.mktemp("node_world")
    root = generate_world(tmp / "world", version="v1.0-synth", scenes=1, seed=5, scene_seconds=3.0,
                          show_progress=False)
    assert to_bag(["--dataroot", str(root), "--version", "v1.0-synth", "--out", str(tmp / "bag"),
                   "--no-progress", "--no-odom"]) == 0
    return {"tmp": tmp, "root": root, "bag": tmp / "bag", "ckpt": tiny_ckpt}


def test_invalid_parameters_exit_nonzero_naming_the_parameter(tmp_path: Path, tiny_ckpt: Path) -> None:
    cases = {
        "score_threshold": {"score_threshold": 1.5},            # out of range
        "num_threads": {"num_threads": "two"},                  # wrong type
        "trigger_topic": {"trigger_topic": "/radar/nowhere"},   # not one of radar_topics
        "score_treshold": {"score_treshold": 0.2},              # unknown key (typo)
        "model_config": {"model_config": "lite"},               # checkpoint trained with another config
        "executor": {"executor": "multi_threaded"},             # not one of the executors
    }
    procs = {}
    for name, override in cases.items():
        params = write_params(tmp_path / f"{name}.yaml", **{"model_path": str(tiny_ckpt), "model_config": "",
                                                             **override})
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "radardistill_ros.node", "--ros-args", "--params-file", str(params)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    try:
        for name, proc in procs.items():
            out, _ = proc.communicate(timeout=90)
            text = out.decode(errors="replace")
            assert proc.returncode == 2, f"{name}: status {proc.returncode}\n{text[-2000:]}"
            assert f"invalid parameter {name}" in text, text[-2000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


#: A separate process publishing std_msgs/Float64 on the topic argv[1] for at most 120 s.
WRONG_TYPE_PUBLISHER = """
import sys, time
import rclpy
from std_msgs.msg import Float64
rclpy.init()
node = rclpy.create_node("wrong_type_publisher")
node.create_publisher(Float64, sys.argv[1], 10)
end = time.monotonic() + 120.0
while time.monotonic() < end:
    time.sleep(0.2)
"""


def test_replayed_bag_is_answered_and_equals_offline(tmp_path: Path, world: dict) -> None:
    """Node process <- replay (this process) -> detections (this process) == offline path."""
    from nuscenes.nuscenes import NuScenes

    from radardistill_ros.pipeline import RadarDetector
    from radardistill_ros.tools.replay_evaluate import score_detections

    # reliable input: the test counts every trigger, and best effort may lose one on a loaded machine
    params = write_params(tmp_path / "params.yaml", model_path=str(world["ckpt"]), model_config="",
                          input_reliability="reliable")
    log = tmp_path / "node.log"
    node = start_node(params, {}, log)
    extra: dict[str, list] = {"markers": [], "processing": [], "latency": [], "stages": []}

    def subscribe_outputs(ros_node) -> None:  # the node's other outputs, as RViz / a debugger would
        from diagnostic_msgs.msg import DiagnosticStatus
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from std_msgs.msg import Float64
        from visualization_msgs.msg import MarkerArray

        qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        debug = "/radardistill_detector/debug/"
        for key, msg_type, topic in (("markers", MarkerArray, "/detections/markers"),
                                     ("processing", Float64, debug + "processing_time_ms"),
                                     ("latency", Float64, debug + "pipeline_latency_ms"),
                                     ("stages", DiagnosticStatus, debug + "stage_times")):
            ros_node.create_subscription(msg_type, topic, extra[key].append, qos)

    try:
        publishes, recorder, counters = run_replay(world["bag"], "/detections", TRIGGER, 1.0, node,
                                                      node_timeout=90.0, settle=10.0, reliable_sensors=True,
                                                      setup=subscribe_outputs)
        assert node.poll() is None, _node_log(log)
    finally:
        status = stop_process(node)
    assert status == 0, f"node exit status {status}\n{_node_log(log)}"
    frames = recorder.parsed()
    assert all(f.vel_raw is not None for f in recorder.frames_by_stamp.values())  # a velocity cloud each
    check_debug_outputs(frames, extra)
    sent = [p for p in publishes if p.topic == TRIGGER]
    stamps = {p.stamp_ns for p in sent}
    assert len(sent) >= 30
    assert set(frames) <= stamps and recorder.duplicates == 0
    # every trigger frame is answered or counted as dropped (or rejected) by the node
    assert int(counters["triggers"]) == len(sent), counters
    assert int(counters["answered"]) == len(frames), counters
    assert int(counters["answered"]) + int(counters["dropped"]) + int(counters["rejected"]) == len(sent)
    assert int(counters["rejected"]) == 0 and int(counters["sweeps_tf_failed"]) == 0, counters
    assert len(frames) >= len(sent) // 4, counters  # the tiny model keeps up unless the machine is loaded

    # the same key frames through the offline path: identical boxes, identical mAP
    nusc = NuScenes(version="v1.0-synth", dataroot=str(world["root"]), verbose=False)
    detector = RadarDetector.from_checkpoint(world["ckpt"], backend="torch", score_threshold=0.1,
                                             num_threads=2)
    keys = []
    for s in sorted(nusc.sample, key=lambda s: s["timestamp"]):
        sd = nusc.get("sample_data", s["data"]["RADAR_FRONT"])
        if sd["timestamp"] * 1000 in frames:
            keys.append((s, sd))
    assert len(keys) >= 2, f"only {len(keys)} key frames answered"
    offline = offline_trigger_detections(nusc, detector, [sd["token"] for _, sd in keys],
                                         detector.cfg.data.radar_sweeps, 1.0)
    online = []
    for (_, sd), off in zip(keys, offline):
        _, boxes, scores, labels = frames[sd["timestamp"] * 1000]
        assert len(boxes) > 0
        assert box_difference((boxes, scores, labels), off) <= 1e-4
        online.append((boxes, scores, labels))
    tokens = [s["token"] for s, _ in keys]
    poses = [(np.asarray(p["translation"]), np.asarray(p["rotation"]))
             for p in (nusc.get("ego_pose", sd["ego_pose_token"]) for _, sd in keys)]
    m_on = score_detections(nusc, tokens, online, poses, tmp_path / "online")
    m_off = score_detections(nusc, tokens, offline, poses, tmp_path / "offline")
    assert abs(m_on["mean_ap"] - m_off["mean_ap"]) <= 0.005
    assert abs(m_on["nd_score"] - m_off["nd_score"]) <= 0.005


def check_debug_outputs(frames: dict, extra: dict) -> None:
    """Every answered frame has its RViz markers (one cube, label and arrow per detection at or
    above marker_score_threshold 0.3, matching the Detection3DArray) and its debug messages."""
    from visualization_msgs.msg import Marker

    def stamp_of(header) -> int:
        return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec

    markers = {stamp_of(m.markers[0].header): m.markers for m in extra["markers"]}
    assert set(frames) <= set(markers), f"markers for {len(markers)} of {len(frames)} frames"
    for stamp, (_, boxes, scores, _) in frames.items():
        ms = markers[stamp]
        assert ms[0].action == Marker.DELETEALL and all(m.header.frame_id == "base_link" for m in ms)
        keep = np.flatnonzero(scores >= 0.3)
        cubes = [m for m in ms if m.ns == "boxes"]
        arrows = [m for m in ms if m.ns == "velocities"]
        assert [m.id for m in cubes] == keep.tolist() and len(ms) == 1 + 3 * len(keep)
        for m, a, b in zip(cubes, arrows, boxes[keep]):
            centre = m.pose.position
            np.testing.assert_allclose([centre.x, centre.y, centre.z], b[0:3], atol=1e-5)
            end, start = a.points[1], a.points[0]
            np.testing.assert_allclose([end.x - start.x, end.y - start.y], b[7:9], atol=1e-5)
    answered = len(frames)
    assert len(extra["processing"]) == len(extra["latency"]) == len(extra["stages"]) == answered
    assert all(m.data > 0 for m in extra["processing"] + extra["latency"])
    stages = {int(st.message): {kv.key: float(kv.value) for kv in st.values} for st in extra["stages"]}
    assert set(stages) == set(frames)
    for values in stages.values():
        for key in ("input_decode", "wait", "pose_wait", "accumulate", "front_end", "dense", "decode",
                    "output", "receive_to_publish", "points", "sweeps", "detections"):
            assert values[key] >= 0, (key, values)


def _publishers(node) -> dict:
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    from tf2_msgs.msg import TFMessage

    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    pubs = {"static": node.create_publisher(TFMessage, "/tf_static", latched),
            "tf": node.create_publisher(TFMessage, "/tf", QoSProfile(depth=100)),
            "cloud": node.create_publisher(PointCloud2, TRIGGER, QoSProfile(depth=100))}
    return pubs


def test_malformed_input_is_counted_and_the_next_good_frame_answered(tmp_path: Path, tiny_ckpt: Path) -> None:
    from sensor_msgs.msg import PointCloud2, PointField

    from radardistill_ros.pointcloud import make_pointcloud2_msg
    from radardistill_ros.ros_client import spun_node

    params = write_params(tmp_path / "params.yaml", model_path=str(tiny_ckpt), model_config="",
                          radar_topics=[TRIGGER], trigger_topic=TRIGGER, num_sweeps=1, tf_timeout=2.0,
                          input_reliability="reliable", input_depth=100, diagnostics_period=0.2,
                          warn_throttle_period=0.0, max_points_per_cloud=5000)
    log = tmp_path / "node.log"
    node_proc = start_node(params, {}, log)
    client = spun_node("malformed_input_test")
    node = client.__enter__()
    pubs = _publishers(node)
    # a best-effort publisher cannot feed the node's reliable input, nor can a publisher of another
    # type (a separate process: one process cannot have two types on a topic): the node finds both
    # in the ROS graph, warns and counts them in its diagnostics
    from rclpy.qos import qos_profile_sensor_data
    pubs["best_effort"] = node.create_publisher(PointCloud2, TRIGGER, qos_profile_sensor_data)
    wrong_type = subprocess.Popen([sys.executable, "-c", WRONG_TYPE_PUBLISHER, TRIGGER], env=dict(os.environ),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    recorder = DetectionRecorder(node, "/detections")
    base_ns = 1_700_000_000 * 1_000_000_000
    stamp = [base_ns]
    good = radar_cloud_array(60, seed=1)

    def cloud(arr=good, frame="RADAR_FRONT", **patch):
        msg = make_pointcloud2_msg(arr, stamp[0], frame, PointCloud2, PointField)
        for k, v in patch.items():
            setattr(msg, k, v)
        return msg

    def send(msg) -> int:
        pubs["tf"].publish(tf_message(stamp[0], "map", "base_link"))
        pubs["cloud"].publish(msg)
        return stamp[0]

    def step(dt_ms: float = 80.0) -> None:
        stamp[0] += round(dt_ms * 1e6)

    def wait_answer(s: int, timeout: float = 30.0) -> tuple:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if s in recorder.frames_by_stamp:
                return recorder.parsed()[s]
            assert node_proc.poll() is None, _node_log(log)
            time.sleep(0.02)
        raise AssertionError(f"no answer for stamp {s}\n{_node_log(log)}")

    def counters_after(t: float) -> dict:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if any(ts > t for ts, _ in recorder.diagnostics):
                return recorder.latest_counters()
            time.sleep(0.05)
        raise AssertionError("no diagnostics from the node")

    try:
        pubs["static"].publish(tf_message(base_ns, "base_link", "RADAR_FRONT", (3.4, 0.0, 0.5)))
        deadline = time.monotonic() + 90.0
        while pubs["cloud"].get_subscription_count() == 0 or recorder.publisher_count() == 0:
            assert node_proc.poll() is None, _node_log(log)
            assert time.monotonic() < deadline, "node not up"
            time.sleep(0.1)
        time.sleep(0.5)
        first = wait_answer(send(cloud()))
        step()

        big_endian = array.array("B", good.astype(good.dtype.newbyteorder(">")).tobytes())
        nan = good.copy()
        nan["x"][:5] = np.nan
        nan["rcs"][5:8] = np.inf
        no_vx = good[[n for n in good.dtype.names if n != "vx_comp"]]
        # over the limit without a multi-MB message: a 6.4 MB cloud once delayed the next /tf
        # past tf_timeout on a loaded CI machine (reliable DDS fragment repair), failing the test
        huge = np.zeros(6_000, good.dtype)
        from rclpy.serialization import serialize_message
        good_raw = bytes(serialize_message(cloud()))
        malformed = {
            # the node takes its inputs raw: bytes no serialiser would write are rejected too
            "truncated serialised message": good_raw[:200],
            "foreign encapsulation": b"\x00\x07\x00\x00" + good_raw[4:],
            "missing field": cloud(no_vx),
            "unknown datatype": cloud(fields=[PointField(name=f.name, offset=f.offset,
                                                         datatype=(11 if f.name == "rcs" else f.datatype),
                                                         count=f.count) for f in cloud().fields]),
            "point_step too small": cloud(point_step=20),
            "row_step too small": cloud(row_step=43 * 10),
            "truncated data": cloud(data=array.array("B", bytes(cloud().data)[: 43 * 30])),
            "claims millions of points": cloud(width=5_000_000),
            "6k points (over max_points_per_cloud 5000)": cloud(huge),
        }
        for bad in malformed.values():
            send(bad)
            step()
            wait_answer(send(cloud()))
            step()
        pubs["tf"].publish(b"\x00\x01\x00\x00" + struct.pack("<I", 10**6))  # a corrupt /tf message
        step()
        wait_answer(send(cloud()))
        step()
        t_mark = time.time()
        c = counters_after(t_mark)
        assert int(c["rejected.malformed"]) == len(malformed), c
        assert int(c["tf_rejected"]) == 1, c

        # valid but unusual clouds are answered
        # big-endian encoding of the same points: decoded by the flag, same detections
        be = wait_answer(send(cloud(is_bigendian=True, data=big_endian)))
        step()
        np.testing.assert_allclose(be[1], first[1], atol=1e-5)
        wait_answer(send(cloud(nan)))           # NaN / inf rows dropped, the rest used
        step()
        wait_answer(send(cloud(good[:0])))      # zero points: an empty radar is data too
        step()

        # unknown frame and a stamp going backwards: rejected, the next good frame answered
        send(cloud(frame="RADAR_NOWHERE"))
        step()
        wait_answer(send(cloud()))
        step()
        stamp[0] -= round(200e6)
        send(cloud())
        stamp[0] += round(400e6)
        wait_answer(send(cloud()))
        step()

        # a bag loop: time jumps back by more than time_jump_threshold -> history reset, answered
        stamp[0] -= round(30e9)
        wait_answer(send(cloud()))
        step()

        # a burst: the newest trigger is always answered, the others answered or dropped
        before = counters_after(time.time())
        burst = []
        for _ in range(25):
            burst.append(send(cloud()))
            step(1.0)
        wait_answer(burst[-1])
        time.sleep(0.5)
        c = counters_after(time.time())
        assert node_proc.poll() is None, _node_log(log)
    finally:
        client.__exit__(None, None, None)
        status = stop_process(node_proc)
        wrong_type.kill()
        wrong_type.wait()
    assert status == 0, _node_log(log)
    text = log.read_text(errors="replace")
    assert f"topic '{TRIGGER}', offering incompatible QoS" in text, _node_log(log)
    assert "Best effort publisher and reliable subscription" in text, _node_log(log)
    assert "publishes std_msgs/msg/Float64, this node subscribes sensor_msgs/msg/PointCloud2" in text, \
        _node_log(log)
    assert int(c["incompatible_publishers"]) == 2, c
    assert "freed heap memory kept" in log.read_text(errors="replace"), _node_log(log)  # main() tuned malloc
    frozen = re.search(r"gc: ([0-9]+) start-up objects frozen", log.read_text(errors="replace"))
    assert frozen and int(frozen.group(1)) > 10_000, _node_log(log)  # main() froze the start-up objects
    assert int(c["rejected.unknown_frame"]) == 1, c
    assert int(c["rejected.stamp_not_increasing"]) == 1, c
    assert int(c["rejected.malformed"]) == len(malformed), c
    assert int(c["nonfinite_points"]) == 8 and int(c["empty_clouds"]) == 1, c
    assert int(c["time_jumps"]) == 1, c
    triggers = int(c["triggers"]) - int(before["triggers"])
    answered = int(c["answered"]) - int(before["answered"])
    dropped = int(c["dropped"]) - int(before["dropped"])
    assert answered + dropped == triggers and answered >= 1 and triggers >= len(burst) - 5, (before, c)
    before_trigger = sum(int(c[f"rejected.{k}"])
                         for k in ("malformed", "unknown_frame", "stamp_not_increasing"))
    assert int(c["triggers"]) == int(c["answered"]) + int(c["dropped"]) + int(c["rejected"]) - before_trigger
    from diagnostic_msgs.msg import DiagnosticStatus

    # /diagnostics went WARN while the incompatible publishers existed
    levels = {(st.level, st.message.split(" ", 1)[1]) for _, st in recorder.diagnostics}
    assert (DiagnosticStatus.WARN, "publisher(s) on the inputs with incompatible QoS or type (see the log)") \
        in levels, levels


def test_single_threaded_executor_answers_and_shuts_down(tmp_path: Path, tiny_ckpt: Path) -> None:
    """``executor: single_threaded`` (rclpy's Python executor, for rclpy without EventsExecutor)
    serves the same raw inputs; SIGINT ends it with status 0."""
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import PointCloud2, PointField

    from radardistill_ros.pointcloud import make_pointcloud2_msg
    from radardistill_ros.ros_client import spun_node

    params = write_params(tmp_path / "params.yaml", model_path=str(tiny_ckpt), model_config="",
                          radar_topics=[TRIGGER], trigger_topic=TRIGGER, num_sweeps=1, tf_timeout=2.0,
                          input_reliability="reliable", executor="single_threaded", latency_budget_ms=0.001,
                          diagnostics_period=0.2)
    log = tmp_path / "node.log"
    node_proc = start_node(params, {}, log)
    stamps = [1_700_000_000 * 1_000_000_000 + k * 80_000_000 for k in range(3)]
    try:
        with spun_node("single_threaded_executor_test") as node:
            pubs = _publishers(node)
            recorder = DetectionRecorder(node, "/detections")
            pubs["static"].publish(tf_message(stamps[0], "base_link", "RADAR_FRONT", (3.4, 0.0, 0.5)))
            deadline = time.monotonic() + 90.0
            while pubs["cloud"].get_subscription_count() == 0 or recorder.publisher_count() == 0:
                assert node_proc.poll() is None and time.monotonic() < deadline, _node_log(log)
                time.sleep(0.1)
            time.sleep(0.5)
            for s in stamps:
                pubs["tf"].publish(tf_message(s, "map", "base_link"))
                cloud = radar_cloud_array(60, seed=s % 7)
                pubs["cloud"].publish(make_pointcloud2_msg(cloud, s, "RADAR_FRONT", PointCloud2, PointField))
                deadline = time.monotonic() + 30.0
                while s not in recorder.frames_by_stamp:
                    assert node_proc.poll() is None and time.monotonic() < deadline, _node_log(log)
                    time.sleep(0.02)
            # every answer is over a 1 us budget: /diagnostics goes WARN naming it
            deadline = time.monotonic() + 10.0
            while not any(st.level == DiagnosticStatus.WARN and "ms over the 0.0 ms budget" in st.message
                          for _, st in recorder.diagnostics):
                assert node_proc.poll() is None and time.monotonic() < deadline, recorder.diagnostics
                time.sleep(0.05)
    finally:
        status = stop_process(node_proc)
    assert status == 0, _node_log(log)
    assert "executor single_threaded" in log.read_text(errors="replace"), _node_log(log)


# ---------------------------------------------------------------------------------- ROS-free parts
def _valid_values(ckpt: Path) -> dict:
    import yaml

    values = yaml.safe_load((ROOT / "config" / "detector.yaml").read_text())["/**"]["ros__parameters"]
    values.update(model_path=str(ckpt), model_config="")
    return values


def test_every_parameter_is_in_the_yaml_and_validated(tmp_path: Path, tiny_ckpt: Path) -> None:
    from radardistill_ros.node import PARAMETERS, ParameterError, validate_params

    ckpt = tiny_ckpt
    values = _valid_values(ckpt)
    assert set(values) == {name for name, _, _ in PARAMETERS}
    p = validate_params(values)
    assert p.radar_topics[0] == TRIGGER and p.checkpoint_path == str(ckpt)
    bad = {"backend": "tflite", "max_sweep_age": 0.0, "input_reliability": "sometimes",
           "radar_topics": [TRIGGER, TRIGGER], "model_path": str(tmp_path / "missing.pt"),
           "base_frame": "map", "num_sweeps": -1}
    for name, value in bad.items():
        with pytest.raises(ParameterError, match=rf"^{name}"):
            validate_params({**values, name: value})
    missing = dict(values)
    del missing["latency_budget_ms"]
    with pytest.raises(ParameterError, match=r"^latency_budget_ms: missing"):
        validate_params(missing)
    with pytest.raises(ParameterError, match=r"^model_path"):  # onnxruntime needs an ONNX file
        validate_params({**values, "backend": "onnxruntime"})


def test_boxes_move_into_another_output_frame() -> None:
    from radardistill_ros.geometry import make_transform, rotz
    from radardistill_ros.node import _transform_boxes

    boxes = np.array([[1.0, 0.0, 0.5, 4.0, 2.0, 1.5, 0.0, 1.0, 0.0]], np.float32)
    out, quats = _transform_boxes(boxes, make_transform(rotz(np.pi / 2), [10.0, 0.0, 0.0]))
    np.testing.assert_allclose(out[0], [10.0, 1.0, 0.5, 4.0, 2.0, 1.5, np.pi / 2, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(quats[0], [0.0, 0.0, np.sin(np.pi / 4), np.cos(np.pi / 4)], atol=1e-6)


def test_velocity_cloud_hand_computed_case() -> None:
    """Two boxes -> the velocities PointCloud2: x, y, z, vx, vy, vz = 0, score, label per box in
    box order; read back by rclpy and by the package's own decoder; is_dense follows NaN."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    from radardistill_ros.node import VELOCITY_DTYPE, velocity_cloud_cdr
    from radardistill_ros.pointcloud import decode_pointcloud2

    boxes = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.3, 3.0, -1.0],
                      [-5.0, 7.5, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.25]], np.float32)
    raw = velocity_cloud_cdr(1_500_000_000, "base_link", boxes, np.array([0.9, 0.2], np.float32),
                             np.array([0, 8]))
    msg = deserialize_message(raw, PointCloud2)
    stamp = msg.header.stamp
    assert (stamp.sec, stamp.nanosec, msg.header.frame_id) == (1, 500_000_000, "base_link")
    assert (msg.height, msg.width, msg.point_step, msg.row_step, msg.is_dense) == (1, 2, 32, 64, True)
    assert [f.name for f in msg.fields] == list(VELOCITY_DTYPE.names)
    pts = decode_pointcloud2(msg)
    assert pts.tolist() == [(1.0, 2.0, 0.5, 3.0, -1.0, 0.0, np.float32(0.9), 0),
                            (-5.0, 7.5, 1.0, 0.0, 0.25, 0.0, np.float32(0.2), 8)]
    boxes[1, 7] = np.nan
    assert deserialize_message(velocity_cloud_cdr(0, "map", boxes, np.ones(2, np.float32), np.zeros(2)),
                               PointCloud2).is_dense is False
    empty = deserialize_message(velocity_cloud_cdr(0, "map", boxes[:0], np.ones(0), np.zeros(0)), PointCloud2)
    assert (empty.width, len(empty.data), len(empty.fields)) == (0, 0, 8)


def test_diagnostics_level_causes_in_order() -> None:
    from diagnostic_msgs.msg import DiagnosticStatus

    from radardistill_ros.node import diagnostic_level

    ok, warn = DiagnosticStatus.OK, DiagnosticStatus.WARN
    assert diagnostic_level(59.9, 60.0, 0, 0) == (ok, "ok")
    assert diagnostic_level(60.0, 60.0, 0, 0) == (ok, "ok")  # at the budget is within it
    assert diagnostic_level(61.25, 60.0, 3, 2) == (warn, "receive-to-publish 61.2 ms over the 60.0 ms budget")
    assert diagnostic_level(10.0, 60.0, 3, 2) == (warn, "3 trigger(s) dropped (worker busy)")
    level, message = diagnostic_level(10.0, 60.0, 0, 2)
    assert level == warn and message.startswith("2 publisher(s) on the inputs with incompatible QoS")


def test_assembler_uses_sweeps_up_to_the_trigger_in_source_order() -> None:
    from radardistill_ros.pipeline import RawSweep, SweepAssembler
    from radardistill_ros.tf_buffer import TransformBuffer

    tf = TransformBuffer(10.0)
    tf.set_transform("base_link", "A", 0, (1.0, 0.0, 0.0), (0, 0, 0, 1), static=True)
    tf.set_transform("base_link", "B", 0, (0.0, 2.0, 0.0), (0, 0, 0, 1), static=True)
    for i in range(10):  # ego drives along +x at 10 m/s
        tf.set_transform("map", "base_link", i * 100_000_000, (i * 1.0, 0.0, 0.0), (0, 0, 0, 1))
    asm = SweepAssembler(tf, "map", "base_link", num_sweeps=2, max_age=0.25, source_order=("/a", "/b"))
    pt = np.array([[0.0, 0.0, 0.0, 5.0, 0.0, 0.0]], np.float32)
    for i in (1, 2, 3, 4):
        asm.add(RawSweep("/b", "B", i * 100_000_000, pt))
        asm.add(RawSweep("/a", "A", i * 100_000_000 + 10_000_000, pt))
    asm.add(RawSweep("/c", "nowhere", 250_000_000, pt))
    frame = asm.assemble(310_000_000)          # /a at 0.31 s triggers
    # /a: 0.21, 0.31 (2 newest); /b: 0.2, 0.3 (0.4 is newer than the trigger, waits); /c unknown
    assert frame.num_sweeps == 4 and frame.failures == {"unknown_frame": 1}
    # ego at 0.31 s is at x = 3.1; a static point seen from A at time t sits at x_ego(t) + 1 - 3.1
    np.testing.assert_allclose(frame.points[:, 0], [2.1 + 1 - 3.1, 3.1 + 1 - 3.1, 2.0 - 3.1, 3.0 - 3.1],
                               atol=1e-5)
    np.testing.assert_allclose(frame.points[:, 1], [0.0, 0.0, 2.0, 2.0], atol=1e-6)
    frame = asm.assemble(410_000_000)          # the 0.4 s sweep of /b is used now
    assert frame.num_sweeps == 4


def test_assembler_resolves_sweeps_early_when_tf_has_them_with_the_same_result() -> None:
    """A sweep whose poses are buffered is resolved in ``add`` (before the trigger); one whose ego
    pose arrives later waits for ``assemble``; the frame is the same either way."""
    from radardistill_ros.pipeline import RawSweep, SweepAssembler
    from radardistill_ros.tf_buffer import TransformBuffer

    def world(ego_first: bool) -> tuple:
        tf = TransformBuffer(10.0)
        tf.set_transform("base_link", "A", 0, (1.0, 0.5, 0.0), (0, 0, 0.2, 0.98), static=True)
        asm = SweepAssembler(tf, "map", "base_link", num_sweeps=3, max_age=1.0, source_order=("/a",))
        rng = np.random.default_rng(3)
        for i in range(4):
            stamp = i * 100_000_000
            ego = ("map", "base_link", stamp, (i * 1.5, 0.1 * i, 0.0), (0, 0, 0.05 * i, 1.0))
            pts = rng.normal(0, 10, (7, 6)).astype(np.float32)
            if ego_first:
                tf.set_transform(*ego)
            asm.add(RawSweep("/a", "A", stamp, pts))
            if not ego_first:
                tf.set_transform(*ego)
        pending = len(asm._pending)
        return asm.assemble(300_000_000), pending

    early, pending_early = world(ego_first=True)
    late, pending_late = world(ego_first=False)
    assert pending_early == 0 and pending_late == 4
    assert early.num_sweeps == late.num_sweeps == 3 and not early.failures and not late.failures
    np.testing.assert_array_equal(early.points, late.points)
