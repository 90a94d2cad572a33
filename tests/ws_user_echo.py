"""
The echo written as a user would write it, on netlab's public WebSocket
API only: the conformance suite and ``twistd -n netlab-ws --handler
tests.ws_user_echo:handler`` serve it, to show that a user's service gets
the same guarantees as netlab's own echo.
"""

from __future__ import annotations

from netlab.websocket import Handler, ServerConnection


async def handler(connection: ServerConnection) -> None:
    """
    The lesson's shape: text ``m`` is answered with ``Echo: m``, binary
    with the same bytes.
    """
    async for message in connection:
        if isinstance(message, str):
            await connection.send(f"Echo: {message}")
        else:
            await connection.send(message)


class EchoHandler(Handler):
    """
    The same echo as a :class:`~netlab.websocket.Handler`, with per-connection
    state: ``count`` answers how many messages came before it.
    """

    def on_open(self) -> None:
        self.count = 0

    def on_message(self, message: str | bytes) -> None:
        self.count += 1
        if message == "count":
            self.send(str(self.count - 1))
        elif isinstance(message, str):
            self.send(f"Echo: {message}")
        else:
            self.send(message)


#: Not a handler: ``--handler`` refuses it with one line.
not_a_handler = 42


def plain_function(connection: ServerConnection) -> None:
    """
    Not a handler either: a handler function is ``async def``.
    """
