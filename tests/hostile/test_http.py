"""
Hostile HTTP/1.1 requests against :class:`netlab.http.HTTPSite` over loopback.

Each case sends raw bytes, checks the exact answer RFC 9112 (and RFC 9110)
asks for, that nothing else is answered (no smuggled second request), that a
refusal closes the connection, and then that a normal client is still served.

Already covered elsewhere, and not repeated here: the in-memory refusals of
``tests/test_http.py`` (limits, ``Host``, slow heads) and the loopback contract
of ``tests/test_http_conformance.py`` (one Content-Length plus
Transfer-Encoding, 413, 414, 431 at the default limits).
"""

from __future__ import annotations

import json

from twisted.trial.unittest import TestCase

from netlab import http
from netlab.limits import Limits
from netlab.services import hello
from netlab.testing import serve
from tests.hostile._helpers import (
    PROMPT,
    Response,
    closed_promptly,
    next_response,
    open_peer,
    parse_responses,
)

LIMITS = Limits(
    idle_timeout=60,
    head_timeout=60,
    body_timeout=1,
    max_body=4096,
    max_request_line=1024,
    max_header_block=4096,
    max_headers=20,
)

HOST = b"Host: example.test\r\n"


def post(headers: bytes, body: bytes = b"", path: bytes = b"/echo") -> bytes:
    return b"POST " + path + b" HTTP/1.1\r\n" + HOST + headers + b"\r\n" + body


def get(path: bytes = b"/", headers: bytes = b"", version: bytes = b"HTTP/1.1"):
    return b"GET " + path + b" " + version + b"\r\n" + HOST + headers + b"\r\n"


CHUNKED = b"Transfer-Encoding: chunked\r\n"
SMUGGLED = b"GET /smuggled HTTP/1.1\r\n" + HOST + b"\r\n"

#: name -> (request, status): refused, with ``Connection: close``, then closed.
REFUSED: dict[str, tuple[bytes, int]] = {
    # Request smuggling: framing the server must not guess at (RFC 9112 6.3).
    "te_then_cl": (
        post(CHUNKED + b"Content-Length: 5\r\n", b"0\r\n\r\n" + SMUGGLED),
        400,
    ),
    "cl_then_folded_te": (
        post(b"Content-Length: 5\r\nTransfer-Encoding:\r\n chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "te_with_space_before_colon": (
        post(b"Content-Length: 5\r\nTransfer-Encoding : chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "duplicate_cl_different": (
        post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"hello!" + SMUGGLED),
        400,
    ),
    # RFC 9110 8.6 allows either refusing or folding equal values: refused.
    "duplicate_cl_same": (
        post(b"Content-Length: 5\r\nContent-Length: 5\r\n", b"hello"),
        400,
    ),
    "cl_list_same": (post(b"Content-Length: 5, 5\r\n", b"hello"), 400),
    "cl_plus_sign": (post(b"Content-Length: +5\r\n", b"hello"), 400),
    "cl_negative": (post(b"Content-Length: -1\r\n", b"hello"), 400),
    "cl_two_numbers": (post(b"Content-Length: 5 5\r\n", b"hello"), 400),
    "cl_hex": (post(b"Content-Length: 0x5\r\n", b"hello"), 400),
    "cl_empty": (post(b"Content-Length: \r\n", b"hello"), 400),
    "cl_underscore": (post(b"Content-Length: 5_0\r\n", b"hello"), 400),
    "cl_exponent": (post(b"Content-Length: 5e0\r\n", b"hello"), 400),
    "cl_non_ascii_digit": (post("Content-Length: ٥\r\n".encode(), b"hello"), 400),
    # Transfer codings other than a final, single chunked (RFC 9112 6.1, 6.3;
    # 501 would also be right for an unknown coding).
    "te_unknown": (post(b"Transfer-Encoding: gzip\r\n"), 400),
    "te_chunked_not_last": (post(b"Transfer-Encoding: chunked, gzip\r\n"), 400),
    "te_chunked_twice": (
        post(b"Transfer-Encoding: chunked, chunked\r\n", b"0\r\n\r\n"),
        400,
    ),
    "te_empty": (post(b"Transfer-Encoding: \r\n"), 400),
    # Bad chunk sizes (RFC 9112 7.1: chunk-size is 1*HEXDIG).
    "chunk_size_not_hex": (post(CHUNKED, b"zz\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_size_negative": (post(CHUNKED, b"-5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_size_0x": (post(CHUNKED, b"0x5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_size_plus": (post(CHUNKED, b"+5\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_size_empty": (post(CHUNKED, b"\r\nhello\r\n0\r\n\r\n"), 400),
    "chunk_data_not_followed_by_crlf": (
        post(CHUNKED, b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED),
        400,
    ),
    # A chunk extension is bounded: 100 kB of it is refused, not buffered.
    "chunk_extension_too_long": (
        post(CHUNKED, b"5;" + b"a" * 100_000 + b"\r\nhello\r\n0\r\n\r\n"),
        400,
    ),
    # obs-fold before any field line has nothing to continue.
    "fold_as_first_line": (b"GET / HTTP/1.1\r\n Host: example.test\r\n\r\n", 400),
    # Line endings: a bare CR, and an LF inside a field value.
    "bare_cr_in_request_line": (b"GET / HTTP/1.1\rX\r\n" + HOST + b"\r\n", 400),
    "lf_in_field_value": (get(headers=b"X-A: a\nb\r\n"), 400),
    "cr_in_field_value": (get(headers=b"X-A: a\rb\r\n"), 400),
    # NUL and other control bytes (RFC 9110 5.5, RFC 9112 3).
    "nul_in_target": (get(b"/\x00"), 400),
    "nul_in_method": (b"GE\x00T / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "nul_in_version": (get(version=b"HTTP/1.1\x00"), 400),
    "control_in_target": (get(b"/\x01a"), 400),
    "escape_in_target": (get(b"/\x1b[2J"), 400),
    "non_ascii_in_target": (get(b"/\xff"), 400),
    "nul_in_field_name": (get(headers=b"X-\x00A: 1\r\n"), 400),
    "nul_in_field_value": (get(headers=b"X-A: a\x00b\r\n"), 400),
    # Other control bytes in a value: refused (RFC 9110 5.5 allows it), so
    # that no terminal escape reaches the access log or the application.
    "control_in_field_value": (get(headers=b"X-A: a\x01b\r\n"), 400),
    "escape_in_field_value": (get(headers=b"X-A: \x1b[2J\r\n"), 400),
    "del_in_field_value": (get(headers=b"X-A: a\x7fb\r\n"), 400),
    "control_in_folded_line": (get(headers=b"X-A: a\r\n \x1bb\r\n"), 400),
    "space_in_field_name": (get(headers=b"X A: 1\r\n"), 400),
    "space_before_colon": (get(headers=b"X-A : 1\r\n"), 400),
    "field_without_colon": (get(headers=b"X-A\r\n"), 400),
    "empty_field_name": (get(headers=b": 1\r\n"), 400),
    # Oversize heads.
    "request_line_too_long": (get(b"/" + b"a" * 2000), 414),
    "request_line_too_long_unterminated": (b"GET /" + b"a" * 2000, 414),
    "field_line_too_long": (get(headers=b"X-Big: " + b"b" * 2000 + b"\r\n"), 431),
    "header_block_too_large": (
        get(headers=b"".join(b"X-%d: %s\r\n" % (i, b"v" * 900) for i in range(5))),
        431,
    ),
    "too_many_fields": (
        get(headers=b"".join(b"X-%d: v\r\n" % (i,) for i in range(21))),
        431,
    ),
    # Methods are tokens (RFC 9110 9.1, 5.6.2).
    "method_with_parenthesis": (b"G(ET / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "method_with_at": (b"GE@T / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "method_non_ascii": ("GÉT / HTTP/1.1\r\n".encode() + HOST + b"\r\n", 400),
    "method_with_slash": (b"GET/ / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    # Request-line shape (RFC 9112 3: single spaces, three parts).
    "two_spaces": (b"GET  / HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "four_parts": (b"GET / x HTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "tabs_as_separators": (b"GET\t/\tHTTP/1.1\r\n" + HOST + b"\r\n", 400),
    "no_version": (b"GET /\r\n" + HOST + b"\r\n", 400),
    # Versions (RFC 9112 2.3; 505 would also be allowed for the well-formed
    # but unsupported ones).
    "version_2_0": (get(version=b"HTTP/2.0"), 400),
    "version_1_2": (get(version=b"HTTP/1.2"), 400),
    "version_3": (get(version=b"HTTP/3"), 400),
    "version_garbage": (get(version=b"FOO/1.1"), 400),
    "version_lower_case": (get(version=b"http/1.1"), 400),
    "version_two_digit_minor": (get(version=b"HTTP/1.10"), 400),
    "version_leading_zero": (get(version=b"HTTP/01.1"), 400),
    "h2_preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
}


class Hostile:
    """
    A running site and raw peers to talk to it.
    """

    timeout = 60

    async def setUp(self) -> None:
        self.served = await serve(self, http.HTTPSite(hello.Root(), limits=LIMITS))

    async def send(self, raw: bytes):
        peer = await open_peer(self, self.served)
        peer.transport.write(raw)
        return peer

    async def refused(self, raw: bytes, status: int) -> Response:
        """
        ``raw`` is answered with ``status``, ``Connection: close`` and a
        plain body, and nothing else; the server closes promptly; then a
        normal client is served.
        """
        peer = await self.send(raw)
        response = await next_response(peer)
        self.assertEqual(response.status, status, response)
        await closed_promptly(peer)
        responses, rest = parse_responses(bytes(peer.received))
        self.assertEqual((responses, rest), ([response], b""), peer.received)
        self.assertEqual(response.header(b"connection"), [b"close"])
        self.assertEqual(response.header(b"content-type"), [http.TEXT])
        await self.assert_serves_normally()
        return response

    async def served_with(self, raw: bytes, status: int) -> Response:
        """
        ``raw`` is answered with ``status``, exactly once, the connection
        stays open for the next request, and a normal client is served.
        """
        peer = await self.send(raw)
        response = await next_response(peer)
        self.assertEqual(response.status, status, response)
        self.assertEqual(response.header(b"server"), [b"netlab"])
        # The same connection takes another request.
        peer.transport.write(get())
        responses, rest = [], b""
        for _ in range(50):
            responses, rest = parse_responses(bytes(peer.received))
            if len(responses) >= 2:
                break
            await peer.received_at_least(len(peer.received) + 1)
        self.assertEqual([r.status for r in responses], [status, 200])
        self.assertEqual((responses[1].body, rest), (hello.HELLO, b""))
        await self.assert_serves_normally()
        return response

    async def assert_serves_normally(self) -> None:
        response = await http.fetch(self.served.url("/"), timeout=PROMPT * 3)
        self.assertEqual((response.code, response.body), (200, hello.HELLO))


def _refusal_test(name: str, raw: bytes, status: int):
    async def test(self: Hostile) -> None:
        await self.refused(raw, status)

    test.__name__ = f"test_{name}"
    test.__doc__ = f"{name.replace('_', ' ')}: {status}."
    return test


class RefusalTests(Hostile, TestCase):
    """
    Malformed and oversize requests: refused with the status RFC 9112 names.
    """

    locals().update(
        {
            f"test_{name}": _refusal_test(name, raw, status)
            for name, (raw, status) in REFUSED.items()
        }
    )

    async def test_expect_continue_with_refused_body(self) -> None:
        """
        ``Expect: 100-continue`` with a Content-Length over the limit: 413 and
        no ``100 Continue``, so a waiting client never sends the body.
        """
        peer = await self.send(
            post(b"Expect: 100-continue\r\nContent-Length: 5000\r\n")
        )
        response = await next_response(peer)
        await closed_promptly(peer)
        self.assertNotIn(b"100 Continue", bytes(peer.received))
        self.assertEqual(response.status, 413)
        self.assertEqual(response.header(b"connection"), [b"close"])
        await self.assert_serves_normally()

    async def test_announced_chunk_over_limit(self) -> None:
        """
        A chunk whose size line alone takes the body past ``max_body`` is
        refused when the size line arrives, as a Content-Length over the limit
        is: 413 (or 400 for an absurd size), without waiting for the data
        (0x1001 is 4097 bytes, one over ``max_body``).
        """
        for size, data in ((b"1001", b"hello"), (b"1001", b""), (b"f" * 24, b"x")):
            peer = await self.send(post(CHUNKED, size + b"\r\n" + data))
            response = await next_response(peer)
            await closed_promptly(peer)
            self.assertIn(response.status, (400, 413), size)
        await self.assert_serves_normally()

    async def test_bare_lf_line_endings(self) -> None:
        """
        RFC 9112 2.2: a server MAY take a bare LF as a line end; otherwise the
        request is malformed. Either way it answers promptly (200 or 400), not
        at the head timeout.
        """
        peer = await self.send(b"GET / HTTP/1.1\nHost: example.test\n\n")
        response = await next_response(peer)
        self.assertIn(response.status, (200, 400))
        await self.assert_serves_normally()

    async def test_body_that_stops_coming(self) -> None:
        """
        A body that stops short (a slow-loris upload) is cut off with 408
        once its deadline passes, long before the idle timeout would.
        """
        for framing, start in (
            (b"Content-Length: 100\r\n", b"abc"),
            (CHUNKED, b"64\r\nabc"),
        ):
            await self.refused(post(framing, start), 408)

    async def test_del_in_target(self) -> None:
        """
        DEL (0x7F) is a control character, not allowed in a request-target
        (RFC 3986): an invalid request-line is a 400 (RFC 9112 3.2), like
        NUL and 0x01 already are.
        """
        await self.refused(get(b"/\x7f"), 400)

    async def test_absolute_form_with_empty_host(self) -> None:
        """
        ``http:///echo``: an http URI with an empty host is invalid and MUST
        be rejected (RFC 9110 4.2.1); the Host header does not rescue it
        (RFC 9112 3.2.2 says the target's authority wins).
        """
        await self.refused(get(b"http:///echo"), 400)


class ServedTests(Hostile, TestCase):
    """
    Odd but valid (or tolerably repaired) requests: answered, and the
    connection goes on.
    """

    async def test_obs_fold_joined_with_space(self) -> None:
        """
        RFC 9112 5.2: obs-fold is refused or replaced by spaces; netlab
        replaces it.
        """
        response = await self.served_with(
            get(b"/echo", b"X-A: one\r\n two\r\nX-B: three\r\n\tfour\r\n"), 200
        )
        headers = json.loads(response.body)["headers"]
        self.assertEqual(
            (headers["x-a"], headers["x-b"]), (["one two"], ["three four"])
        )

    async def test_chunk_extension_within_bound(self) -> None:
        response = await self.served_with(
            post(CHUNKED, b"5;name=value;" + b"a" * 900 + b"\r\nhello\r\n0\r\n\r\n"),
            200,
        )
        self.assertEqual(json.loads(response.body)["body"], "hello")

    async def test_chunked_is_case_insensitive(self) -> None:
        response = await self.served_with(
            post(b"Transfer-Encoding: ChUnKeD\r\n", b"2\r\nhi\r\n0\r\n\r\n"), 200
        )
        self.assertEqual(json.loads(response.body)["body"], "hi")

    async def test_tab_in_field_value(self) -> None:
        """
        RFC 9110 5.5: HTAB is whitespace, allowed inside a field value.
        """
        response = await self.served_with(get(b"/echo", b"X-A: a\tb\r\n"), 200)
        self.assertEqual(json.loads(response.body)["headers"]["x-a"], ["a\tb"])

    async def test_one_empty_line_before_request(self) -> None:
        """
        RFC 9112 2.2: a server SHOULD ignore at least one empty line before
        the request-line.
        """
        await self.served_with(b"\r\n" + get(), 200)

    async def test_absolute_form_authority_wins(self) -> None:
        """
        RFC 9112 3.2.2: the target's authority replaces the Host header.
        """
        response = await self.served_with(
            b"GET https://example.test/echo?x=1 HTTP/1.1\r\nHost: other\r\n\r\n", 200
        )
        reflection = json.loads(response.body)
        self.assertEqual(
            (reflection["headers"]["host"], reflection["path"], reflection["query"]),
            (["example.test"], "/echo", {"x": ["1"]}),
        )

    async def test_lower_case_method_is_another_method(self) -> None:
        """
        Methods are case-sensitive: ``get`` is not GET, so 405.
        """
        response = await self.served_with(b"get / HTTP/1.1\r\n" + HOST + b"\r\n", 405)
        self.assertEqual(response.header(b"allow"), [b"GET, HEAD"])

    async def test_options_star(self) -> None:
        """
        ``OPTIONS *`` asks about the server as a whole (RFC 9110 9.3.7): 200,
        and no version in the Server header, as on every other answer.
        """
        await self.served_with(b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n", 200)

    async def test_get_star(self) -> None:
        """
        ``GET *``: the asterisk-form is only for OPTIONS (RFC 9112 3.2.4);
        refused (405 with ``Allow: OPTIONS``), without naming the version.
        """
        response = await self.served_with(b"GET * HTTP/1.1\r\n" + HOST + b"\r\n", 405)
        self.assertEqual(response.header(b"allow"), [b"OPTIONS"])

    async def test_http_1_0_with_transfer_encoding_closes(self) -> None:
        """
        RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding has faulty framing; the
        server answers and closes, even when asked to keep the connection,
        so the pipelined request behind it is never read.
        """
        peer = await self.send(
            b"POST /echo HTTP/1.0\r\nConnection: keep-alive\r\n"
            + CHUNKED
            + b"\r\n0\r\n\r\n"
            + b"GET /smuggled HTTP/1.0\r\n\r\n"
        )
        response = await next_response(peer)
        await closed_promptly(peer)
        responses, rest = parse_responses(bytes(peer.received))
        self.assertEqual(([r.status for r in responses], rest), ([200], b""))
        self.assertEqual(response.status, 200)
        await self.assert_serves_normally()
