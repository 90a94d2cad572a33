"""
What the hostile-input tests share: raw peers on loopback, bounded waits, and
a parser for the responses a raw HTTP client reads.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer

from netlab.testing import Served
from tests.support import Peer, abort, bounded, connect

#: Seconds within which an answer or a close counts as prompt: an upper
#: bound only (a correct server answers in milliseconds), so generous enough
#: that a loaded machine cannot miss it, and well under the timeouts the
#: hostile suites set (60 s), so that a close they see is never a timeout's.
PROMPT = 10.0


async def open_peer(case: Any, served: Served) -> Peer:
    """
    :return: a raw TCP peer connected to ``served``, aborted when the test ends.
    """
    peer = await connect(served.host, served.port)
    case.addCleanup(abort, peer)
    return peer


async def closed_promptly(peer: Peer, seconds: float = PROMPT) -> None:
    """
    Wait (at most ``seconds``) for the server to close ``peer``'s connection.
    """
    await bounded(observe(peer.closed), seconds)


def observe(d: defer.Deferred[Any]) -> defer.Deferred[None]:
    """
    :return: a new Deferred that fires when ``d`` does, so that a timeout on
        it leaves ``d`` (and whoever else waits on it) alone.
    """
    seen: defer.Deferred[None] = defer.Deferred()

    def fire(result: Any) -> Any:
        if not seen.called:
            seen.callback(None)
        return result

    d.addBoth(fire)
    return seen


def reset(peer: Peer) -> None:
    """
    Close ``peer``'s connection with a TCP reset (``SO_LINGER`` 0), not a FIN.
    """
    handle = peer.transport.getHandle()
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.transport.abortConnection()


@dataclass
class Response:
    """
    One HTTP response as a raw client reads it.
    """

    status: int
    headers: dict[bytes, list[bytes]]
    body: bytes

    def header(self, name: bytes) -> list[bytes]:
        return self.headers.get(name.lower(), [])

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r} {self.body[:200]!r}>"


def parse_responses(
    data: bytes, head_only: bool = False
) -> tuple[list[Response], bytes]:
    """
    Split ``data`` into the complete responses it holds (framed by
    ``Content-Length``, as every netlab response is; 1xx responses have no
    body).

    :return: the responses, and what is left after them.
    """
    responses = []
    while True:
        head, found, rest = data.partition(b"\r\n\r\n")
        if not found:
            return responses, data
        status_line, *lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        status = int(status_line.split(b" ")[1])
        size = 0
        if status >= 200 and not head_only:
            size = int(headers.get(b"content-length", [b"0"])[0])
        if len(rest) < size:
            return responses, data
        responses.append(Response(status, headers, rest[:size]))
        data = rest[size:]


async def next_response(peer: Peer, seconds: float = PROMPT) -> Response:
    """
    :return: the first complete final (not 1xx) response ``peer`` receives,
        within ``seconds``.
    """

    async def wait() -> Response:
        while True:
            responses, _ = parse_responses(bytes(peer.received))
            final = [r for r in responses if r.status >= 200]
            if final:
                return final[0]
            if peer.reason is not None:
                raise AssertionError(
                    f"closed without a complete response: {bytes(peer.received)!r}"
                )
            await peer.received_at_least(len(peer.received) + 1)

    return await bounded(defer.Deferred.fromCoroutine(wait()), seconds)
