"""
Unit tests of netlab.tcp with in-memory transports and a fake clock, and one
flow-control test over a real loopback connection.
"""

from __future__ import annotations

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import tcp
from netlab.limits import Limits
from netlab.services import echo, greeting
from tests.support import bounded, connect, until_intake_stops


def connected(
    factory: tcp.TCPFactory,
) -> tuple[tcp.TCPConnection, StringTransport]:
    """
    :return: a protocol from ``factory`` connected to a fresh StringTransport.
    """
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8007))
    transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
    protocol.makeConnection(transport)
    return protocol, transport


class EchoTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.factory = echo.EchoFactory(Limits(idle_timeout=5), reactor=self.clock)
        self.protocol, self.transport = connected(self.factory)

    def test_echoes_every_byte(self) -> None:
        for chunk in (b"a", b"\x00\xff" * 1000, b"last"):
            self.protocol.dataReceived(chunk)
        self.assertEqual(self.transport.value(), b"a" + b"\x00\xff" * 1000 + b"last")
        self.assertEqual(
            (self.protocol.bytes_in, self.protocol.bytes_out), (2005, 2005)
        )

    def test_registers_a_streaming_producer(self) -> None:
        """
        The echo's Backpressure feeds the transport: the transport can pause
        the echo when its write buffer is full.
        """
        producer = self.transport.producer
        self.assertIsInstance(producer, tcp.Backpressure)
        self.assertIs(producer, self.protocol.wrappedProtocol.backpressure)
        self.assertTrue(self.transport.streaming)

    def test_pause_stops_reading_from_peer(self) -> None:
        """
        When the transport pauses the echo, the echo pauses reading from the
        peer, and resumes it when asked.
        """
        producer = self.transport.producer
        producer.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.assertTrue(producer.paused)
        producer.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertFalse(producer.paused)

    def test_half_close_flushes_then_closes(self) -> None:
        """
        When the peer stops writing, the echo unregisters (so the transport
        may close) and closes after what it already wrote.
        """
        self.protocol.dataReceived(b"pending")
        self.protocol.readConnectionLost()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(self.transport.value(), b"pending")

    def test_idle_timeout_aborts(self) -> None:
        """
        A silent connection is aborted (not gracefully closed, which would wait
        on a peer that may never read) after the idle timeout; any data
        restarts the timer.
        """
        self.clock.advance(4)
        self.protocol.dataReceived(b"x")
        self.clock.advance(4)
        self.assertFalse(self.transport.disconnected)
        with capturedLogs() as events:
            self.clock.advance(1)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(
            [(e.get("service"), e.get("peer"), e.get("timeout")) for e in events],
            [("echo", "127.0.0.1:40000", 5)],
        )

    def test_tracks_connections(self) -> None:
        """
        The factory knows its live connections and says when none are left.
        """
        self.assertEqual(self.factory.connections, {self.protocol})
        drained = self.factory.drained()
        self.assertNoResult(drained)
        with capturedLogs() as events:
            self.protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        self.assertEqual(self.factory.connections, set())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(
            [(e["bytes_in"], e["bytes_out"], e["peer"]) for e in events],
            [(0, 0, "127.0.0.1:40000")],
        )


class GreetingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        factory = greeting.GreetingFactory(reactor=self.clock)
        self.protocol, self.transport = connected(factory)

    def test_answers_once_and_closes(self) -> None:
        with capturedLogs() as events:
            self.protocol.dataReceived(b"Hello from client!")
        self.protocol.dataReceived(b"more, ignored")
        self.assertEqual(self.transport.value(), b"Hello from server!")
        self.assertTrue(self.transport.disconnecting)
        [greeting] = [e for e in events if "size" in e]
        self.assertEqual(greeting["said"], b"Hello from client!")
        self.assertEqual(greeting["size"], 18)

    def test_reads_at_most_1024_bytes_of_the_message(self) -> None:
        with capturedLogs() as events:
            self.protocol.dataReceived(b"x" * 5000)
        [event] = [e for e in events if "size" in e]
        self.assertEqual(event["size"], greeting.GREETING_READ_SIZE)
        self.assertEqual(self.transport.value(), greeting.GREETING)

    def test_silent_half_close_is_greeted(self) -> None:
        self.protocol.readConnectionLost()
        self.assertEqual(self.transport.value(), greeting.GREETING)
        self.assertTrue(self.transport.disconnecting)

    def test_idle_timeout_uses_default_limits(self) -> None:
        self.clock.advance(Limits().idle_timeout - 0.1)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.transport.value(), b"")


class LimitsTests(SynchronousTestCase):
    def test_rejects_non_positive_timeout(self) -> None:
        for bad in (0, -1, float("nan")):
            self.assertRaises(ValueError, Limits, idle_timeout=bad)


class DescribeAddressTests(SynchronousTestCase):
    def test_forms(self) -> None:
        self.assertEqual(
            tcp.describe_address(IPv4Address("TCP", "10.0.0.1", 80)), "10.0.0.1:80"
        )
        self.assertEqual(
            tcp.describe_address(IPv6Address("TCP", "::1", 80)), "[::1]:80"
        )
        self.assertIn("/tmp/s", tcp.describe_address(UNIXAddress("/tmp/s")))


class ClientTests(SynchronousTestCase):
    def test_timeout_covers_connecting(self) -> None:
        """
        A server that never answers the connect fails the call after ``timeout``.
        """
        reactor = MemoryReactorClock()
        reply = echo.echo("tcp:127.0.0.1:8007", b"x", reactor=reactor, timeout=3)
        self.assertEqual(len(reactor.tcpClients), 1)
        reactor.advance(2.9)
        self.assertNoResult(reply)
        reactor.advance(0.1)
        self.failureResultOf(reply, defer.TimeoutError)

    def test_bad_endpoint_fails_the_deferred(self) -> None:
        reply = greeting.greet("nonsense:1", reactor=MemoryReactorClock())
        self.failureResultOf(reply, ValueError)


class LoopbackTests(TestCase):
    """
    Behaviour that needs the kernel: real sockets on 127.0.0.1.
    """

    timeout = 120

    async def start(self, factory: tcp.TCPFactory) -> int:
        from twisted.internet import reactor

        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port

    async def test_client_that_never_reads_is_paused(self) -> None:
        """
        A client that sends 64 MiB and reads nothing stops the echo reading
        from it once the kernel's buffers are full, instead of the server
        buffering it; when the client reads again, every byte comes back.
        """
        from twisted.internet import reactor

        factory = echo.EchoFactory()
        port = await self.start(factory)
        peer = await connect("127.0.0.1", port)
        peer.transport.pauseProducing()
        message = bytes(range(256)) * (64 * 1024 * 1024 // 256)
        peer.transport.write(message)
        [server] = factory.connections
        await until_intake_stops(server)
        self.assertTrue(server.transport.producerPaused)
        self.assertNotIn(server.transport, reactor.getReaders())
        self.assertLess(server.bytes_in, len(message) // 2)
        # What the server holds for this client: its transport's buffers
        # (private attributes of Twisted's FileDescriptor, read, not changed).
        unsent = len(server.transport.dataBuffer) + server.transport._tempDataLen
        self.assertLessEqual(unsent, 2 * server.transport.bufferSize)

        peer.transport.resumeProducing()
        peer.transport.loseWriteConnection()
        await bounded(peer.closed)
        self.assertEqual(len(peer.received), len(message))
        self.assertEqual(bytes(peer.received), message)

    async def test_reply_too_large(self) -> None:
        port = await self.start(echo.EchoFactory())
        reply = echo.echo(f"tcp:127.0.0.1:{port}", b"x" * 5000, max_reply=1000)
        await self.assertFailure(bounded(reply), tcp.ReplyTooLarge)

    async def test_client_accepts_endpoint_objects(self) -> None:
        from twisted.internet import reactor

        port = await self.start(greeting.GreetingFactory())
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        self.assertEqual(await bounded(greeting.greet(endpoint)), greeting.GREETING)
