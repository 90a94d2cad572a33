"""
The compat twins as programs: defaults, clean stops, caps on threads and
processes, and independence from Twisted.
"""

from __future__ import annotations

import ast
import contextlib
import os
import pathlib
import socket

from twisted.internet import reactor, task
from twisted.internet.error import ProcessExitedAlready
from twisted.trial.unittest import SynchronousTestCase, TestCase

import netlab.compat
from netlab import certs
from tests.support import (
    LISTENING,
    Child,
    abort,
    bounded,
    connect,
    python,
    require,
    run,
    shared_certificates,
    spawn,
)

TWINS = (
    "socket_server",
    "selectors_echo",
    "asyncio_echo",
    "threads_echo",
    "processes_echo",
    "http_server",
    "ws_server",
)
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


def _client_args(twin: str, port: int, cacert: str) -> list[str]:
    """
    :return: the command line of the compat client for ``twin``, over TLS.
    """
    if twin == "http_server":
        url = f"https://localhost:{port}/"
        return python("-m", "netlab.compat.http_client", "--cacert", cacert, url)
    if twin == "ws_server":
        url = f"wss://localhost:{port}/"
        # The client's own bound (10 s by default) once ran out on a loaded
        # CI machine; the twin must answer, but may be slow to.
        return python(
            "-m", "netlab.compat.ws_client", "--timeout", "30", "--cacert", cacert, url
        )
    return python(
        "-m",
        "netlab.compat.socket_client",
        "--host",
        "localhost",
        "--port",
        str(port),
        "--cacert",
        cacert,
    )


class TLSOptionTests(TestCase):
    """
    The twins' TLS options: --cert and --key for servers, --cacert for
    clients; each mistake one line.
    """

    timeout = 120

    def setUp(self) -> None:
        self.certs = shared_certificates()
        self.other = certs.make_certificates(pathlib.Path(self.mktemp()))

    async def test_cert_without_key_is_a_usage_error(self) -> None:
        for twin in TWINS:
            for option, path in (
                ("--cert", self.certs.server),
                ("--key", self.certs.server_key),
            ):
                result = await run(
                    python(
                        "-m", f"netlab.compat.{twin}", "--port", "0", option, str(path)
                    )
                )
                self.assertEqual(result.status, 2, (twin, option, result))
                self.assertEqual(result.err.count(b"\n"), 1, (twin, option, result))
                self.assertIn(b"--cert and --key", result.err)

    async def test_unreadable_certificate_is_one_line(self) -> None:
        missing = str(pathlib.Path(self.mktemp()) / "nope.pem")
        for twin in TWINS:
            for cert, key in (
                (missing, str(self.certs.server_key)),
                (str(self.certs.server), missing),
                (str(self.certs.ca), str(self.certs.server_key)),  # not its key
            ):
                result = await run(
                    python(
                        "-m",
                        f"netlab.compat.{twin}",
                        "--port",
                        "0",
                        "--cert",
                        cert,
                        "--key",
                        key,
                    )
                )
                self.assertEqual(result.status, 1, (twin, result))
                self.assertEqual(result.err.count(b"\n"), 1, (twin, result))
                self.assertNotIn(b"Traceback", result.err)

    async def test_client_cacert_needs_tls_url(self) -> None:
        for module, url in (
            ("http_client", "http://127.0.0.1:1/"),
            ("ws_client", "ws://127.0.0.1:1/"),
        ):
            result = await run(
                python(
                    "-m", f"netlab.compat.{module}", "--cacert", str(self.certs.ca), url
                )
            )
            self.assertEqual(result.status, 2, (module, result))
            self.assertEqual(result.err.count(b"\n"), 1, (module, result))

    async def start(self, twin: str) -> int:
        child = spawn(
            python(
                "-m",
                f"netlab.compat.{twin}",
                "--port",
                "0",
                "--idle-timeout",
                "2",
                "--cert",
                str(self.certs.server),
                "--key",
                str(self.certs.server_key),
            ),
            watch=LISTENING,
        )
        match = await bounded(child.protocol.seen)

        async def stop() -> None:
            child.signal("TERM")
            result = await child.ended()
            self.assertEqual(result.status, 0, (twin, result))
            self.assertNotIn(b"Traceback", result.err)

        self.addCleanup(stop)
        return int(match.group(1))

    async def test_other_ca_is_refused_in_one_line(self) -> None:
        """
        A client that trusts another CA refuses the server: one line, exit 1.
        """
        for twin in TWINS:
            port = await self.start(twin)
            result = await run(_client_args(twin, port, str(self.other.ca)))
            self.assertEqual(result.status, 1, (twin, result))
            self.assertEqual(result.err.count(b"\n"), 1, (twin, result))
            self.assertIn(b"CERTIFICATE_VERIFY_FAILED", result.err, twin)
            self.assertEqual(result.out, b"")

    async def test_plain_client_does_not_hang_tls_twin(self) -> None:
        """
        A client that speaks plain text to a TLS twin is turned away in
        bounded time, and the next (TLS) client is served.
        """
        for twin in TWINS:
            port = await self.start(twin)
            peer = await connect("127.0.0.1", port)
            peer.transport.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await bounded(peer.closed, 10)
            result = await run(_client_args(twin, port, str(self.certs.ca)))
            self.assertEqual(result.status, 0, (twin, result))
            self.assertEqual(result.err, b"", twin)
            self.assertNotEqual(result.out, b"", twin)


def _workers(twin: str, pid: int) -> set[pathlib.Path]:
    """
    :return: the /proc entries of the threads (but the main one) or the
        child processes (zombies too: an entry stays until it is reaped)
        of the twin running as ``pid``.
    """
    if twin == "threads_echo":
        return set(pathlib.Path(f"/proc/{pid}/task").iterdir()) - {
            pathlib.Path(f"/proc/{pid}/task/{pid}")
        }
    found = set()
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue  # it ended while we looked
            # pid (command) state ppid ...: the command may hold spaces.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(entry)
    return found


async def _end(child: Child) -> None:
    """
    If a failed test left ``child`` running, stop it: SIGTERM, then SIGKILL.
    """
    for signal_name in ("TERM", "KILL"):
        if child.protocol.ended.called:
            return
        with contextlib.suppress(ProcessExitedAlready):
            child.signal(signal_name)
        for _ in range(50):
            if child.protocol.ended.called:
                return
            await task.deferLater(reactor, 0.1)


def _gone(entries: set[pathlib.Path]) -> set[pathlib.Path]:
    return {entry for entry in entries if not entry.exists()}


class ConcurrencyCapTests(TestCase):
    """
    A thread or a process per client: at most --max-clients at once, the
    next client waits; an ended child is reaped; a stop ends them all.
    """

    timeout = 120

    def setUp(self) -> None:
        require(
            pathlib.Path(f"/proc/{os.getpid()}/task").exists(),
            "needs /proc to count threads and processes",
        )

    async def test_cap_reaping_and_stop(self) -> None:
        for twin in ("threads_echo", "processes_echo"):
            await self.check(twin)

    async def check(self, twin: str) -> None:
        child = spawn(
            python("-m", f"netlab.compat.{twin}", "--port", "0", "--max-clients", "2"),
            watch=LISTENING,
        )
        self.addCleanup(_end, child)
        match = await bounded(child.protocol.seen)
        pid, port = child.process.pid, int(match.group(1))
        held = [await connect("127.0.0.1", port) for _ in range(2)]
        for peer in held:
            self.addCleanup(abort, peer)
            peer.transport.write(b"x")
            await peer.received_at_least(1)
        first = _workers(twin, pid)
        self.assertEqual(len(first), 2, twin)

        waiting = await connect("127.0.0.1", port)
        self.addCleanup(abort, waiting)
        waiting.transport.write(b"y")
        await task.deferLater(reactor, 1.0)
        self.assertEqual(waiting.received, b"", f"{twin} served over its cap")
        held[0].transport.loseConnection()
        self.assertEqual(await waiting.received_at_least(1), b"y", twin)
        # The first client's worker ended (a child was reaped, not left a
        # zombie), and a new one serves the waiting client.
        # Reaped within a second or so (the accept loop wakes once a second):
        # wait up to 30 s, so that a loaded machine cannot miss it.
        for _ in range(300):
            if _gone(first):
                break
            await task.deferLater(reactor, 0.1)
        self.assertEqual(len(_gone(first)), 1, twin)
        started = _workers(twin, pid)
        self.assertEqual(len(started), 2, twin)

        # A stop with clients still connected ends them, and every worker.
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.status, 0, (twin, result))
        self.assertNotIn(b"Traceback", result.err)
        for peer in (held[1], waiting):
            await bounded(peer.closed, 10)
        self.assertEqual(_gone(started), started, twin)
