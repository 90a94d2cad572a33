"""
A user's own TCP protocol served through :class:`netlab.tcp.TCPFactory`: the
same limits, timeouts, drain, metrics and logs as netlab's echo, in memory,
over loopback (plain and TLS), and through ``twistd netlab-tcp``.
"""

from __future__ import annotations

import pathlib

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netlab import tcp
from netlab.limits import Limits
from netlab.services import greeting
from netlab.tap import tcp as tcp_tap
from netlab.testing import serve
from tests import user_tcp
from tests.support import WAIT, bounded, connect, until_intake_stops
from tests.test_metrics import Scraper, delta
from tests.test_tap import listeners
from tests.test_twistd import LOOPBACK_ANY_PORT, TwistdCase, twistd


def connected(
    factory: tcp.TCPFactory, host: str = "127.0.0.1"
) -> tuple[tcp.TCPConnection | Protocol, StringTransport]:
    """
    :return: what ``factory`` builds for a peer at ``host``, connected to a
        fresh StringTransport.
    """
    peer = IPv4Address("TCP", host, 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    return protocol, transport


class Draining(Protocol):
    """
    A protocol with its own ``drain()``.
    """

    drained = False

    def drain(self) -> None:
        self.drained = True


@implementer(IHalfCloseableProtocol)
class HalfCloser(Protocol):
    """
    Says how many bytes it got once the peer stops writing.
    """

    size = 0

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"%d" % self.size)
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class InMemoryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()

    def serve(self, wrapped, **limits) -> tcp.TCPFactory:
        return tcp.TCPFactory(
            wrapped, Limits(**limits), reactor=self.clock, service_name="upper"
        )

    def test_serves_a_protocol_class(self) -> None:
        factory = self.serve(user_tcp.Upper)
        with capturedLogs() as events:
            connection, transport = connected(factory)
            connection.dataReceived(b"hello\r\nworld\r\n")
        self.assertEqual(transport.value(), b"HELLO\r\nWORLD\r\n")
        self.assertIsInstance(connection.wrappedProtocol, user_tcp.Upper)
        self.assertEqual((connection.bytes_in, connection.bytes_out), (14, 14))
        self.assertEqual(factory.connections, {connection})
        [opened] = events
        self.assertEqual(
            (opened["service"], opened["peer"], opened["log_namespace"]),
            ("upper", "127.0.0.1:40000", "tests.user_tcp.Upper"),
        )
        self.assertEqual(factory.logPrefix(), "Upper")

    def test_serves_a_factory_and_starts_it(self) -> None:
        user = user_tcp.UpperFactory()
        factory = self.serve(user)
        factory.doStart()
        self.assertEqual(user.starts, 1)
        connection, transport = connected(factory)
        self.assertIs(connection.wrappedProtocol.factory, user)
        connection.dataReceived(b"a\r\n")
        self.assertEqual(transport.value(), b"A\r\n")
        self.assertEqual(factory.logPrefix(), "UpperFactory")
        factory.doStop()
        self.assertEqual(user.numPorts, 0)

    def test_not_a_factory(self) -> None:
        error = self.assertRaises(TypeError, tcp.TCPFactory, 42)
        self.assertIn("not int", str(error))

    def test_a_refusing_factory_closes(self) -> None:
        class Refusing(Factory):
            def buildProtocol(self, addr):
                return None

        connection, transport = connected(self.serve(Refusing()))
        self.assertTrue(transport.disconnected)

    def test_max_connections(self) -> None:
        """
        Up to the cap, connections are served; over it, closed at once.
        """
        factory = self.serve(user_tcp.Upper, max_connections=2)
        served = [connected(factory, f"10.0.0.{n}") for n in (1, 2)]
        for connection, transport in served:
            connection.dataReceived(b"x\r\n")
            self.assertEqual(transport.value(), b"X\r\n")
            self.assertFalse(transport.disconnected)
        with capturedLogs() as events:
            _, refused = connected(factory, "10.0.0.3")
        self.assertTrue(refused.disconnected)
        self.assertEqual([e["reason"] for e in events], ["max-connections"])
        served[0][0].connectionLost(Failure(ConnectionDone()))
        connection, transport = connected(factory, "10.0.0.3")
        self.assertFalse(transport.disconnected)

    def test_max_per_ip(self) -> None:
        factory = self.serve(user_tcp.Upper, max_per_ip=1)
        first, first_transport = connected(factory, "10.0.0.1")
        first.dataReceived(b"x\r\n")
        self.assertEqual(first_transport.value(), b"X\r\n")
        _, refused = connected(factory, "10.0.0.1")
        self.assertTrue(refused.disconnected)
        other, other_transport = connected(factory, "10.0.0.2")
        self.assertFalse(other_transport.disconnected)

    def test_idle_timeout(self) -> None:
        connection, transport = connected(self.serve(user_tcp.Upper, idle_timeout=5))
        self.clock.advance(4)
        connection.dataReceived(b"x")
        self.clock.advance(4)
        self.assertFalse(transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)

    def test_drain_calls_the_protocols_own(self) -> None:
        factory = self.serve(Draining)
        connection, transport = connected(factory)
        factory.drain()
        self.assertTrue(connection.wrappedProtocol.drained)
        self.assertFalse(transport.disconnecting)

    def test_drain_closes_a_protocol_without_one(self) -> None:
        factory = self.serve(user_tcp.Upper)
        connection, transport = connected(factory)
        factory.drain()
        self.assertTrue(transport.disconnecting)
        self.assertTrue(factory.draining)
        _, refused = connected(factory)
        self.assertTrue(refused.disconnected)

    def test_half_close_reaches_a_protocol_that_handles_it(self) -> None:
        connection, transport = connected(self.serve(HalfCloser))
        self.assertTrue(IHalfCloseableProtocol.providedBy(connection))
        connection.dataReceived(b"12345")
        connection.readConnectionLost()
        self.assertEqual(transport.value(), b"5")
        plain, _ = connected(self.serve(user_tcp.Upper))
        self.assertFalse(IHalfCloseableProtocol.providedBy(plain))

    def test_backpressure(self) -> None:
        """
        The helper makes a user protocol the producer of its transport.
        """

        class Pressed(Protocol):
            def connectionMade(self) -> None:
                self.backpressure = tcp.Backpressure(self.transport)

        connection, transport = connected(self.serve(Pressed))
        producer = transport.producer
        self.assertTrue(IPushProducer.providedBy(producer))
        self.assertTrue(transport.streaming)
        producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        producer.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        connection.wrappedProtocol.backpressure.release()
        self.assertIsNone(transport.producer)

    def test_closing_logs_and_forgets(self) -> None:
        factory = self.serve(user_tcp.Upper)
        connection, _ = connected(factory)
        connection.dataReceived(b"ab\r\n")
        drained = factory.drained()
        with capturedLogs() as events:
            connection.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(drained)
        [closed] = events
        self.assertEqual((closed["bytes_in"], closed["bytes_out"]), (4, 4))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class LoopbackTests(TestCase):
    timeout = 60

    async def test_plain_and_metrics(self) -> None:
        scraper = Scraper(self)
        await scraper.start()
        before = await scraper.scrape()
        factory = tcp.TCPFactory(user_tcp.Upper, service_name="upper-test")
        served = await serve(self, factory)
        reply = await greeting.greet(served.endpoint, b"hi\r\nbye\r\n", timeout=WAIT)
        self.assertEqual(reply, b"HI\r\n")
        await bounded(factory.drained())
        after = await scraper.scrape()
        for name, value in (
            ("netlab_connections_opened_total", 1),
            ("netlab_connections_closed_total", 1),
            ("netlab_received_bytes_total", 9),
            ("netlab_sent_bytes_total", 4),
        ):
            self.assertEqual(
                delta(before, after, name, service="upper-test"), value, name
            )

    async def test_tls(self) -> None:
        """
        Over netlab's TLS, the user's protocol hears that the handshake is
        done.
        """
        factory = tcp.TCPFactory(user_tcp.UpperFactory())
        served = await serve(self, factory, certificates=True)
        reply = await greeting.greet(
            served.endpoint, b"hi\r\nbye\r\n", tls=served.client_tls, timeout=WAIT
        )
        self.assertEqual(reply, b"TLS\r\nHI\r\n")

    async def test_a_reader_that_never_reads(self) -> None:
        """
        With :class:`~netlab.tcp.Backpressure`, a user's echo stops reading
        from a peer that does not read its answers.
        """

        class Mirror(Protocol):
            def connectionMade(self) -> None:
                tcp.Backpressure(self.transport)

            def dataReceived(self, data: bytes) -> None:
                self.transport.write(data)

        factory = tcp.TCPFactory(Mirror)
        served = await serve(self, factory)
        peer = await connect("127.0.0.1", served.port)
        self.addCleanup(lambda: peer.transport.abortConnection())
        peer.transport.pauseProducing()
        message = b"x" * (32 * 1024 * 1024)
        peer.transport.write(message)
        [server] = factory.connections
        await until_intake_stops(server)
        self.assertTrue(server.transport.producerPaused)
        self.assertLess(server.bytes_in, len(message) // 2)


class PluginOptionsTests(SynchronousTestCase):
    def parse(self, *args: str) -> tcp_tap.Options:
        options = tcp_tap.Options()
        options.parseOptions(list(args))
        return options

    def test_kinds(self) -> None:
        for path in (
            "tests.user_tcp:factory",
            "tests.user_tcp:UpperFactory",
            "tests.user_tcp:Upper",
        ):
            options = self.parse("--factory", path, "--idle-timeout", "7")
            [listener] = listeners(tcp_tap.makeService(options))
            self.assertEqual(options["listen"], ["tcp:8000:interface=127.0.0.1"], path)
            factory = listener.factory
            self.assertIsInstance(factory, tcp.TCPFactory)
            self.assertEqual(factory.limits.idle_timeout, 7)
            self.assertEqual(factory.service_name, "tcp")
            connection, transport = connected(factory)
            self.assertIsInstance(connection.wrappedProtocol, user_tcp.Upper)
            # Its idle timer is on the global reactor: stop it.
            connection.connectionLost(Failure(ConnectionDone()))

    def test_service_name(self) -> None:
        options = self.parse(
            "--factory", "tests.user_tcp:Upper", "--service-name", "up"
        )
        [listener] = listeners(tcp_tap.makeService(options))
        self.assertEqual(listener.factory.service_name, "up")

    def test_errors(self) -> None:
        for args, expected in (
            ((), "--factory PACKAGE.MODULE:NAME is required"),
            (
                ("--factory", "tests.user_tcp:not_a_factory"),
                "--factory tests.user_tcp:not_a_factory: expected a protocol "
                "factory or a Protocol class, got int",
            ),
            (("--factory", "tests.user_tcp:nope"), "tests.user_tcp has no 'nope'"),
            (("--factory", "tests.no_such_xyz:f"), "no module named"),
        ):
            error = self.assertRaises(usage.UsageError, self.parse, *args)
            self.assertIn(expected, str(error))
            self.assertNotIn("\n", str(error))


class TwistdTests(TwistdCase):
    """
    ``twistd netlab-tcp --factory``, as a user runs it.
    """

    async def test_serves_with_workers(self) -> None:
        child, [port] = await self.start(
            "netlab-tcp",
            *("--factory", "tests.user_tcp:Upper", "--workers", "2"),
            *("--listen", LOOPBACK_ANY_PORT),
            factories=("Upper",),
        )
        for _ in range(4):
            reply = await greeting.greet(
                f"tcp:127.0.0.1:{port}", b"ok\r\nbye\r\n", timeout=WAIT
            )
            self.assertEqual(reply, b"OK\r\n")
        await self.assert_stops_on_sigterm(child, port)

    async def test_serves_over_tls_with_wiretap_and_metrics(self) -> None:
        from netlab import certs, http
        from tests.test_wiretap import fields

        paths = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        capture = pathlib.Path(self.mktemp()).resolve()
        child, [metrics_port, port] = await self.start(
            "netlab-tcp",
            *("--factory", "tests.user_tcp:factory", "--wiretap", str(capture)),
            *(
                "--listen",
                f"ssl:0:privateKey={paths.server_key}:certKey={paths.server}",
            ),
            *("--metrics", LOOPBACK_ANY_PORT, "--service-name", "upper"),
            factories=("HTTPSite", r"UpperFactory \(WiretapFactory\) \(TLS\)"),
        )
        reply = await greeting.greet(
            f"tls:localhost:{port}",
            b"secret words\r\nbye\r\n",
            tls=tcp.ClientTLS(cacert=str(paths.ca)),
            timeout=WAIT,
        )
        self.assertEqual(reply, b"TLS\r\nSECRET WORDS\r\n")
        scraped = await http.fetch(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT
        )
        self.assertIn(
            b'netlab_connections_opened_total{service="upper"} 1.0', scraped.body
        )
        await self.assert_stops_on_sigterm(child, port)
        payloads = await fields(capture, "tcp.len > 0", "tcp.payload")
        seen = b"".join(bytes.fromhex(p[0].replace(":", "")) for p in payloads)
        self.assertIn(b"secret words", seen)
        self.assertIn(b"SECRET WORDS", seen)

    async def test_bad_factory_is_one_line(self) -> None:
        from tests.support import run

        for path, said in (
            ("tests.user_tcp:not_a_factory", b"got int"),
            ("tests.no_such_xyz:f", b"no module named 'tests.no_such_xyz'"),
        ):
            result = await run(
                twistd("-n", "--pidfile=", "netlab-tcp", "--factory", path),
                cwd=self.outside,
            )
            self.assertEqual(result.status, 1, result)
            self.assertNotIn(b"Traceback", result.out + result.err)
            last = (result.out + result.err).strip().splitlines()[-1]
            self.assertIn(b"--factory " + path.encode() + b": ", last)
            self.assertIn(said, last)
