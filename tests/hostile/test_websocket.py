"""
Hostile WebSocket clients against netlab's echo, standalone
(:class:`netlab.services.wsecho.EchoFactory`) and mounted at ``/ws`` of
:class:`netlab.http.HTTPSite`, over loopback with a raw-frame client.

Each case checks the exact answer (HTTP status for a bad opening handshake,
close code for a bad frame, RFC 6455 and RFC 7692) and then that the same
server still serves a normal client.

Already covered in ``tests/test_ws_conformance.py`` for both servers, and
extended rather than repeated here: an unmasked data frame, RSV2, opcode 0x3,
close codes 999/1004/1005/1006/1015/5000, invalid UTF-8 in one frame, a
64 MiB single-frame compression bomb, foreign and malformed origins.
"""

from __future__ import annotations

import struct

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from netlab import http
from netlab.limits import Limits
from netlab.services import hello, wsecho
from netlab.testing import serve
from tests.hostile._helpers import PROMPT, closed_promptly, open_peer
from tests.support import bounded
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
    deflate,
    frame,
    inflate,
    twisted_client,
)

MAX_MESSAGE = 64 * 1024
LIMITS = Limits(
    max_message=MAX_MESSAGE,
    handshake_timeout=60,
    idle_timeout=60,
    ping_interval=30,
    ping_timeout=10,
)
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"


class Hostile:
    """
    A mixin: ``factory()`` makes the server, ``path`` is where it serves.
    """

    timeout = 60
    path: str

    def factory(self):
        raise NotImplementedError

    async def setUp(self) -> None:
        self.served = await serve(self, self.factory())

    @property
    def url(self) -> str:
        return self.served.url(self.path, scheme="ws")

    async def assert_serves_normally(self) -> None:
        self.assertEqual(
            await twisted_client(self.url, ["still there?", b"\x00\xff"]),
            ["Echo: still there?", b"\x00\xff"],
        )

    async def raw(self, headers: bytes = b"") -> RawWebSocket:
        peer = await open_peer(self, self.served)
        ws = RawWebSocket(peer)
        head = await ws.open(
            f"{self.served.host}:{self.served.port}", self.path, headers
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.handshake = head.lower()
        return ws

    async def closes_with(
        self, frames: list[bytes], code: int, headers: bytes = b""
    ) -> None:
        """
        After ``frames``, the server sends a close frame with ``code``, closes
        the connection once the client answers it, and then serves a normal
        client.
        """
        ws = await self.raw(headers)
        for data in frames:
            ws.send(data)
        self.assertEqual(await ws.close_code(), code)
        await self.assert_serves_normally()

    async def fails_compressed(self, frames: list[bytes], code: int) -> None:
        """
        As :meth:`closes_with`, with permessage-deflate on; the client aborts
        once it has the close code (see
        :meth:`test_closes_promptly_after_failing_compressed_message`).
        """
        ws = await self.raw(DEFLATE)
        self.assertIn(b"sec-websocket-extensions: permessage-deflate", self.handshake)
        for data in frames:
            ws.send(data)
        while True:
            _, opcode, payload = await ws.next_frame()
            if opcode == CLOSE:
                break
        self.assertEqual(struct.unpack("!H", payload[:2])[0], code)
        ws.peer.transport.abortConnection()
        await self.assert_serves_normally()

    async def handshake(self, headers: bytes, method: bytes = b"GET") -> tuple:
        """
        Send an opening handshake with the Host line and ``headers``.

        :return: the status and the lower-cased response head, once the
            server has closed the connection.
        """
        peer = await open_peer(self, self.served)
        peer.transport.write(
            b"%s %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n"
            % (
                method,
                self.path.encode(),
                self.served.host.encode(),
                self.served.port,
                headers,
            )
        )
        while b"\r\n\r\n" not in peer.received:
            await bounded(peer.received_at_least(len(peer.received) + 1), PROMPT)
        head = bytes(peer.received).partition(b"\r\n\r\n")[0]
        self.assertTrue(head.startswith(b"HTTP/1.1 "), peer.received)
        status = int(head.split(b" ")[1])
        if status != 101:
            await closed_promptly(peer)
        return status, head.lower()

    # The opening handshake.

    UPGRADE = b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    VERSION = b"Sec-WebSocket-Version: 13\r\n"
    KEYED = b"Sec-WebSocket-Key: " + KEY + b"\r\n"

    async def test_missing_key_is_400(self) -> None:
        status, _ = await self.handshake(self.UPGRADE + self.VERSION)
        self.assertEqual(status, 400)
        await self.assert_serves_normally()

    async def test_malformed_key_is_400(self) -> None:
        """
        The key must be 16 bytes, base64-encoded (RFC 6455 4.2.1).
        """
        for key in (b"c2hvcnQ=", b"not base64 at all!!!!!!=", KEY + KEY):
            status, _ = await self.handshake(
                self.UPGRADE + self.VERSION + b"Sec-WebSocket-Key: " + key + b"\r\n"
            )
            self.assertEqual(status, 400, key)
        await self.assert_serves_normally()

    async def test_wrong_version_is_426_naming_13(self) -> None:
        """
        RFC 6455 4.4: an unsupported version gets 426 and the versions the
        server speaks in ``Sec-WebSocket-Version``.
        """
        for version in (b"14", b"12", b"abc", b""):
            status, head = await self.handshake(
                self.UPGRADE
                + self.KEYED
                + b"Sec-WebSocket-Version: "
                + version
                + b"\r\n"
            )
            self.assertEqual(status, 426, version)
            self.assert_names_version_13(head)
        await self.assert_serves_normally()

    def assert_names_version_13(self, head: bytes) -> None:
        """
        ``head``, a lower-cased 426 response head, names version 13 and only
        it, and the protocol to upgrade to (RFC 9110 15.5.22).
        """
        lines = head.split(b"\r\n")[1:]
        versions = [
            line for line in lines if line.startswith(b"sec-websocket-version:")
        ]
        self.assertEqual(versions, [b"sec-websocket-version: 13"], head)
        self.assertIn(b"upgrade: websocket", lines, head)

    async def test_draft_version_8_is_426(self) -> None:
        """
        Version 8 is a pre-RFC draft (hybi-10), not RFC 6455: 426 naming 13.
        """
        status, head = await self.handshake(
            self.UPGRADE + self.KEYED + b"Sec-WebSocket-Version: 8\r\n"
        )
        self.assertEqual(status, 426)
        self.assert_names_version_13(head)
        await self.assert_serves_normally()

    async def test_missing_version_is_400(self) -> None:
        status, _ = await self.handshake(self.UPGRADE + self.KEYED)
        self.assertEqual(status, 400)
        await self.assert_serves_normally()

    async def test_version_sent_twice_is_400(self) -> None:
        """
        Two ``Sec-WebSocket-Version: 13`` lines are a malformed request, not
        an unsupported version: 400, not 426.
        """
        status, _ = await self.handshake(
            self.UPGRADE + self.KEYED + self.VERSION + self.VERSION
        )
        self.assertEqual(status, 400)
        await self.assert_serves_normally()

    async def test_foreign_origin_is_403(self) -> None:
        other_port = b"http://%s:1" % (self.served.host.encode(),)
        for origin in (b"http://evil.test", other_port, b"HTTP://EVIL.TEST"):
            status, _ = await self.handshake(
                self.UPGRADE
                + self.VERSION
                + self.KEYED
                + b"Origin: "
                + origin
                + b"\r\n"
            )
            self.assertEqual(status, 403, origin)
        await self.assert_serves_normally()

    async def test_null_origin_is_403(self) -> None:
        """
        ``Origin: null`` (a sandboxed frame, a file: page) is a valid origin
        (RFC 6454 7.1), and a foreign one: 403, like any other.
        """
        status, _ = await self.handshake(
            self.UPGRADE + self.VERSION + self.KEYED + b"Origin: null\r\n"
        )
        self.assertEqual(status, 403)
        await self.assert_serves_normally()

    async def test_malformed_header_line_is_400(self) -> None:
        """
        Header lines end with CRLF and hold no control bytes but tab (RFC 9112
        2.2, RFC 9110 5.5): a bare LF, a NUL, or a byte that Python's
        ``str.splitlines`` takes for a line end (0x0b, 0x1c, 0x85: autobahn's
        parser would read a header line smuggled in after it, mounted or
        not) is a 400.
        """
        for lines in (
            [b"Upgrade: websocket\nConnection: Upgrade"],
            [b"Upgrade: websocket", b"Connection: Upgrade", b"X-Note: a\x00b"],
            [b"Upgrade: websocket", b"Connection: Upgrade\x1cX-Note: b"],
            [b"Upgrade: websocket", b"Connection: Upgrade\x0bX-Note: b"],
            [b"Upgrade: websocket", b"Connection: Upgrade", b"X-Note: a\x85b"],
        ):
            status, _ = await self.handshake(
                b"".join(line + b"\r\n" for line in lines) + self.VERSION + self.KEYED
            )
            self.assertEqual(status, 400, lines)
        await self.assert_serves_normally()

    async def test_post_upgrade_is_refused(self) -> None:
        """
        The opening handshake is a GET (RFC 6455 4.1): any other method is
        refused, with a 4xx.
        """
        status, _ = await self.handshake(
            self.UPGRADE + self.VERSION + self.KEYED + b"Content-Length: 0\r\n",
            method=b"POST",
        )
        self.assertEqual(status, 405)
        await self.assert_serves_normally()

    # Framing violations (RFC 6455 5.2, 5.4, 5.5): 1002.

    async def test_unmasked_control_frame_is_1002(self) -> None:
        await self.closes_with([frame(PING, b"naked", masked=False)], 1002)

    async def test_rsv1_without_deflate_is_1002(self) -> None:
        await self.closes_with([frame(TEXT, b"odd", rsv=0b100)], 1002)

    async def test_rsv3_is_1002(self) -> None:
        await self.closes_with([frame(BINARY, b"odd", rsv=0b001)], 1002)

    async def test_rsv1_on_continuation_with_deflate_is_1002(self) -> None:
        """
        RFC 7692 6.1: RSV1 is set on the first frame of a message only.
        """
        await self.fails_compressed(
            [
                frame(TEXT, deflate(b"first "), rsv=0b100, fin=False),
                frame(CONTINUATION, deflate(b"second"), rsv=0b100),
            ],
            1002,
        )

    async def test_reserved_opcodes_are_1002(self) -> None:
        for opcode in (0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF):
            ws = await self.raw()
            ws.send(frame(opcode, b"what"))
            self.assertEqual(await ws.close_code(), 1002, hex(opcode))
        await self.assert_serves_normally()

    async def test_continuation_without_start_is_1002(self) -> None:
        await self.closes_with([frame(CONTINUATION, b"orphan")], 1002)

    async def test_new_message_during_fragmented_message_is_1002(self) -> None:
        for second in (TEXT, BINARY):
            ws = await self.raw()
            ws.send(frame(TEXT, b"one ", fin=False))
            ws.send(frame(second, b"two"))
            self.assertEqual(await ws.close_code(), 1002, second)
        await self.assert_serves_normally()

    async def test_control_frame_over_125_bytes_is_1002(self) -> None:
        for opcode, payload in ((PING, b"p" * 126), (PONG, b"p" * 126)):
            ws = await self.raw()
            ws.send(frame(opcode, payload))
            self.assertEqual(await ws.close_code(), 1002, opcode)
        await self.assert_serves_normally()

    async def test_fragmented_control_frame_is_1002(self) -> None:
        for opcode, payload in ((PING, b"half"), (PONG, b"half")):
            ws = await self.raw()
            ws.send(frame(opcode, payload, fin=False))
            self.assertEqual(await ws.close_code(), 1002, opcode)
        await self.assert_serves_normally()

    # Close frames (RFC 6455 5.5.1, 7.4).

    async def test_more_invalid_close_codes_are_1002(self) -> None:
        """
        Beyond the codes tests/test_ws_conformance.py sends: 0, 1016, 2999.
        """
        for payload in (close_payload(0), close_payload(1016), close_payload(2999)):
            ws = await self.raw()
            ws.send(frame(CLOSE, payload))
            self.assertEqual(await ws.close_code(), 1002, payload)
        await self.assert_serves_normally()

    # A malformed close frame fails the connection like any other bad frame
    # (RFC 6455 7.1.7): the server sends its close frame, then closes.

    async def test_close_reason_not_utf8_is_1007(self) -> None:
        await self.closes_with([frame(CLOSE, close_payload(1000, b"\xff\xfe"))], 1007)

    async def test_close_payload_of_one_byte_is_1002(self) -> None:
        await self.closes_with([frame(CLOSE, b"\x03")], 1002)

    async def test_close_frame_over_125_bytes_is_1002(self) -> None:
        await self.closes_with([frame(CLOSE, close_payload(1000, b"r" * 124))], 1002)

    async def test_fragmented_close_frame_is_1002(self) -> None:
        await self.closes_with([frame(CLOSE, close_payload(1000), fin=False)], 1002)

    # UTF-8 across fragments (RFC 6455 8.1): 1007, as early as it is known.

    async def test_character_split_across_fragments_is_fine(self) -> None:
        ws = await self.raw()
        ws.send(frame(TEXT, b"x\xe2", fin=False))
        ws.send(frame(CONTINUATION, b"\x9c", fin=False))
        ws.send(frame(CONTINUATION, b"\x93y"))
        self.assertEqual(await ws.next_frame(), (0x80, TEXT, "Echo: x✓y".encode()))

    async def test_invalid_utf8_split_across_fragments_is_1007(self) -> None:
        """
        Each fragment alone could be the start or end of valid text; together
        they are not.
        """
        await self.closes_with(
            [
                frame(TEXT, b"ok \xe2\x82", fin=False),
                frame(CONTINUATION, b"\x28 rest"),
            ],
            1007,
        )

    async def test_invalid_utf8_fails_before_message_ends(self) -> None:
        """
        The server fails the connection on the first bad fragment, without
        waiting for the rest of the message.
        """
        await self.closes_with([frame(TEXT, b"bad \xff", fin=False)], 1007)

    async def test_truncated_utf8_at_message_end_is_1007(self) -> None:
        await self.closes_with(
            [frame(TEXT, b"cut \xe2", fin=False), frame(CONTINUATION, b"\x82")], 1007
        )

    async def test_invalid_utf8_in_compressed_text_is_1007(self) -> None:
        await self.fails_compressed(
            [frame(TEXT, deflate(b"ok \xc0\xaf"), rsv=0b100)], 1007
        )

    # Compression bombs (RFC 7692, bounded by max_message): 1009.

    async def test_fragmented_compression_bomb_is_1009(self) -> None:
        """
        Each fragment is small and inflates to less than ``max_message``;
        the message as a whole inflates past it.
        """
        bomb = deflate(bytes(MAX_MESSAGE * 64))
        self.assertLess(len(bomb), 8 * 1024)
        third = len(bomb) // 3
        parts = [bomb[:third], bomb[third : 2 * third], bomb[2 * third :]]
        await self.fails_compressed(
            [
                frame(BINARY, parts[0], rsv=0b100, fin=False),
                frame(CONTINUATION, parts[1], fin=False),
                frame(CONTINUATION, parts[2]),
            ],
            1009,
        )

    async def test_text_compression_bomb_is_1009(self) -> None:
        bomb = deflate(b"a" * (MAX_MESSAGE * 16))
        self.assertLess(len(bomb), 8 * 1024)
        await self.fails_compressed([frame(TEXT, bomb, rsv=0b100)], 1009)

    async def test_closes_promptly_after_failing_compressed_message(self) -> None:
        """
        Once the client answers the server's close frame, the server closes
        the TCP connection at once (RFC 6455 7.1.1), as it does after an
        uncompressed failure, not at the closing handshake timeout: after a
        compression bomb, in one frame or in fragments, and after a message
        that cannot be inflated.
        """
        bomb = deflate(bytes(MAX_MESSAGE * 64))
        third = len(bomb) // 3
        for frames, code in (
            ([frame(BINARY, bomb, rsv=0b100)], 1009),
            (
                [
                    frame(BINARY, bomb[:third], rsv=0b100, fin=False),
                    frame(CONTINUATION, bomb[third : 2 * third], fin=False),
                    frame(CONTINUATION, bomb[2 * third :]),
                ],
                1009,
            ),
            ([frame(BINARY, b"\xff" * 32, rsv=0b100)], 1007),
            ([frame(TEXT, deflate(b"x" * 1000)[:-8] + b"\xff" * 8, rsv=0b100)], 1007),
        ):
            ws = await self.raw(DEFLATE)
            for data in frames:
                ws.send(data)
            while True:
                _, opcode, payload = await ws.next_frame()
                if opcode == CLOSE:
                    break
            self.assertEqual(struct.unpack("!H", payload[:2])[0], code, frames[0][:2])
            ws.send(frame(CLOSE, payload[:2]))
            await closed_promptly(ws.peer)
        await self.assert_serves_normally()

    async def test_compressed_message_just_under_limit_is_echoed(self) -> None:
        for size in (MAX_MESSAGE - 1, MAX_MESSAGE):
            message = bytes(size)
            ws = await self.raw(DEFLATE)
            ws.send(frame(BINARY, deflate(message), rsv=0b100))
            flags, opcode, payload = await ws.next_frame()
            echoed = inflate(payload) if flags & 0x40 else payload
            self.assertEqual((opcode, echoed), (BINARY, message), size)

    async def test_compressed_message_just_over_limit_is_1009(self) -> None:
        """
        A message that inflates to a few bytes over ``max_message`` is refused
        with 1009 at once, in one frame or two, not cut to ``max_message`` and
        echoed (zlib may have read all the input and still hold the excess).
        """
        for extra in (1, 5, 64):
            body = deflate(bytes(MAX_MESSAGE + extra))
            half = len(body) // 2
            for frames in (
                [frame(BINARY, body, rsv=0b100)],
                [
                    frame(BINARY, body[:half], rsv=0b100, fin=False),
                    frame(CONTINUATION, body[half:]),
                ],
            ):
                ws = await self.raw(DEFLATE)
                for data in frames:
                    ws.send(data)
                _, opcode, payload = await bounded(
                    Deferred.fromCoroutine(ws.next_frame()), PROMPT
                )
                self.assertEqual(
                    (opcode, struct.unpack("!H", payload[:2])[0]),
                    (CLOSE, 1009),
                    (extra, len(frames)),
                )
                ws.send(frame(CLOSE, payload[:2]))
                await closed_promptly(ws.peer)
        await self.assert_serves_normally()

    async def test_garbage_after_handshake_is_closed(self) -> None:
        """
        Bytes that are not frames at all: a 1002 (an unmasked frame with
        reserved bits), and the connection closes.
        """
        ws = await self.raw()
        ws.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(await ws.close_code(), 1002)
        await self.assert_serves_normally()


class StandaloneTests(Hostile, TestCase):
    path = "/"

    async def test_malformed_request_line_is_400(self) -> None:
        """
        The handshake is an HTTP/1.1 request (RFC 6455 4.1): a request-line
        with control bytes for spaces, or bare LF line ends, is a 400 (RFC
        9112 3), as the mounted service's HTTP parser answers.
        """
        for request_line, end in (
            (b"GET\x1f/\x1fHTTP/1.1", b"\r\n"),
            (b"GET\x00/ HTTP/1.1", b"\r\n"),
            (b"GET / HTTP/1.1", b"\n"),
        ):
            peer = await open_peer(self, self.served)
            lines = [
                request_line,
                b"Host: x",
                b"Upgrade: websocket",
                b"Connection: Upgrade",
                b"Sec-WebSocket-Key: " + KEY,
                b"Sec-WebSocket-Version: 13",
            ]
            peer.transport.write(end.join(lines) + b"\r\n\r\n")
            while end + end not in peer.received and b"\r\n\r\n" not in (peer.received):
                await bounded(peer.received_at_least(len(peer.received) + 1), PROMPT)
            self.assertTrue(
                bytes(peer.received).startswith(b"HTTP/1.1 400 "),
                (request_line, bytes(peer.received[:80])),
            )
        await self.assert_serves_normally()

    def factory(self):
        return wsecho.EchoFactory(LIMITS)


class MountedTests(Hostile, TestCase):
    path = "/ws"

    async def test_malformed_request_line_is_400(self) -> None:
        """
        As for the standalone service; here twisted.web parses the request.
        """
        await StandaloneTests.test_malformed_request_line_is_400(self)

    def factory(self):
        return http.HTTPSite(hello.Root(), limits=LIMITS)
