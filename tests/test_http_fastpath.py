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

import pathlib
import re

from twisted.internet import task
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource

from netlab import auth, http, metrics
from netlab.services import hello
from tests.test_http import SMALL_LIMITS, Connection, head_and_body

_DATE = re.compile(rb"\r\nDate: [^\r]*\r\n")


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
        many = b"".join(b"X-%d: v\r\n" % i for i in range(5))
        for raw, status in (
            (b"GET / HTTP/1.1\r\n\r\n", b"400"),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", b"400"),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", b"400"),
            (b"GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", b"400"),
            (b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n", b"400"),
            (b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"v" * 195 + b"\r\n\r\n",
                b"431",
            ),
            (b"GET / HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n", b"431"),
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n"
                + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(4))
                + b"\r\n",
                b"431",
            ),
        ):
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
