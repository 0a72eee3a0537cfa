"""Start the radardistill_ros detector node.

    ros2 launch radardistill_ros detector.launch.py \
        [config:=/path/detector.yaml] [namespace:=/perception] [model_path:=/path/model.pt|.onnx|.engine] \
        [backend:=torch|onnxruntime|tensorrt] [use_sim_time:=true]

Equivalent without ros2launch (what this file runs):
    detector_node --ros-args --params-file <config> -r __ns:=<namespace> \
        -p model_path:=<...> -p backend:=<...> -p use_sim_time:=<...>
Empty ``model_path`` / ``backend`` keep the values of the config file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "radardistill_ros"


def _node(context, *args, **kwargs):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    for name in ("model_path", "backend"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [
        Node(
            package=PACKAGE,
            executable="detector_node",
            name="radardistill_detector",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config"), overrides],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_config = [FindPackageShare(PACKAGE), "/config/detector.yaml"]
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=default_config,
                              description="Node parameter file (ros__parameters YAML)"),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace"),
        DeclareLaunchArgument("model_path", default_value="",
                              description="Checkpoint (.pt), ONNX model or TensorRT engine; empty: config"),
        DeclareLaunchArgument("backend", default_value="",
                              description="torch | onnxruntime | tensorrt; empty: config"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (bag replay)"),
        OpaqueFunction(function=_node),
    ])
