"""The locally built vision_msgs / tf2_msgs carry upstream's type names and RIHS01 hashes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from radardistill_ros.interfaces import jazzy_typestore, msg_definitions

# Upstream hashes (ROS 2 Jazzy, vision_msgs 4.1.x) from ../shared/reference/interfaces.md.
UPSTREAM = {
    "vision_msgs/msg/Detection3DArray":
        "RIHS01_793f5eab9595ac1c0da07873cc859db42eae51f0ee76056db8562515d830e018",
    "vision_msgs/msg/Detection3D":
        "RIHS01_ddd703be132ab0b69d33121f1bb034132bfbb3b0ac5f9fb1516005ba1c8a265b",
    "vision_msgs/msg/LabelInfo":
        "RIHS01_3d37df4015cdf660cc851c51897f2acd957e1ca6205ba0a99aebffb9406b0783",
    "tf2_msgs/msg/TFMessage":
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
    "tf2_msgs/msg/TF2Error":
        "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
    "sensor_msgs/msg/PointCloud2":
        "RIHS01_9198cabf7da3796ae6fe19c4cb3bdd3525492988c70522628af5daa124bae2b5",
}


def built_hash(typename: str) -> str:
    """Hash recorded by the rosidl build in share/<pkg>/msg/<Name>.json of this environment."""
    pkg, _, name = typename.split("/")
    desc = Path(sys.prefix) / "share" / pkg / "msg" / f"{name}.json"
    hashes = json.loads(desc.read_text())["type_hashes"]
    return next(h["hash_string"] for h in hashes if h["type_name"] == typename)


@pytest.mark.parametrize("typename", sorted(UPSTREAM))
def test_built_hash_equals_upstream(typename: str) -> None:
    assert built_hash(typename) == UPSTREAM[typename]


def test_every_local_definition_hashes_the_same_in_rosbags_and_rosidl() -> None:
    store = jazzy_typestore()
    names = sorted(msg_definitions())
    assert len(names) == 18  # 16 vision_msgs + 2 tf2_msgs messages
    for typename in names:
        assert store.hash_rihs01(typename) == built_hash(typename), typename
    det = "vision_msgs/msg/Detection3DArray"
    assert store.hash_rihs01(det) == UPSTREAM[det]


def test_rclpy_types_import_and_round_trip_through_rosbags_cdr() -> None:
    from rclpy.serialization import deserialize_message, serialize_message
    from tf2_msgs.msg import TF2Error, TFMessage
    from vision_msgs.msg import Detection3D, Detection3DArray

    msg = Detection3DArray()
    msg.header.frame_id = "base_link"
    msg.detections.append(Detection3D(id="a"))
    msg.detections[0].bbox.size.x = 4.5
    raw = serialize_message(msg)
    store = jazzy_typestore()
    decoded = store.deserialize_cdr(raw, "vision_msgs/msg/Detection3DArray")
    assert decoded.header.frame_id == "base_link"
    assert decoded.detections[0].bbox.size.x == 4.5
    back = deserialize_message(bytes(store.serialize_cdr(decoded, "vision_msgs/msg/Detection3DArray")),
                               Detection3DArray)
    assert back.detections[0].id == "a"
    assert TF2Error.TIMEOUT_ERROR == 5 and TFMessage().transforms == []
