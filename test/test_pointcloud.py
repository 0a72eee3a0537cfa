"""PointCloud2 codec: nuScenes radar layout, widened layouts, byte order, padding, errors, rclpy/rosbags."""

from __future__ import annotations

import numpy as np
import pytest

from radardistill_ros.conventions import NUSCENES_RADAR_FIELDS, RADAR_FEATURES
from radardistill_ros.pointcloud import (
    Field,
    PointCloudError,
    cast_fields,
    decode_cloud,
    decode_pointcloud2,
    drop_nonfinite,
    encode_cloud,
    fields_from_dtype,
    make_pointcloud2_msg,
    pointcloud2_cdr,
    to_feature_array,
)

RADAR_DTYPE = np.dtype(list(NUSCENES_RADAR_FIELDS))


def radar_points(n: int, seed: int = 0) -> np.ndarray:
    """Random radar records with every field set (ints across their range, floats non-trivial)."""
    rng = np.random.default_rng(seed)
    arr = np.empty(n, RADAR_DTYPE)
    for name in RADAR_DTYPE.names:
        kind = RADAR_DTYPE[name]
        if kind.kind == "f":
            arr[name] = rng.normal(0.0, 30.0, n).astype(np.float32)
        else:
            info = np.iinfo(kind)
            arr[name] = rng.integers(info.min, info.max, n, endpoint=True)
    return arr


def widened_dtype() -> np.dtype:
    """A 72-byte layout: fields reordered, ints widened to int32 / float32, gaps between fields."""
    spec = [("id", "<i4", 0), ("x", "<f4", 4), ("y", "<f4", 8), ("z", "<f4", 12), ("rcs", "<f4", 20),
            ("vx", "<f4", 24), ("vy", "<f4", 28), ("vx_comp", "<f4", 32), ("vy_comp", "<f4", 36),
            ("dyn_prop", "<i4", 40), ("is_quality_valid", "<f4", 44), ("ambig_state", "<i4", 48),
            ("x_rms", "<f4", 52), ("y_rms", "<i2", 56), ("invalid_state", "<i2", 58), ("pdh0", "i1", 61),
            ("vx_rms", "<i2", 62), ("vy_rms", "<f4", 64)]
    return np.dtype({"names": [s[0] for s in spec], "formats": [s[1] for s in spec],
                     "offsets": [s[2] for s in spec], "itemsize": 72})


def assert_records_equal(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape
    for name in RADAR_DTYPE.names:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_packed_nuscenes_radar_round_trip_is_the_pcd_record_bytes() -> None:
    pts = radar_points(57)
    fields, data, step = encode_cloud(pts)
    assert step == 43 and len(data) == 57 * 43
    assert data == pts.tobytes()  # exactly the packed little-endian .pcd records
    assert [(f.name, f.offset) for f in fields][:6] == [("x", 0), ("y", 4), ("z", 8), ("dyn_prop", 12),
                                                        ("id", 13), ("rcs", 15)]
    assert [f.datatype for f in fields] == [7, 7, 7, 1, 3] + [7] * 5 + [1] * 8
    out = decode_cloud(fields, data, step, step * 57, 57, 1, False, required=RADAR_FEATURES)
    assert out.dtype == RADAR_DTYPE
    assert_records_equal(out, pts)
    for other in (bytearray(data), np.frombuffer(data, np.uint8), list(data)):  # any buffer type
        assert_records_equal(decode_cloud(fields, other, step, step * 57, 57), pts)


def test_widened_layout_point_step_72_decodes_the_same_values() -> None:
    pts = radar_points(40, seed=1)
    wide = np.zeros(40, widened_dtype())
    for name in RADAR_DTYPE.names:
        wide[name] = pts[name]
    fields, data, step = encode_cloud(wide)
    assert step == 72
    out = decode_cloud(fields, data, step, step * 40, 40)
    assert out.dtype["dyn_prop"] == np.int32 and out.dtype["x_rms"] == np.float32
    assert_records_equal(out, pts)  # values equal across dtypes
    assert_records_equal(cast_fields(out, RADAR_DTYPE), pts)
    assert cast_fields(out, RADAR_DTYPE).dtype == RADAR_DTYPE


def test_big_endian_flag() -> None:
    pts = radar_points(9, seed=2)
    fields, _, step = encode_cloud(pts)
    data_be = pts.astype(RADAR_DTYPE.newbyteorder(">")).tobytes()
    out = decode_cloud(fields, data_be, step, step * 9, 9, 1, True)
    assert_records_equal(out, pts)
    assert out.dtype == RADAR_DTYPE  # returned in native order
    wrong = decode_cloud(fields, data_be, step, step * 9, 9, 1, False)
    assert not np.array_equal(wrong["x"], pts["x"])


@pytest.mark.parametrize(("width", "height", "pad"), [(5, 1, 7), (4, 3, 13), (6, 2, 0), (1, 4, 1)])
def test_row_step_padding_and_organised_clouds(width: int, height: int, pad: int) -> None:
    pts = radar_points(width * height, seed=3)
    fields, _, step = encode_cloud(pts)
    row_step = width * step + pad
    rows = [pts[r * width:(r + 1) * width].tobytes() + b"\xab" * pad for r in range(height)]
    data = b"".join(rows)
    out = decode_cloud(fields, data, step, row_step, width, height)
    assert_records_equal(out, pts)  # row-major flattening, padding skipped
    # the padding of the last row may be absent
    out2 = decode_cloud(fields, data[:-pad] if pad else data, step, row_step, width, height)
    assert_records_equal(out2, pts)


def test_fields_with_count_greater_than_one() -> None:
    dt = np.dtype([("xyz", "<f4", (3,)), ("ring", "<u2"), ("rgb", "u1", (3,))])
    arr = np.zeros(4, dt)
    arr["xyz"] = np.arange(12, dtype=np.float32).reshape(4, 3)
    arr["ring"] = [1, 2, 3, 65535]
    arr["rgb"] = [[1, 2, 3]] * 4
    fields, data, step = encode_cloud(arr)
    assert [(f.name, f.count) for f in fields] == [("xyz", 3), ("ring", 1), ("rgb", 3)]
    out = decode_cloud(fields, data, step, step * 2, 2, 2)
    np.testing.assert_array_equal(out["xyz"], arr["xyz"])
    np.testing.assert_array_equal(out["ring"], arr["ring"])
    np.testing.assert_array_equal(out["rgb"], arr["rgb"])


def test_random_layouts_property() -> None:
    """Random field order, widening, gaps, byte order, padding: values survive by name."""
    rng = np.random.default_rng(7)
    wide_int = ["<i4", "<f4", "<f8", "<i2"]
    for trial in range(25):
        pts = radar_points(int(rng.integers(0, 30)), seed=100 + trial)
        names = list(RADAR_DTYPE.names)
        rng.shuffle(names)
        fmts, offs, off = [], [], 0
        for name in names:
            f = RADAR_DTYPE[name].str if RADAR_DTYPE[name].kind == "f" else str(rng.choice(wide_int))
            if RADAR_DTYPE[name] == np.int8 and rng.random() < 0.3:
                f = "i1"
            off += int(rng.integers(0, 3))
            fmts.append(f)
            offs.append(off)
            off += np.dtype(f).itemsize
        big = bool(rng.random() < 0.5)
        itemsize = off + int(rng.integers(0, 5))
        lay = np.dtype({"names": names, "formats": fmts, "offsets": offs, "itemsize": itemsize})
        arr = np.zeros(len(pts), lay)
        for name in names:
            arr[name] = pts[name]
        fields, step = fields_from_dtype(lay)
        data = arr.astype(lay.newbyteorder(">") if big else lay).tobytes()
        out = decode_cloud(fields, data, step, step * len(pts), len(pts), 1, big, required=RADAR_FEATURES)
        assert_records_equal(cast_fields(out, RADAR_DTYPE), pts)


def test_missing_required_fields_are_named() -> None:
    dt = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("vx_comp", "<f4")])
    fields, data, step = encode_cloud(np.zeros(3, dt))
    with pytest.raises(PointCloudError, match=r"\['rcs', 'vy_comp'\]"):
        decode_cloud(fields, data, step, step * 3, 3, required=RADAR_FEATURES)
    with pytest.raises(PointCloudError, match="rcs"):
        cast_fields(decode_cloud(fields, data, step, step * 3, 3), RADAR_DTYPE)
    with pytest.raises(PointCloudError, match="rcs"):
        to_feature_array(np.zeros(3, dt), RADAR_FEATURES)


def test_malformed_clouds_raise_clear_errors() -> None:
    pts = radar_points(10)
    fields, data, step = encode_cloud(pts)
    with pytest.raises(PointCloudError, match="truncated: 429 bytes"):
        decode_cloud(fields, data[:-1], step, step * 10, 10)
    with pytest.raises(PointCloudError, match="row_step 42 is smaller"):
        decode_cloud(fields, data, step, 42, 1)
    with pytest.raises(PointCloudError, match="past point_step 40"):
        decode_cloud(fields, data, 40, 400, 10)
    with pytest.raises(PointCloudError, match="unknown datatype 9"):
        decode_cloud([Field("x", 0, 9)], data, step, step * 10, 10)
    with pytest.raises(PointCloudError, match="'x' and 'y' overlap"):
        decode_cloud([Field("x", 0, 7), Field("y", 2, 7)], data, step, step * 10, 10)
    with pytest.raises(PointCloudError, match="more than once"):
        decode_cloud([Field("x", 0, 7), Field("x", 4, 7)], data, step, step * 10, 10)
    with pytest.raises(PointCloudError, match="count 0"):
        decode_cloud([Field("x", 0, 7, 0)], data, step, step * 10, 10)
    # absurd claimed sizes fail fast, without allocating
    with pytest.raises(PointCloudError, match="above max_points"):
        decode_cloud(fields, data, step, step * 2**40, 2**40, 2**20)
    with pytest.raises(PointCloudError, match="truncated"):
        decode_cloud(fields, data, step, step * 10**6, 10**6)
    with pytest.raises(PointCloudError, match="above max_points 5"):
        decode_cloud(fields, data, step, step * 10, 10, max_points=5)
    with pytest.raises(PointCloudError, match="cannot carry"):
        encode_cloud(np.zeros(2, [("x", "<i8")]))


def test_zero_points_give_an_empty_array_with_the_fields() -> None:
    fields, data, step = encode_cloud(np.empty(0, RADAR_DTYPE))
    assert data == b"" and step == 43
    out = decode_cloud(fields, b"", step, 0, 0, 1, required=RADAR_FEATURES)
    assert out.shape == (0,) and out.dtype == RADAR_DTYPE
    feats = to_feature_array(out, RADAR_FEATURES)
    assert feats.values.shape == (0, 6) and feats.n_nonfinite == 0
    assert decode_cloud(fields, b"", step, 0, 0, 0).shape == (0,)


def test_nonfinite_rows_are_counted_and_dropped() -> None:
    pts = radar_points(8, seed=4)
    pts["x"][1] = np.nan
    pts["vy_comp"][4] = np.inf
    pts["rcs"][4] = -np.inf
    pts["vx"][6] = np.nan  # not a feature column: row stays
    feats = to_feature_array(pts, RADAR_FEATURES)
    assert feats.values.dtype == np.float32 and feats.values.shape == (8, 6)
    assert feats.n_nonfinite == 2 and np.flatnonzero(feats.nonfinite).tolist() == [1, 4]
    kept, dropped = drop_nonfinite(feats)
    assert dropped == 2 and kept.shape == (6, 6) and np.isfinite(kept).all()
    np.testing.assert_array_equal(kept[:, 0], pts["x"][[0, 2, 3, 5, 6, 7]])
    kept2, dropped2 = drop_nonfinite(feats.values)
    assert dropped2 == 2 and np.array_equal(kept2, kept)


def test_rclpy_and_rosbags_messages_decode_identically() -> None:
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import PointCloud2, PointField

    from radardistill_ros.interfaces import jazzy_typestore

    store = jazzy_typestore()
    bag_cls = store.types["sensor_msgs/msg/PointCloud2"]
    bag_field = store.types["sensor_msgs/msg/PointField"]
    pts = radar_points(123, seed=5)
    pts["vx"][3] = np.nan
    stamp = 1_533_151_603_547_590_000

    msg = make_pointcloud2_msg(pts, stamp, "RADAR_FRONT", PointCloud2, PointField)
    assert msg.point_step == 43 and msg.width == 123 and not msg.is_dense
    assert_records_equal(decode_pointcloud2(msg), pts)
    via_bag = store.deserialize_cdr(bytes(serialize_message(msg)), "sensor_msgs/msg/PointCloud2")
    assert via_bag.header.frame_id == "RADAR_FRONT"
    assert via_bag.header.stamp.sec * 10**9 + via_bag.header.stamp.nanosec == stamp
    assert_records_equal(decode_pointcloud2(via_bag), pts)

    bmsg = make_pointcloud2_msg(pts, stamp, "RADAR_BACK_LEFT", bag_cls, bag_field, is_dense=False)
    raw = bytes(store.serialize_cdr(bmsg, "sensor_msgs/msg/PointCloud2"))
    back = deserialize_message(raw, PointCloud2)
    assert back.header.frame_id == "RADAR_BACK_LEFT" and back.header.stamp.nanosec == stamp % 10**9
    assert_records_equal(decode_pointcloud2(back), pts)
    assert_records_equal(decode_pointcloud2(bmsg), decode_pointcloud2(back))
    # the same fields either way
    assert [(f.name, f.offset, f.datatype, f.count) for f in back.fields] == \
        [(f.name, f.offset, f.datatype, f.count) for f in via_bag.fields]


@pytest.mark.parametrize("n", [0, 1, 17])
@pytest.mark.parametrize("frame", ["base_link", "map", "RADAR_FRONT_LEFT"])
def test_pointcloud2_cdr_equals_the_serialisers(n: int, frame: str) -> None:
    """pointcloud2_cdr writes the bytes rosbags' serialiser writes (frame-id lengths that move the
    alignment, empty and non-dense clouds, the 43-byte packed radar layout) and rclpy reads them."""
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import PointCloud2

    from radardistill_ros.interfaces import jazzy_typestore

    store = jazzy_typestore()
    stamp = 1_533_151_603_547_590_123
    pts = radar_points(n, seed=n)
    if n:
        pts["vx"][0] = np.nan
    msg = make_pointcloud2_msg(pts, stamp, frame, store.types["sensor_msgs/msg/PointCloud2"],
                               store.types["sensor_msgs/msg/PointField"])
    got = pointcloud2_cdr(pts, stamp, frame)
    assert got == bytes(store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"))
    back = deserialize_message(got, PointCloud2)
    assert back.header.frame_id == frame and back.width == n and back.is_dense == (n == 0)
    assert_records_equal(decode_pointcloud2(back), pts)
