"""Machine facts for the benchmark scripts: CPU time split from /proc/stat (steal time shows how
much of the VM's CPU the host took away during a run, the main source of latency noise here)."""

from __future__ import annotations

from pathlib import Path


def cpu_jiffies() -> list[int]:
    """Aggregate CPU times from /proc/stat: user nice system idle iowait irq softirq steal (jiffies);
    empty where unreadable."""
    try:
        return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return []


def steal_share(before: list[int], after: list[int]) -> float | None:
    """Fraction of all CPU time between two :func:`cpu_jiffies` readings that was stolen by the
    host (None where unknown)."""
    if len(before) < 8 or len(after) < 8:
        return None
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta)
    return delta[7] / total if total > 0 else None
