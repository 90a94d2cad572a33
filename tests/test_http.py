"""
Unit tests of netlab.http: the site and its limits over an in-memory
transport with a fake clock, and the client over loopback.
"""

from __future__ import annotations

import json
import re

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from netlab import http
from netlab.limits import Limits
from netlab.services import hello
from tests.support import bounded


def head_and_body(raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """
    Split one response into its status line, headers (lower-cased names) and body.
    """
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    return status, headers, body


#: Limits small enough for a test to reach each of them.
SMALL_LIMITS = Limits(
    idle_timeout=30,
    head_timeout=5,
    body_timeout=8,
    max_body=1000,
    max_request_line=200,
    max_header_block=400,
    max_headers=5,
)


class Connection:
    """
    One client connection to an :class:`HTTPSite` over a StringTransport.
    """

    def __init__(self, site: http.HTTPSite) -> None:
        self.channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 8080))
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> bytes:
        self.channel.dataReceived(data)
        out = self.transport.value()
        self.transport.clear()
        return out


class SiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.limits = SMALL_LIMITS
        self.site = http.HTTPSite(hello.Root(), limits=self.limits, reactor=self.clock)
        self.connection = Connection(self.site)

    def request(self, raw: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
        return head_and_body(self.connection.send(raw))

    def assert_refused(self, raw: bytes, status: bytes) -> None:
        line, headers, body = self.request(raw)
        self.assertEqual(line.split(b" ")[1], status, (line, body))
        self.assertEqual(headers[b"connection"], b"close")
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(int(headers[b"content-length"]), len(body))
        self.assertTrue(self.connection.transport.disconnecting)
        # Whatever follows is read and dropped, then the connection ends.
        self.assertEqual(self.connection.send(b"GET / HTTP/1.1\r\n\r\n"), b"")
        self.clock.advance(3)
        self.assertTrue(self.connection.transport.disconnected)

    def test_hello(self) -> None:
        status, headers, body = self.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 200 OK")
        self.assertEqual(body, b"Hello, world!")
        self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")
        self.assertEqual(headers[b"content-length"], b"13")
        self.assertEqual(headers[b"server"], b"netlab")

    def test_head_has_no_body(self) -> None:
        status, headers, body = self.request(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b""))
        self.assertEqual(headers[b"content-length"], b"13")

    def test_other_methods_are_405_with_allow(self) -> None:
        for method, path, allow in (
            (b"DELETE", b"/", b"GET, HEAD"),
            (b"POST", b"/", b"GET, HEAD"),
            (b"FROB", b"/echo", b"GET, HEAD, POST"),
            (b"PUT", b"/healthz", b"GET, HEAD"),
        ):
            status, headers, body = self.request(
                method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            self.assertEqual(status, b"HTTP/1.1 405 Method Not Allowed", method)
            self.assertEqual(headers[b"allow"], allow)
            self.assertEqual(body, b"Method not allowed\n")

    def test_unknown_paths_are_404(self) -> None:
        for path in (b"/nope", b"/echo/", b"/healthz/x", b"//", b"/a/b/c"):
            status, headers, body = self.request(
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            self.assertEqual(status, b"HTTP/1.1 404 Not Found", path)
            self.assertEqual(body, b"Not found\n")
            self.assertEqual(headers[b"content-type"], b"text/plain; charset=utf-8")

    def test_health(self) -> None:
        _, headers, body = self.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(json.loads(body), {"status": "ok"})
        self.assertEqual(headers[b"content-type"], b"application/json")

    def test_echo_reflects_the_request(self) -> None:
        _, headers, body = self.request(
            b"POST /echo?a=1&a=2&b= HTTP/1.1\r\nHost: x\r\nX-Thing: one\r\n"
            b"X-Thing: two\r\nContent-Length: 5\r\n\r\nh\xc3\xa9!!"
        )
        self.assertEqual(headers[b"content-type"], b"application/json")
        self.assertEqual(
            json.loads(body),
            {
                "method": "POST",
                "path": "/echo",
                "query": {"a": ["1", "2"], "b": [""]},
                "headers": {
                    "host": ["x"],
                    "x-thing": ["one", "two"],
                    "content-length": ["5"],
                },
                "body": "hé!!",
                "body_encoding": "utf-8",
                "client": {"host": "127.0.0.1", "port": 40000},
            },
        )

    def test_echo_query_is_the_targets_not_a_forms(self) -> None:
        """
        A POSTed form is reflected as the body; ``query`` holds only what
        the target's query says (twisted.web adds a form's fields to
        ``request.args``).
        """
        form = b"c=3&d=4"
        _, _, body = self.request(
            b"POST /echo?a=1 HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(form), form)
        )
        reflection = json.loads(body)
        self.assertEqual(reflection["query"], {"a": ["1"]})
        self.assertEqual(reflection["body"], "c=3&d=4")

    def test_echo_binary_body_is_base64(self) -> None:
        _, _, body = self.request(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n\xff\x00\xfe"
        )
        reflection = json.loads(body)
        self.assertEqual(
            (reflection["body"], reflection["body_encoding"]), ("/wD+", "base64")
        )

    def test_chunked_body(self) -> None:
        _, _, body = self.request(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        self.assertEqual(json.loads(body)["body"], "abcde")

    def test_pipelined_requests_answered_in_order(self) -> None:
        out = self.connection.send(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        statuses = re.findall(rb"HTTP/1\.1 \d\d\d [^\r]*", out)
        self.assertEqual(
            statuses,
            [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found"],
        )
        self.assertLess(out.index(b'{"status"'), out.index(b"Hello, world!"))
        self.assertFalse(self.connection.transport.disconnecting)

    def test_host_required_on_http_1_1(self) -> None:
        self.assert_refused(b"GET / HTTP/1.1\r\n\r\n", b"400")

    def test_two_hosts_refused(self) -> None:
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400")

    def test_bad_host_refused(self) -> None:
        self.assert_refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", b"400")

    def test_http_1_0_needs_no_host(self) -> None:
        status, _, body = self.request(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual((status, body), (b"HTTP/1.0 200 OK", b"Hello, world!"))

    def test_absolute_form_is_served(self) -> None:
        _, _, body = self.request(
            b"GET http://example.test:8080/echo?x=1 HTTP/1.1\r\nHost: other\r\n\r\n"
        )
        reflection = json.loads(body)
        self.assertEqual(reflection["path"], "/echo")
        self.assertEqual(reflection["query"], {"x": ["1"]})
        self.assertEqual(reflection["headers"]["host"], ["example.test:8080"])
        _, _, body = self.request(
            b"GET http://example.test HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(body, b"Hello, world!")

    def test_announced_body_over_limit_is_413_unread(self) -> None:
        self.assert_refused(
            b"POST /echo HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: 100000000000000000000000000\r\n\r\n",
            b"413",
        )

    def test_body_at_the_limit_is_served(self) -> None:
        """
        A body of exactly ``max_body`` bytes is served, announced or in
        chunks; one byte more is ``413``.
        """
        limit = self.limits.max_body
        for size, status in ((limit, b"200"), (limit + 1, b"413")):
            for framing, body in (
                (b"Content-Length: %d\r\n" % size, b"x" * size),
                (
                    b"Transfer-Encoding: chunked\r\n",
                    b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                    % (size - 1, b"x" * (size - 1), 1, b"y"),
                ),
            ):
                connection = Connection(self.site)
                out = connection.send(
                    b"POST /echo HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n" + body
                )
                line, _, reply = head_and_body(out)
                self.assertEqual(line.split(b" ")[1], status, (size, framing))
                if status == b"200":
                    self.assertEqual(len(json.loads(reply)["body"]), size)

    def test_request_line_at_the_limit_is_served(self) -> None:
        """
        A request line of exactly ``max_request_line`` bytes is served,
        whole or a byte at a time; one byte more is ``414``.
        """
        limit = self.limits.max_request_line
        for extra, status in ((0, b"404"), (1, b"414")):
            target = b"/" + b"a" * (limit - len(b"GET / HTTP/1.1") + extra)
            line = b"GET %s HTTP/1.1" % target
            self.assertEqual(len(line), limit + extra)
            raw = line + b"\r\nHost: x\r\n\r\n"
            for parts in ([raw], [raw[i : i + 1] for i in range(len(raw))]):
                connection = Connection(self.site)
                out = b"".join(connection.send(part) for part in parts)
                self.assertEqual(out.split(b" ", 2)[1], status, (extra, len(parts)))

    def test_expect_continue_with_refused_body(self) -> None:
        """
        A client that waits for 100 Continue is told 413 instead, and only that.
        """
        raw = self.connection.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 5000\r\n\r\n"
        )
        self.assertTrue(raw.startswith(b"HTTP/1.1 413 "), raw)
        self.assertNotIn(b"100 Continue", raw)

    def test_expect_continue_with_accepted_body(self) -> None:
        raw = self.connection.send(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            b"Content-Length: 2\r\n\r\n"
        )
        self.assertEqual(raw, b"HTTP/1.1 100 Continue\r\n\r\n")
        _, _, body = self.request(b"hi")
        self.assertEqual(json.loads(body)["body"], "hi")

    def test_chunked_body_over_limit_is_413(self) -> None:
        chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
        self.assert_refused(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * 2,
            b"413",
        )

    def test_long_request_line_is_414(self) -> None:
        self.assert_refused(b"GET /" + b"a" * 300 + b" HTTP/1.1\r\n", b"414")

    def test_long_request_line_without_newline_is_414(self) -> None:
        self.assert_refused(b"GET /" + b"a" * 300, b"414")

    def test_long_header_line_is_431(self) -> None:
        self.assert_refused(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 300 + b"\r\n\r\n", b"431"
        )

    def test_header_block_over_limit_is_431(self) -> None:
        headers = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 150) for i in range(3))
        self.assert_refused(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", b"431"
        )

    def test_too_many_headers_is_431(self) -> None:
        headers = b"".join(b"X-%d: v\r\n" % (i,) for i in range(6))
        self.assert_refused(b"GET / HTTP/1.1\r\n" + headers + b"\r\n", b"431")

    def test_content_length_and_transfer_encoding_is_400(self) -> None:
        self.assert_refused(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"400",
        )

    def test_bad_content_length_is_400(self) -> None:
        for value in (b"-1", b"+5", b"5, 5", b"abc"):
            connection = Connection(self.site)
            out = connection.send(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: "
                + value
                + b"\r\n\r\nhello"
            )
            self.assertTrue(out.startswith(b"HTTP/1.1 400 "), (value, out))

    def test_tls_hello_on_the_plain_port_is_closed_at_once(self) -> None:
        """
        A TLS client on a plain HTTP port is closed at once, unanswered (no
        HTTP response could reach it), not left to the head timeout.
        """
        hello_start = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
        out = self.connection.send(hello_start)
        self.assertEqual(out, b"")
        self.assertTrue(self.connection.transport.disconnecting)

    def test_503_is_followed_by_a_bounded_close(self) -> None:
        """
        Over ``--max-connections``, the client gets ``503`` at once; one
        that neither reads on nor closes is cut off two seconds later (the
        linger), not before.
        """
        site = http.HTTPSite(
            hello.Root(), limits=Limits(max_connections=1), reactor=self.clock
        )
        Connection(site)
        extra = Connection(site)
        self.assertTrue(extra.transport.value().startswith(b"HTTP/1.1 503 "))
        extra.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(1.9)
        self.assertFalse(extra.transport.disconnected)
        self.clock.advance(0.2)
        self.assertTrue(extra.transport.disconnected)

    def test_slow_head_is_cut_off(self) -> None:
        """
        A client trickling its request head a byte at a time gets 408 when the
        head deadline passes, though every byte restarts the idle timer.
        """
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\n":  # 25 bytes, 4.75s
            self.assertEqual(self.connection.send(bytes([byte])), b"")
            self.clock.advance(0.19)
        self.assertEqual(self.connection.send(b"X-A: 1\r\n"), b"")
        self.clock.advance(0.3)
        self.assert_refused(b"", b"408")

    def test_slow_body_is_cut_off(self) -> None:
        """
        A body trickled a byte at a time, each within the idle timeout, is
        cut off with 408 once the body deadline passes (8 s after the head,
        whatever the head took), with a length or in chunks.
        """
        for framing, piece in (
            (b"Content-Length: 500\r\n", b"x"),
            (b"Transfer-Encoding: chunked\r\n", b"1\r\nx\r\n"),
        ):
            self.setUp()
            self.connection.send(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
            self.clock.advance(4)  # the head took 4 of its 5 s
            self.assertEqual(self.connection.send(framing + b"\r\n"), b"")
            for _ in range(79):  # 7.9 s of the body's 8
                self.assertEqual(self.connection.send(piece), b"")
                self.clock.advance(0.1)
            self.assertFalse(self.connection.transport.disconnecting)
            self.clock.advance(0.2)  # past it, whatever the sums' rounding
            self.assert_refused(b"", b"408")

    def test_body_in_time_is_answered(self) -> None:
        self.connection.send(b"POST /echo HTTP/1.1\r\nHost: x\r\n")
        self.connection.send(b"Content-Length: 2\r\n\r\nh")
        self.clock.advance(7.9)
        status, _, body = self.request(b"i")
        self.assertEqual((status, json.loads(body)["body"]), (b"HTTP/1.1 200 OK", "hi"))
        self.clock.advance(20)  # no body deadline left to fire on the next wait
        self.assertFalse(self.connection.transport.disconnecting)

    def test_head_deadline_restarts_per_request(self) -> None:
        self.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(20)  # a kept-alive connection may wait, within idle
        self.assertFalse(self.connection.transport.disconnecting)
        status, _, _ = self.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 200 OK")

    def test_idle_keep_alive_connection_closed(self) -> None:
        self.request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(29)
        self.assertFalse(self.connection.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.connection.transport.disconnecting)

    def test_access_log(self) -> None:
        with capturedLogs() as events:
            self.clock.advance(1)
            self.request(b"GET /nope?q HTTP/1.1\r\nHost: x\r\n\r\n")
        [event] = [e for e in events if "status" in e]
        self.assertEqual(
            {k: event[k] for k in ("method", "path", "status", "bytes", "peer")},
            {
                "method": "GET",
                "path": "/nope?q",
                "status": 404,
                "bytes": 10,
                "peer": "127.0.0.1:40000",
            },
        )
        self.assertEqual(event["duration"], 0)

    def test_connections_tracked(self) -> None:
        self.assertEqual(self.site.connections, {self.connection.channel})
        self.connection.channel.connectionLost(None)
        self.assertEqual(self.site.connections, set())

    def test_closing_a_refused_connection_leaves_no_timer(self) -> None:
        self.request(b"GET / HTTP/1.1\r\n\r\n")
        self.connection.channel.connectionLost(None)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class EmbeddingTests(SynchronousTestCase):
    def test_resources_mount_in_a_plain_site(self) -> None:
        """
        The routes are ordinary resources: mount them anywhere.
        """
        root = Resource()
        root.putChild(b"hi", hello.Hello())
        site = Site(root)
        channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"Hello, world!", transport.value())
        channel.connectionLost(None)


class ClientTests(TestCase):
    timeout = 60

    async def serve(self, site: http.HTTPSite) -> str:
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(site.drained()))
        return f"http://127.0.0.1:{port.getHost().port}"

    async def test_fetch(self) -> None:
        site = http.HTTPSite(hello.Root())
        base = await self.serve(site)
        response = await bounded(http.fetch(base + "/"))
        self.assertEqual((response.code, response.body), (200, b"Hello, world!"))
        response = await bounded(
            http.fetch(
                base + "/echo",
                method="POST",
                headers={"X-One": ["1"]},
                data=b"payload",
            )
        )
        reflection = json.loads(response.body)
        self.assertEqual(reflection["body"], "payload")
        self.assertEqual(reflection["headers"]["x-one"], ["1"])
        # Nothing is kept open for reuse: the server sees every connection end.
        await bounded(site.drained())

    async def test_fetch_bounds_the_body(self) -> None:
        base = await self.serve(http.HTTPSite(hello.Root()))
        await self.assertFailure(
            bounded(http.fetch(base + "/", max_body=5)), http.ResponseTooLarge
        )

    async def test_timeout_covers_the_body(self) -> None:
        """
        A server that sends headers and then stalls fails the fetch at the
        deadline (treq's own timeout would wait forever for the body).
        """
        closed: defer.Deferred[None] = defer.Deferred()

        class Stall(Protocol):
            def dataReceived(self, data: bytes) -> None:
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nab"
                )

            def connectionLost(self, reason: object) -> None:
                closed.callback(None)

        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(Stall)
        )
        self.addCleanup(port.stopListening)
        fetching = http.fetch(f"http://127.0.0.1:{port.getHost().port}/", timeout=0.5)
        await self.assertFailure(bounded(fetching), defer.TimeoutError)
        await bounded(closed)
