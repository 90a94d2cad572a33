"""
The bare autobahn baseline: a
:class:`~autobahn.twisted.websocket.WebSocketServerProtocol` that answers a
text message ``m`` with ``Echo: m`` (and a binary one with its bytes, as netlab's
service does), with autobahn's default settings.

``python -m netlab.tools.bench.bare_ws --port PORT``
"""

from __future__ import annotations

from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)

from netlab.tools.bench._bare import serve


class Echo(WebSocketServerProtocol):
    """
    ``Echo: m`` for a text message ``m``; the same bytes for a binary one.
    """

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload if isBinary else b"Echo: " + payload, isBinary)


def factory() -> WebSocketServerFactory:
    made = WebSocketServerFactory()
    made.protocol = Echo
    return made


def main(argv: list[str] | None = None) -> int:
    return serve(__doc__, factory, argv)


if __name__ == "__main__":
    raise SystemExit(main())
