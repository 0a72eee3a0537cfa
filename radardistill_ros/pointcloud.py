"""PointCloud2 <-> numpy structured array codec (ROS-free: numpy only, no rclpy import).

Also :func:`read_pcd`, the reader of PCD files (nuScenes radar .pcd) into the same structured arrays.

Decoding goes by field *name and datatype*, never by fixed offsets: the packed 43-byte nuScenes
radar layout (:data:`radardistill_ros.conventions.NUSCENES_RADAR_FIELDS`) and the widened layouts
other converters publish (integer fields as int32/float32, point_step up to 72) decode to the
same values. Handled: the ``is_bigendian`` flag, row padding (``row_step > width * point_step``),
organised clouds (``height > 1``, returned flattened row-major), fields with ``count > 1``
(returned as sub-array fields of shape ``(count,)``).

Message parts come from any object with the sensor_msgs/PointCloud2 attribute names (rclpy
messages, rosbags messages, or the explicit arguments of :func:`decode_cloud`). Every
inconsistency raises :class:`PointCloudError` with a message that says what is wrong, before any
allocation proportional to the claimed size.

Encoding (:func:`encode_cloud`, :func:`make_pointcloud2_msg`) writes little-endian, with the
fields, offsets and point_step of the structured array's dtype (a packed dtype of
``NUSCENES_RADAR_FIELDS`` gives exactly the 43-byte .pcd records).
"""

from __future__ import annotations

import array
import dataclasses
import functools
import itertools
import struct
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

from radardistill_ros.cdr import ENCAPSULATION_CDR_LE, CdrError, CdrReader, cdr_string, header_cdr

__all__ = [
    "DATATYPES",
    "DEFAULT_MAX_POINTS",
    "CloudParts",
    "FeatureArray",
    "Field",
    "PointCloudError",
    "cast_fields",
    "decode_cloud",
    "decode_pointcloud2",
    "drop_nonfinite",
    "encode_cloud",
    "fields_from_dtype",
    "layout_dtype",
    "make_pointcloud2_msg",
    "parse_pointcloud2_cdr",
    "pointcloud2_cdr",
    "read_pcd",
    "to_feature_array",
]

#: sensor_msgs/PointField datatype constant -> numpy type code (byte order added separately).
DATATYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}
_DATATYPE_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32",
                   7: "FLOAT32", 8: "FLOAT64"}
_NUMPY_TO_DATATYPE = {np.dtype(v).str[1:]: k for k, v in DATATYPES.items()}

#: Default upper bound on width * height accepted by the decoder (a guard against corrupt
#: headers; an automotive radar sends < 200 points, a 128-beam LiDAR ~ 300 k).
DEFAULT_MAX_POINTS = 4_000_000


class PointCloudError(ValueError):
    """A PointCloud2 (or structured array) that cannot be decoded or encoded as given."""


class Field(NamedTuple):
    """One sensor_msgs/PointField: ``offset`` [bytes] into a point, ``datatype`` a PointField
    constant (1 INT8 ... 8 FLOAT64), ``count`` elements."""

    name: str
    offset: int
    datatype: int
    count: int = 1


def _as_fields(fields: Iterable[Any]) -> list[Field]:
    """Normalise PointField-like objects (``.name/.offset/.datatype/.count``) or 4-tuples."""
    out = []
    for f in fields:
        if isinstance(f, Field):
            out.append(f)
        elif isinstance(f, tuple):
            out.append(Field(str(f[0]), int(f[1]), int(f[2]), int(f[3]) if len(f) > 3 else 1))
        else:
            out.append(Field(str(f.name), int(f.offset), int(f.datatype), int(f.count)))
    return out


def layout_dtype(fields: Iterable[Any], point_step: int, is_bigendian: bool = False) -> np.dtype:
    """Structured dtype of one point as laid out in the message (offsets kept, itemsize point_step).

    Fields with an empty name are padding and skipped. Raises :class:`PointCloudError` for an
    unknown datatype, count < 1, duplicate names, a field past ``point_step`` or overlapping fields.
    """
    return _layout_dtype(tuple(_as_fields(fields)), int(point_step), bool(is_bigendian))


@functools.lru_cache(maxsize=64)
def _layout_dtype(fl: tuple[Field, ...], point_step: int, is_bigendian: bool) -> np.dtype:
    if point_step < 0:
        raise PointCloudError(f"point_step {point_step} is negative")
    order = ">" if is_bigendian else "<"
    names, formats, offsets = [], [], []
    spans: list[tuple[int, int, str]] = []
    for f in fl:
        if not f.name:
            continue
        if f.datatype not in DATATYPES:
            raise PointCloudError(
                f"field {f.name!r} has unknown datatype {f.datatype} (expected 1..8: "
                + ", ".join(f"{k}={v}" for k, v in _DATATYPE_NAMES.items()) + ")")
        if f.count < 1:
            raise PointCloudError(f"field {f.name!r} has count {f.count} (must be >= 1)")
        if f.offset < 0:
            raise PointCloudError(f"field {f.name!r} has negative offset {f.offset}")
        if f.name in names:
            raise PointCloudError(f"field {f.name!r} appears more than once")
        base = np.dtype(order + DATATYPES[f.datatype])
        end = f.offset + base.itemsize * f.count
        if end > point_step:
            raise PointCloudError(
                f"field {f.name!r} ({_DATATYPE_NAMES[f.datatype]} x {f.count} at offset {f.offset}) "
                f"ends at byte {end}, past point_step {point_step}")
        spans.append((f.offset, end, f.name))
        names.append(f.name)
        formats.append(base if f.count == 1 else (base, (f.count,)))
        offsets.append(f.offset)
    spans.sort()
    for (_, e0, n0), (s1, _, n1) in itertools.pairwise(spans):
        if s1 < e0:
            raise PointCloudError(f"fields {n0!r} and {n1!r} overlap (bytes up to {e0} vs from {s1})")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})


@functools.lru_cache(maxsize=64)
def _packed_native(dt: np.dtype) -> np.dtype:
    """Packed (no gaps) native-byte-order copy of a structured dtype."""
    fmts = []
    for name in dt.names or ():
        sub = dt.fields[name][0]
        if sub.subdtype is not None:
            base, shape = sub.subdtype
            fmts.append((name, base.newbyteorder("=").str, shape))
        else:
            fmts.append((name, sub.newbyteorder("=").str))
    return np.dtype(fmts)


def _byte_view(data: Any) -> Any:
    """A flat uint8 view of a message's data without copying (a list of ints is converted)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return memoryview(data).cast("B")
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def decode_cloud(fields: Iterable[Any], data: Any, point_step: int, row_step: int, width: int,
                 height: int = 1, is_bigendian: bool = False, *, required: Sequence[str] = (),
                 max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """Decode PointCloud2 parts into a packed, native-endian structured array of shape ``(N,)``.

    Args:
        fields: PointField-like objects (``.name .offset .datatype .count``) or 4-tuples.
        data: the message's bytes (``bytes``, ``bytearray``, ``array.array('B')``, uint8 ndarray).
        point_step, row_step: bytes per point and per row.
        width, height: points per row and rows; ``N = width * height`` (rows concatenated).
        is_bigendian: byte order of multi-byte fields.
        required: field names that must exist; missing ones raise a :class:`PointCloudError`
            naming all of them.
        max_points: reject ``width * height`` above this before allocating anything.

    Returns a copy (safe to keep after the message buffer is reused), field order as in
    ``fields``, integer and float types as in the message.
    """
    width, height, point_step, row_step = int(width), int(height), int(point_step), int(row_step)
    dt = layout_dtype(fields, point_step, bool(is_bigendian))
    missing = [n for n in required if n not in (dt.names or ())]
    if missing:
        raise PointCloudError(
            f"point cloud lacks required field(s) {missing}; it has {list(dt.names or ())}")
    if width < 0 or height < 0:
        raise PointCloudError(f"negative size width={width} height={height}")
    n = width * height
    out_dt = _packed_native(dt)
    if n == 0:
        return np.empty(0, out_dt)
    if n > max_points:
        raise PointCloudError(f"cloud claims {width} x {height} = {n} points, above max_points {max_points}")
    if point_step <= 0:
        raise PointCloudError(f"point_step {point_step} with {n} points")
    if row_step < width * point_step:
        raise PointCloudError(
            f"row_step {row_step} is smaller than width * point_step = {width} * {point_step}")
    buf = _byte_view(data)
    needed = row_step * (height - 1) + width * point_step
    if len(buf) < needed:
        raise PointCloudError(
            f"data is truncated: {len(buf)} bytes, {width} x {height} points with point_step "
            f"{point_step} and row_step {row_step} need {needed}")
    if out_dt == dt and row_step == width * point_step:  # packed native layout: one copy
        return np.frombuffer(buf, np.uint8, count=n * point_step).copy().view(out_dt)
    view = np.ndarray(shape=(height, width), dtype=dt, buffer=buf, strides=(row_step, point_step))
    out = np.empty(n, out_dt)
    for name in out_dt.names:
        col = view[name]
        out[name] = col.reshape((n, *col.shape[2:]))
    return out


def decode_pointcloud2(msg: Any, *, required: Sequence[str] = (),
                       max_points: int = DEFAULT_MAX_POINTS) -> np.ndarray:
    """:func:`decode_cloud` of a sensor_msgs/PointCloud2 (rclpy or rosbags message object)."""
    return decode_cloud(msg.fields, msg.data, msg.point_step, msg.row_step, msg.width, msg.height,
                        msg.is_bigendian, required=required, max_points=max_points)


def cast_fields(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """Copy the fields of ``dtype`` (e.g. the nuScenes radar layout) out of ``arr`` by name,
    casting each value; a widened cloud becomes the canonical layout. Missing fields raise
    :class:`PointCloudError` naming them."""
    dtype = np.dtype(dtype)
    have = arr.dtype.names or ()
    missing = [n for n in dtype.names or () if n not in have]
    if missing:
        raise PointCloudError(f"cannot cast: missing field(s) {missing}; have {list(have)}")
    out = np.empty(arr.shape, dtype)
    for name in dtype.names:
        out[name] = arr[name]
    return out


class FeatureArray(NamedTuple):
    """Features ``values`` float32 ``(N, F)`` and ``nonfinite`` bool ``(N,)``: rows with NaN/inf."""

    values: np.ndarray
    nonfinite: np.ndarray

    @property
    def n_nonfinite(self) -> int:
        """Number of rows with at least one NaN or inf."""
        return int(self.nonfinite.sum())


def to_feature_array(structured: np.ndarray, names: Sequence[str]) -> FeatureArray:
    """Columns ``names`` of a structured array as float32 ``(N, len(names))``, NaN/inf rows flagged.

    Scalar fields only; a missing name raises :class:`PointCloudError` naming all missing ones.
    """
    have = structured.dtype.names or ()
    missing = [n for n in names if n not in have]
    if missing:
        raise PointCloudError(f"missing feature field(s) {missing}; cloud has {list(have)}")
    values = np.empty((structured.shape[0], len(names)), np.float32)
    for j, name in enumerate(names):
        col = structured[name]
        if col.ndim != 1:
            raise PointCloudError(f"field {name!r} has count > 1; features must be scalar fields")
        values[:, j] = col
    nonfinite = ~np.isfinite(values).all(axis=1)
    return FeatureArray(values, nonfinite)


def drop_nonfinite(features: FeatureArray | np.ndarray) -> tuple[np.ndarray, int]:
    """Rows of a feature matrix without NaN/inf, and how many rows were dropped."""
    if isinstance(features, FeatureArray):
        values, bad = features.values, features.nonfinite
    else:
        values = np.asarray(features)
        bad = ~np.isfinite(values).all(axis=1)
    n_bad = int(bad.sum())
    return (values[~bad] if n_bad else values), n_bad


def fields_from_dtype(dtype: Any) -> tuple[list[Field], int]:
    """PointFields (little-endian layout) and point_step for a structured dtype, offsets kept."""
    fields, step = _fields_from_dtype(np.dtype(dtype))
    return list(fields), step


@functools.lru_cache(maxsize=64)
def _fields_from_dtype(dtype: np.dtype) -> tuple[tuple[Field, ...], int]:
    if not dtype.names:
        raise PointCloudError(f"need a structured dtype with named fields, got {dtype}")
    fields = []
    for name in dtype.names:
        sub, offset = dtype.fields[name][:2]
        base, count = (sub.subdtype[0], int(np.prod(sub.subdtype[1]))) if sub.subdtype else (sub, 1)
        code = base.newbyteorder("<").str[1:]
        if code not in _NUMPY_TO_DATATYPE:
            raise PointCloudError(
                f"field {name!r} has type {base} which PointField cannot carry "
                "(int8/16/32, uint8/16/32, float32/64 only)")
        fields.append(Field(name, int(offset), _NUMPY_TO_DATATYPE[code], count))
    return tuple(fields), dtype.itemsize


def encode_cloud(arr: np.ndarray) -> tuple[list[Field], bytes, int]:
    """Encode a 1-D structured array: ``(fields, data, point_step)``, little-endian, dtype layout.

    ``row_step = point_step * len(arr)``, ``width = len(arr)``, ``height = 1``.
    """
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise PointCloudError(f"expected a 1-D structured array, got shape {arr.shape}")
    layout = _cloud_layout(arr.dtype)
    data = np.ascontiguousarray(arr.astype(layout.little, copy=False)).tobytes()
    return list(layout.fields), data, layout.point_step


def _is_dense(arr: np.ndarray) -> bool:
    """True iff every float field value of ``arr`` is finite (PointCloud2's ``is_dense``)."""
    return all(np.isfinite(arr[name]).all() for name in _cloud_layout(arr.dtype).float_names)


class _CloudLayout(NamedTuple):
    """What a serialised cloud of one dtype repeats in every message: its PointFields, the
    little-endian dtype, point_step, the float field names (``is_dense``) and the CDR bytes from
    the field count to ``is_bigendian`` and its padding (4-aligned at both ends, so independent of
    the header)."""

    fields: tuple[Field, ...]
    little: np.dtype
    point_step: int
    float_names: tuple[str, ...]
    fields_cdr: bytes


@functools.lru_cache(maxsize=64)
def _cloud_layout(dtype: np.dtype) -> _CloudLayout:
    fields, point_step = _fields_from_dtype(dtype)
    parts = [_U32.pack(len(fields))]
    for f in fields:
        name = cdr_string(f.name)
        parts += [name, b"\x00" * (-len(name) % 4), _CDR_FIELD.pack(f.offset, f.datatype, f.count)]
    parts.append(b"\x00\x00\x00\x00")                       # is_bigendian false, padding to 4
    floats = tuple(n for n in dtype.names if np.dtype(dtype.fields[n][0].base).kind == "f")
    # newbyteorder on a structured dtype recurses into its fields; offsets and itemsize are kept
    return _CloudLayout(fields, dtype.newbyteorder("<"), point_step, floats, b"".join(parts))


def pointcloud2_cdr(arr: np.ndarray, header_stamp_ns: int, frame_id: str, *,
                    is_dense: bool | None = None) -> bytes:
    """The serialised sensor_msgs/PointCloud2 (plain CDR, little endian, as rmw and rosbag2 store
    it) of a 1-D structured ``arr``: the bytes ``make_pointcloud2_msg`` + a serialiser give,
    without building message objects (the node publishes its per-frame velocity cloud as these
    bytes). Layout: Header, height, width, PointField[] (name, offset, datatype, count),
    is_bigendian, point_step, row_step, uint8[] data, is_dense; see :mod:`radardistill_ros.cdr`
    for the encoding rules. The field section is encoded once per dtype."""
    _, data, point_step = encode_cloud(arr)
    layout = _cloud_layout(np.asarray(arr).dtype)
    n = len(arr)
    dense = _is_dense(arr) if is_dense is None else bool(is_dense)
    header = header_cdr(header_stamp_ns, frame_id)
    return b"".join((ENCAPSULATION_CDR_LE, header, b"\x00" * (-len(header) % 4), _U32.pack(1), _U32.pack(n),
                     layout.fields_cdr, _CDR_STEPS.pack(point_step, point_step * n, len(data)),
                     data, b"\x01" if dense else b"\x00"))


_U32 = struct.Struct("<I")
_CDR_FIELD = struct.Struct("<IBxxxI")      # offset, datatype, (padding), count
_CDR_STEPS = struct.Struct("<III")         # point_step, row_step, data length


class CloudParts(NamedTuple):
    """The parts of a serialised sensor_msgs/PointCloud2 (:func:`parse_pointcloud2_cdr`); it has
    the message's attribute names, so :func:`decode_pointcloud2` decodes it like a message.
    ``data`` is a view into the serialised bytes."""

    stamp_ns: int
    frame_id: str
    height: int
    width: int
    fields: tuple[Field, ...]
    is_bigendian: bool
    point_step: int
    row_step: int
    data: memoryview
    is_dense: bool


#: recently seen (byte order, PointField section bytes) of serialised clouds -> their fields (a
#: sensor sends the same layout in every message: one bytes comparison instead of parsing ~18)
_FIELD_SECTIONS: dict[tuple[str, bytes], tuple[Field, ...]] = {}
_FIELD_SECTIONS_MAX = 16


def parse_pointcloud2_cdr(raw: bytes) -> CloudParts:
    """Read a serialised sensor_msgs/PointCloud2 (plain CDR, either byte order) without building
    message objects. Raises :class:`PointCloudError` for bytes that do not hold one (truncated,
    corrupt counts or strings, unknown encapsulation); the parts themselves are checked by
    :func:`decode_cloud`."""
    try:
        r = CdrReader(raw, "PointCloud2")
        stamp_ns, frame_id = r.header()
        height, width = r.u32(), r.u32()
        start = r.pos
        fields = None
        for (order, section), cached in list(_FIELD_SECTIONS.items()):
            if order == r.order and r.raw.startswith(section, start):
                fields, r.pos = cached, start + len(section)
                break
        if fields is None:
            n = r.sequence_length(12)  # a field is >= 12 bytes: name length, offset, datatype, count
            parsed = []
            for _ in range(n):
                name = r.string()
                offset = r.u32()
                datatype = r.u8()
                parsed.append(Field(name, offset, datatype, r.u32()))
            fields = tuple(parsed)
            if len(_FIELD_SECTIONS) >= _FIELD_SECTIONS_MAX:
                _FIELD_SECTIONS.pop(next(iter(_FIELD_SECTIONS)))
            _FIELD_SECTIONS[(r.order, bytes(r.raw[start:r.pos]))] = fields
        is_bigendian = bool(r.u8())
        point_step, row_step = r.u32(), r.u32()
        data = r.byte_sequence()
        is_dense = bool(r.u8())
    except CdrError as exc:
        raise PointCloudError(f"not a serialised PointCloud2: {exc}") from None
    return CloudParts(stamp_ns, frame_id, height, width, fields, is_bigendian, point_step, row_step, data,
                      is_dense)


def _sibling_type(cls: type, field_name: str) -> type:
    """Class of field ``field_name`` of a rosbags dataclass message type (same generated module)."""
    ftype = {f.name: f.type for f in dataclasses.fields(cls)}[field_name]
    if isinstance(ftype, str):
        return getattr(sys.modules[cls.__module__], ftype)
    return ftype


def make_pointcloud2_msg(arr: np.ndarray, header_stamp_ns: int, frame_id: str, msg_cls: type,
                         field_cls: type, *, is_dense: bool | None = None) -> Any:
    """Build a sensor_msgs/PointCloud2 of ``arr`` with either message class family.

    Args:
        arr: 1-D structured array (e.g. of the ``NUSCENES_RADAR_FIELDS`` dtype, 43-byte packed).
        header_stamp_ns: header stamp [ns since the epoch].
        frame_id: header frame id (for radar: the sensor frame, e.g. ``RADAR_FRONT``).
        msg_cls, field_cls: ``sensor_msgs.msg.PointCloud2`` / ``PointField`` from rclpy, or the
            rosbags typestore's ``types['sensor_msgs/msg/PointCloud2']`` / ``PointField``.
        is_dense: default: True iff every float field value is finite.
    """
    fields, data, point_step = encode_cloud(arr)
    n = int(arr.shape[0])
    if is_dense is None:
        is_dense = _is_dense(arr)
    sec, nanosec = divmod(int(header_stamp_ns), 1_000_000_000)
    pfields = [field_cls(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in fields]
    if dataclasses.is_dataclass(msg_cls):  # rosbags: all fields positional/keyword, data uint8 ndarray
        header_cls = _sibling_type(msg_cls, "header")
        time_cls = _sibling_type(header_cls, "stamp")
        header = header_cls(stamp=time_cls(sec=sec, nanosec=nanosec), frame_id=frame_id)
        payload: Any = np.frombuffer(data, np.uint8).copy()
    else:  # rclpy: default-constructible; array('B') avoids the per-element type check
        header = msg_cls().header
        header.stamp.sec, header.stamp.nanosec, header.frame_id = sec, nanosec, frame_id
        payload = array.array("B", data)
    return msg_cls(header=header, height=1, width=n, fields=pfields, is_bigendian=False,
                   point_step=point_step, row_step=point_step * n, data=payload, is_dense=bool(is_dense))


_PCD_TYPES = {("F", 4): "f4", ("F", 8): "f8", ("I", 1): "i1", ("I", 2): "i2", ("I", 4): "i4",
              ("I", 8): "i8", ("U", 1): "u1", ("U", 2): "u2", ("U", 4): "u4", ("U", 8): "u8"}


def read_pcd(path: Any) -> np.ndarray:
    """Records of a PCD file (``DATA binary`` or ``ascii``) as a packed little-endian structured array.

    For a nuScenes radar .pcd this is exactly the 43-byte records of
    :data:`~radardistill_ros.conventions.NUSCENES_RADAR_FIELDS`, every point, no filtering (the
    devkit's default filters on invalid_state / dyn_prop / ambig_state are *not* applied).
    """
    with open(path, "rb") as f:
        raw = f.read()
    header: dict[str, list[str]] = {}
    pos = 0
    while "DATA" not in header:
        end = raw.find(b"\n", pos)
        if end < 0:
            raise PointCloudError(f"{path}: PCD header has no DATA line")
        line = raw[pos:end].decode("ascii", errors="replace").strip()
        pos = end + 1
        if line and not line.startswith("#"):
            key, *vals = line.split()
            header[key.upper()] = vals
    try:
        names, sizes, types = header["FIELDS"], [int(v) for v in header["SIZE"]], header["TYPE"]
        counts = [int(v) for v in header.get("COUNT", ["1"] * len(names))]
        n = int(header["POINTS"][0]) if "POINTS" in header else \
            int(header["WIDTH"][0]) * int(header["HEIGHT"][0])
        fmts: list[tuple[Any, ...]] = []
        for nm, sz, t, c in zip(names, sizes, types, counts, strict=True):
            code = "<" + _PCD_TYPES[(t.upper(), sz)]
            fmts.append((nm, code) if c == 1 else (nm, code, (c,)))
    except (KeyError, ValueError, IndexError) as exc:
        raise PointCloudError(f"{path}: malformed PCD header {header}: {exc!r}") from None
    dt = np.dtype(fmts)
    kind = header["DATA"][0].lower()
    if kind == "binary":
        if len(raw) - pos < n * dt.itemsize:
            raise PointCloudError(f"{path}: truncated: {len(raw) - pos} data bytes for {n} x {dt.itemsize}")
        return np.frombuffer(raw, dt, count=n, offset=pos).copy()
    if kind == "ascii":
        cols = np.loadtxt(raw[pos:].decode("ascii").splitlines(), dtype=np.float64, ndmin=2)
        out = np.zeros(n, dt)
        j = 0
        for name in dt.names:
            width = int(np.prod(dt[name].shape)) if dt[name].shape else 1
            out[name] = cols[:n, j:j + width].reshape(out[name].shape)
            j += width
        return out
    raise PointCloudError(f"{path}: PCD DATA {kind!r} not supported (binary or ascii)")
