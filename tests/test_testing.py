"""
``netlab.testing``, used the way a user would: on a protocol of their own,
and on netlab's services.
"""

from __future__ import annotations

import io
import pathlib
import shutil
import sys

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.trial.reporter import TestResult
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import http
from netlab.services import echo, greeting, hello
from netlab.testing import MemoryPair, serve
from tests.support import WAIT, Peer, bounded, connect
from tests.test_wiretap import fields


class Upper(LineReceiver):
    """
    A user's protocol: answers one line in capitals, and closes.
    """

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())
        self.transport.loseConnection()


class ServeTests(TestCase):
    timeout = 60

    async def test_own_protocol(self) -> None:
        served = await serve(self, Factory.forProtocol(Upper))
        self.assertEqual(served.host, "127.0.0.1")
        reply = await greeting.greet(served.endpoint, b"shout\r\n", timeout=WAIT)
        self.assertEqual(reply, b"SHOUT\r\n")

    async def test_tls(self) -> None:
        served = await serve(self, http.HTTPSite(hello.Root()), certificates=True)
        self.assertTrue(served.url().startswith("https://localhost:"))
        response = await http.fetch(served.url(), tls=served.client_tls, timeout=WAIT)
        self.assertEqual((response.code, response.body), (200, hello.HELLO))

    async def test_stop_closes_what_is_open(self) -> None:
        served = await serve(self, echo.EchoFactory())
        peer = await connect(served.host, served.port)
        await served.stop()
        await bounded(peer.closed)
        self.assertIsNotNone(peer.reason)
        await served.stop()  # the clean-up calls it again: harmless

    async def test_wiretap(self) -> None:
        served = await serve(self, echo.EchoFactory(), wiretap=True)
        reply = await echo.echo(served.endpoint, b"recorded", timeout=WAIT)
        self.assertEqual(reply, b"recorded")  # half-close passes the wrappers
        await served.stop()
        data = await fields(served.capture, "tcp.len > 0", "tcp.payload")
        self.assertEqual(data, [[b"recorded".hex()]] * 2)

    async def test_again_on_the_same_port(self) -> None:
        first = await serve(self, echo.EchoFactory())
        await first.stop()
        again = await serve(self, echo.EchoFactory(), port=first.port)
        self.assertEqual(again.port, first.port)
        reply = await echo.echo(again.endpoint, b"back", timeout=WAIT)
        self.assertEqual(reply, b"back")


def recorded_test(ending: str) -> tuple[TestCase, list[pathlib.Path]]:
    """
    A user's test, to run inside one of ours: it records one exchange with
    ``serve(..., wiretap=True)``, then passes, fails or errors, as ``ending``
    says. (Made here, not at module level, so that trial does not find it.)

    :return: the test, and the list its capture's path will be put in.
    """
    captures: list[pathlib.Path] = []

    class Recorded(TestCase):
        timeout = 60

        async def test_exchange(self) -> None:
            served = await serve(self, echo.EchoFactory(), wiretap=True)
            captures.append(served.capture)
            await echo.echo(served.endpoint, b"recorded", timeout=WAIT)
            if ending == "fails":
                self.fail("as planned")
            if ending == "errors":
                raise RuntimeError("as planned")

    return Recorded("test_exchange"), captures


class CaptureTests(SynchronousTestCase):
    """
    ``serve(..., wiretap=True)`` keeps the capture of a test that failed and
    says where; a passing test's is removed.
    """

    def run_recorded(self, ending: str) -> tuple[TestResult, str, pathlib.Path]:
        """
        Run a :func:`recorded_test` (its own reactor turns: this test is
        synchronous) with a fresh result.

        :return: the result, what the test wrote on stderr, its capture.
        """
        case, captures = recorded_test(ending)
        result = TestResult()
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        case.run(result)
        self.assertEqual(len(captures), 1, result.errors)
        capture = captures[0]
        self.addCleanup(shutil.rmtree, capture.parent, ignore_errors=True)
        return result, stderr.getvalue(), capture

    def test_passing_removes(self) -> None:
        result, stderr, capture = self.run_recorded("passes")
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        # netlab.testing asks trial's private TestCase._passed: if a release
        # drops it, every capture is kept and this fails.
        self.assertFalse(capture.parent.exists(), "does trial set _passed?")
        self.assertEqual(stderr, "")

    def test_failing_keeps_and_says_where(self) -> None:
        for ending in ("fails", "errors"):
            result, stderr, capture = self.run_recorded(ending)
            problems = result.failures if ending == "fails" else result.errors
            self.assertEqual((len(problems), result.testsRun), (1, 1), ending)
            self.assertIn(f"wiretap capture kept: {capture}\n", stderr)
            self.assertIn("Recorded.test_exchange", stderr)
            self.assertGreater(capture.stat().st_size, 0)


class MemoryPairTests(SynchronousTestCase):
    def test_greeting(self) -> None:
        factory = greeting.GreetingFactory()
        server = factory.buildProtocol(None)
        client = Peer()
        pair = MemoryPair(server, client)
        client.transport.write(b"hello")
        pair.flush()
        self.assertEqual(bytes(client.received), greeting.GREETING)
        self.assertTrue(pair.closed)
        self.assertTrue(client.closed.called)

    def test_echo_both_ways(self) -> None:
        server = echo.EchoFactory().buildProtocol(None)
        client = Peer()
        pair = MemoryPair(server, client)
        for chunk in (b"one", b"two"):
            client.transport.write(chunk)
            pair.flush()
        self.assertEqual(bytes(client.received), b"onetwo")
        pair.close()
        self.assertEqual(server.bytes_in, 6)
