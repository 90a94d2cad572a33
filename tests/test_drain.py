"""
Graceful drain on stop, and admission within the connection limits.
"""

from __future__ import annotations

from prometheus_client import REGISTRY
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from netlab import http, websocket
from netlab.limits import Limits
from netlab.services import echo, greeting, hello, wsecho
from netlab.testing import serve
from netlab.tracking import RETRY_AFTER, drain
from tests.support import WAIT, abort, bounded, connect
from tests.test_protect import response_head


class DrainTests(TestCase):
    """
    :func:`netlab.tracking.drain` in process.
    """

    timeout = 60

    async def test_echo_returns_what_it_received(self) -> None:
        factory = echo.EchoFactory()
        served = await serve(self, factory)
        peer = await connect(served.host, served.port)
        peer.transport.write(b"x" * 100_000)
        await bounded(peer.received_at_least(1))
        await drain([factory], WAIT, reactor)
        await bounded(peer.closed)
        self.assertEqual(bytes(peer.received), b"x" * 100_000)

    async def test_idle_keep_alive_closes_and_new_connections_refused(self) -> None:
        site = http.HTTPSite(hello.Root())
        served = await serve(self, site)
        peer = await connect(served.host, served.port)
        peer.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await bounded(peer.received_at_least(len(hello.HELLO)))
        await drain([site], WAIT, reactor)
        await bounded(peer.closed)
        self.assertNotIn(b"Connection: close", bytes(peer.received))
        late = await connect(served.host, served.port)
        head = await response_head(late)
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        await abort(late)


class AdmissionTests(TestCase):
    """
    ``--max-connections`` and ``--max-per-ip``.
    """

    timeout = 60

    async def test_tcp_closed_at_once(self) -> None:
        factory = echo.EchoFactory(limits=Limits(max_connections=2))
        served = await serve(self, factory)
        labels = {"service": "echo", "reason": "max-connections"}
        before = REGISTRY.get_sample_value("netlab_connections_refused_total", labels)
        await self.assert_echo_cap(served, 2)
        after = REGISTRY.get_sample_value("netlab_connections_refused_total", labels)
        self.assertEqual(after, (before or 0) + 1)

    async def assert_echo_cap(self, served, cap: int) -> None:
        """
        ``cap`` echo connections are served, the next is closed unanswered,
        and once one of them goes a new one is served again.
        """
        held = [await connect(served.host, served.port) for _ in range(cap)]
        for n, peer in enumerate(held):
            peer.transport.write(b"%d" % n)
            self.assertEqual(await bounded(peer.received_at_least(1)), b"%d" % n)
        extra = await connect(served.host, served.port)
        extra.transport.write(b"x")
        await bounded(extra.closed)
        self.assertEqual(bytes(extra.received), b"")
        await abort(held[0])
        again = await connect(served.host, served.port)
        again.transport.write(b"in")
        self.assertEqual(await bounded(again.received_at_least(2)), b"in")
        for peer in (*held[1:], again):
            await abort(peer)

    async def test_per_ip(self) -> None:
        factory = greeting.GreetingFactory(limits=Limits(max_per_ip=1))
        served = await serve(self, factory)
        first = await connect(served.host, served.port)
        second = await connect(served.host, served.port)
        await bounded(second.closed)
        first.transport.write(b"hi")
        self.assertEqual(await bounded(first.closed), None)
        self.assertIn(b"Hello from server!", bytes(first.received))

    async def test_per_ip_boundary_tcp(self) -> None:
        """
        At ``--max-per-ip 2``, two echo connections from one address are
        served, the third is closed unanswered, and once one goes a new one
        is served again.
        """
        served = await serve(self, echo.EchoFactory(limits=Limits(max_per_ip=2)))
        await self.assert_echo_cap(served, 2)

    async def test_per_ip_boundary_http(self) -> None:
        """
        At ``--max-per-ip 2``, two HTTP connections from one address get
        ``200``, the third ``503`` with ``Retry-After``.
        """
        served = await serve(self, hello.site(limits=Limits(max_per_ip=2)))
        held = [await connect(served.host, served.port) for _ in range(2)]
        for peer in held:
            peer.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await response_head(peer)
            self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        await self.assert_503(served)
        await abort(held[0])
        again = await connect(served.host, served.port)
        again.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await response_head(again)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        for peer in (held[1], again):
            await abort(peer)

    async def test_per_ip_boundary_websocket(self) -> None:
        """
        At ``--max-per-ip 2``, two WebSockets from one address are opened
        and echo, the third is refused with ``503``.
        """
        factory = wsecho.EchoFactory(limits=Limits(max_per_ip=2))
        served = await serve(self, factory)
        held = []
        for n in range(2):
            client = await websocket.connect(served.url(scheme="ws"), timeout=WAIT)
            held.append(client)
            client.send(f"m{n}")
            self.assertEqual(await bounded(client.receive()), f"Echo: m{n}")
        await self.assert_503(served)
        for client in held:
            await bounded(client.close())

    async def test_http_503(self) -> None:
        site = http.HTTPSite(hello.Root(), limits=Limits(max_connections=1))
        served = await serve(self, site)
        holder = await connect(served.host, served.port)
        holder.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await response_head(holder)
        await self.assert_503(served)
        await abort(holder)

    async def test_websocket_503(self) -> None:
        factory = wsecho.EchoFactory(limits=Limits(max_connections=1))
        served = await serve(self, factory)
        holder = await websocket.connect(served.url(scheme="ws"), timeout=WAIT)
        await self.assert_503(served)
        await bounded(holder.close())

    async def assert_503(self, served) -> None:
        extra = await connect(served.host, served.port)
        extra.transport.write(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        head = await response_head(extra)
        self.assertTrue(head.startswith(b"HTTP/1.1 503 "), head)
        self.assertIn(b"Retry-After: %d\r\n" % RETRY_AFTER, head)
        await bounded(extra.closed)
