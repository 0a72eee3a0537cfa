"""The benchmarks' emulated host interference (scripts/_interference.py): real-time burst
processes that start pinned at SCHED_FIFO, refuse a bad share, and are stopped and reaped."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from _interference import PRIORITY, start_interference, stop_interference


def _can_use_realtime() -> str | None:
    """None if this process may use SCHED_FIFO, else why not."""
    try:
        pid = os.fork()
    except OSError as exc:
        return f"cannot fork ({exc})"
    if pid == 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            os._exit(0)
        except OSError:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return None if os.waitstatus_to_exitcode(status) == 0 else "no right to real-time scheduling " \
        "(needs root or CAP_SYS_NICE)"


def test_bad_share_is_refused() -> None:
    for share in (0.0, -0.1, 0.5, 2.0):
        with pytest.raises(ValueError, match="share must be in"):
            start_interference([0], share)


def test_bursts_run_pinned_at_realtime_priority_and_stop() -> None:
    why = _can_use_realtime()
    if why:
        pytest.skip(f"emulated interference not runnable here: {why}")
    procs = start_interference([0], 0.02)
    try:
        (p,) = procs
        assert p.poll() is None
        assert os.sched_getscheduler(p.pid) == os.SCHED_FIFO
        assert os.sched_getparam(p.pid).sched_priority == PRIORITY
        assert os.sched_getaffinity(p.pid) == {0}
    finally:
        stop_interference(procs)
    assert all(p.poll() is not None for p in procs)
