"""
The WebSocket contract, over loopback, against the standalone autobahn
service, the same service mounted at ``/ws`` of the HTTP site, the echo
written as a user's handler (``tests.ws_user_echo``) served by
:class:`~netlab.websocket.WebSocketFactory`, and the ``websockets`` twin;
with a raw-frame client (exact frames and close codes) and with each real
client.

Every real client also talks to every server over ``wss://`` (the
``...TLS...`` test cases), trusting only a CA made for the test run.

A new server joins by one line in ``SERVERS``; a new client in ``CLIENTS``.
"""

from __future__ import annotations

import os
import re
import ssl
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from twisted.internet.error import ConnectionDone
from twisted.internet.threads import deferToThread

from netlab import certs, tls, websocket
from netlab.compat import ws_client
from netlab.limits import Limits
from netlab.services import hello, wsecho
from tests import ws_user_echo
from tests.support import (
    WAIT,
    Peer,
    TwinServer,
    TwistedServer,
    abort,
    bounded,
    connect,
    python,
    register,
    run,
)


@dataclass(frozen=True)
class At:
    """
    A server and the path its WebSocket is served at.
    """

    server: TwistedServer | TwinServer
    path: str

    async def start(self, tls: certs.Certificates | None = None, **limits: float):
        return await self.server.start(tls=tls, **limits)


def user_handler(limits: Limits) -> websocket.WebSocketFactory:
    """
    :return: the echo as a user writes it (``tests.ws_user_echo``, the
        ``async def handler(connection)`` shape), served by netlab.
    """
    return websocket.WebSocketFactory(ws_user_echo.handler, limits=limits)


SERVERS = {
    "Standalone": At(TwistedServer(wsecho.EchoFactory), "/"),
    "UserHandler": At(TwistedServer(user_handler), "/"),
    "Mounted": At(TwistedServer(hello.site), "/ws"),
    "Twin": At(TwinServer("netlab.compat.ws_server"), "/"),
}

MAX_MESSAGE = 64 * 1024  # what the tests configure every server with

# A client: (url, messages, CA file to trust for wss:// or None) -> replies.
Client = Callable[[str, list, str | None], Awaitable[list]]


async def twisted_client(url: str, messages: list, cacert: str | None = None) -> list:
    trust = tls.ClientTLS(cacert=cacert) if cacert else None
    connection = await websocket.connect(url, timeout=WAIT, tls=trust)
    replies = []
    for message in messages:
        connection.send(message)
        replies.append(await bounded(connection.receive()))
    await bounded(connection.close())
    return replies


async def websockets_client(url: str, messages: list, cacert: str | None) -> list:
    context = ssl.create_default_context(cafile=cacert) if cacert else None
    return await deferToThread(ws_client.exchange, url, messages, WAIT, context)


async def _command(args: list[str]) -> list:
    result = await run(args)
    if result.status != 0 or result.err:
        raise AssertionError(f"client failed: {result}")
    return result.out.decode().splitlines()


def _cacert(cacert: str | None) -> list[str]:
    return ["--cacert", cacert] if cacert else []


async def netlab_cli(url: str, messages: list, cacert: str | None) -> list:
    return await _command(
        python("-m", "netlab", "ws", *_cacert(cacert), url, *messages)
    )


async def compat_cli(url: str, messages: list, cacert: str | None) -> list:
    # Its own 10 s default for the opening handshake ran out twice in CI runs
    # against the wss:// twin, with both CPUs busy: the suite's bound instead.
    return await _command(
        python(
            "-m",
            "netlab.compat.ws_client",
            *("--timeout", str(WAIT)),
            *_cacert(cacert),
            url,
            *messages,
        )
    )


CLIENTS: dict[str, Client] = {
    "autobahn": twisted_client,
    "websockets": websockets_client,
    "netlab_cli": netlab_cli,
    "compat_cli": compat_cli,
}

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
) -> bytes:
    """
    :return: one client frame, masked unless told otherwise.
    """
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    size = len(payload)
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def parse_frame(data: bytes) -> tuple[tuple[int, int, bytes], int] | None:
    """
    :return: ((flags, opcode, payload), size) of the first server frame in
        ``data``, or None if it is not all there yet.
    """
    if len(data) < 2:
        return None
    flags, opcode = data[0] & 0xF0, data[0] & 0x0F
    size, offset = data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        size, offset = struct.unpack("!H", data[2:4])[0], 4
    elif size == 127:
        if len(data) < 10:
            return None
        size, offset = struct.unpack("!Q", data[2:10])[0], 10
    if len(data) < offset + size:
        return None
    return (flags, opcode, data[offset : offset + size]), offset + size


def deflate(payload: bytes) -> bytes:
    """
    :return: ``payload`` as a permessage-deflate message body.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def inflate(payload: bytes) -> bytes:
    return zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")


class RawWebSocket:
    """
    A WebSocket spoken frame by frame over a test :class:`Peer`.
    """

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.offset = 0

    async def open(self, host: str, path: str, headers: bytes = b"") -> bytes:
        """
        Send an opening handshake; return the response head.
        """
        self.peer.transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n%s\r\n"
            % (path.encode(), host.encode(), KEY, headers)
        )
        while b"\r\n\r\n" not in self.peer.received:
            await self.peer.received_at_least(len(self.peer.received) + 1)
        head, _, _ = bytes(self.peer.received).partition(b"\r\n\r\n")
        self.offset = len(head) + 4
        return head

    def send(self, data: bytes) -> None:
        self.peer.transport.write(data)

    async def next_frame(self) -> tuple[int, int, bytes]:
        """
        :return: (flags, opcode, payload) of the next frame from the server.
        """
        while True:
            parsed = parse_frame(bytes(self.peer.received[self.offset :]))
            if parsed is not None:
                found, size = parsed
                self.offset += size
                return found
            await self.peer.received_at_least(len(self.peer.received) + 1)

    async def close_code(self) -> int:
        """
        :return: the code of the close frame the server sends next (skipping
            anything else), once the server has closed the TCP connection
            after the client answered the close, as RFC 6455 asks.
        """
        while True:
            flags, opcode, payload = await self.next_frame()
            if opcode == CLOSE:
                if self.peer.reason is None:
                    self.send(frame(CLOSE, payload[:2]))
                await bounded(self.peer.closed)
                return struct.unpack("!H", payload[:2])[0]


class WebSocketContract:
    """
    What every netlab WebSocket server does. A mixin: one TestCase per server.
    """

    timeout = 120
    server: At
    cacert = None  # plain ws://

    async def setUp(self) -> None:
        await self.restart(max_message=MAX_MESSAGE)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{self.server.path}"

    async def raw(self, headers: bytes = b"") -> RawWebSocket:
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        ws = RawWebSocket(peer)
        head = await ws.open(f"{self.host}:{self.port}", self.server.path, headers)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.handshake = head.lower()
        for line in self.handshake.split(b"\r\n"):
            if line.startswith(b"server:"):
                self.assertNotIn(b"/", line, "the Server header names a version")
        return ws

    async def handshake_status(self, request: bytes) -> tuple[int, bytes]:
        """
        Send a raw handshake ``request`` (``%(host)s`` and ``%(path)s`` filled
        in); return the response's status and head.
        """
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        peer.transport.write(
            request
            % {
                b"host": f"{self.host}:{self.port}".encode(),
                b"path": self.server.path.encode(),
            }
        )
        while b"\r\n\r\n" not in peer.received:
            await peer.received_at_least(len(peer.received) + 1)
        head = bytes(peer.received).partition(b"\r\n\r\n")[0]
        return int(head.split(b" ")[1]), head

    async def assert_serves_normally(self) -> None:
        self.assertEqual(
            await twisted_client(self.url, ["still there?"]), ["Echo: still there?"]
        )

    async def test_messages(self) -> None:
        messages = [
            "hello",
            "",
            "héllo wörld ✓ 🎉",
            b"\x00\xff" * 100,
            b"",
            "x" * 60_000,
        ]
        replies = await twisted_client(self.url, messages)
        self.assertEqual(
            replies,
            [
                "Echo: hello",
                "Echo: ",
                "Echo: héllo wörld ✓ 🎉",
                b"\x00\xff" * 100,
                b"",
                "Echo: " + "x" * 60_000,
            ],
        )

    async def test_one_mib_at_default_limits(self) -> None:
        await self.restart()
        big_text, big_binary = "é" * (512 * 1024), bytes(range(256)) * 4096
        replies = await twisted_client(self.url, [big_text, big_binary])
        self.assertEqual(replies, ["Echo: " + big_text, big_binary])

    async def restart(self, **limits: float) -> None:
        running = await self.server.start(**limits)
        self.host, self.port = running.host, running.port
        self.addCleanup(running.stop)

    async def test_dead_peer_dropped_after_ping_timeout(self) -> None:
        """
        A peer that stops answering pings is dropped, well before any idle
        timeout.
        """
        # The next client must answer pings within ping_timeout too: 1.5 s
        # is many times what a loaded machine needs.
        await self.restart(ping_interval=0.5, ping_timeout=1.5, idle_timeout=60)
        ws = await self.raw()
        flags, opcode, _ = await ws.next_frame()
        self.assertEqual(opcode, PING)
        await bounded(ws.peer.closed, 20)  # the ping is never answered
        await self.assert_serves_normally()

    async def test_silent_connection_dropped(self) -> None:
        """
        A TCP connection that never sends its opening handshake is dropped.
        """
        # The next client's handshake runs against the same timeouts.
        await self.restart(handshake_timeout=1.0, idle_timeout=1.0)
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        await bounded(peer.closed, 10)
        await self.assert_serves_normally()

    async def test_fragmented_message(self) -> None:
        ws = await self.raw()
        ws.send(frame(TEXT, b"Hel", fin=False))
        ws.send(frame(CONTINUATION, "lo ✓".encode(), fin=False))
        ws.send(frame(PING, b"in between"))  # control frames may interleave
        ws.send(frame(CONTINUATION, b"!"))
        seen = [await ws.next_frame(), await ws.next_frame()]
        self.assertIn((0x80, PONG, b"in between"), seen)
        [(flags, opcode, payload)] = [f for f in seen if f[1] != PONG]
        text = inflate(payload) if flags & 0x40 else payload
        self.assertEqual((opcode, text.decode()), (TEXT, "Echo: Hello ✓!"))

    async def test_ping_pong(self) -> None:
        ws = await self.raw()
        ws.send(frame(PING, b"are you there"))
        self.assertEqual(await ws.next_frame(), (0x80, PONG, b"are you there"))

    async def test_normal_close(self) -> None:
        ws = await self.raw()
        ws.send(frame(CLOSE, close_payload(1000, b"bye")))
        self.assertEqual(await ws.close_code(), 1000)

    async def test_invalid_close_codes_are_1002(self) -> None:
        """
        The 1002 arrives before the connection closes (autobahn alone queues
        it and then resets the connection).
        """
        for code in (999, 1004, 1005, 1006, 1015, 5000):
            ws = await self.raw()
            ws.send(frame(CLOSE, close_payload(code)))
            self.assertEqual(await ws.close_code(), 1002, code)
            self.assertTrue(ws.peer.reason.check(ConnectionDone), code)
        await self.assert_serves_normally()

    async def test_application_close_code_is_accepted(self) -> None:
        ws = await self.raw()
        ws.send(frame(CLOSE, close_payload(4000, b"app says bye")))
        self.assertEqual(await ws.close_code(), 4000)

    async def test_over_size_is_1009(self) -> None:
        ws = await self.raw()
        ws.send(frame(TEXT, b"x" * (MAX_MESSAGE + 1)))
        self.assertEqual(await ws.close_code(), 1009)
        await self.assert_serves_normally()

    async def test_over_size_in_fragments_is_1009(self) -> None:
        ws = await self.raw()
        for _ in range(3):
            ws.send(frame(BINARY if _ == 0 else CONTINUATION, b"x" * 30_000, fin=False))
        ws.send(frame(CONTINUATION, b"x"))
        self.assertEqual(await ws.close_code(), 1009)
        await self.assert_serves_normally()

    async def test_invalid_utf8_is_1007(self) -> None:
        ws = await self.raw()
        ws.send(frame(TEXT, b"ok \xff\xfe"))
        self.assertEqual(await ws.close_code(), 1007)
        await self.assert_serves_normally()

    async def test_unmasked_frame_is_1002(self) -> None:
        ws = await self.raw()
        ws.send(frame(TEXT, b"naked", masked=False))
        self.assertEqual(await ws.close_code(), 1002)
        await self.assert_serves_normally()

    async def test_reserved_bits_are_1002(self) -> None:
        ws = await self.raw()
        ws.send(frame(TEXT, b"odd", rsv=0b010))
        self.assertEqual(await ws.close_code(), 1002)
        await self.assert_serves_normally()

    async def test_reserved_opcode_is_1002(self) -> None:
        ws = await self.raw()
        ws.send(frame(0x3, b"what"))
        self.assertEqual(await ws.close_code(), 1002)
        await self.assert_serves_normally()

    async def test_origins(self) -> None:
        """
        No Origin (not a browser) and the page's own origin may connect; a
        foreign page's origin is refused with 403.
        """
        upgrade = (
            b"GET %(path)s HTTP/1.1\r\nHost: %(host)s\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n"
        )
        status, _ = await self.handshake_status(upgrade + b"\r\n")
        self.assertEqual(status, 101)
        status, _ = await self.handshake_status(
            upgrade + b"Origin: http://%(host)s\r\n\r\n"
        )
        self.assertEqual(status, 101)
        status, _ = await self.handshake_status(
            upgrade + b"Origin: http://evil.test\r\n\r\n"
        )
        self.assertEqual(status, 403)
        status, _ = await self.handshake_status(
            upgrade + b"Origin: http://[::1\r\n\r\n"
        )
        self.assertIn(status, (400, 403))
        await self.assert_serves_normally()

    async def test_http_1_0_upgrade_is_refused(self) -> None:
        """
        RFC 6455 4.2.2: the handshake is an HTTP/1.1 request; an HTTP/1.0
        one is a bad request, 400, with a body that says why, standalone or
        mounted alike.
        """
        status, head = await self.handshake_status(
            b"GET %(path)s HTTP/1.0\r\nHost: %(host)s\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.assertEqual(status, 400, head)
        length = re.search(rb"(?im)^content-length: *(\d+)\r?$", head)
        self.assertIsNotNone(length, head)
        self.assertGreater(int(length.group(1)), 0)

    async def test_plain_get_reveals_no_version(self) -> None:
        status, head = await self.handshake_status(
            b"GET %(path)s HTTP/1.1\r\nHost: %(host)s\r\nConnection: close\r\n\r\n"
        )
        self.assertGreaterEqual(status, 400)
        peer_text = head.lower()
        for word in (b"autobahn", b"python", b"twisted", b"websockets/"):
            self.assertNotIn(word, peer_text)

    async def test_compression(self) -> None:
        """
        permessage-deflate is negotiated when offered, and works both ways.
        """
        ws = await self.raw(b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        self.assertIn(b"sec-websocket-extensions: permessage-deflate", self.handshake)
        ws.send(frame(TEXT, deflate(b"squeeze " * 100), rsv=0b100))
        flags, opcode, payload = await ws.next_frame()
        text = inflate(payload) if flags & 0x40 else payload
        self.assertEqual((opcode, text), (TEXT, b"Echo: " + b"squeeze " * 100))

    async def test_compression_bomb_is_refused(self) -> None:
        """
        A small frame that would inflate to 64 MiB is closed with 1009, not
        inflated and echoed.
        """
        ws = await self.raw(b"Sec-WebSocket-Extensions: permessage-deflate\r\n")
        bomb = deflate(bytes(64 * 1024 * 1024))
        self.assertLess(len(bomb), 128 * 1024)
        ws.send(frame(BINARY, bomb, rsv=0b100))
        self.assertEqual(await ws.close_code(), 1009)
        await self.assert_serves_normally()


class WSSContract:
    """
    Over ``wss://``: each real client against the server listening with the
    test certificates; hostile cases of the TLS layer. A mixin: one TestCase
    per server, ``tls`` set by :func:`tests.support.register`.
    """

    timeout = 120
    server: At
    tls: certs.Certificates

    async def setUp(self) -> None:
        await self.restart(max_message=MAX_MESSAGE)

    async def restart(self, **limits: float) -> None:
        running = await self.server.start(tls=self.tls, **limits)
        self.host, self.port, self.cacert = running.host, running.port, running.cacert
        self.url = f"wss://{running.hostname}:{self.port}{self.server.path}"
        self.addCleanup(running.stop)

    async def assert_serves_normally(self) -> None:
        self.assertEqual(
            await twisted_client(self.url, ["still there?"], self.cacert),
            ["Echo: still there?"],
        )

    async def test_plain_ws_then_normal(self) -> None:
        """
        A plain ``ws://`` handshake to the ``wss://`` port is turned away, and
        does not hurt the next client.
        """
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        peer.transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
            % (self.server.path.encode(), self.host.encode(), self.port, KEY)
        )
        await bounded(peer.closed)
        await self.assert_serves_normally()

    async def test_silent_connection_dropped(self) -> None:
        """
        A TCP connection that never starts its TLS handshake is dropped.
        """
        # The next client's TLS and WebSocket handshakes run against the
        # same timeouts: 2 s is many times what a loaded machine needs.
        await self.restart(handshake_timeout=2.0, idle_timeout=2.0)
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        await bounded(peer.closed, 20)
        await self.assert_serves_normally()


def _client_test(name: str, client: Client):
    async def test(self) -> None:
        replies = await client(self.url, ["hello", "wörld"], self.cacert)
        self.assertEqual(replies, ["Echo: hello", "Echo: wörld"])

    test.__name__ = f"test_client_{name}"
    test.__doc__ = f"The {name} client talks to this server."
    return test


CLIENT_TESTS = {
    f"test_client_{name}": _client_test(name, c) for name, c in CLIENTS.items()
}
register(globals(), WebSocketContract, SERVERS, CLIENT_TESTS)
register(globals(), WSSContract, SERVERS, CLIENT_TESTS, tls=True)
