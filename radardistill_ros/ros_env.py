"""Environment for ROS 2 processes that must stay on this machine (tests, demo, benchmarks).

Fast DDS multicasts discovery off the machine by default within a second of ``rclpy.init()``;
these variables keep discovery on loopback and isolate a run in its own domain. Set them before
any ``rclpy.init()`` (platform.md, "ROS 2").
"""

from __future__ import annotations

import os
from pathlib import Path


def pick_domain_id(seed: int | None = None) -> int:
    """A ROS domain id in [10, 99] derived from ``seed`` (default: this process id).

    Fast DDS maps domain ids to UDP ports; ids up to 101 are valid on Linux with the default
    participant index range.
    """
    return 10 + (os.getpid() if seed is None else seed) % 90


def loopback_ros_env(log_dir: str | Path, domain_id: int | None = None,
                     base: dict[str, str] | None = None) -> dict[str, str]:
    """Return a copy of ``base`` (default ``os.environ``) set up for loopback-only ROS 2.

    Args:
        log_dir: directory for ROS logs (``ROS_LOG_DIR``); created if missing.
        domain_id: ``ROS_DOMAIN_ID``; default :func:`pick_domain_id`.
        base: environment to start from.
    """
    env = dict(os.environ if base is None else base)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(pick_domain_id() if domain_id is None else domain_id)
    env["ROS_LOG_DIR"] = str(log_dir)
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    env.pop("ROS_STATIC_PEERS", None)
    return env


def apply_loopback_ros_env(log_dir: str | Path, domain_id: int | None = None) -> dict[str, str]:
    """Set :func:`loopback_ros_env` in this process's ``os.environ``; return the changes."""
    env = loopback_ros_env(log_dir, domain_id)
    keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID", "ROS_LOG_DIR", "RMW_IMPLEMENTATION")
    changes = {k: env[k] for k in keys}
    os.environ.update(changes)
    os.environ.pop("ROS_STATIC_PEERS", None)
    return changes
