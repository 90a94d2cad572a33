"""
JSON-lines logs: events from a real connection, turned into JSON.
"""

from __future__ import annotations

import io
import json

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from netlab import http, logs
from netlab.logs import JSONLines
from netlab.services import echo, hello
from tests.support import WAIT, bounded


class JSONLinesTests(TestCase):
    timeout = 30

    def observe(self) -> io.StringIO:
        out = io.StringIO()
        self.observer = JSONLines(out)
        globalLogPublisher.addObserver(self.observer)
        self.addCleanup(globalLogPublisher.removeObserver, self.observer)
        return out

    def records(self, out: io.StringIO) -> list[dict]:
        # Lines of the current reactor turn are written at its end.
        self.observer.flush()
        return [json.loads(line) for line in out.getvalue().splitlines()]

    async def test_connection_events(self) -> None:
        factory = echo.EchoFactory()
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        out = self.observe()
        await echo.echo(f"tcp:127.0.0.1:{port.getHost().port}", b"hi", timeout=WAIT)
        await echo.echo(f"tcp:127.0.0.1:{port.getHost().port}", b"yo", timeout=WAIT)
        await bounded(factory.drained())
        namespace = "netlab.services.echo.Echo"
        events = [r for r in self.records(out) if r["namespace"] == namespace]
        self.assertEqual(len(events), 4)  # opened and closed, twice
        for record in events:
            self.assertEqual(record["service"], "echo")
            self.assertEqual(record["level"], "info")
            self.assertRegex(record["peer"], r"^127\.0\.0\.1:\d+$")
            self.assertIn(record["peer"], record["text"])
        first, second = events[0]["connection"], events[2]["connection"]
        self.assertNotEqual(first, second)
        self.assertEqual(
            [r["connection"] for r in events], [first, first, second, second]
        )
        self.assertEqual(events[1]["bytes_in"], 2)

    async def test_access_log(self) -> None:
        site = http.HTTPSite(hello.Root())
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


class Flushes(io.StringIO):
    """
    A text file that counts its flushes.
    """

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


class TextTests(TestCase):
    def test_same_lines_as_twistd(self) -> None:
        """
        netlab.logs.text writes what twistd's own text observer writes, for
        events within a second, across seconds, and without a time; with
        one text field or any other format; with a system, a failure,
        flattened fields (as netlab.workers relays them), more than one
        line, or nothing to say.
        """
        from twisted.logger import LogLevel, formatEventAsClassicLogText
        from twisted.python.failure import Failure

        base = 1_700_000_000.0
        common = {"log_level": LogLevel.info, "log_namespace": "netlab.test"}
        events: list[dict] = [
            {"log_format": "{what}", "what": f"event {i}", "log_time": when, **common}
            for i, when in enumerate(
                (base, base + 0.4, base + 0.999, base + 1.0, base + 61.5, None)
            )
        ]
        failure = Failure(ZeroDivisionError("division by zero"))
        for extra in (
            {"log_format": "{what}", "what": "two\nlines"},
            {"log_format": "{what}", "what": 42},
            {"log_format": "{what}", "what": ""},
            {"log_format": "{what}"},
            {"log_format": "{what!r}", "what": "quoted"},
            {"log_format": "{a} and {b}", "a": "x", "b": "y"},
            {"log_format": "{what}", "what": "with system", "log_system": "sys"},
            {"log_format": "{what}", "what": "x", "log_flattened": {"what!s:": "flat"}},
            {"log_format": "{what}", "what": "x", "log_flattened": {"other!s:": "y"}},
            {"log_format": "{what}", "log_flattened": {"what!s:": 7}},
            {"log_format": "{what}", "what": "failed", "log_failure": failure},
            {"log_format": "no fields"},
            {"what": "no format"},
        ):
            events.append({**common, "log_time": base, **extra})
        events.append({"log_format": "{what}", "what": "no level", "log_time": base})
        out = io.StringIO()
        observer = logs.TextLines(out)
        for event in events:
            observer(event)
        observer.flush()
        expected = [formatEventAsClassicLogText(e) for e in events]
        self.assertEqual(out.getvalue(), "".join(line for line in expected if line))

    async def test_one_write_per_reactor_turn(self) -> None:
        """
        While the reactor runs, the lines of one turn are written and
        flushed together at its end; with no reactor running, at once.
        """
        out = Flushes()
        observer = logs.TextLines(out)
        event = {"log_format": "{what}", "what": "x", "log_level": LogLevel.info}
        observer(event)
        self.assertEqual((out.getvalue().count("\n"), out.flushes), (1, 1))
        # Now from within a turn of the running reactor.
        await deferLater(reactor, 0, lambda: None)
        for _ in range(3):
            observer(event)
        self.assertEqual((out.getvalue().count("\n"), out.flushes), (1, 1))
        await deferLater(reactor, 0, lambda: None)
        self.assertEqual((out.getvalue().count("\n"), out.flushes), (4, 2))

    def test_a_line_logged_during_a_flush(self) -> None:
        """
        A line logged while held lines are being written (as twistd's
        SIGTERM handler logs when the signal lands in the middle of a
        write) is written once, after them: no deadlock, no nested write.
        """
        info = {"log_level": LogLevel.info, "log_format": "{what}"}

        class Interrupted(io.StringIO):
            interrupted = False

            def write(self, text: str) -> int:
                written = super().write(text)
                if not self.interrupted:
                    self.interrupted = True
                    observer({**info, "what": "from the handler"})
                return written

        out = Interrupted()
        observer = logs.TextLines(out)
        observer({**info, "what": "first"})
        self.assertEqual(
            out.getvalue(), "- [-#info] first\n- [-#info] from the handler\n"
        )

    def test_held_lines_are_bounded(self) -> None:
        """
        However busy a turn, no more than ``max_held`` lines wait.
        """
        out = Flushes()
        observer = logs.TextLines(out)
        observer.max_held = 4
        event = {"log_format": "{what}", "what": "x", "log_level": LogLevel.info}
        for _ in range(10):
            observer(event)
        self.assertGreaterEqual(out.getvalue().count("\n"), 8)
        observer.flush()
        self.assertEqual(out.getvalue().count("\n"), 10)
