"""
The soak test (``python -m netlab.tools.soak``), short: 20 seconds of the mix
against a real ``twistd netlab``, as CI runs it.
"""

from __future__ import annotations

import re

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from tests.support import bounded, python, spawn

# The soak's own bounds: 20 s of mix, the warm-up, the tail of the slowest
# operation, settling and stopping; it kills twistd however it ends.
SOAK_WAIT = 120.0


def _reactor_name() -> str | None:
    """
    :return: the ``--reactor`` that matches the one this test runs on.
    """
    name = type(reactor).__name__
    return "asyncio" if "Asyncio" in name else None


class SoakTests(TestCase):
    timeout = SOAK_WAIT + 30

    def _kill(self, child) -> None:
        if not child.protocol.ended.called:
            child.signal("KILL")
            return child.protocol.ended

    async def test_short_soak(self) -> None:
        """
        Twenty seconds of mixed, TLS and hostile clients: every reply right,
        no error, descriptors back to the baseline, RSS within its bound, and
        a clean stop.
        """
        args = ["-m", "netlab.tools.soak", "--seconds", "20", "--concurrency", "12"]
        chosen = _reactor_name()
        if chosen:
            args += ["--reactor", chosen]
        child = spawn(python(*args))
        self.addCleanup(self._kill, child)
        result = await bounded(child.protocol.ended, SOAK_WAIT)
        report = result.out.decode()
        self.assertEqual(result.status, 0, result)
        self.assertNotIn("Traceback", result.err.decode(), result)
        self.assertIn("result: PASS", report)
        self.assertRegex(report, r"(?m)^errors: 0$")
        totals = re.search(r"(?m)^total\s+(\d+)\s+(\d+)", report)
        self.assertIsNotNone(totals, report)
        self.assertGreater(int(totals.group(1)), 100, report)
        self.assertEqual(int(totals.group(2)), 0, report)
        fds = re.search(r"file descriptors: .*baseline (\d+), .*after (\d+)", report)
        self.assertIsNotNone(fds, report)
        self.assertEqual(fds.group(1), fds.group(2), report)
        self.assertRegex(report, r"RSS: baseline [\d.]+ MiB, .*growth [-+][\d.]+ MiB")
        self.assertRegex(report, r"server log: \d+ lines, 0 errors or tracebacks")
        self.assertRegex(report, r"twistd: stopped on SIGTERM .*: clean")
        if chosen:
            self.assertIn("AsyncioSelectorReactor", report)
