"""The message definitions kept in ``interfaces/`` (vision_msgs 4.1, tf2_msgs), ROS-free.

The same .msg text is what ``scripts/build_interfaces.sh`` builds into rclpy types and what
rosbags registers in its typestore to write bags, so both give upstream's type names and RIHS01
hashes.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PACKAGES = ("vision_msgs", "tf2_msgs")


def interfaces_root() -> Path:
    """Directory that holds ``<package>/msg/*.msg`` (source tree, else the installed share dir)."""
    candidates = [Path(__file__).resolve().parents[1] / "interfaces",
                  Path(sys.prefix) / "share" / "radardistill_ros" / "interfaces"]
    for c in candidates:
        if (c / "vision_msgs" / "msg").is_dir():
            return c
    raise FileNotFoundError(
        "message definitions not found; looked in " + ", ".join(str(c) for c in candidates))


def msg_definitions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """``{"vision_msgs/msg/Detection3D": <.msg text>, ...}`` for the given packages."""
    root = interfaces_root()
    out: dict[str, str] = {}
    for pkg in packages:
        for f in sorted((root / pkg / "msg").glob("*.msg")):
            out[f"{pkg}/msg/{f.stem}"] = f.read_text()
    return out


def jazzy_typestore() -> Any:
    """A rosbags typestore for ROS 2 Jazzy with vision_msgs and tf2_msgs registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    for name, text in msg_definitions().items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store
