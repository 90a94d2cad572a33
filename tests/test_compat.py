"""
The compat twins as programs: defaults, clean stops, and independence from
Twisted.
"""

from __future__ import annotations

import ast
import pathlib
import socket

from twisted.trial.unittest import SynchronousTestCase, TestCase

import netlab.compat
from tests.support import LISTENING, bounded, python, run, spawn

TWINS = ("socket_server", "selectors_echo", "asyncio_echo", "http_server", "ws_server")
COMPAT = pathlib.Path(netlab.compat.__file__).parent


class TwinProgramTests(TestCase):
    timeout = 120

    async def test_stop_cleanly_on_sigint_and_sigterm(self) -> None:
        for twin in TWINS:
            for signal_name in ("INT", "TERM"):
                child = spawn(
                    python("-m", f"netlab.compat.{twin}", "--port", "0"),
                    watch=LISTENING,
                )
                match = await bounded(child.protocol.seen)
                self.assertIn(b"listening on 127.0.0.1 port", match.group(0))
                child.signal(signal_name)
                result = await child.ended()
                self.assertEqual(result.status, 0, (twin, signal_name, result))
                self.assertNotIn(b"Traceback", result.err)

    async def test_port_in_use_is_one_line(self) -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = str(holder.getsockname()[1])
            for twin in TWINS:
                result = await run(
                    python("-m", f"netlab.compat.{twin}", "--port", port)
                )
                self.assertEqual(result.status, 1, (twin, result))
                self.assertEqual(result.err.count(b"\n"), 1, (twin, result))
                self.assertIn(b"address already in use", result.err.lower())


class IndependenceTests(SynchronousTestCase):
    def test_imports_only_stdlib_and_itself(self) -> None:
        """
        The twins read like the lesson: no Twisted, nothing else of netlab.
        """
        for path in COMPAT.glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                else:
                    continue
                for name in names:
                    self.assertFalse(name.startswith("twisted"), (path.name, name))
                    if name.startswith("netlab"):
                        self.assertTrue(
                            name.startswith("netlab.compat"), (path.name, name)
                        )
