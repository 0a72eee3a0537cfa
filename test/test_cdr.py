"""Raw-CDR readers: PointCloud2 and TFMessage bytes from the rmw's serialiser (rclpy) and from
rosbags parse to the values the message objects hold; a hand-written big-endian message;
truncated, corrupt and foreign bytes raise the package's errors (never IndexError / hangs)."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from radardistill_ros import ros_env  # noqa: F401  (makes the locally built interfaces importable)
from radardistill_ros.cdr import CdrError, CdrReader, cdr_string, header_cdr
from radardistill_ros.conventions import NUSCENES_RADAR_FIELDS, RADAR_FEATURES
from radardistill_ros.interfaces import jazzy_typestore
from radardistill_ros.pipeline import cloud_to_radar_points
from radardistill_ros.pointcloud import (
    PointCloudError,
    decode_pointcloud2,
    make_pointcloud2_msg,
    parse_pointcloud2_cdr,
    pointcloud2_cdr,
)
from radardistill_ros.tf_buffer import TransformBuffer, TransformError, parse_tf_message_cdr

STAMP = 1_533_151_603_547_590_123


def radar_points(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, np.dtype(list(NUSCENES_RADAR_FIELDS)))
    for name in RADAR_FEATURES:
        arr[name] = rng.normal(0.0, 20.0, n)
    return arr


def test_reader_hand_case_alignment_and_strings() -> None:
    # encapsulation, uint8 7, (pad 3) uint32 5, string "ab" (ends at 15 after the header),
    # (pad 1) float64 x3 8-aligned at 16
    raw = (b"\x00\x01\x00\x00" + b"\x07" + b"\x00" * 3 + struct.pack("<I", 5) + struct.pack("<I", 3)
           + b"ab\x00" + b"\x00" + struct.pack("<3d", 1.0, -2.5, 3.0))
    r = CdrReader(raw)
    assert (r.u8(), r.u32(), r.string(), r.f64x3()) == (7, 5, "ab", (1.0, -2.5, 3.0))
    assert r.pos == len(raw)
    with pytest.raises(CdrError, match="truncated: 4 bytes needed at offset 44"):
        r.u32()
    assert header_cdr(STAMP, "map") == struct.pack("<iI", STAMP // 10**9, STAMP % 10**9) + cdr_string("map")


@pytest.mark.parametrize("n", [0, 1, 57])
@pytest.mark.parametrize("frame", ["RADAR_FRONT", "/radar_back_left", "x"])
def test_pointcloud2_from_rclpy_and_rosbags_bytes(n: int, frame: str) -> None:
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import PointCloud2, PointField

    pts = radar_points(n, seed=n)
    msg = make_pointcloud2_msg(pts, STAMP, frame, PointCloud2, PointField)
    store = jazzy_typestore()
    bag_msg = make_pointcloud2_msg(pts, STAMP, frame, store.types["sensor_msgs/msg/PointCloud2"],
                                   store.types["sensor_msgs/msg/PointField"])
    sources = {"rclpy": bytes(serialize_message(msg)),
               "rosbags": bytes(store.serialize_cdr(bag_msg, "sensor_msgs/msg/PointCloud2")),
               "pointcloud2_cdr": pointcloud2_cdr(pts, STAMP, frame)}
    for name, raw in sources.items():
        for _ in range(2):  # the second parse reuses the cached field section
            parts = parse_pointcloud2_cdr(raw)
            assert (parts.stamp_ns, parts.frame_id, parts.width, parts.height) == (STAMP, frame, n, 1), name
            assert parts.fields == tuple((f.name, f.offset, f.datatype, f.count) for f in msg.fields), name
            assert (parts.point_step, parts.row_step, parts.is_bigendian) == (43, 43 * n, False), name
            assert parts.is_dense == msg.is_dense
            np.testing.assert_array_equal(decode_pointcloud2(parts), decode_pointcloud2(msg), err_msg=name)
            got, bad = cloud_to_radar_points(parts, 1000)
            np.testing.assert_array_equal(got, cloud_to_radar_points(msg, 1000)[0])
            assert bad == 0


def _be_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw) + 1) + raw + b"\x00"


def test_big_endian_pointcloud2_hand_built() -> None:
    """A big-endian encapsulated cloud (00 00): header, 2 x 1 points of one float32 field 'x'."""
    body = struct.pack(">iI", 12, 345) + _be_string("s")      # 8 + 6 bytes: ends at 14
    body += b"\x00" * 2 + struct.pack(">II", 1, 2)             # pad to 16, height, width
    body += struct.pack(">I", 1) + _be_string("x")             # one field: name ends at 34
    body += b"\x00" * 2 + struct.pack(">I", 0) + b"\x07" + b"\x00" * 3 + struct.pack(">I", 1)  # ... 48
    body += b"\x01" + b"\x00" * 3 + struct.pack(">II", 4, 8)   # is_bigendian, point_step, row_step
    body += struct.pack(">I", 8) + struct.pack(">2f", 1.5, -2.0) + b"\x01"
    parts = parse_pointcloud2_cdr(b"\x00\x00\x00\x00" + body)
    assert (parts.stamp_ns, parts.frame_id, parts.height, parts.width) == (12 * 10**9 + 345, "s", 1, 2)
    assert parts.fields == (("x", 0, 7, 1),) and parts.is_bigendian and parts.is_dense
    np.testing.assert_array_equal(decode_pointcloud2(parts)["x"], [1.5, -2.0])


def test_malformed_pointcloud2_bytes_raise_pointcloud_errors() -> None:
    raw = pointcloud2_cdr(radar_points(5), STAMP, "RADAR_FRONT")
    cases = {
        "shorter than the 4-byte": raw[:3],
        "unsupported encapsulation 00 07": b"\x00\x07\x00\x00" + raw[4:],
        "truncated": raw[:-10],
        "truncated: 1 bytes": raw[:-1],                         # is_dense missing
        "does not fit": raw[:36] + struct.pack("<I", 10**9) + raw[40:],  # absurd field count
        "not NUL-terminated": raw[:27] + b"!" + raw[28:],       # frame_id "RADAR_FRONT" ends at 27
        "nanosec": raw[:8] + struct.pack("<I", 2 * 10**9) + raw[12:],
    }
    for why, bad in cases.items():
        with pytest.raises(PointCloudError, match=why):
            parse_pointcloud2_cdr(bad)
    # a data length past the end (corrupt uint8[] count)
    with pytest.raises(PointCloudError, match="truncated"):
        parse_pointcloud2_cdr(raw[:-220] + struct.pack("<I", 10**6) + raw[-216:])


def test_tf_message_from_rclpy_and_rosbags_bytes_feeds_the_buffer() -> None:
    pytest.importorskip("rclpy")
    from geometry_msgs.msg import TransformStamped
    from rclpy.serialization import serialize_message
    from tf2_msgs.msg import TFMessage

    def ts(parent: str, child: str, ns: int, xyz, yaw: float) -> TransformStamped:
        t = TransformStamped()
        t.header.frame_id, t.child_frame_id = parent, child
        t.header.stamp.sec, t.header.stamp.nanosec = divmod(ns, 10**9)
        t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
        t.transform.rotation.z, t.transform.rotation.w = math.sin(yaw / 2), math.cos(yaw / 2)
        return t

    msg = TFMessage(transforms=[ts("map", "base_link", STAMP, (1.0, 2.0, 0.5), 0.3),
                                ts("base_link", "RADAR_FRONT_LEFT", STAMP + 7, (3.4, 0.6, 0.0), math.pi / 2)])
    recs = parse_tf_message_cdr(bytes(serialize_message(msg)))
    assert [(r.parent, r.child, r.stamp_ns) for r in recs] == [("map", "base_link", STAMP),
                                                               ("base_link", "RADAR_FRONT_LEFT", STAMP + 7)]
    assert recs[0].translation == (1.0, 2.0, 0.5)
    assert recs[1].rotation_xyzw == (0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4))
    store = jazzy_typestore()
    tfm = "tf2_msgs/msg/TFMessage"
    via_bag = store.serialize_cdr(store.deserialize_cdr(bytes(serialize_message(msg)), tfm), tfm)
    assert parse_tf_message_cdr(bytes(via_bag)) == recs
    assert parse_tf_message_cdr(bytes(serialize_message(TFMessage()))) == []

    from_records, from_msgs = TransformBuffer(), TransformBuffer()
    for rec, static in zip(recs, (False, True)):
        from_records.set_transform(*rec, static=static)
    for ts_msg, static in zip(msg.transforms, (False, True)):
        from_msgs.add_transform_stamped(ts_msg, static=static)
    np.testing.assert_array_equal(from_records.lookup("map", "RADAR_FRONT_LEFT", STAMP),
                                  from_msgs.lookup("map", "RADAR_FRONT_LEFT", STAMP))
    assert from_records.has_frame("/RADAR_FRONT_LEFT") and not from_records.has_frame("RADAR_BACK")

    raw = bytes(serialize_message(msg))
    for why, bad in {"truncated": raw[:-5], "does not fit": raw[:4] + struct.pack("<I", 10**7) + raw[8:],
                     "encapsulation": b"\x01\x00\x00\x00" + raw[4:]}.items():
        with pytest.raises(TransformError, match=why):
            parse_tf_message_cdr(bad)
