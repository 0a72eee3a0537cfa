"""Machine facts for the benchmark scripts, from /proc: the CPU time split (steal time shows how
much of the VM's CPU the host took away during a run, the main source of latency noise here) and
the CPU time of a process and of each of its threads."""

from __future__ import annotations

import os
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


def _stat_cpu_s(stat_file: Path) -> float:
    """User + system CPU seconds from a /proc/<pid>[/task/<tid>]/stat file."""
    fields = stat_file.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_faults(pid: int) -> tuple[int, float]:
    """(minor page faults, system CPU seconds) of process ``pid`` so far; (0, 0.0) where unreadable.
    Minor faults are pages mapped in on first touch (e.g. freed memory given back to the OS and
    touched again)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[7]), int(fields[12]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0, 0.0


def process_memory_mib(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of process ``pid`` [MiB] from /proc/<pid>/status
    (VmRSS, VmHWM); (0, 0) where unreadable."""
    values = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def process_cpu_s(pid: int) -> float:
    """CPU seconds of process ``pid`` (all threads); 0 where unreadable."""
    try:
        return _stat_cpu_s(Path(f"/proc/{pid}/stat"))
    except (OSError, ValueError, IndexError):
        return 0.0


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds per thread of process ``pid``, keyed ``name/tid`` (``main`` for the thread that
    started the process; Python threads share the process name)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            name = "main" if task.name == str(pid) else f"{(task / 'comm').read_text().strip()}/{task.name}"
            out[name] = out.get(name, 0.0) + _stat_cpu_s(task / "stat")
        except (OSError, ValueError, IndexError):
            continue
    return out
