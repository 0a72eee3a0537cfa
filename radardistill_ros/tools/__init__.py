"""Offline tools of radardistill_ros: nuScenes-format dataset -> rosbag2 and bag reading helpers.

``python -m radardistill_ros.tools.nuscenes_to_bag --help``
"""
