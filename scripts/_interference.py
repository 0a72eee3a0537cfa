"""Emulated host interference for the benchmark scripts: per CPU core, one real-time process
that takes the core in bursts, the way a hypervisor's steal or a higher-priority task does.

Each process is pinned to its core and scheduled ``SCHED_FIFO`` (priority 50), so while it spins
no normal thread runs there; bursts last U(1, 4) ms (mean 2.5 ms) and come after exponentially
distributed gaps chosen so that the bursts take ``share`` of the core. Deterministic per seed.
Needs the right to use real-time scheduling (root or CAP_SYS_NICE); without it
:func:`start_interference` raises ``RuntimeError`` saying so. Linux's real-time throttling
(95% by default) still bounds it.

    python scripts/_interference.py --core 0 --share 0.05     # the worker (started by the benchmarks)
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

BURST_S = (0.001, 0.004)
PRIORITY = 50


def start_interference(cores: list[int], share: float, seed: int = 0) -> list[subprocess.Popen]:
    """One burst process per core in ``cores`` taking ``share`` (0 < share < 0.5) of it; returns
    them once each runs at real-time priority (stop them with :func:`stop_interference`)."""
    if not 0.0 < share < 0.5:
        raise ValueError(f"interference share must be in (0, 0.5), got {share}")
    procs = []
    try:
        for core in cores:
            p = subprocess.Popen([sys.executable, str(Path(__file__)), "--core", str(core), "--share",
                                  str(share), "--seed", str(seed + core)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(p)
            line = p.stdout.readline().strip()
            if line != "ready":
                p.wait(timeout=5)
                raise RuntimeError(f"interference on core {core} did not start: {p.stderr.read().strip()}")
    except BaseException:
        stop_interference(procs)
        raise
    return procs


def stop_interference(procs: list[subprocess.Popen]) -> None:
    """Terminate the burst processes (only these) and reap them."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _run(core: int, share: float, seed: int) -> int:
    try:
        os.sched_setaffinity(0, {core})
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
    except (OSError, ValueError) as exc:
        print(f"cannot pin to core {core} at SCHED_FIFO {PRIORITY} ({exc}): emulated interference needs "
              "root or CAP_SYS_NICE", file=sys.stderr, flush=True)
        return 1
    print("ready", flush=True)
    rng = random.Random(seed)
    mean_burst = sum(BURST_S) / 2
    mean_gap = mean_burst * (1.0 - share) / share
    while True:
        time.sleep(rng.expovariate(1.0 / mean_gap))
        end = time.perf_counter() + rng.uniform(*BURST_S)
        while time.perf_counter() < end:
            pass


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--core", type=int, required=True)
    ap.add_argument("--share", type=float, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    sys.exit(_run(a.core, a.share, a.seed))
