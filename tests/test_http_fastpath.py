"""
netlab.http answers a simple GET or HEAD of a :class:`~netlab.http.Fixed`
route straight from the request head, without twisted.web's ``Request``.
These tests hold that path to twisted.web's: the same bytes, the same
access-log event and metrics, the same refusals, and every other request
left to twisted.web.

A head that arrives whole in one read takes the fast path when it can; one
that arrives a byte at a time always takes twisted.web's (the fast path only
looks at a read that starts a request), which is how the two are compared.
"""

from __future__ import annotations

import email.utils
import pathlib
import re
import time
from typing import Any

from twisted.internet import task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from netlab import auth, http, metrics
from netlab.services import hello
from netlab.tools.bench import userapp
from tests.test_http import SMALL_LIMITS, Connection, head_and_body

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")
# RFC 9110's IMF-fixdate, the one form a server may send.
_IMF_FIXDATE = re.compile(
    rb"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d "
    rb"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT"
)


def assert_date_now(case: SynchronousTestCase, answer: bytes) -> None:
    """
    ``answer`` carries one ``Date`` header, which :func:`assert_current_date`.
    """
    head = answer.split(b"\r\n\r\n")[0] + b"\r\n"
    dates = re.findall(rb"\r\nDate: ([^\r]*)\r\n", head)
    case.assertEqual(len(dates), 1, answer)
    assert_current_date(case, dates[0])


def assert_current_date(case: SynchronousTestCase, date: bytes) -> None:
    """
    ``date`` is an IMF-fixdate within a minute of the real time (the header
    is the wall clock's, not a reactor's).
    """
    case.assertIsNotNone(_IMF_FIXDATE.fullmatch(date), date)
    sent = email.utils.parsedate_to_datetime(date.decode()).timestamp()
    case.assertLess(abs(sent - time.time()), 60, date)


class CountingRequest(http.LimitedRequest):
    """
    netlab's request, counting how many twisted.web ``Request`` objects a
    site makes.
    """

    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        CountingRequest.made += 1
        super().__init__(*args, **kwargs)


_ACCESS_FIELDS = ("method", "path", "status", "bytes", "peer", "connection", "client")


def refused_heads(path: bytes) -> list[tuple[bytes, bytes]]:
    """
    :return: heads for ``path`` that break a rule or one of
        ``SMALL_LIMITS``, each with the status netlab refuses it with.
    """
    line = b"GET %s HTTP/1.1\r\n" % path
    many = b"".join(b"X-%d: v\r\n" % i for i in range(5))
    large = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(4))
    return [
        (line + b"\r\n", b"400"),
        (line + b"Host: a\r\nHost: b\r\n\r\n", b"400"),
        (line + b"Host: a/b\r\n\r\n", b"400"),
        (line + b"Host: x\r\n: v\r\n\r\n", b"400"),
        (b"GET %s\x7f HTTP/1.1\r\nHost: x\r\n\r\n" % path, b"400"),
        (line + b"Host: x\r\nBad Name: v\r\n\r\n", b"400"),
        (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
        (line + b"Host: x\r\nX-Long: " + b"v" * 195 + b"\r\n\r\n", b"431"),
        (line + b"Host: x\r\n" + many + b"\r\n", b"431"),
        (line + b"Host: x\r\n" + large + b"\r\n", b"431"),
    ]


class Probe(http.Fixed):
    """
    A fixed route that counts how often twisted.web rendered it.
    """

    body = b"probe body\n"
    rendered = 0

    def render_GET(self, request: http.Request) -> bytes:
        self.rendered += 1
        return super().render_GET(request)


class ProbeRoot(hello.Root):
    """
    netlab's root with :class:`Probe` at ``/probe``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.probe = Probe()
        self.putChild(b"probe", self.probe)


class FastPathTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.root = ProbeRoot()
        self.site = http.HTTPSite(self.root, limits=SMALL_LIMITS, reactor=self.clock)

    def exchange(self, raw: bytes, whole: bool) -> tuple[bytes, list[dict], bool]:
        """
        Send ``raw`` on a new connection, whole or a byte at a time.

        :return: what came back (its Date blanked), the access-log events,
            and whether the connection is closing.
        """
        connection = Connection(self.site)
        out = b""
        with capturedLogs() as events:
            if whole:
                out = connection.send(raw)
            else:
                for i in range(len(raw)):
                    out += connection.send(raw[i : i + 1])
        access = [
            {key: event[key] for key in ("method", "path", "status", "bytes", "peer")}
            for event in events
            if "status" in event and "duration" in event
        ]
        closing = connection.transport.disconnecting
        return _DATE.sub(b"\r\nDate: -\r\n", out), access, closing

    def assert_same(self, raw: bytes, rendered: int = 0) -> bytes:
        """
        ``raw`` gets the same answer and log whole and byte by byte; whole,
        the probe is rendered ``rendered`` times.

        :return: the answer.
        """
        before = self.root.probe.rendered
        whole = self.exchange(raw, whole=True)
        self.assertEqual(self.root.probe.rendered - before, rendered, raw)
        slow = self.exchange(raw, whole=False)
        self.assertEqual(whole, slow, raw)
        return whole[0]

    def test_same_bytes_and_log_as_twisted_web(self) -> None:
        """
        Answered from the head, GET and HEAD of fixed routes give exactly
        what twisted.web gives them, and the same access-log event.
        """
        for raw in (
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /?a=1&access_token=secret HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: [::1]:8080\r\nConnection: Keep-Alive\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \t b  c \t\r\nX-Empty:\r\n\r\n",
        ):
            out = self.assert_same(raw)
            self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
        # The token in the query never reaches the log.
        _, [access], _ = self.exchange(
            b"GET /?access_token=secret HTTP/1.1\r\nHost: x\r\n\r\n", whole=True
        )
        self.assertEqual(access["path"], "/?access_token=REDACTED")

    def test_served_routes_answered_from_the_head(self) -> None:
        """
        The service's own ``GET /`` and ``/healthz`` (and their ``HEAD``),
        as ``twistd netlab-http`` serves them, build no twisted.web
        ``Request``: the headline HTTP figure rests on that path. ``/echo``
        does build one.
        """
        site = hello.site(limits=SMALL_LIMITS, reactor=self.clock)
        site.requestFactory = CountingRequest
        for raw in (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            CountingRequest.made = 0
            out = Connection(site).send(raw)
            self.assertTrue(out.startswith(b"HTTP/1.1 200 OK\r\n"), out)
            self.assertEqual(CountingRequest.made, 0, raw)
        Connection(site).send(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(CountingRequest.made, 1)

    def test_date_is_now_on_every_path(self) -> None:
        """
        Every answer's ``Date`` is a valid IMF-fixdate of the current time:
        answered from the head, made from the head, and parsed line by line
        by twisted.web; and a later second gets a later date.
        """
        raw = b"GET /%s HTTP/1.1\r\nHost: x\r\n\r\n"
        for target in (b"", b"healthz", b"probe", b"echo"):
            connection = Connection(self.site)
            assert_date_now(self, connection.send(raw % target))
            slow = b""
            for i in range(len(raw % target)):
                slow += connection.send((raw % target)[i : i + 1])
            assert_date_now(self, slow)
        self.assertNotEqual(http._http_date(0), http._http_date(86400.5))
        self.assertEqual(http._http_date(1e9), b"Sun, 09 Sep 2001 01:46:40 GMT")

    def test_anything_else_goes_to_twisted_web(self) -> None:
        """
        Heads the fast path does not take, valid or not, are answered by
        twisted.web (the probe renders) with netlab's usual status.
        """
        for raw, status in (
            (b"GET /probe HTTP/1.0\r\n\r\n", b"200"),
            (b"GET /probe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"200"),
            (b"GET /probe HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"200"),
            (b"GET /probe HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n", b"100"),
            (b"GET /probe HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n", b"200"),
            (b"GET /probe HTTP/1.1\r\nHost: x\r\nX-Bin: \xff\r\n\r\n", b"200"),
            (b"GET /probe HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n", b"200"),
            (b"GET /probe/ HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
            (b"GET /pro%62e HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
            (b"GET http://x/probe HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        ):
            before = self.root.probe.rendered
            out, _, _ = self.exchange(raw, whole=True)
            self.assertEqual(out.split(b" ", 2)[1], status, raw)
            if status != b"404":
                self.assertEqual(self.root.probe.rendered - before, 1, raw)

    def test_refusals_are_twisted_webs(self) -> None:
        """
        A head that breaks a rule or a limit is refused as netlab refuses it
        on twisted.web's path, however it arrives.
        """
        for raw, status in refused_heads(b"/"):
            out = self.assert_same(raw)
            self.assertEqual(out.split(b" ", 2)[1], status, raw)

    def test_pipelined_in_order(self) -> None:
        """
        Requests sent together are answered in order, fixed ones from their
        heads and the rest by twisted.web, and a head cut in two by a read
        is finished by the next.
        """
        connection = Connection(self.site)
        out = connection.send(
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /heal"
        )
        out += connection.send(b"thz HTTP/1.1\r\nHost: x\r\n\r\n")
        bodies = []
        while out:
            status, headers, rest = head_and_body(out)
            self.assertEqual(status, b"HTTP/1.1 200 OK")
            # The second answer is the HEAD's: no body.
            length = 0 if len(bodies) == 1 else int(headers[b"content-length"])
            bodies.append(rest[:length])
            out = rest[length:]
        self.assertEqual(bodies[0], b"Hello, world!")
        self.assertEqual(bodies[1], b"")
        self.assertIn(b'"body": "hi"', bodies[2])
        self.assertEqual(bodies[3:], [b"probe body\n", b'{"status": "ok"}\n'])
        self.assertFalse(connection.transport.disconnecting)

    def test_counted_in_metrics(self) -> None:
        """
        A request answered from its head is counted like any other.
        """
        key = ("http", "GET", "200")
        before = metrics.HTTP_REQUESTS.values[key]
        self.exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", whole=True)
        self.assertEqual(metrics.HTTP_REQUESTS.values[key] - before, 1)

    def test_timeouts_still_hold(self) -> None:
        """
        After a request answered from its head, no head timer is left
        running and the idle timeout still closes the connection.
        """
        connection = Connection(self.site)
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(SMALL_LIMITS.idle_timeout - 1)
        connection.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.clock.advance(SMALL_LIMITS.idle_timeout - 1)
        self.assertFalse(connection.transport.disconnecting)
        self.clock.advance(2)
        self.assertTrue(connection.transport.disconnecting)

    def test_draining_closes_after_the_answer(self) -> None:
        """
        A request under way when the service starts stopping is answered
        with ``Connection: close``, and what was sent after it is not.
        """
        connection = Connection(self.site)
        connection.send(b"GET / HTTP/1.1\r\nHost")
        self.site.drain()
        status, headers, body = head_and_body(
            connection.send(b": x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        )
        self.assertEqual((status, body), (b"HTTP/1.1 200 OK", b"Hello, world!"))
        self.assertEqual(headers[b"connection"], b"close")
        self.assertTrue(connection.transport.disconnecting)

    def test_protected_paths_are_not_answered_from_the_head(self) -> None:
        """
        A fixed route that needs a token is left to the guard: 401.
        """
        secret = pathlib.Path(self.mktemp())
        secret.write_bytes(b"s" * 32)
        site = http.HTTPSite(
            ProbeRoot(),
            limits=SMALL_LIMITS,
            reactor=self.clock,
            protection=auth.Protection(
                auth.JWTChecker(auth.secret_from_file(secret)), ("/probe",)
            ),
        )
        out = Connection(site).send(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 401 "), out)
        out = Connection(site).send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out)

    def test_other_roots_are_not_answered_from_the_head(self) -> None:
        """
        A root without ``fixed_route`` is served by twisted.web alone.
        """
        root = Resource()
        probe = Probe()
        root.putChild(b"probe", probe)
        site = http.HTTPSite(root, limits=SMALL_LIMITS, reactor=self.clock)
        out = Connection(site).send(b"GET /probe HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(out.endswith(b"probe body\n"), out)
        self.assertEqual(probe.rendered, 1)


class CountingChannel(http.LimitedChannel):
    """
    Counts the requests made at once from their heads, and the lines
    twisted.web's parser was given.
    """

    made = lines = 0

    def lineReceived(self, line: bytes) -> None:
        CountingChannel.lines += 1
        super().lineReceived(line)

    def _request_from_head(self, *args: Any) -> None:
        CountingChannel.made += 1
        super()._request_from_head(*args)


class Reflect(Resource):
    """
    A user's resource answering with what twisted.web's ``Request`` holds.
    """

    isLeaf = True

    def render_GET(self, request: http.Request) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain")
        seen = {
            "method": request.method,
            "uri": request.uri,
            "path": request.path,
            "args": sorted(request.args.items()),
            "headers": sorted(request.requestHeaders.getAllRawHeaders()),
            "cookies": sorted(request.received_cookies.items()),
            "client": request.getClientAddress(),
            "host": request.getHost(),
            "proto": request.clientproto,
            "prepath": request.prepath,
            "postpath": request.postpath,
            "content": request.content.read(),
        }
        return repr(seen).encode()


class Later(Resource):
    """
    Answers once the test says so (``NOT_DONE_YET``).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[http.Request] = []

    def render_GET(self, request: http.Request) -> Any:
        self.waiting.append(request)
        return NOT_DONE_YET


class UserTreeTests(SynchronousTestCase):
    """
    A simple head of a user's tree gets its ``Request`` made at once; the
    request, response and access event are those of twisted.web's path.
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        tree = Resource()
        tree.putChild(b"hello", userapp.Hello())
        tree.putChild(b"reflect", Reflect())
        self.later = Later()
        tree.putChild(b"later", self.later)
        self.site = http.HTTPSite(
            http.UserRoot(tree), limits=SMALL_LIMITS, reactor=self.clock
        )
        self.site.protocol = CountingChannel

    def exchange(self, raw: bytes, whole: bool) -> tuple[bytes, list[dict], int]:
        """
        :return: what came back to ``raw`` (Date blanked), its access-log
            events, and how many requests were made at once.
        """
        connection = Connection(self.site)
        CountingChannel.made = 0
        out = b""
        with capturedLogs() as events:
            for part in [raw] if whole else [raw[i : i + 1] for i in range(len(raw))]:
                out += connection.send(part)
        access = [
            {key: event[key] for key in _ACCESS_FIELDS}
            for event in events
            if "status" in event and "duration" in event
        ]
        for event in access:
            self.assertEqual(event.pop("connection"), connection.channel.connection_id)
        return _DATE.sub(b"\r\nDate: -\r\n", out), access, CountingChannel.made

    def assert_same(self, raw: bytes, fast: bool = True) -> bytes:
        """
        ``raw`` gets the same answer and log whole as byte by byte (always
        twisted.web's parser); whole, it took the fast path if ``fast``.

        :return: the answer.
        """
        out, access, made = self.exchange(raw, whole=True)
        slow_out, slow_access, slow_made = self.exchange(raw, whole=False)
        self.assertEqual((out, access), (slow_out, slow_access), raw)
        self.assertEqual((made, slow_made), (int(fast), 0), raw)
        return out

    def test_same_request_answer_and_log(self) -> None:
        """
        Made at once, the request holds what twisted.web's parser puts in
        it (headers, arguments, cookies, addresses, an empty body), and the
        answer and access event are byte for byte and field for field the
        same.
        """
        for raw in (
            b"GET /hello?name=bench HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
            b"HEAD /hello?name=x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
            b"GET /reflect/a%20b/?x=1&x=2&y=%41;z HTTP/1.1\r\nhost: [::1]:8\r\n"
            b"Cookie: a=1; b=2\r\nX-Two: 1\r\nx-two: \t2 \r\nAccept: */*\r\n\r\n",
            b"GET /reflect?access_token=secret HTTP/1.1\r\nHost: x\r\n\r\n",
            b"HEAD /reflect HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n",
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n",
        ):
            out = self.assert_same(raw)
            self.assertTrue(out.startswith(b"HTTP/1.1 "), out)
        out = self.assert_same(
            b"GET /reflect/a%20b/?x=1&x=2&y=%41;z HTTP/1.1\r\nHost: x\r\n"
            b"Cookie: a=1; b=2\r\nX-Two: 1\r\nx-two: 2\r\n\r\n"
        )
        self.assertIn(b"(b'X-Two', [b'1', b'2'])", out)
        self.assertIn(b"(b'a', b'1'), (b'b', b'2')", out)
        self.assertIn(b"'postpath': [b'a b', b'']", out)
        _, [access], _ = self.exchange(
            b"GET /reflect?access_token=secret HTTP/1.1\r\nHost: x\r\n\r\n", True
        )
        self.assertEqual(access["path"], "/reflect?access_token=REDACTED")

    def test_other_heads_and_limits_take_twisted_webs_path(self) -> None:
        """
        A head the fast path does not take is parsed line by line, with
        netlab's checks and refusals.
        """
        for raw, status in [
            (b"GET /hello HTTP/1.0\r\n\r\n", b"200"),
            (b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"200"),
            (b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", b"405"),
            (b"GET http://x/hello HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
            *refused_heads(b"/hello"),
        ]:
            out = self.assert_same(raw, fast=False)
            self.assertEqual(out.split(b" ", 2)[1], status, raw)
        # A header block one byte over its limit (its lines and the empty
        # one that ends it), then one exactly at it.
        for filler, status, fast in (
            (b"v" * 9, b"431", False),
            (b"v" * 8, b"200", True),
        ):
            block = (
                b"Host: x\r\nX-A: "
                + b"v" * 180
                + b"\r\nX-B: "
                + b"v" * 180
                + b"\r\nX-C: "
                + filler
                + b"\r\n"
            )
            out = self.assert_same(b"GET /hello HTTP/1.1\r\n" + block + b"\r\n", fast)
            self.assertEqual(out.split(b" ", 2)[1], status, len(block))
        # Just within every limit: still the fast path.
        within = (
            b"GET /hello HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 80) for i in range(4))
            + b"\r\n"
        )
        self.assertLessEqual(len(within) - len(b"GET /hello HTTP/1.1\r\n"), 400)
        self.assertTrue(self.assert_same(within).startswith(b"HTTP/1.1 200 "))

    def test_answer_later_pipelined_and_idle_timer(self) -> None:
        """
        A request answered later holds the requests pipelined behind it and
        stops the idle timeout until it is answered; one answered at once
        leaves the idle timer running.
        """
        connection = Connection(self.site)
        out = connection.send(
            b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /hello?name=b HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertEqual(out, b"")
        self.clock.advance(SMALL_LIMITS.idle_timeout * 2)
        self.assertFalse(connection.transport.disconnecting)
        [request] = self.later.waiting
        request.write(b"done")
        request.finish()
        out = connection.transport.value()
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 2, out)
        self.assertTrue(out.endswith(b"Hello, b!"), out)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(SMALL_LIMITS.idle_timeout + 1)
        self.assertTrue(connection.transport.disconnecting)

    def test_draining_during_a_streamed_answer(self) -> None:
        """
        A response already being written when the service starts stopping
        is finished, and then the connection closes (its headers, sent,
        cannot say ``Connection: close``).
        """
        connection = Connection(self.site)
        connection.send(b"GET /later HTTP/1.1\r\nHost: x\r\n\r\n")
        [request] = self.later.waiting
        request.setHeader(b"Content-Length", b"4")
        request.write(b"do")
        self.site.drain()
        self.assertFalse(connection.transport.disconnecting)
        request.write(b"ne")
        request.finish()
        out = connection.transport.value()
        self.assertTrue(out.endswith(b"\r\n\r\ndone"), out)
        self.assertTrue(connection.transport.disconnecting)

    def test_blank_line_before_a_request(self) -> None:
        """
        twisted.web eats one empty line before a request line; the next
        request after it is parsed as twisted.web would, then the fast path
        serves again.
        """
        connection = Connection(self.site)
        simple = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"
        connection.send(b"\r\n")
        CountingChannel.lines = 0
        self.assertIn(b"200 OK", connection.send(simple))
        self.assertGreater(CountingChannel.lines, 0)
        CountingChannel.lines = 0
        self.assertIn(b"200 OK", connection.send(simple))
        self.assertEqual(CountingChannel.lines, 0)
        out = connection.send(b"\r\n" + simple)
        self.assertIn(b"200 OK", out)
