"""An rclpy client node spun in a background thread, with a teardown that cannot race the spinner.

Used by the tools and tests that talk to the detector node from another process (replay-evaluate,
the replay tests). ``Executor.spin()`` in a thread followed by ``executor.shutdown(timeout)`` and
``node.destroy_node()`` is the usual pattern, but when the spinner is still inside a callback or a
wait when the timeout expires, destroying the node under it can deadlock or crash (rclpy issues
#260 and #663). Here the spinner polls a stop flag every ``period`` seconds and is joined *before*
anything is destroyed; each client gets its own :class:`rclpy.Context` so that it never shares
or shuts down the global one.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def spun_node(name: str, period: float = 0.05, join_timeout: float = 10.0) -> Iterator[Any]:
    """Yield an rclpy node (own context) whose callbacks run in a background thread.

    Entities created on the node while it is spinning are picked up within ``period`` seconds.
    On exit: stop flag -> join the spinner (``join_timeout`` s) -> destroy node -> shut the
    context down. If the spinner does not stop in time the node is left to process exit with a
    warning rather than destroyed under a running wait (which is what hangs). Exceptions raised
    while spinning (callbacks included) do not stop the spinner; the first is re-raised on exit.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(args=None, context=context)
    node = rclpy.create_node(name, context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        while not stop.is_set() and context.ok():
            try:
                executor.spin_once(timeout_sec=period)
            except Exception as exc:  # a dead spinner would silently lose every later message
                errors.append(exc)
                if len(errors) > 100:
                    return

    spinner = threading.Thread(target=loop, daemon=True, name=f"{name}_spin")
    spinner.start()
    body_failed = True
    try:
        yield node
        body_failed = False
    finally:
        stop.set()
        spinner.join(join_timeout)
        if spinner.is_alive():
            warnings.warn(f"{name}: spinner still busy after {join_timeout} s; leaving the node to "
                          "process exit", RuntimeWarning, stacklevel=2)
        else:
            executor.shutdown(timeout_sec=join_timeout)
            node.destroy_node()
            context.try_shutdown()
        if errors and not body_failed:  # never mask the exception of the with-body
            raise RuntimeError(f"{name}: {len(errors)} error(s) while spinning, the first: {errors[0]!r}") \
                from errors[0]
