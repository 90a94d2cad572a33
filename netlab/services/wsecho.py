"""
The WebSocket echo: each text message ``m`` answered with ``Echo: m``, each
binary message with its bytes. The lesson's WebSocket server, as a
:class:`~netlab.websocket.Handler` of a few lines; serve it on an endpoint
or at a path of a site::

    endpoint.listen(WebSocketFactory(Echo))
    root.putChild(b"ws", WebSocketMount(Echo))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from netlab.auth import Protection
from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.tracking import ConnectionTracker
from netlab.websocket import Handler, WebSocketFactory

#: What the echo puts before each text message.
PREFIX = "Echo: "


class Echo(Handler):
    """
    Answers each text message ``m`` with ``Echo: m``, and each binary
    message with the same bytes.
    """

    __slots__ = ()
    # A reply per message, and the server stops reading while the client is
    # not: what waits is at most the replies to one read's messages (a
    # 256 KiB read of the smallest frames counts about 3 MiB).
    max_queue = 4 * 1024 * 1024

    def on_message(self, message: str | bytes) -> None:
        self.send(PREFIX + message if type(message) is str else message)


class EchoFactory(WebSocketFactory):
    """
    Serves :class:`Echo`: a :class:`~netlab.websocket.WebSocketFactory` with
    the arguments it had before the handler API (positional, no handler).
    """

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        allowed_origins: Iterable[str] = (),
        reactor: Any = None,
        tracker: ConnectionTracker | None = None,
        protection: Protection | None = None,
    ) -> None:
        super().__init__(
            Echo,
            limits=limits,
            allowed_origins=allowed_origins,
            reactor=reactor,
            tracker=tracker,
            protection=protection,
        )
