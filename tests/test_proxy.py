"""
Tests of :mod:`netlab.proxy`: the ``haproxy:`` endpoint, in memory, through
the same endpoint wrapping the plugins listen with.
"""

from __future__ import annotations

import json
import pathlib
import socket
import struct
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import auth, metrics, proxy
from netlab.limits import Limits
from netlab.services import echo, hello
from netlab.tap import echo as echo_tap
from netlab.tap import greeting as greeting_tap
from netlab.tap import http as http_tap
from netlab.tap import lab
from netlab.tap import tcp as tcp_tap
from netlab.tap import ws as ws_tap
from netlab.tls import ClientTLS
from netlab.transport import FlushingPort
from tests.support import LOOPBACK, WAIT, abort, bounded, connect, shared_certificates
from tests.test_tap import listeners
from tests.test_twistd import TwistdCase
from tests.test_wiretap import _need_tshark, fields

#: Where HAProxy connects from.
PROXY_ADDRESS = IPv4Address("TCP", "127.0.0.1", 60000)
#: The client HAProxy speaks for.
CLIENT = ("203.0.113.7", 51234)
GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


def v1(source: tuple[str, int] = CLIENT, family: str = "TCP4") -> bytes:
    """
    :return: a PROXY v1 header for a connection from ``source`` to port 8080.
    """
    destination = "127.0.0.1" if family == "TCP4" else "::1"
    return f"PROXY {family} {source[0]} {destination} {source[1]} 8080\r\n".encode()


def v2(source: tuple[str, int] = CLIENT, command: int = 0x1) -> bytes:
    """
    :return: a PROXY v2 header (PROXY command, TCP over IPv4 or IPv6 as
        ``source`` is) for a connection from ``source``; ``command=0`` makes
        a LOCAL one (a proxy's health check), which names no address.
    """
    signature = proxy._V2_SIGNATURE
    if command == 0x0:
        return signature + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    if ":" in source[0]:
        packed = socket.inet_pton(socket.AF_INET6, source[0])
        packed += socket.inet_pton(socket.AF_INET6, "::1")
        family = 0x21
    else:
        packed = socket.inet_aton(source[0]) + socket.inet_aton("127.0.0.1")
        family = 0x11
    body = packed + struct.pack("!HH", source[1], 8080)
    return (
        signature
        + bytes([0x20 | command, family])
        + struct.pack("!H", len(body))
        + body
    )


class Proxied:
    """
    A factory listening on ``haproxy:tcp:8080`` with a memory reactor: each
    :meth:`connect` is a connection from HAProxy.
    """

    def __init__(self, factory: Any) -> None:
        self.reactor = MemoryReactorClock()
        endpoint = proxy.server_endpoint(
            self.reactor, "haproxy:tcp:8080:interface=127.0.0.1"
        )
        endpoint.listen(factory)
        [(port, self.wrapping, _, interface)] = self.reactor.tcpServers
        assert (port, interface) == (8080, "127.0.0.1")

    def connect(self) -> tuple[Any, StringTransport]:
        protocol = self.wrapping.buildProtocol(PROXY_ADDRESS)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 8080),
            peerAddress=PROXY_ADDRESS,
        )
        protocol.makeConnection(transport)
        return protocol, transport


def response(transport: StringTransport) -> tuple[bytes, bytes]:
    """
    :return: the status line and the body of what ``transport`` was sent.
    """
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def access_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if "status" in e and "peer" in e]


class HTTPBehindProxyTests(SynchronousTestCase):
    """
    ``netlab-http`` behind ``haproxy:``: the access log, ``/echo`` and the
    per-address limit see the client the header names.
    """

    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        self.site = hello.site(reactor=self.clock)
        self.proxied = Proxied(self.site)

    def test_v1_access_log_and_echo(self) -> None:
        protocol, transport = self.proxied.connect()
        with capturedLogs() as events:
            protocol.dataReceived(v1() + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = response(transport)
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(
            json.loads(body)["client"], {"host": "203.0.113.7", "port": 51234}
        )
        [access] = access_events(events)
        self.assertEqual(access["peer"], "203.0.113.7:51234")

    def test_v2(self) -> None:
        for source, expected in (
            (CLIENT, "203.0.113.7:51234"),
            (("2001:db8::5", 4433), "[2001:db8::5]:4433"),
        ):
            protocol, transport = self.proxied.connect()
            with capturedLogs() as events:
                protocol.dataReceived(v2(source) + GET)
            self.assertEqual(
                response(transport), (b"HTTP/1.1 200 OK", b"Hello, world!")
            )
            [access] = access_events(events)
            self.assertEqual(access["peer"], expected)

    def test_header_in_pieces(self) -> None:
        """
        A header that arrives a byte at a time is read whole (Twisted's own
        wrapper drops a connection whose first read is shorter than 8 or 16
        bytes).
        """
        for header in (v1(), v2()):
            protocol, transport = self.proxied.connect()
            with capturedLogs() as events:
                for index in range(len(header)):
                    protocol.dataReceived(header[index : index + 1])
                protocol.dataReceived(GET)
            self.assertEqual(response(transport)[0], b"HTTP/1.1 200 OK")
            [access] = access_events(events)
            self.assertEqual(access["peer"], "203.0.113.7:51234")

    def test_local_header_is_the_proxy(self) -> None:
        """
        A LOCAL header (HAProxy's health checks with ``check-send-proxy``)
        names no client: the proxy's own address stands.
        """
        protocol, transport = self.proxied.connect()
        with capturedLogs() as events:
            protocol.dataReceived(
                v2(command=0) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            )
        self.assertEqual(response(transport)[0], b"HTTP/1.1 200 OK")
        [access] = access_events(events)
        self.assertEqual(access["peer"], "127.0.0.1:60000")

    def test_max_per_ip_counts_the_client(self) -> None:
        """
        Every connection comes from HAProxy's one address, but the limit
        counts the clients the headers name: one client's second
        connection is refused, another client is served.
        """
        site = hello.site(limits=Limits(max_per_ip=1), reactor=self.clock)
        proxied = Proxied(site)
        first, first_transport = proxied.connect()
        first.dataReceived(v1(("198.51.100.1", 1000)))
        other, other_transport = proxied.connect()
        other.dataReceived(v2(("198.51.100.2", 1000)) + GET)
        self.assertEqual(response(other_transport)[0], b"HTTP/1.1 200 OK")
        again, again_transport = proxied.connect()
        before = metrics.CONNECTIONS_REFUSED.values[("http", "max-per-ip")]
        with capturedLogs() as events:
            again.dataReceived(v1(("198.51.100.1", 1001)) + GET)
        self.assertEqual(
            response(again_transport)[0], b"HTTP/1.1 503 Service Unavailable"
        )
        [refusal] = [e for e in events if e.get("reason") == "max-per-ip"]
        self.assertEqual(refusal["host"], "198.51.100.1")
        self.assertEqual(
            metrics.CONNECTIONS_REFUSED.values[("http", "max-per-ip")], before + 1
        )
        self.assertEqual(
            sorted(site._per_host.items()), [("198.51.100.1", 1), ("198.51.100.2", 1)]
        )
        self.assertEqual(len(site.connections), 2)

    def test_no_header_holds_no_slot_and_times_out(self) -> None:
        """
        A connection that never sends its header is not counted by the
        service (its per-address slot stays free for the client) and is
        dropped after :data:`~netlab.proxy.HEADER_TIMEOUT`, with one line.
        """
        site = hello.site(limits=Limits(max_per_ip=1), reactor=self.clock)
        proxied = Proxied(site)
        _, silent = proxied.connect()
        self.assertEqual(len(site.connections), 0)
        client, client_transport = proxied.connect()
        client.dataReceived(v1(("127.0.0.1", 1234)) + GET)
        self.assertEqual(response(client_transport)[0], b"HTTP/1.1 200 OK")
        self.assertEqual(proxied.wrapping.waiting, 1)
        before = metrics.CONNECTIONS_REFUSED.values[("http", "proxy-header-timeout")]
        with capturedLogs() as events:
            proxied.reactor.advance(proxy.HEADER_TIMEOUT - 0.1)
            self.assertFalse(silent.disconnecting)
            proxied.reactor.advance(0.1)
        self.assertTrue(silent.disconnecting)
        [dropped] = [e for e in events if e.get("reason") == "proxy-header-timeout"]
        self.assertEqual(dropped["peer"], "127.0.0.1:60000")
        self.assertEqual(
            metrics.CONNECTIONS_REFUSED.values[("http", "proxy-header-timeout")],
            before + 1,
        )
        self.assertEqual(proxied.wrapping.waiting, 0)

    def test_header_timer_cancelled(self) -> None:
        """
        Once the header is in, the service's own timeouts take over: the
        header's timer is gone, and a closed connection leaves none either.
        """
        protocol, transport = self.proxied.connect()
        protocol.dataReceived(v1())
        self.assertFalse(
            [c for c in self.proxied.reactor.getDelayedCalls() if c.active()]
        )
        other, _ = self.proxied.connect()
        other.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(
            [c for c in self.proxied.reactor.getDelayedCalls() if c.active()]
        )
        self.assertEqual(self.proxied.wrapping.waiting, 0)

    def test_malformed_headers_are_dropped(self) -> None:
        """
        Each malformed header drops the connection at once, with one log
        line and one count, and never reaches the service.
        """
        bad = [
            b"GET / HTTP/1.1\r\n\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 notaport 8080\r\n",
            b"PROXY TCP4 \x1b[31mevil 127.0.0.1 1 8080\r\n",
            b"PROXY TCP4 2001:db8::1 127.0.0.1 1 8080\r\n",
            b"PROXY TCP4 1.2.3.4 127.0.0.1 70000 8080\r\n",
            b"PROXY TCP6 fe80::1%\x1b[31m ::1 1 8080\r\n",
            b"PROXY TCP4 1.2.3.4 \xff\xfe 1 8080\r\n",
            b"PROXY SCTP 1.2.3.4 127.0.0.1 1 8080\r\n",
            b"PROXY TCP4 1.2.3.4" + b" " * 200,
            proxy._V2_SIGNATURE + b"\x30\x11\x00\x0c" + b"\x00" * 12,
            proxy._V2_SIGNATURE + b"\x21\x11\x00\x02" + b"\x00" * 2,
            b"\r\n\r\n\x00\x0dX" + b"\x00" * 20,
        ]
        for header in bad:
            before = metrics.CONNECTIONS_REFUSED.values[
                ("http", "proxy-header-malformed")
            ]
            protocol, transport = self.proxied.connect()
            with capturedLogs() as events:
                protocol.dataReceived(header + GET)
                protocol.dataReceived(GET)
            self.assertTrue(transport.disconnecting, header)
            self.assertEqual(transport.value(), b"", header)
            self.assertEqual(
                [e["reason"] for e in events], ["proxy-header-malformed"], header
            )
            self.assertEqual(
                metrics.CONNECTIONS_REFUSED.values[("http", "proxy-header-malformed")],
                before + 1,
            )
            self.assertEqual(len(self.site.connections), 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_too_many_waiting(self) -> None:
        """
        Connections still waiting for their header are bounded by the
        service's ``max_connections``.
        """
        site = hello.site(limits=Limits(max_connections=2), reactor=self.clock)
        proxied = Proxied(site)
        proxied.connect()
        proxied.connect()
        with capturedLogs() as events:
            self.assertIsNone(proxied.wrapping.buildProtocol(PROXY_ADDRESS))
        self.assertEqual(len(events), 1)

    def test_bearer_token_log(self) -> None:
        """
        The WebSocket's token line names the client from the header.
        """
        secret = pathlib.Path(self.mktemp())
        secret.write_bytes(b"s" * 32)
        checker = auth.JWTChecker(auth.secret_from_file(secret))
        site = hello.site(
            reactor=self.clock, protection=auth.Protection(checker, ("/ws",))
        )
        proxied = Proxied(site)
        protocol, transport = proxied.connect()
        token = auth.mint(secret, "alice")
        handshake = (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        ).encode()
        with capturedLogs() as events:
            protocol.dataReceived(v2() + handshake)
        self.assertEqual(
            response(transport)[0],
            b"HTTP/1.1 101 Switching Protocols",
            transport.value(),
        )
        [line] = [e for e in events if e.get("subject") == "alice" and "peer" in e]
        self.assertEqual(line["peer"], "tcp4:203.0.113.7:51234")
        protocol.connectionLost(Failure(ConnectionDone()))


class TCPBehindProxyTests(SynchronousTestCase):
    def test_echo(self) -> None:
        """
        The echo service logs the client, echoes what follows the header,
        and keeps its half-close behind the wrapper.
        """
        factory = echo.EchoFactory(reactor=MemoryReactorClock())
        proxied = Proxied(factory)
        protocol, transport = proxied.connect()
        self.assertFalse(IHalfCloseableProtocol.providedBy(protocol))
        with capturedLogs() as events:
            protocol.dataReceived(v1(("2001:db8::9", 7), "TCP6") + b"hello")
        self.assertEqual(transport.value(), b"hello")
        self.assertIn("[2001:db8::9]:7", [e.get("peer") for e in events])
        self.assertEqual(protocol.getPeer(), IPv6Address("TCP", "2001:db8::9", 7))
        self.assertEqual(protocol.getHost(), IPv6Address("TCP", "::1", 8080))
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertEqual([c.peer for c in factory.connections], ["[2001:db8::9]:7"])


class EndpointTests(SynchronousTestCase):
    def test_unix(self) -> None:
        """
        ``haproxy:unix:PATH`` reads the header on a UNIX socket too.
        """
        reactor = MemoryReactorClock()
        factory = hello.site(reactor=reactor)
        proxy.server_endpoint(reactor, "haproxy:unix:/run/netlab.sock").listen(factory)
        [(path, wrapping, *_)] = reactor.unixServers
        self.assertEqual(path, "/run/netlab.sock")
        self.assertIsInstance(wrapping, proxy.ProxyHeaderFactory)
        self.assertIs(wrapping.wrappedFactory, factory)

    def test_plain_endpoints_unchanged(self) -> None:
        reactor = MemoryReactorClock()
        factory = hello.site(reactor=reactor)
        proxy.server_endpoint(reactor, "tcp:8080").listen(factory)
        self.assertIs(reactor.tcpServers[0][1], factory)

    def test_write_after_close(self) -> None:
        """
        A protocol that writes after its connection is gone (a response
        finishing late) finds the closed transport, not an error.
        """
        proxied = Proxied(echo.EchoFactory(reactor=MemoryReactorClock()))
        protocol, transport = proxied.connect()
        protocol.dataReceived(v1())
        inner = protocol.wrappedProtocol
        protocol.connectionLost(Failure(ConnectionDone()))
        inner.transport.write(b"late")
        self.assertEqual(inner.transport.getPeer().host, "203.0.113.7")


class SplitTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(proxy.split("haproxy:tcp:80"), ("tcp:80", True))
        self.assertEqual(proxy.split("tcp:80"), ("tcp:80", False))
        self.assertEqual(proxy.split("haproxy"), ("haproxy", False))


def ws_text(message: bytes) -> bytes:
    """
    :return: one masked WebSocket text frame (as a client sends it).
    """
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(message))
    return b"\x81" + bytes([0x80 | len(message)]) + mask + masked


_UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
_ECHOED = b"\x81\x0aEcho: ping"
_UPGRADED = b"\r\n\r\n"
#: Each plugin (and the user's application it serves), and the exchange:
#: what to send after the header, and what the answer so far then ends with.
PLUGINS: list[tuple[Any, list[str], list[tuple[bytes, bytes]]]] = [
    (echo_tap, [], [(b"hello", b"hello")]),
    (greeting_tap, [], [(b"hi", b"Hello from server!")]),
    (tcp_tap, ["--factory", "tests.user_tcp:Upper"], [(b"abc\r\n", b"ABC\r\n")]),
    (http_tap, [], [(GET, b"Hello, world!")]),
    (http_tap, [], [(_UPGRADE, _UPGRADED), (ws_text(b"ping"), _ECHOED)]),
    (
        http_tap,
        ["--resource", "tests.user_http:root"],
        [(b"GET /greet?name=x HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, x!\n")],
    ),
    (
        http_tap,
        ["--wsgi", "tests.user_http:app"],
        [(b"GET /hello?name=y HTTP/1.1\r\nHost: x\r\n\r\n", b"Hello, y! (/hello)\n")],
    ),
    (
        ws_tap,
        [],
        [(_UPGRADE.replace(b"/ws", b"/"), _UPGRADED), (ws_text(b"ping"), _ECHOED)],
    ),
    (
        ws_tap,
        ["--handler", "tests.ws_user_echo:EchoHandler"],
        [(_UPGRADE.replace(b"/ws", b"/"), _UPGRADED), (ws_text(b"ping"), _ECHOED)],
    ),
]


class PluginTests(TestCase):
    """
    Every plugin serves ``--listen haproxy:tcp:...`` on a real socket, and
    every address its log events name is the client's from the header,
    never the connection's own.
    """

    async def serve(
        self,
        module: Any,
        arguments: list[str],
        listen: str = "haproxy:tcp:0:interface=127.0.0.1",
    ) -> tuple[Any, int]:
        options = module.Options()
        options.parseOptions(["--listen", listen, *arguments])
        service = module.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        [listener] = listeners(service)
        port = await listener._waitingForPort
        self.assertIsInstance(port.factory, proxy.ProxyHeaderFactory)
        # Replies still leave with the read that made them (netlab.transport).
        self.assertIsInstance(port, FlushingPort)
        return service, port.getHost().port

    async def exchange(
        self, port: int, steps: list[tuple[bytes, bytes]], what: str = ""
    ) -> None:
        with capturedLogs() as events:
            peer = await connect(LOOPBACK, port)
            self.addCleanup(abort, peer)
            peer.transport.write(v1())
            for sent, answer in steps:
                peer.transport.write(sent)
                while not bytes(peer.received).endswith(answer):
                    try:
                        await peer.received_at_least(len(peer.received) + 1)
                    except (ConnectionDone, defer.TimeoutError):
                        self.fail(f"closed after {bytes(peer.received)!r}")
            own = peer.transport.getHost().port

            def named() -> set[str]:
                return {str(e[k]) for e in events for k in ("peer", "host") if k in e}

            # An access event follows its response (a WSGI one, from a
            # thread): wait for it, within WAIT.
            for _ in range(int(WAIT / 0.01)):
                if named():
                    break
                await task.deferLater(reactor, 0.01)
        peers = named()
        self.assertTrue(peers, (what, events))
        self.assertFalse({p for p in peers if p.endswith(f":{own}")}, (what, peers))
        self.assertTrue(all("203.0.113.7" in p for p in peers), (what, peers))

    async def test_every_plugin(self) -> None:
        for module, arguments, steps in PLUGINS:
            _, port = await self.serve(module, arguments)
            await self.exchange(port, steps, f"{module.__name__} {arguments}")

    async def test_wiretap(self) -> None:
        """
        ``--wiretap`` records the connection as between the header's
        client and the address it names.
        """
        _need_tshark()
        capture = pathlib.Path(self.mktemp())
        options = http_tap.Options()
        options.parseOptions(
            [
                *("--listen", "haproxy:tcp:0:interface=127.0.0.1"),
                *("--wiretap", str(capture)),
            ]
        )
        service = http_tap.makeService(options)
        service.startService()
        [listener] = listeners(service)
        port = (await listener._waitingForPort).getHost().port
        await self.exchange(port, [(GET, b"Hello, world!")])
        await bounded(defer.maybeDeferred(service.stopService))
        requests = await fields(
            capture, "http.request", "ip.src", "tcp.srcport", "ip.dst", "tcp.dstport"
        )
        self.assertEqual(requests, [["203.0.113.7", "51234", "127.0.0.1", "8080"]])

    async def test_lab(self) -> None:
        """
        ``twistd netlab`` takes ``haproxy:`` for each of its services.
        """
        options = lab.Options()
        options.parseOptions(
            [
                *("--echo", "haproxy:tcp:0:interface=127.0.0.1"),
                *("--greeting", "off", "--ws", "off"),
                *("--http", "haproxy:tcp:0:interface=127.0.0.1"),
            ]
        )
        service = lab.makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        ports = [await listener._waitingForPort for listener in listeners(service)]
        self.assertEqual(len(ports), 2)
        for port, steps in zip(
            ports, [[(b"hello", b"hello")], [(GET, b"Hello, world!")]], strict=True
        ):
            await self.exchange(port.getHost().port, steps)

    def test_workers_share_haproxy_endpoints(self) -> None:
        options = http_tap.Options()
        options.parseOptions(
            ["--listen", "haproxy:tcp:0:interface=127.0.0.1", "--workers", "2"]
        )
        self.assertEqual(options["listen"], ["haproxy:tcp:0:interface=127.0.0.1"])

    def test_bad_endpoint_under_haproxy(self) -> None:
        options = http_tap.Options()
        with self.assertRaises(usage.UsageError) as caught:
            options.parseOptions(["--listen", "haproxy:tcp:notaport"])
        self.assertIn("bad endpoint 'haproxy:tcp:notaport'", str(caught.exception))

    async def test_tls_after_the_header(self) -> None:
        """
        ``haproxy:ssl:``: the header comes first, in the clear, then TLS
        (what a proxy in TCP mode sends); the access log names the header's
        client and the certificate it showed to netlab.
        """
        paths = shared_certificates()
        _, port = await self.serve(
            http_tap,
            [],
            listen=(
                f"haproxy:ssl:0:privateKey={paths.server_key}:certKey={paths.server}"
                f":clientCA={paths.ca}:interface=127.0.0.1"
            ),
        )
        client = ClientTLS(
            cacert=str(paths.ca), cert=str(paths.client), key=str(paths.client_key)
        )
        with capturedLogs() as events:
            peer = await connect(LOOPBACK, port)
            self.addCleanup(abort, peer)
            peer.transport.write(v2())
            peer.transport.startTLS(client.creator("localhost"))
            peer.transport.write(GET)
            while not bytes(peer.received).endswith(b"Hello, world!"):
                await peer.received_at_least(len(peer.received) + 1)
        [access] = access_events(events)
        self.assertEqual(access["peer"], "203.0.113.7:51234")
        self.assertIn("CN=", access["client"])


class WorkersTests(TwistdCase):
    async def test_workers_read_the_header(self) -> None:
        """
        ``twistd netlab-http --workers 2`` on a ``haproxy:`` endpoint: the
        worker that takes the connection reads the header, and its access
        log (relayed by the supervisor) and ``/echo`` name the client.
        """
        child, [port] = await self.start(
            *("netlab-http", "--listen", "haproxy:tcp:0:interface=127.0.0.1"),
            *("--workers", "2"),
            factories=(r"HTTPSite \(PROXY\)",),
        )
        peer = await connect(LOOPBACK, port)
        self.addCleanup(abort, peer)
        peer.transport.write(
            v2() + b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await bounded(peer.closed)
        body = bytes(peer.received).partition(b"\r\n\r\n")[2]
        self.assertEqual(
            json.loads(body)["client"], {"host": "203.0.113.7", "port": 51234}
        )
        for _ in range(int(WAIT / 0.05)):
            if b"GET /echo 200" in child.protocol.out:
                break
            await task.deferLater(reactor, 0.05)
        self.assertRegex(
            bytes(child.protocol.out).decode(),
            r"\[worker \d, pid \d+: [^\]]*\] GET /echo 200 .* 203\.0\.113\.7:51234",
        )


class TwistedTLSTests(TestCase):
    async def test_twisted_ssl_endpoint(self) -> None:
        """
        Twisted's own ``ssl:`` endpoint under :func:`~netlab.proxy.server_endpoint`
        (which listens with ``listenSSL``) also reads the header first.
        """
        paths = shared_certificates()
        site = hello.site()
        port = await proxy.server_endpoint(
            reactor,
            f"haproxy:ssl:0:interface=127.0.0.1:privateKey={paths.server_key}"
            f":certKey={paths.server}",
        ).listen(site)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(site.drained()))
        self.assertIsInstance(port.factory, proxy.ProxyHeaderFactory)
        with capturedLogs() as events:
            peer = await connect(LOOPBACK, port.getHost().port)
            self.addCleanup(abort, peer)
            peer.transport.write(v1())
            peer.transport.startTLS(
                ClientTLS(cacert=str(paths.ca)).creator("localhost")
            )
            peer.transport.write(GET)
            while not bytes(peer.received).endswith(b"Hello, world!"):
                await peer.received_at_least(len(peer.received) + 1)
            for _ in range(int(WAIT / 0.01)):
                if access_events(events):
                    break
                await task.deferLater(reactor, 0.01)
        [access] = access_events(events)
        self.assertEqual(access["peer"], "203.0.113.7:51234")
