"""glibc malloc tuning: freed per-frame buffers stay mapped instead of page-faulting again."""

from __future__ import annotations

import subprocess
import sys

import pytest

from radardistill_ros.malloc_tuning import DEFAULT_LIMIT_BYTES, retain_freed_memory

# Allocates 8 buffers of 2 MiB, touches and frees them, 30 times; prints the minor page faults of
# the last 20 rounds. With glibc's defaults the 16 MiB freed at the heap top exceed the (dynamic)
# trim threshold and are given back to the OS each round, so every round faults them in again.
_ROUNDS = """
import resource, sys
import numpy as np
from radardistill_ros.malloc_tuning import retain_freed_memory
if sys.argv[1] == "tuned":
    assert retain_freed_memory()[0]
for i in range(30):
    if i == 10:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    bufs = [np.ones((2 << 20) // 8 + 1000 * i) for _ in range(8)]
    del bufs
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 20)
"""


def _faults_per_round(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", _ROUNDS, mode], capture_output=True, text=True, timeout=60,
                         check=True)
    return float(out.stdout.strip())


def test_retained_memory_is_not_faulted_in_again() -> None:
    ok, msg = retain_freed_memory()
    if not ok:
        pytest.skip(f"not glibc here: {msg}")
    default, tuned = _faults_per_round("default"), _faults_per_round("tuned")
    # 16 MiB = 4096 pages of 4 KiB faulted in per round by default; (almost) none once tuned
    assert default > 2000, default
    assert tuned < 50, tuned


@pytest.mark.parametrize("limit", [0, -1, DEFAULT_LIMIT_BYTES + 1])
def test_limit_outside_glibc_range_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="limit_bytes"):
        retain_freed_memory(limit)
