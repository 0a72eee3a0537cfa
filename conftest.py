"""Session-wide test set-up: ROS 2 stays on loopback in its own domain for every test run.

Set before anything can call ``rclpy.init()`` (even an import smoke test), see platform.md.
"""

import os
import tempfile

from radardistill_ros.ros_env import apply_loopback_ros_env, pick_domain_id

_LOG_DIR = tempfile.mkdtemp(prefix="radardistill_roslog_")
apply_loopback_ros_env(_LOG_DIR, pick_domain_id(os.getpid() + int.from_bytes(os.urandom(2), "little")))
