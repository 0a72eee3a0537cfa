"""Plain CDR (XCDR1), the wire format of ROS 2 messages: the writer primitives the package's
serialisers share, and a bounds-checked reader for the messages the node takes raw.

rmw_fastrtps and Cyclone DDS put ROS 2 messages on the wire, and rosbag2 stores them, as a 4-byte
encapsulation header (``00 01 00 00`` little endian, ``00 00 00 00`` big endian) followed by the
fields in declaration order. Each primitive is aligned to its size, counted from the end of that
header. A string is a uint32 length (counting the terminating NUL), the bytes and the NUL. A
sequence is a uint32 count and the elements; a fixed array has only its elements.

The node subscribes to its inputs raw (``create_subscription(..., raw=True)``): rclpy then hands
the callback these bytes instead of building message objects in its C extension. On the 2-core
VM that conversion, and the Python objects it makes, were most of the executor thread's time:
248 -> 68 us per message with no-op callbacks (docs/benchmarks.md). The readers built on
:class:`CdrReader` (``pointcloud.parse_pointcloud2_cdr``, ``tf_buffer.parse_tf_message_cdr``) take
only the fields the node uses, and raise :class:`CdrError` for bytes that do not hold the message.
"""

from __future__ import annotations

import struct

import numba
import numpy as np

__all__ = [
    "ENCAPSULATION_CDR_LE",
    "CdrError",
    "CdrReader",
    "cdr_align",
    "cdr_put_u32",
    "cdr_string",
    "header_cdr",
    "stamp_parts",
]

ENCAPSULATION_CDR_LE = b"\x00\x01\x00\x00"
_U32 = struct.Struct("<I")
_STAMP = struct.Struct("<iI")


class CdrError(ValueError):
    """Bytes that are not a well-formed plain-CDR message of the expected type."""


def cdr_string(text: str) -> bytes:
    """CDR string: uint32 length including the NUL, UTF-8 bytes, NUL (the caller aligns to 4)."""
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise ValueError(f"a ROS string cannot hold a NUL character: {text!r}")
    return _U32.pack(len(raw) + 1) + raw + b"\x00"


def stamp_parts(stamp_ns: int) -> tuple[int, int]:
    """builtin_interfaces/Time ``(sec, nanosec)`` of a stamp [ns]; ValueError if sec is not int32."""
    sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
    if not -(1 << 31) <= sec < (1 << 31):
        raise ValueError(f"stamp {stamp_ns} ns does not fit builtin_interfaces/Time (int32 seconds)")
    return sec, nsec


def header_cdr(stamp_ns: int, frame_id: str) -> bytes:
    """std_msgs/Header (builtin_interfaces/Time stamp, string frame_id); starts 4-aligned."""
    return _STAMP.pack(*stamp_parts(stamp_ns)) + cdr_string(frame_id)


@numba.njit(cache=True, nogil=True, inline="always")
def cdr_align(pos: int, size: int) -> int:
    """Buffer position ``pos`` moved up to the next multiple of ``size``, counted from the end of
    the 4-byte encapsulation header (for the compiled writers)."""
    return pos + (-(pos - 4)) % size


@numba.njit(cache=True, nogil=True, inline="always")
def cdr_put_u32(out: np.ndarray, pos: int, value: int) -> int:
    """Little-endian uint32 ``value`` at ``out[pos:pos + 4]`` (already aligned); returns pos + 4."""
    for i in range(4):
        out[pos + i] = (value >> (8 * i)) & 0xFF
    return pos + 4


#: (uint32, int32 + uint32 stamp, float64 x 3, float64 x 4) per byte order
_FORMATS = {order: (struct.Struct(order + "I"), struct.Struct(order + "iI"), struct.Struct(order + "3d"),
                    struct.Struct(order + "4d")) for order in "<>"}


class CdrReader:
    """Sequential reader of one serialised message, aligned as the writers align.

    ``order`` is ``"<"`` or ``">"`` from the encapsulation header. Every read checks the bounds
    first: a message that ends early raises :class:`CdrError` saying where, never an IndexError
    or a short result.
    """

    __slots__ = ("_f3d", "_f4d", "_stamp", "_u32", "order", "pos", "raw", "size")

    def __init__(self, raw: bytes, what: str = "message") -> None:
        if not isinstance(raw, (bytes, bytearray)):
            raw = bytes(raw)
        if len(raw) < 4:
            raise CdrError(f"{what}: {len(raw)} bytes, shorter than the 4-byte CDR encapsulation header")
        if raw[0] != 0 or raw[1] not in (0, 1):
            raise CdrError(f"{what}: unsupported encapsulation {bytes(raw[:4]).hex(' ')} "
                           "(plain CDR only: 00 01 little endian, 00 00 big endian)")
        self.raw, self.size, self.pos = raw, len(raw), 4
        self.order = "<" if raw[1] == 1 else ">"
        self._u32, self._stamp, self._f3d, self._f4d = _FORMATS[self.order]

    def _at(self, nbytes: int, align: int) -> int:
        """Offset of the next ``nbytes``-byte field aligned to ``align``; advances past it."""
        pos = self.pos + (-(self.pos - 4) % align)
        end = pos + nbytes
        if end > self.size:
            raise CdrError(f"truncated: {nbytes} bytes needed at offset {pos}, the message has {self.size}")
        self.pos = end
        return pos

    def u8(self) -> int:
        return self.raw[self._at(1, 1)]

    def u32(self) -> int:
        return self._u32.unpack_from(self.raw, self._at(4, 4))[0]

    def f64x3(self) -> tuple[float, float, float]:
        return self._f3d.unpack_from(self.raw, self._at(24, 8))

    def f64x4(self) -> tuple[float, float, float, float]:
        return self._f4d.unpack_from(self.raw, self._at(32, 8))

    def string(self) -> str:
        """A CDR string (length with the NUL, bytes, NUL), decoded as UTF-8."""
        n = self.u32()
        if n == 0:  # some writers send an empty string as length 0
            return ""
        pos = self._at(n, 1)
        if self.raw[pos + n - 1] != 0:
            raise CdrError(f"string at offset {pos - 4} is not NUL-terminated")
        try:
            return self.raw[pos:pos + n - 1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CdrError(f"string at offset {pos - 4} is not UTF-8: {exc}") from None

    def header(self) -> tuple[int, str]:
        """std_msgs/Header: (stamp [ns], frame_id)."""
        sec, nsec = self._stamp.unpack_from(self.raw, self._at(8, 4))
        if nsec >= 1_000_000_000:
            raise CdrError(f"stamp nanosec {nsec} is not below 1e9")
        return sec * 1_000_000_000 + nsec, self.string()

    def byte_sequence(self) -> memoryview:
        """A uint8[] sequence (count, bytes) as a view into the message, no copy."""
        n = self.u32()
        pos = self._at(n, 1)
        return memoryview(self.raw)[pos:pos + n]

    def sequence_length(self, element_size: int) -> int:
        """A sequence count, checked against the bytes left (each element >= ``element_size``),
        so that a corrupt count cannot make the caller loop for long."""
        n = self.u32()
        if n * element_size > self.size - self.pos:
            raise CdrError(f"sequence of {n} elements of >= {element_size} bytes does not fit in the "
                           f"{self.size - self.pos} bytes left")
        return n
