"""radardistill_ros.ros_client.spun_node: callbacks run in the background, teardown joins the
spinner before destroying, and an error raised while spinning is re-raised on exit."""

from __future__ import annotations

import threading
import time

import pytest

pytestmark = pytest.mark.ros


def _wait(cond, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_messages_arrive_and_teardown_stops_the_spinner() -> None:
    from std_msgs.msg import String

    from radardistill_ros.ros_client import spun_node

    got: list[str] = []
    before = {t.name for t in threading.enumerate()}
    with spun_node("ros_client_test") as node:
        node.create_subscription(String, "/ros_client_test", lambda m: got.append(m.data), 10)
        pub = node.create_publisher(String, "/ros_client_test", 10)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        for i in range(5):
            pub.publish(String(data=f"m{i}"))
        assert _wait(lambda: len(got) == 5), got
        assert "ros_client_test_spin" in {t.name for t in threading.enumerate()}
    assert got == [f"m{i}" for i in range(5)]
    assert "ros_client_test_spin" not in {t.name for t in threading.enumerate()} - before


def test_callback_error_keeps_spinning_and_is_reraised_on_exit() -> None:
    from std_msgs.msg import String

    from radardistill_ros.ros_client import spun_node

    got: list[str] = []

    def cb(msg) -> None:
        if msg.data == "bad":
            raise ValueError("bad message")
        got.append(msg.data)

    survived = False
    with pytest.raises(RuntimeError, match="bad message"):
        with spun_node("ros_client_err") as node:
            node.create_subscription(String, "/ros_client_err", cb, 10)
            pub = node.create_publisher(String, "/ros_client_err", 10)
            if _wait(lambda: pub.get_subscription_count() > 0):
                pub.publish(String(data="bad"))
                pub.publish(String(data="good"))
                survived = _wait(lambda: got == ["good"])
    assert survived, got  # the spinner went on after the error


def test_an_error_in_the_with_body_is_not_masked_by_a_spinner_error() -> None:
    from std_msgs.msg import String

    from radardistill_ros.ros_client import spun_node

    seen: list[str] = []

    def cb(msg) -> None:
        seen.append(msg.data)
        raise ValueError("spinner error")

    with pytest.raises(KeyError):
        with spun_node("ros_client_body") as node:
            node.create_subscription(String, "/ros_client_body", cb, 10)
            pub = node.create_publisher(String, "/ros_client_body", 10)
            assert _wait(lambda: pub.get_subscription_count() > 0)
            pub.publish(String(data="x"))
            assert _wait(lambda: seen == ["x"])  # the callback raised in the spinner
            raise KeyError("from the body")
