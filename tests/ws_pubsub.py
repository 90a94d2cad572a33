"""
A publish/subscribe service written as a user would write it, on netlab's
public API only: ``/ws/CHANNEL`` subscribes the connection to ``CHANNEL``,
and each message it sends is published there. ``twistd netlab-http
--resource tests.ws_pubsub:root --broker redis://...`` serves it, with
``/healthz``.
"""

from __future__ import annotations

from twisted.web.resource import Resource

from netlab import pubsub
from netlab.websocket import Handler, WebSocketMount


class Relay(Handler):
    """
    Subscribed to the channel its path names; publishes what it receives.
    """

    # Small, so that a test's stalled reader overflows it soon.
    max_queue = 64 * 1024
    overflow = "drop"

    def on_open(self) -> None:
        self.channel = self.path.rsplit("/", 1)[-1] or "default"
        self.subscribe(self.channel)

    def on_message(self, message: str | bytes) -> None:
        pubsub.publish(self.channel, message)


class ClosingRelay(Relay):
    """
    A relay whose slow reader is closed (1013) rather than dropped from.
    """

    overflow = "close"
    overflow_code = 1013


def make_root() -> Resource:
    """
    :return: ``/ws/CHANNEL`` (drop policy) and ``/close/CHANNEL`` (close).
    """
    root = Resource()
    for name, handler in ((b"ws", Relay), (b"close", ClosingRelay)):
        mount = WebSocketMount(handler)
        parent = Resource()
        parent.getChild = lambda path, request, mount=mount: mount  # type: ignore[method-assign]
        root.putChild(name, parent)
    return root


root = make_root()
