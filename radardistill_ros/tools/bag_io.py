"""rosbag2 reading and writing with ``rosbags`` (pure Python; rosbag2_py does not install here).

Bags are written in rosbag2 format version 9 (ROS 2 Jazzy) with the mcap or sqlite3 storage plugin
and the Jazzy typestore of :func:`radardistill_ros.interfaces.jazzy_typestore` (vision_msgs and
tf2_msgs registered, upstream type hashes). Reading works for either plugin (detected from the
bag's metadata); message types a bag brings that the typestore lacks are registered from the
definitions stored in the bag.

The iterator yields :class:`BagMessage` records in bag-timestamp order with the raw CDR bytes
(what a replay tool publishes unchanged through a serialized rclpy publisher) and a lazy
``msg`` (the rosbags message object).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rosbags.interfaces import (
    MessageDefinitionFormat,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import get_types_from_msg

from radardistill_ros.interfaces import jazzy_typestore

__all__ = [
    "STORAGE_PLUGINS",
    "TRANSIENT_LOCAL_QOS",
    "BagMessage",
    "BagWriter",
    "TopicSummary",
    "read_messages",
    "topic_summary",
]

STORAGE_PLUGINS = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

_INF = QosTime(2147483647, 4294967295)
#: Offered QoS recorded for latched topics (/tf_static): reliable, transient local, keep last 1,
#: so ``ros2 bag play`` republishes them latched as tf2's static broadcaster does.
TRANSIENT_LOCAL_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                          _INF, _INF, QosLiveliness.AUTOMATIC, _INF, avoid_ros_namespace_conventions=False)


class BagWriter:
    """A rosbag2 writer that serialises rosbags message objects; topics are added on first write.

    Use as a context manager::

        with BagWriter(path, storage="mcap") as w:
            w.write("/tf", "tf2_msgs/msg/TFMessage", stamp_ns, msg)
    """

    def __init__(self, path: str | Path, storage: str = "mcap", typestore: Any = None,
                 latched_topics: Iterable[str] = ("/tf_static",)) -> None:
        if storage not in STORAGE_PLUGINS:
            raise ValueError(f"storage {storage!r} unknown; expected one of {sorted(STORAGE_PLUGINS)}")
        self.path = Path(path)
        self.typestore = typestore if typestore is not None else jazzy_typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGE_PLUGINS[storage])
        self._latched = set(latched_topics)
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def write(self, topic: str, msgtype: str, timestamp_ns: int, msg: Any) -> None:
        """Serialise ``msg`` (a rosbags object of ``msgtype``) and write it at ``timestamp_ns`` [ns]."""
        self.write_raw(topic, msgtype, timestamp_ns, self.typestore.serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, msgtype: str, timestamp_ns: int, data: bytes | memoryview) -> None:
        """Write already serialised CDR bytes."""
        conn = self._connections.get(topic)
        if conn is None:
            qos = [TRANSIENT_LOCAL_QOS] if topic in self._latched else []
            conn = self._connections[topic] = self._writer.add_connection(
                topic, msgtype, typestore=self.typestore, offered_qos_profiles=qos)
        elif conn.msgtype != msgtype:
            raise ValueError(f"topic {topic} has type {conn.msgtype}, cannot also write {msgtype}")
        self._writer.write(conn, int(timestamp_ns), data)
        self.counts[topic] = self.counts.get(topic, 0) + 1


@dataclass
class BagMessage:
    """One message of a bag: ``timestamp`` is the bag (receive/record) time [ns]."""

    topic: str
    msgtype: str
    timestamp: int
    rawdata: bytes
    typestore: Any = field(repr=False)
    _msg: Any = field(default=None, repr=False)

    @property
    def msg(self) -> Any:
        """The deserialised rosbags message (decoded on first access)."""
        if self._msg is None:
            self._msg = self.typestore.deserialize_cdr(self.rawdata, self.msgtype)
        return self._msg


class TopicSummary(NamedTuple):
    """Type and message count of one topic."""

    msgtype: str
    count: int


def _register_missing(typestore: Any, connections: Iterable[Any]) -> None:
    for conn in connections:
        if conn.msgtype in typestore.types:
            continue
        if conn.msgdef.format != MessageDefinitionFormat.MSG or not conn.msgdef.data:
            raise KeyError(f"topic {conn.topic}: type {conn.msgtype} is unknown and the bag has no "
                           ".msg definition for it")
        typestore.register(get_types_from_msg(conn.msgdef.data, conn.msgtype))


def topic_summary(path: str | Path) -> dict[str, TopicSummary]:
    """``{topic: (msgtype, message count)}`` from the bag's metadata."""
    with Reader(Path(path)) as reader:
        return {name: TopicSummary(info.msgtype or "", info.msgcount) for name, info in reader.topics.items()}


def read_messages(path: str | Path, topics: Iterable[str] | None = None, *, start_ns: int | None = None,
                  stop_ns: int | None = None, typestore: Any = None) -> Iterator[BagMessage]:
    """Messages of a rosbag2 bag (mcap or sqlite3) in timestamp order.

    Args:
        path: the bag directory (with metadata.yaml).
        topics: only these topics (default: all); unknown names are ignored.
        start_ns, stop_ns: bag-time window [ns], start inclusive, stop exclusive.
        typestore: rosbags typestore for deserialising (default: Jazzy + vision_msgs + tf2_msgs).
    """
    store = typestore if typestore is not None else jazzy_typestore()
    wanted = None if topics is None else set(topics)
    with Reader(Path(path)) as reader:
        conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
        _register_missing(store, conns)
        if not conns:
            return
        for conn, timestamp, raw in reader.messages(connections=conns, start=start_ns, stop=stop_ns):
            yield BagMessage(conn.topic, conn.msgtype, timestamp, bytes(raw), store)
