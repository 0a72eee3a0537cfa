"""radardistill_ros: radar 3D object detection with a RadarDistill student, for ROS 2.

The package root and every module except ``radardistill_ros.node`` (and the tools that talk DDS)
import without rclpy, so training, export and tests of the core run anywhere.
"""

__version__ = "0.1.0"
