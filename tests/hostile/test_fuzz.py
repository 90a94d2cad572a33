"""
Random byte streams, cut at random points, fed into each service's inbound
path over in-memory transports with a fake clock.

For every input, each service:

- never lets an exception out of ``dataReceived``, nor logs one;
- keeps its buffers bounded (the echo writes back exactly what it got; the
  HTTP channel buffers less than a request line, and no request body more
  than ``max_body``; the WebSocket writes at most a handshake answer plus a
  few times what it was sent);
- and is never stuck: once the input is in and the clock has passed every
  timeout, the server has closed the connection (an idle connection is
  closed by the idle timeout, so "legitimately waiting" ends there too).
  Then, with the connection gone, no timer is left on the clock and the
  service holds no connection.

Deterministic (``derandomize=True``) and quick: the whole module runs in a
few seconds.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netlab import http, websocket
from netlab.limits import Limits
from netlab.services import echo, greeting, hello, wsecho

LIMITS = Limits(
    idle_timeout=5,
    head_timeout=3,
    max_body=2048,
    max_request_line=512,
    max_header_block=2048,
    max_headers=10,
    max_message=4096,
    handshake_timeout=3,
    ping_interval=4,
    ping_timeout=2,
)
#: Seconds past which every timeout above (and HTTP's 2 s linger) has fired.
PAST_EVERY_TIMEOUT = 30

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None)

SERVER = IPv4Address("TCP", "127.0.0.1", 8000)
CLIENT = IPv4Address("TCP", "127.0.0.1", 40000)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    """
    :return: ``data`` cut at ``cuts`` (positions, taken modulo its length).
    """
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


#: Bytes that steer the parsers somewhere interesting.
HTTP_WORDS = [
    b"GET ",
    b"POST ",
    b"OPTIONS ",
    b"G(T ",
    b"/",
    b"/echo",
    b"/ws",
    b"*",
    b"http://example.test/echo",
    b" HTTP/1.1",
    b" HTTP/1.0",
    b" HTTP/2.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"Host: x\r\n",
    b"Host: x\r\nHost: y\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 5000\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: gzip\r\n",
    b"Expect: 100-continue\r\n",
    b"Connection: close\r\n",
    b" folded\r\n",
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n",
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"ffffffff\r\n",
    b"5;ext=1\r\n",
    b"zz\r\n",
    b"hello",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"\x16\x03\x01\x00\x05",
    b"x" * 600,
]
WS_HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@st.composite
def frames(draw: Any) -> bytes:
    """
    One client frame, often well-formed, sometimes not.
    """
    fin = draw(st.booleans())
    rsv = draw(st.sampled_from([0, 0, 0, 4, 2, 1]))
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10, 3, 11]))
    payload = draw(st.binary(max_size=300))
    masked = draw(st.sampled_from([True, True, True, False]))
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    size = draw(st.sampled_from([len(payload), len(payload), 126, 127, 70000]))
    if size == len(payload) and size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([mask_bit | 127]) + size.to_bytes(8, "big")
    if masked:
        mask = draw(st.binary(min_size=4, max_size=4))
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


http_streams = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(HTTP_WORDS), max_size=30).map(b"".join),
    st.lists(
        st.one_of(st.sampled_from(HTTP_WORDS), st.binary(max_size=20)), max_size=30
    ).map(b"".join),
)
ws_streams = st.one_of(
    st.binary(max_size=1500),
    st.tuples(
        st.sampled_from(
            [
                WS_HANDSHAKE + b"\r\n",
                WS_HANDSHAKE + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                WS_HANDSHAKE + b"Origin: http://evil.test\r\n\r\n",
                WS_HANDSHAKE,
            ]
        ),
        st.lists(st.one_of(frames(), st.binary(max_size=50)), max_size=8),
    ).map(lambda parts: parts[0] + b"".join(parts[1])),
)
cut_points = st.lists(st.integers(min_value=0, max_value=5000), max_size=12)


class Transport(StringTransport):
    """
    A StringTransport that, like a real TCP transport, lets a protocol
    unregister a producer it never registered (autobahn does, whenever it
    drops a connection).
    """

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            super().unregisterProducer()


class Fuzz:
    """
    Drives one connection: ``connect`` makes the protocol, ``feed`` delivers.
    """

    def connect(self, factory: Any) -> tuple[Any, Transport]:
        protocol = factory.buildProtocol(CLIENT)
        transport = Transport(SERVER, CLIENT)
        # A real TCP transport knows its protocol; autobahn's /ws mount
        # hands the connection over by changing it.
        transport.protocol = protocol  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        return protocol, transport

    def feed(self, transport: Transport, chunks: list[bytes], check=None):
        with capturedLogs() as events:
            for chunk in chunks:
                if transport.disconnecting:
                    break
                transport.protocol.dataReceived(chunk)
                if check is not None:
                    check()
            self.wait(PAST_EVERY_TIMEOUT)
            if check is not None:
                check()
        failures = [e for e in events if "log_failure" in e]
        if failures:
            raise failures[0]["log_failure"].value

    def wait(self, seconds: float) -> None:
        """
        Let ``seconds`` pass a second at a time, as a real clock would: a
        timer set by another (a ping's timeout) starts when that one fires.
        """
        for _ in range(int(seconds)):
            self.clock.advance(1)

    def closed_and_clean(self, transport: Transport, factory: Any) -> None:
        """
        The server closed the connection; once it is gone, no timer and no
        tracked connection is left.
        """
        self.assertTrue(transport.disconnecting, transport.value()[-300:])
        transport.protocol.connectionLost(Failure(ConnectionDone()))
        self.wait(PAST_EVERY_TIMEOUT)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(factory.connections, set())

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.global_calls = set(reactor.getDelayedCalls())
        self.addCleanup(self.no_global_timers)

    def no_global_timers(self) -> None:
        from twisted.internet import reactor

        left = [c for c in reactor.getDelayedCalls() if c not in self.global_calls]
        for call in left:
            call.cancel()
        self.assertEqual(left, [], "timers left on the global reactor")


class EchoFuzz(Fuzz, SynchronousTestCase):
    @FUZZ
    @given(data=st.binary(max_size=5000), cuts=cut_points)
    def test_echo(self, data: bytes, cuts: list[int]) -> None:
        self.clock = task.Clock()
        factory = echo.EchoFactory(LIMITS, reactor=self.clock)
        _, transport = self.connect(factory)
        chunks = pieces(data, cuts)
        self.feed(transport, chunks)
        self.assertEqual(transport.value(), data)
        self.closed_and_clean(transport, factory)

    @FUZZ
    @given(data=st.binary(max_size=3000), cuts=cut_points)
    def test_greeting(self, data: bytes, cuts: list[int]) -> None:
        self.clock = task.Clock()
        factory = greeting.GreetingFactory(LIMITS, reactor=self.clock)
        _, transport = self.connect(factory)
        self.feed(transport, pieces(data, cuts))
        self.assertEqual(transport.value(), greeting.GREETING if data else b"")
        self.closed_and_clean(transport, factory)


def http_site(clock: task.Clock) -> http.HTTPSite:
    """
    netlab's whole site, its WebSocket mount on the same fake clock.
    """
    site = http.HTTPSite(hello.Root(), limits=LIMITS, reactor=clock)
    echo = wsecho.EchoFactory(LIMITS, reactor=clock, tracker=site)
    site.resource.putChild(b"ws", websocket.WebSocketMount(echo))
    return site


def well_formed_responses(data: bytes) -> None:
    """
    ``data`` is a series of HTTP/1.1 responses (up to any WebSocket
    takeover), each framed by its Content-Length; the last may be cut short
    only by a HEAD request's missing body.
    """
    while data:
        assert data.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), data[:100]
        head, found, rest = data.partition(b"\r\n\r\n")
        assert found, data[:300]
        status = int(head[9:12])
        if status == 101:
            return  # frames follow
        lengths = [
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")[1:]
            if line.lower().startswith(b"content-length:")
        ]
        size = int(lengths[0]) if lengths and status >= 200 else 0
        data = rest[size:] if len(rest) >= size else b""


class HTTPFuzz(Fuzz, SynchronousTestCase):
    @FUZZ
    @given(data=http_streams, cuts=cut_points)
    def test_http(self, data: bytes, cuts: list[int]) -> None:
        self.clock = task.Clock()
        site = http_site(self.clock)
        channel, transport = self.connect(site)

        held: list[int] = []

        def bounded() -> None:
            if transport.protocol is not channel:
                return  # a WebSocket now: its own test bounds it
            buffered = len(channel._buffer)
            if channel.refused:
                # Refused: what it held then may stay, but never grows.
                held.append(buffered)
                self.assertEqual(buffered, held[0])
                self.assertLessEqual(buffered, LIMITS.max_request_line + len(data))
            else:
                self.assertLessEqual(buffered, LIMITS.max_request_line)
            for request in channel.requests:
                content = request.content
                if content is not None and not content.closed:
                    self.assertLessEqual(content.seek(0, 2), LIMITS.max_body)

        self.feed(transport, pieces(data, cuts), bounded)
        well_formed_responses(transport.value())
        self.closed_and_clean(transport, site)


class WebSocketFuzz(Fuzz, SynchronousTestCase):
    @FUZZ
    @given(data=ws_streams, cuts=cut_points)
    def test_websocket(self, data: bytes, cuts: list[int]) -> None:
        self.clock = task.Clock()
        factory = wsecho.EchoFactory(LIMITS, reactor=self.clock)
        _, transport = self.connect(factory)

        def bounded() -> None:
            self.assertLessEqual(len(transport.value()), 1024 + 3 * len(data))

        self.feed(transport, pieces(data, cuts), bounded)
        self.closed_and_clean(transport, factory)
