"""
JSON-lines logs: events from a real connection, turned into JSON.
"""

from __future__ import annotations

import io
import json

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from netlab import http, tcp
from netlab.logs import JSONLines
from tests.support import WAIT, bounded


class JSONLinesTests(TestCase):
    timeout = 30

    def observe(self) -> io.StringIO:
        out = io.StringIO()
        observer = JSONLines(out)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return out

    def records(self, out: io.StringIO) -> list[dict]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    async def test_connection_events(self) -> None:
        factory = tcp.EchoFactory()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        out = self.observe()
        await tcp.echo(f"tcp:127.0.0.1:{port.getHost().port}", b"hi", timeout=WAIT)
        await tcp.echo(f"tcp:127.0.0.1:{port.getHost().port}", b"yo", timeout=WAIT)
        await bounded(factory.drained())
        echo = [r for r in self.records(out) if r["namespace"] == "netlab.tcp.Echo"]
        self.assertEqual(len(echo), 4)  # opened and closed, twice
        for record in echo:
            self.assertEqual(record["service"], "echo")
            self.assertEqual(record["level"], "info")
            self.assertRegex(record["peer"], r"^127\.0\.0\.1:\d+$")
            self.assertIn(record["peer"], record["text"])
        first, second = echo[0]["connection"], echo[2]["connection"]
        self.assertNotEqual(first, second)
        self.assertEqual(
            [r["connection"] for r in echo], [first, first, second, second]
        )
        self.assertEqual(echo[1]["bytes_in"], 2)

    async def test_access_log(self) -> None:
        site = http.HTTPSite()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(site.drained()))
        out = self.observe()
        await http.fetch(f"http://127.0.0.1:{port.getHost().port}/", timeout=WAIT)
        [access] = [r for r in self.records(out) if "status" in r]
        self.assertEqual(
            (access["method"], access["path"], access["status"]), ("GET", "/", 200)
        )
        self.assertEqual(access["service"], "http")
        self.assertIsInstance(access["connection"], int)


class TextTests(TestCase):
    def test_same_lines_as_twistd(self) -> None:
        """
        netlab.logs.text writes what twistd's own text observer writes, for
        events within a second, across seconds, and without a time.
        """
        from twisted.logger import LogLevel, formatEventAsClassicLogText

        from netlab import logs

        out = io.StringIO()
        observer = logs.text()
        observer._outFile = out
        base = 1_700_000_000.0
        events = [
            {
                "log_format": "{what}",
                "what": f"event {i}",
                "log_level": LogLevel.info,
                "log_namespace": "netlab.test",
                "log_time": when,
            }
            for i, when in enumerate(
                (base, base + 0.4, base + 0.999, base + 1.0, base + 61.5, None)
            )
        ]
        for event in events:
            observer(event)
        self.assertEqual(
            out.getvalue(), "".join(formatEventAsClassicLogText(e) for e in events)
        )
