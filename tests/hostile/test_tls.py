"""
Hostile TLS clients against every netlab service listening on
``netlab-ssl:`` (echo, greeting, HTTP, WebSocket), over loopback.

Bytes that are not a TLS handshake get the connection dropped at once (at
most a TLS alert first); a client that stops halfway through its handshake
is dropped by the idle timeout; after each, a real TLS client is served.
The timeouts run on a :class:`~twisted.internet.task.Clock` the test
advances, so a real client, however slowly a loaded machine runs it, is never
cut off by one.

Already covered in ``tests/test_conformance.py`` (echo and greeting) and the
HTTPS/WSS contracts: a plain client, a record header plus random bytes, and a
client silent from the start.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from netlab import http, websocket
from netlab.limits import Limits
from netlab.services import echo, greeting, hello, wsecho
from netlab.testing import Served, serve
from tests.hostile._helpers import PROMPT, closed_promptly, open_peer
from tests.support import bounded, shared_certificates


def client_hello() -> bytes:
    """
    :return: the first flight of a real TLS client: a ClientHello record.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    connection = SSL.Connection(context, None)
    connection.set_connect_state()
    connection.set_tlsext_host_name(b"localhost")
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


def junk(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


HELLO = client_hello()

#: name -> bytes a client sends instead of (or before) a TLS handshake.
GARBAGE = {
    "random bytes": b"\x00" + junk(4096, 1),
    "plain HTTP": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "junk then a real ClientHello": b"hello there\r\n" + HELLO,
    "ClientHello with a corrupt body": HELLO[:5] + junk(len(HELLO) - 5, 2),
    "record header claiming 16 MiB": b"\x16\x03\x01\xff\xff" + junk(64, 3),
    "SSLv2 hello": b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10" + junk(37, 4),
    "alert record first": b"\x15\x03\x03\x00\x02\x02\x28",
    "application data first": b"\x17\x03\x03\x00\x10" + junk(16, 5),
}


async def echo_client(served: Served) -> None:
    reply = await echo.echo(served.endpoint, b"still there?", tls=served.client_tls)
    assert reply == b"still there?", reply


async def greeting_client(served: Served) -> None:
    reply = await greeting.greet(served.endpoint, tls=served.client_tls)
    assert reply == greeting.GREETING, reply


async def http_client(served: Served) -> None:
    response = await http.fetch(served.url("/"), tls=served.client_tls)
    assert (response.code, response.body) == (200, hello.HELLO), response


async def ws_client(served: Served) -> None:
    connection = await websocket.connect(
        served.url("/", scheme="ws"), tls=served.client_tls
    )
    connection.send("still there?")
    reply = await bounded(connection.receive())
    await bounded(connection.close())
    assert reply == "Echo: still there?", reply


SERVICES: dict[str, tuple[Callable[..., Any], Callable[[Served], Any]]] = {
    "Echo": (
        lambda limits, reactor: echo.EchoFactory(limits=limits, reactor=reactor),
        echo_client,
    ),
    "Greeting": (
        lambda limits, reactor: greeting.GreetingFactory(limits, reactor),
        greeting_client,
    ),
    "HTTP": (
        lambda limits, reactor: http.HTTPSite(
            hello.Root(), limits=limits, reactor=reactor
        ),
        http_client,
    ),
    "WebSocket": (
        lambda limits, reactor: wsecho.EchoFactory(limits, reactor=reactor),
        ws_client,
    ),
}

#: Generous: a prompt drop cannot be a timeout; on the test's clock, the
#: stalled tests advance past them.
PATIENT = Limits(idle_timeout=60, head_timeout=60, handshake_timeout=60)


class HostileTLS:
    """
    A mixin: ``make`` builds the service from limits, ``client`` is a
    normal TLS client that must still be served.
    """

    timeout = 60
    make: Callable[..., Any]
    client: Callable[[Served], Any]

    async def start(self, limits: Limits, clock: Any = None) -> Served:
        """
        Serve over TLS, the service's timeouts on ``clock`` (the reactor's
        when not given); :attr:`factory` is the service.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        self.factory = self.make(limits, clock)
        return await serve(self, self.factory, certificates=shared_certificates())

    async def stall(self, data: bytes) -> Any:
        """
        Serve on a clock, send ``data`` and wait until the service holds the
        connection, then let every timeout pass but the last second of each.

        :return: the peer, still connected.
        """
        clock = task.Clock()
        served = await self.start(PATIENT, clock)
        peer = await open_peer(self, served)
        peer.transport.write(data)
        for _ in range(int(PROMPT / 0.01)):
            if self.factory.connections:
                break
            await task.deferLater(reactor, 0.01)
        self.assertTrue(self.factory.connections)
        clock.advance(PATIENT.idle_timeout - 1)
        self.assertIsNone(peer.reason)
        self.clock, self.served = clock, served
        return peer

    async def assert_serves_normally(self, served: Served) -> None:
        await bounded(defer.Deferred.fromCoroutine(self.client(served)), PROMPT * 3)

    async def test_garbage_is_dropped_at_once(self) -> None:
        """
        Each kind of garbage: the server answers nothing but (perhaps) a TLS
        alert, and closes well before any timeout.
        """
        served = await self.start(PATIENT)
        errors: list[dict] = []

        def observe(event: dict) -> None:
            if event.get("log_level") in (LogLevel.error, LogLevel.critical):
                errors.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        for name, data in GARBAGE.items():
            peer = await open_peer(self, served)
            peer.transport.write(data)
            await closed_promptly(peer)
            received = bytes(peer.received)
            self.assertTrue(
                received == b"" or received.startswith(b"\x15\x03"),
                (name, received[:50]),
            )
        # A client's garbage is not the server's error: nothing at error level.
        self.assertEqual([formatEvent(event) for event in errors], [])
        await self.assert_serves_normally(served)

    async def test_stalled_handshake_is_dropped(self) -> None:
        """
        A client that sends its ClientHello, reads the server's answer and
        then says nothing more is dropped by the idle timeout, not before.
        """
        peer = await self.stall(HELLO)
        first = await bounded(peer.received_at_least(5), PROMPT)
        self.assertEqual(first[:1], b"\x16")  # a handshake record: ServerHello
        self.assertIsNone(peer.reason)
        self.clock.advance(1)
        await closed_promptly(peer)
        await self.assert_serves_normally(self.served)

    async def test_partial_client_hello_is_dropped(self) -> None:
        """
        Half a ClientHello, then silence: dropped by the idle timeout, not
        before, having been sent nothing.
        """
        peer = await self.stall(HELLO[: len(HELLO) // 2])
        self.clock.advance(1)
        await closed_promptly(peer)
        self.assertEqual(bytes(peer.received), b"")
        await self.assert_serves_normally(self.served)


for _name, (_make, _client) in SERVICES.items():
    globals()[f"{_name}TLSTests"] = type(
        f"{_name}TLSTests",
        (HostileTLS, TestCase),
        {
            "make": staticmethod(_make),
            "client": staticmethod(_client),
            "__module__": __name__,
        },
    )
del _name, _make, _client
