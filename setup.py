"""ament_python build of radardistill_ros (colcon build / pip wheel)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "radardistill_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*", "training", "training.*",
                                    "export", "export.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/config/rviz", glob("config/rviz/*.rviz")),
    ],
    package_data={PACKAGE: ["configs/*.yaml", "models/*.pt", "models/*.md", "models/*.json"]},
    include_package_data=True,
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="radardistill_ros maintainers",
    maintainer_email="radardistill-ros@users.noreply.github.com",
    description="Radar 3D object detection with a RadarDistill student network, for ROS 2.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "detector_node = radardistill_ros.node:main",
            "nuscenes_to_bag = radardistill_ros.tools.nuscenes_to_bag:main",
            "replay_bag = radardistill_ros.tools.replay:main",
            "replay_evaluate = radardistill_ros.tools.replay_evaluate:main",
        ],
    },
)
