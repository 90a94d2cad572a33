"""
The WebSocket echo's fast path (:meth:`netlab.websocket.WebSocketProtocol.dataReceived`)
at its edges: many frames in one read, frames split across reads at every
byte, fast and slow frames mixed, the frames it must leave to autobahn (bad
UTF-8, oversized, unmasked, malformed lengths), and length boundaries.

Most cases run in memory: the server protocol on a ``StringTransport``, fed
bytes as a client would send them, and each case asserts the exact bytes the
server answers. Each is run twice, with the fast path on and with it off (all
autobahn), and both must answer the same. One case runs over loopback, for
back-pressure with the fast path doing the echoing.
"""

from __future__ import annotations

import os
import struct

from twisted.internet import reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import websocket
from netlab.limits import Limits
from netlab.services import wsecho
from netlab.testing import serve
from tests.hostile._helpers import open_peer
from tests.support import WAIT, bounded
from tests.test_ws_conformance import (
    BINARY,
    CLOSE,
    CONTINUATION,
    KEY,
    PING,
    PONG,
    TEXT,
    RawWebSocket,
    close_payload,
    frame,
    parse_frame,
)

MAX_MESSAGE = 100_000
LIMITS = Limits(max_message=MAX_MESSAGE, handshake_timeout=5, ping_interval=30)
HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """
    :return: the unmasked, unfragmented frame a server sends.
    """
    return frame(opcode, payload, masked=False)


def echo(message: str | bytes) -> bytes:
    """
    :return: the server's frame echoing ``message`` (text for ``str``).
    """
    if isinstance(message, str):
        return server_frame(TEXT, b"Echo: " + message.encode())
    return server_frame(BINARY, message)


def sent(message: str | bytes) -> bytes:
    """
    :return: the client's masked frame for ``message`` (text for ``str``).
    """
    if isinstance(message, str):
        return frame(TEXT, message.encode())
    return frame(BINARY, message)


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """
    :return: ``(flags, opcode, payload)`` of each server frame in ``data``,
        which must hold whole frames only.
    """
    found = []
    while data:
        parsed = parse_frame(data)
        assert parsed is not None, f"incomplete frame at the end: {data!r}"
        found.append(parsed[0])
        data = data[parsed[1] :]
    return found


def close_code(data: bytes) -> int | None:
    """
    :return: the code of the last frame in ``data`` if it is a close frame.
    """
    _, opcode, payload = frames(data)[-1]
    if opcode != CLOSE:
        return None
    return struct.unpack("!H", payload[:2])[0]


class Server:
    """
    An :class:`~netlab.websocket.WebSocketProtocol` in memory, past its opening
    handshake, with the fast path on or off.
    """

    def __init__(self, fast: bool, limits: Limits = LIMITS) -> None:
        self.clock = MemoryReactorClock()
        factory = wsecho.EchoFactory(limits, reactor=self.clock)
        address = IPv4Address("TCP", "127.0.0.1", 50000)
        self.protocol = factory.buildProtocol(address)
        self.transport = StringTransport(IPv4Address("TCP", "127.0.0.1", 8765), address)
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(HANDSHAKE)
        assert self.transport.value().startswith(b"HTTP/1.1 101 "), (
            self.transport.value()
        )
        assert self.protocol.state == self.protocol.STATE_OPEN
        self.transport.clear()
        assert self.protocol._fast_receive and self.protocol._fast_send
        if not fast:
            self.protocol._fast_receive = self.protocol._fast_send = False

    def feed(self, *reads: bytes) -> bytes:
        """
        Deliver each of ``reads`` as one read.

        :return: all that the server wrote meanwhile.
        """
        for data in reads:
            self.protocol.dataReceived(data)
        written = self.transport.value()
        self.transport.clear()
        return written

    def stop(self) -> None:
        self.protocol.connectionLost()


class FastPathTests(SynchronousTestCase):
    """
    Each case: the same bytes in, fast path on and off, the same exact
    bytes out.
    """

    def answers(self, *reads: bytes, limits: Limits = LIMITS) -> bytes:
        """
        :return: what the server answers to ``reads`` (one read each), after
            checking that it answers the same without the fast path.
        """
        answered = []
        for fast in (True, False):
            server = Server(fast, limits)
            answered.append(server.feed(*reads))
            server.stop()
        self.assertEqual(answered[0], answered[1], "fast and slow paths differ")
        return answered[0]

    def test_one_text_message(self) -> None:
        self.assertEqual(self.answers(sent("hello")), echo("hello"))

    def test_binary_frames(self) -> None:
        messages = [b"\x00\xff\x80", b"", bytes(range(256)), os.urandom(1000)]
        self.assertEqual(
            self.answers(*(sent(m) for m in messages)),
            b"".join(echo(m) for m in messages),
        )

    def test_empty_and_unicode_text(self) -> None:
        messages = ["", "héllo wörld ✓ 🎉", "\U0010ffff", "\x00"]
        self.assertEqual(
            self.answers(b"".join(sent(m) for m in messages)),
            b"".join(echo(m) for m in messages),
        )

    def test_many_frames_in_one_read(self) -> None:
        messages = [f"message {n}" if n % 3 else bytes([n]) * n for n in range(200)]
        self.assertEqual(
            self.answers(b"".join(sent(m) for m in messages)),
            b"".join(echo(m) for m in messages),
        )

    def test_split_at_every_byte(self) -> None:
        # A short frame, one with a 16-bit length, and one after them, split
        # in two reads at every position.
        messages = ["first", b"\x01" * 300, "last"]
        data = b"".join(sent(m) for m in messages)
        expected = b"".join(echo(m) for m in messages)
        for cut in range(len(data) + 1):
            self.assertEqual(
                self.answers(data[:cut], data[cut:]), expected, f"cut at {cut}"
            )

    def test_one_byte_per_read(self) -> None:
        messages = ["a", b"\x02" * 126, "b" * 200]
        data = b"".join(sent(m) for m in messages)
        self.assertEqual(
            self.answers(*(data[i : i + 1] for i in range(len(data)))),
            b"".join(echo(m) for m in messages),
        )

    def test_64_bit_length_split_at_every_header_byte(self) -> None:
        message = os.urandom(65536)
        data = sent(message)
        for cut in range(1, 16):
            self.assertEqual(
                self.answers(data[:cut], data[cut:]), echo(message), f"cut at {cut}"
            )

    def test_length_boundaries(self) -> None:
        for size in (0, 1, 125, 126, 127, 65535, 65536, 65537):
            payload = os.urandom(size)
            text = "t" * size
            self.assertEqual(
                self.answers(sent(payload), sent(text)),
                echo(payload) + echo(text),
                size,
            )

    def test_largest_message(self) -> None:
        # Exactly max_message: echoed, as text too, although the echo is six
        # bytes over (the limit is on what the client sends).
        binary, text = os.urandom(MAX_MESSAGE), "é" * (MAX_MESSAGE // 2)
        self.assertEqual(
            self.answers(sent(binary), sent(text)), echo(binary) + echo(text)
        )

    def test_ping_between_text_frames(self) -> None:
        data = sent("one") + frame(PING, b"are you there") + sent("two")
        expected = echo("one") + server_frame(PONG, b"are you there") + echo("two")
        self.assertEqual(self.answers(data), expected)
        self.assertEqual(
            self.answers(*(data[i : i + 1] for i in range(len(data)))), expected
        )

    def test_pong_between_text_frames(self) -> None:
        data = sent("one") + frame(PONG, b"unasked") + sent("two")
        self.assertEqual(self.answers(data), echo("one") + echo("two"))

    def test_fragmented_message_then_simple_ones(self) -> None:
        data = (
            sent("before")
            + frame(TEXT, b"frag", fin=False)
            + frame(PING, b"")
            + frame(CONTINUATION, b"men", fin=False)
            + frame(CONTINUATION, b"ted", fin=True)
            + sent("after")
            + sent(b"\x00")
        )
        expected = (
            echo("before")
            + server_frame(PONG, b"")
            + echo("fragmented")
            + echo("after")
            + echo(b"\x00")
        )
        self.assertEqual(self.answers(data), expected)
        # And each frame in a read of its own: the fast path takes over again
        # once the fragmented message is done.
        reads = [
            sent("before"),
            frame(TEXT, b"frag", fin=False),
            frame(CONTINUATION, b"mented", fin=True),
            sent("after"),
        ]
        self.assertEqual(
            self.answers(*reads),
            echo("before") + echo("fragmented") + echo("after"),
        )

    def test_invalid_utf8_closes_with_1007(self) -> None:
        for bad in (
            b"\xff",
            b"ok \xc3",
            b"\xed\xa0\x80",
            b"\xc0\xaf",
            b"\xf4\x90\x80\x80",
        ):
            answered = self.answers(sent("fine"), frame(TEXT, bad) + sent("ignored"))
            self.assertEqual(answered[: len(echo("fine"))], echo("fine"), bad)
            self.assertEqual(len(frames(answered)), 2, bad)
            self.assertEqual(close_code(answered), 1007, bad)

    def test_invalid_utf8_after_valid_frames_in_one_read(self) -> None:
        answered = self.answers(sent("a") + sent("b") + frame(TEXT, b"\x80"))
        self.assertEqual(answered[: 2 * len(echo("a"))], echo("a") + echo("b"))
        self.assertEqual(len(frames(answered)), 3)
        self.assertEqual(close_code(answered), 1007)

    def test_oversized_closes_with_1009(self) -> None:
        small = Limits(max_message=1000, handshake_timeout=5, ping_interval=30)
        self.assertEqual(
            self.answers(sent(b"x" * 1000), limits=small), echo(b"x" * 1000)
        )
        for size in (1001, 65536):
            answered = self.answers(
                sent("fine") + sent(b"x" * size) + sent("ignored"), limits=small
            )
            self.assertEqual(answered[: len(echo("fine"))], echo("fine"))
            self.assertEqual(len(frames(answered)), 2)
            self.assertEqual(close_code(answered), 1009)

    def test_oversized_in_fragments_closes_with_1009(self) -> None:
        """
        A message over the limit in fragments each under it closes with
        1009; one of exactly the limit is echoed.
        """
        small = Limits(max_message=1000, handshake_timeout=5, ping_interval=30)
        for last, expected in (
            (b"y" * 400, echo(b"x" * 600 + b"y" * 400)),
            (b"y" * 401, None),
        ):
            answered = self.answers(
                frame(BINARY, b"x" * 300, fin=False)
                + frame(CONTINUATION, b"x" * 300, fin=False)
                + frame(CONTINUATION, last),
                limits=small,
            )
            if expected is None:
                self.assertEqual(close_code(answered), 1009)
            else:
                self.assertEqual(answered, expected)

    def test_oversized_header_alone_closes_with_1009(self) -> None:
        # The header says too much; the payload never comes.
        header = bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 2**40) + b"mask"
        answered = self.answers(sent("fine") + header)
        self.assertEqual(answered[: len(echo("fine"))], echo("fine"))
        self.assertEqual(close_code(answered), 1009)

    def test_unmasked_closes_with_1002(self) -> None:
        for opcode in (TEXT, BINARY):
            answered = self.answers(
                sent("fine"), frame(opcode, b"bare", masked=False) + sent("ignored")
            )
            self.assertEqual(answered[: len(echo("fine"))], echo("fine"))
            self.assertEqual(len(frames(answered)), 2)
            self.assertEqual(close_code(answered), 1002)

    def test_reserved_bits_and_opcodes_close_with_1002(self) -> None:
        for bad in (
            frame(TEXT, b"x", rsv=4),  # no extension negotiated
            frame(TEXT, b"x", rsv=1),
            frame(0x3, b"x"),
            frame(CONTINUATION, b"x"),  # nothing to continue
        ):
            answered = self.answers(sent("fine") + bad + sent("ignored"))
            self.assertEqual(len(frames(answered)), 2, bad)
            self.assertEqual(close_code(answered), 1002, bad)

    def test_lengths_not_in_their_shortest_form_close_with_1002(self) -> None:
        mask = b"\x00\x00\x00\x00"
        for header in (
            bytes([0x81, 0x80 | 126]) + struct.pack("!H", 5),
            bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 5),
            bytes([0x82, 0x80 | 127]) + struct.pack("!Q", 65535),
        ):
            answered = self.answers(sent("fine") + header + mask + b"hello")
            self.assertEqual(len(frames(answered)), 2, header)
            self.assertEqual(close_code(answered), 1002, header)

    def test_close_after_messages(self) -> None:
        answered = self.answers(
            sent("bye") + frame(CLOSE, close_payload(1000)) + sent("too late")
        )
        self.assertEqual(
            answered, echo("bye") + server_frame(CLOSE, close_payload(1000))
        )


class HandshakeTimeoutTests(SynchronousTestCase):
    """
    ``--handshake-timeout`` bounds the opening handshake and the closing
    one, on the service's clock.
    """

    def test_unanswered_close_is_dropped(self) -> None:
        """
        A peer that never answers the server's close frame is dropped once
        the handshake timeout passes, not before.
        """
        server = Server(fast=True)
        server.protocol.drain()
        self.assertEqual(close_code(server.transport.value()), 1001)
        server.clock.advance(LIMITS.handshake_timeout - 0.1)
        self.assertFalse(server.transport.disconnecting)
        server.clock.advance(0.2)
        self.assertTrue(server.transport.disconnecting)
        server.stop()


class StateTests(SynchronousTestCase):
    """
    The fast path keeps autobahn's bookkeeping as autobahn would.
    """

    def test_common_frames_bypass_autobahns_parser(self) -> None:
        server = Server(fast=True)

        def refuse() -> bool:
            raise AssertionError("autobahn's parser was used")

        server.protocol.processData = refuse
        messages = ["a", b"b" * 126, "c" * 65536, b""]
        self.assertEqual(
            server.feed(b"".join(sent(m) for m in messages)),
            b"".join(echo(m) for m in messages),
        )
        server.stop()

    def test_traffic_statistics(self) -> None:
        reads = (sent("hello") + sent(b"\x00" * 300), sent("é" * 40000))
        stats = []
        for fast in (True, False):
            server = Server(fast)
            server.feed(*reads)
            stats.append(server.protocol.trafficStats.__json__())
            server.stop()
        self.assertEqual(stats[0], stats[1])
        self.assertEqual(stats[0]["incomingWebSocketMessages"], 3)
        self.assertEqual(stats[0]["outgoingWebSocketMessages"], 3)

    def test_a_data_frame_answers_a_ping(self) -> None:
        # autobahn takes any data frame for the answer to its ping; the
        # fast path does too, so a busy client is not dropped as dead.
        server = Server(fast=True)
        protocol = server.protocol
        server.clock.advance(LIMITS.ping_interval)
        [(_, opcode, _)] = frames(server.transport.value())
        self.assertEqual(opcode, PING)
        server.transport.clear()
        self.assertIsNotNone(protocol.autoPingTimeoutCall)
        self.assertEqual(server.feed(sent("busy")), echo("busy"))
        self.assertIsNone(protocol.autoPingTimeoutCall)
        server.clock.advance(LIMITS.ping_timeout + 1)
        self.assertEqual(protocol.state, protocol.STATE_OPEN)
        server.stop()

    def test_leftover_bytes_stay_in_autobahns_buffer(self) -> None:
        server = Server(fast=True)
        data = sent("whole") + sent("partial")
        self.assertEqual(server.feed(data[:-3]), echo("whole"))
        self.assertEqual(server.protocol.current_frame.length, len("partial"))
        self.assertEqual(server.feed(data[-3:]), echo("partial"))
        self.assertIsNone(server.protocol.current_frame)
        self.assertEqual(server.protocol.data, b"")
        data = sent("next")
        self.assertEqual(server.feed(data[:3]), b"")
        self.assertEqual(server.protocol.data, data[:3])
        self.assertEqual(server.feed(data[3:]), echo("next"))
        self.assertEqual(server.protocol.data, b"")
        server.stop()

    def test_utf8_check_agrees_with_autobahn(self) -> None:
        from autobahn.websocket.utf8validator import Utf8Validator

        samples = [
            bytes([a, b])
            for a in (0x00, 0x7F, 0x80, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xF0, 0xF4, 0xF5)
            for b in (0x00, 0x80, 0x9F, 0xA0, 0xBF, 0xC0)
        ] + [
            b"\xe0\xa0\x80",
            b"\xe0\x9f\xbf",
            b"\xed\x9f\xbf",
            b"\xed\xa0\x80",
            b"\xef\xbf\xbf",
            b"\xf0\x90\x80\x80",
            b"\xf0\x8f\xbf\xbf",
            b"\xf4\x8f\xbf\xbf",
            b"\xf4\x90\x80\x80",
        ]
        for sample in samples:
            validator = Utf8Validator()
            valid, ended, _, _ = validator.validate(sample)
            self.assertEqual(websocket._is_utf8(sample), valid and ended, sample)

    def test_unmask(self) -> None:
        mask = b"\x01\x02\x03\x04"
        for size in (0, 1, 3, 4, 5, 1024, 1025, 70000):
            data = os.urandom(size)
            expected = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            self.assertEqual(websocket._unmask(data, mask), expected, size)


async def until(condition, seconds: float = WAIT) -> None:
    """
    Wait (bounded) until ``condition()`` holds.
    """
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01)
    raise AssertionError("condition not met in time")


class LoopbackTests(TestCase):
    """
    The fast path over real sockets.
    """

    timeout = 120

    async def test_trickled_opening_handshake_is_dropped(self) -> None:
        """
        A client that sends its opening handshake a byte at a time, never
        quite silent, is dropped once ``--handshake-timeout`` passes on the
        service's clock, not before, unanswered.
        """
        clock = task.Clock()
        factory = wsecho.EchoFactory(LIMITS, reactor=clock)
        served = await serve(self, factory)
        peer = await open_peer(self, served)
        step = LIMITS.handshake_timeout / 10
        for byte in HANDSHAKE[:9]:
            peer.transport.write(bytes([byte]))
            await until(lambda: factory.connections)
            clock.advance(step)
        await task.deferLater(reactor, 0.05)
        self.assertIsNone(peer.reason)
        clock.advance(step + 0.01)
        await bounded(peer.closed)
        self.assertEqual(bytes(peer.received), b"")

    async def test_back_pressure(self) -> None:
        # A client (not compressing: the fast path's frames) stops reading
        # and sends on: the server stops reading it, and loses nothing.
        factory = wsecho.EchoFactory(LIMITS)
        served = await serve(self, factory)
        ws = RawWebSocket(await open_peer(self, served))
        await ws.open(f"{served.host}:{served.port}", "/")
        message = os.urandom(65536)
        ws.peer.transport.pauseProducing()
        count = 300
        for _ in range(count):
            ws.send(sent(message))
        [server] = factory.connections
        for _ in range(int(WAIT / 0.05)):
            if server.reading_paused:
                break
            await task.deferLater(reactor, 0.05)
        self.assertTrue(server.reading_paused, "the server never stopped reading")
        ws.peer.transport.resumeProducing()
        for index in range(count):
            self.assertEqual(await ws.next_frame(), (0x80, BINARY, message), index)
        self.assertFalse(server.reading_paused)
        ws.send(frame(CLOSE, close_payload(1000)))
        self.assertEqual(await ws.close_code(), 1000)

    async def test_many_messages_in_one_write(self) -> None:
        served = await serve(self, wsecho.EchoFactory(LIMITS))
        ws = RawWebSocket(await open_peer(self, served))
        await ws.open(f"{served.host}:{served.port}", "/")
        messages = [f"m{n}" if n % 2 else os.urandom(n) for n in range(500)]
        ws.send(b"".join(sent(m) for m in messages))
        for message in messages:
            opcode = TEXT if isinstance(message, str) else BINARY
            payload = (
                b"Echo: " + message.encode() if isinstance(message, str) else message
            )
            self.assertEqual(await ws.next_frame(), (0x80, opcode, payload))
