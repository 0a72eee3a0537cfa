"""Keep freed heap memory in the process, so per-frame tensors do not page-fault (glibc malloc).

glibc serves a block of at least ``M_MMAP_THRESHOLD`` (128 KiB, raised on the fly up to the
largest freed mmapped block) with its own ``mmap`` and unmaps it on ``free``, and it gives a
free top of the heap back to the OS once it exceeds ``M_TRIM_THRESHOLD``. A radar frame
allocates and frees a few hundred tensors of 0.1-3 MiB (sparse-conv columns, maps, decode
buffers) whose sizes change from frame to frame, so both happen every frame: the next
allocation of those pages faults them in again, and the kernel zeroes each one. Measured on the
2-core target (``lite`` front end alone, 1.6k points, one thread): 500-1,200 minor page faults
and 1-2.7 ms of system time per frame; with both thresholds fixed at 32 MiB: < 10 faults and no
system time, front end p50 1-20% lower depending on what the process allocated before (the
dynamic threshold only rises); in the node 1,024 -> 11 faults per frame (docs/benchmarks.md).

:func:`retain_freed_memory` fixes both thresholds (``mallopt``), which also turns off glibc's
dynamic adjustment: blocks below the limit come from the heap and stay mapped when freed. The
process keeps up to its peak heap plus the limit mapped (tens of MiB for the node). Other C
libraries (musl, macOS) are left alone and reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

#: ``mallopt`` parameter numbers (glibc ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's upper limit for ``M_MMAP_THRESHOLD`` on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``).
DEFAULT_LIMIT_BYTES = 32 << 20


@functools.lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def retain_freed_memory(limit_bytes: int = DEFAULT_LIMIT_BYTES) -> tuple[bool, str]:
    """Serve blocks below ``limit_bytes`` from the heap and keep up to ``limit_bytes`` of free
    heap top mapped (glibc ``mallopt``). Process-wide; call once at start-up.

    Returns ``(applied, message)``; ``applied`` is False where the C library is not glibc (nothing
    changed) or glibc refuses a value (the message says which).
    """
    if not 0 < limit_bytes <= DEFAULT_LIMIT_BYTES:
        raise ValueError(f"limit_bytes must be in (0, {DEFAULT_LIMIT_BYTES}], got {limit_bytes}")
    libc = _libc()
    if libc is None:
        return False, "malloc thresholds left as they are: the C library is not glibc"
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.gnu_get_libc_version.restype = ctypes.c_char_p
    version = libc.gnu_get_libc_version().decode()
    if not libc.mallopt(M_MMAP_THRESHOLD, limit_bytes):
        return False, f"glibc {version} refused M_MMAP_THRESHOLD={limit_bytes}; thresholds unchanged"
    if not libc.mallopt(M_TRIM_THRESHOLD, limit_bytes):
        return False, f"glibc {version} refused M_TRIM_THRESHOLD={limit_bytes}"
    return True, (f"glibc {version}: freed heap memory kept (mmap and trim thresholds "
                  f"{limit_bytes / 2**20:g} MiB), so per-frame tensors do not page-fault")
