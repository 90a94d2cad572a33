"""
Hostile TCP clients against the echo and greeting services, over loopback:
connections reset (``SO_LINGER`` 0, so a RST rather than a FIN) at the worst
moments, and a flood of connects that close or reset at once.

After each, the server has forgotten every hostile connection (none leak)
and serves a normal client.

Already covered in ``tests/test_conformance.py``: random bytes then an abort,
an abort halfway through a 1 MiB echo, 1,000 simultaneous connect-and-abort.
"""

from __future__ import annotations

import random

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from netlab import tcp
from netlab.limits import Limits
from netlab.services import echo, greeting
from netlab.testing import Served, serve
from tests import user_tcp
from tests.hostile._helpers import PROMPT, observe, open_peer, reset
from tests.support import Peer, bounded, connect, raise_fd_limit

LIMITS = Limits(idle_timeout=60)


class Hostile:
    timeout = 60
    factory: tcp.TCPFactory

    async def start(self, factory: tcp.TCPFactory) -> Served:
        self.factory = factory
        return await serve(self, factory)

    async def all_forgotten(self) -> None:
        """
        Wait (bounded) until the service holds no connection.
        """
        await bounded(self.factory.drained(), PROMPT)
        self.assertEqual(self.factory.connections, set())

    async def until(self, condition, seconds: float = PROMPT) -> None:
        for _ in range(int(seconds / 0.01)):
            if condition():
                return
            await task.deferLater(reactor, 0.01)
        self.fail(f"not so after {seconds}s: {condition}")


class EchoTests(Hostile, TestCase):
    async def setUp(self) -> None:
        self.served = await self.start(echo.EchoFactory(limits=LIMITS))

    async def assert_serves_normally(self) -> None:
        message = random.Random(7).randbytes(100_000)
        reply = await echo.echo(self.served.endpoint, message, timeout=PROMPT * 3)
        self.assertEqual(reply, message)

    async def test_reset_mid_message(self) -> None:
        """
        A RST while the echo is streaming back a 1 MiB message.
        """
        peer = await open_peer(self, self.served)
        peer.transport.write(random.Random(1).randbytes(1024 * 1024))
        await peer.received_at_least(1)
        reset(peer)
        await self.all_forgotten()
        await self.assert_serves_normally()

    async def test_reset_while_server_is_paused(self) -> None:
        """
        A client that stops reading until the echo has paused (its write
        buffer full), then resets: the paused connection is gone too.
        """
        peer = await open_peer(self, self.served)
        peer.transport.pauseProducing()
        peer.transport.write(bytes(16 * 1024 * 1024))
        await self.until(lambda: len(self.factory.connections) == 1)
        [server] = self.factory.connections
        await self.until(lambda: server.transport.producerPaused, 10)
        reset(peer)
        await self.all_forgotten()
        await self.assert_serves_normally()

    async def test_reset_after_half_close(self) -> None:
        """
        The client shuts down writing (the echo is finishing its reply), then
        resets before reading it.
        """
        peer = await open_peer(self, self.served)
        peer.transport.pauseProducing()
        peer.transport.write(bytes(4 * 1024 * 1024))
        peer.transport.loseWriteConnection()
        await task.deferLater(reactor, 0.05)
        reset(peer)
        await self.all_forgotten()
        await self.assert_serves_normally()

    async def test_flood_of_connects_closed_and_reset(self) -> None:
        await flood(self)
        await self.assert_serves_normally()


class UserEchoTests(EchoTests):
    """
    The same attacks on a user's echo served by :class:`~netlab.tcp.TCPFactory`.
    """

    async def setUp(self) -> None:
        self.served = await self.start(tcp.TCPFactory(user_tcp.Mirror, limits=LIMITS))


class GreetingTests(Hostile, TestCase):
    async def setUp(self) -> None:
        self.served = await self.start(greeting.GreetingFactory(limits=LIMITS))

    async def assert_serves_normally(self) -> None:
        reply = await greeting.greet(self.served.endpoint, timeout=PROMPT * 3)
        self.assertEqual(reply, greeting.GREETING)

    async def test_reset_before_saying_anything(self) -> None:
        peer = await open_peer(self, self.served)
        await self.until(lambda: len(self.factory.connections) == 1)
        reset(peer)
        await self.all_forgotten()
        await self.assert_serves_normally()

    async def test_reset_mid_message(self) -> None:
        """
        Half a message, then a RST: before, or as, the server answers.
        """
        for size in (1, 1000, 100_000):
            peer = await open_peer(self, self.served)
            peer.transport.write(b"x" * size)
            reset(peer)
        await self.all_forgotten()
        await self.assert_serves_normally()

    async def test_reset_after_greeting(self) -> None:
        """
        The client reads the greeting and resets instead of closing.
        """
        peer = await open_peer(self, self.served)
        peer.transport.write(b"Hello from client!")
        self.assertEqual(
            await peer.received_at_least(len(greeting.GREETING)), greeting.GREETING
        )
        if peer.reason is None:
            reset(peer)
        await self.all_forgotten()
        await self.assert_serves_normally()

    async def test_flood_of_connects_closed_and_reset(self) -> None:
        await flood(self)
        await self.assert_serves_normally()


async def flood(case: Hostile, count: int = 600) -> None:
    """
    ``count`` simultaneous connections: a third close at once (FIN), a third
    reset at once, a third send a byte and reset. The service answers the
    rest as usual and forgets every one of them.
    """
    raise_fd_limit(4096)
    served = case.served

    async def one(i: int) -> None:
        peer: Peer = await connect(served.host, served.port)
        if i % 3 == 0:
            peer.transport.loseConnection()
        elif i % 3 == 1:
            reset(peer)
        else:
            peer.transport.write(b"x")
            reset(peer)
        await bounded(observe(peer.closed), PROMPT * 3)

    results = await defer.DeferredList(
        [defer.Deferred.fromCoroutine(one(i)) for i in range(count)],
        consumeErrors=True,
    )
    failures = [result for ok, result in results if not ok]
    case.assertEqual(failures, [])
    await case.all_forgotten()
