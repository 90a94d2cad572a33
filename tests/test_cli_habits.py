"""
The ``netlab`` command as curl, httpie and websocat users type it: options
anywhere, IPv6 literals, Ctrl-C, ``--tls-keylog``; every client a real
process against real servers on 127.0.0.1 and ::1.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import TestCase

from netlab import http
from netlab.services import echo, greeting, hello
from tests.support import WAIT, Child, ProcessResult, bounded, python, run, spawn
from tests.support import shared_certificates as certificates

#: The IPv6 loopback, as an endpoint string's interface (escaped colons).
IPV6_INTERFACE = r"\:\:1"


def netlab(*args: str) -> list[str]:
    return python("-m", "netlab", *args)


def _escaped(path: pathlib.Path) -> str:
    return str(path).replace(":", "\\:")


def soon_ended(child: Child, seconds: float = 10) -> defer.Deferred[ProcessResult]:
    """
    :return: how ``child`` ended, failed with a TimeoutError if it has not
        within ``seconds``; its own Deferred is left for the cleanup to await.
    """
    ended: defer.Deferred[ProcessResult] = defer.Deferred()

    def relay(result: Any) -> Any:
        if not ended.called:
            ended.callback(result)
        return result

    child.protocol.ended.addBoth(relay)
    return bounded(ended, seconds)


class Silent(protocol.Protocol):
    """
    Accepts a connection and never answers; tells the factory it came.
    """

    def connectionMade(self) -> None:
        self.factory.connected.callback(self)

    def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
        self.factory.closed.callback(None)


class SilentFactory(protocol.Factory):
    protocol = Silent

    def __init__(self) -> None:
        self.connected: defer.Deferred[Silent] = defer.Deferred()
        self.closed: defer.Deferred[None] = defer.Deferred()


class HabitTests(TestCase):
    timeout = 180

    async def listen(
        self, factory: protocol.Factory, *, ipv6: bool = False, tls: bool = False
    ) -> int:
        """
        Serve ``factory`` on a free port of 127.0.0.1 (``ipv6``: ::1), over
        TLS with the shared test certificates when ``tls``, until the test
        ends.

        :return: the port.
        """
        interface = IPV6_INTERFACE if ipv6 else "127.0.0.1"
        description = f"tcp:0:interface={interface}"
        if tls:
            pki = certificates()
            description = (
                f"netlab-ssl:0:interface={interface}"
                f":privateKey={_escaped(pki.server_key)}"
                f":certKey={_escaped(pki.server)}"
            )
        port = await serverFromString(reactor, description).listen(factory)
        self.addCleanup(port.stopListening)
        if hasattr(factory, "drained"):
            self.addCleanup(lambda: bounded(factory.drained()))
        return port.getHost().port

    def assert_ok(self, result: ProcessResult, out: bytes) -> None:
        self.assertEqual((result.status, result.out), (0, out), result)

    def assert_one_line(self, result: ProcessResult, status: int, *words: bytes):
        self.assertEqual(result.status, status, result)
        self.assertEqual(result.err.count(b"\n"), 1, result)
        self.assertNotIn(b"Traceback", result.err, result)
        for word in words:
            self.assertIn(word, result.err, result)

    # Options anywhere.

    async def test_options_after_the_arguments(self) -> None:
        """
        Every command takes its options after its arguments too, and ``--``
        ends them, so that a message may start with ``-``.
        """
        port = await self.listen(echo.EchoFactory())
        where = f"tcp:127.0.0.1:{port}"
        result = await run(netlab("echo", where, "hi", "--timeout", "3"))
        self.assert_ok(result, b"hi\n")
        result = await run(netlab("echo", where, "--", "-n"))
        self.assert_ok(result, b"-n\n")
        result = await run(netlab("echo", where, "-n"))
        self.assert_one_line(result, 2, b"netlab echo: option -n not recognized")

        port = await self.listen(greeting.GreetingFactory())
        result = await run(netlab("greet", f"tcp:127.0.0.1:{port}", "-t", "3"))
        self.assert_ok(result, b"Hello from server!\n")

        port = await self.listen(http.HTTPSite(hello.Root()))
        base = f"127.0.0.1:{port}"
        result = await run(netlab("ws", f"ws://{base}/ws", "hello", "--timeout", "3"))
        self.assert_ok(result, b"Echo: hello\n")
        result = await run(netlab("ws", f"ws://{base}/ws", "--", "--timeout", "-x"))
        self.assert_ok(result, b"Echo: --timeout\nEcho: -x\n")
        result = await run(netlab("get", f"http://{base}/echo", "-H", "X-A: y"))
        self.assertEqual(result.status, 0, result)
        reflection = json.loads(result.out.partition(b"\n")[2])
        self.assertEqual(reflection["headers"]["x-a"], ["y"])

        folder = self.mktemp()
        result = await run(netlab("certs", folder, "--host", "x.test"))
        self.assertEqual(result.status, 0, result)
        self.assertTrue(os.path.exists(os.path.join(folder, "server.pem")))

    async def test_one_usage_line_each(self) -> None:
        """
        Each command's ``--help`` starts with its own usage line, and
        ``netlab bench`` parses as every other command does.
        """
        for command in ("echo", "greet", "get", "ws", "certs", "token", "bench"):
            result = await run(netlab(command, "--help"))
            self.assertEqual(result.status, 0, result)
            first = result.out.split(b"\n", 1)[0]
            self.assertTrue(
                first.startswith(f"Usage: netlab {command} ".encode()), first
            )
            self.assertEqual(first.count(b"Usage"), 1, first)
        result = await run(netlab("bench", "tcp-echo", "--rounds", "0"))
        self.assert_one_line(result, 2, b"netlab bench: --rounds")

    # IPv6.

    async def test_ipv6_literals(self) -> None:
        """
        Every client reaches a server on ::1 by its literal: in a URL in
        brackets, in an endpoint string in brackets or escaped as Twisted
        writes it.
        """
        port = await self.listen(http.HTTPSite(hello.Root()), ipv6=True)
        result = await run(netlab("get", f"http://[::1]:{port}/echo"))
        self.assertEqual(result.status, 0, result)
        reflection = json.loads(result.out.partition(b"\n")[2])
        self.assertEqual(reflection["headers"]["host"], [f"[::1]:{port}"])
        result = await run(netlab("ws", f"ws://[::1]:{port}/ws", "hi"))
        self.assert_ok(result, b"Echo: hi\n")
        port = await self.listen(echo.EchoFactory(), ipv6=True)
        for where in (f"tcp:[::1]:{port}", f"tcp:\\:\\:1:{port}"):
            self.assert_ok(await run(netlab("echo", where, "hi")), b"hi\n")

    async def test_ipv6_literals_over_tls(self) -> None:
        """
        Over TLS too: the server's certificate names ::1, and the client
        checks the literal against it.
        """
        ca = str(certificates().ca)
        port = await self.listen(http.HTTPSite(hello.Root()), ipv6=True, tls=True)
        result = await run(netlab("get", "--cacert", ca, f"https://[::1]:{port}/"))
        self.assertEqual(result.status, 0, result)
        self.assertTrue(result.out.startswith(b"200\n"), result)
        result = await run(netlab("ws", "--cacert", ca, f"wss://[::1]:{port}/ws", "x"))
        self.assert_ok(result, b"Echo: x\n")
        port = await self.listen(echo.EchoFactory(), ipv6=True, tls=True)
        for where in (f"tls:\\:\\:1:{port}", f"tls:[::1]:{port}"):
            result = await run(netlab("echo", "--cacert", ca, where, "hi"))
            self.assert_ok(result, b"hi\n")

    async def test_malformed_endpoints(self) -> None:
        """
        A malformed endpoint string is one line that says what was expected,
        never Twisted's complaint about a constructor.
        """
        for bad, expected in (
            ("tcp:127.0.0.1", b"expected tcp:HOST:PORT"),
            ("tcp:h:port", b"expected tcp:HOST:PORT"),
            ("tcp:h:1:nokey=1", b"expected tcp:HOST:PORT"),
            ("tcp:[::1]", b"expected tcp:[IPV6-ADDRESS]:PORT"),
            ("tcp:[nohost]:1", b"expected tcp:[IPV6-ADDRESS]:PORT"),
            ("tls:[::1]", b"expected tls:[IPV6-ADDRESS]:PORT"),
            ("unix:path=x:nokey=1", b"expected unix:PATH"),
        ):
            result = await run(netlab("echo", bad, "x"))
            self.assert_one_line(result, 2, f"bad endpoint {bad!r}".encode(), expected)
            self.assertNotIn(b"__init__", result.err)

    # Ctrl-C.

    async def interrupt(self, args: list[str], connected: defer.Deferred[Any]):
        """
        Start ``netlab ARGS``, send it SIGINT once ``connected`` fires, and
        check that it says so in one line and exits 130 at once.
        """
        child = spawn(netlab(*args))
        self.addCleanup(self.kill, child)
        await bounded(connected)
        child.signal("INT")
        result = await soon_ended(child)
        self.assertEqual(result.status, 130, result)
        self.assertEqual(result.err, f"netlab {args[0]}: interrupted\n".encode())
        return result

    @staticmethod
    async def kill(child: Child) -> None:
        """
        Kill ``child`` if it is still running, and wait until it ended.
        """
        if not child.protocol.ended.called:
            child.signal("KILL")
        await child.ended()

    async def test_interrupted_exchanges(self) -> None:
        """
        Ctrl-C during an exchange is one line and exit 130, not a network
        failure.
        """
        silent = SilentFactory()
        port = await self.listen(silent)
        await self.interrupt(
            ["greet", "--timeout", str(WAIT), f"tcp:127.0.0.1:{port}"],
            silent.connected,
        )
        silent = SilentFactory()
        port = await self.listen(silent)
        await self.interrupt(
            ["get", "--timeout", str(WAIT), f"http://127.0.0.1:{port}/"],
            silent.connected,
        )

    async def test_interactive_ws_interrupted(self) -> None:
        """
        Interactive ``netlab ws``, blocked reading its standard input, stops
        at once on Ctrl-C.
        """
        port = await self.listen(http.HTTPSite(hello.Root()))
        child = spawn(netlab("ws", f"ws://127.0.0.1:{port}/ws"), watch=b"Echo: one\n")
        self.addCleanup(self.kill, child)
        child.process.write(b"one\n")
        await bounded(child.protocol.seen)
        child.signal("INT")
        result = await soon_ended(child)
        self.assertEqual(result.status, 130, result)
        self.assertEqual(result.err, b"netlab ws: interrupted\n")
        self.assertEqual(result.out, b"Echo: one\n")

    # --tls-keylog.

    async def test_tls_keylog(self) -> None:
        """
        ``--tls-keylog FILE`` makes each client append its TLS secrets to
        FILE (0600), for Wireshark, and warns in one line.
        """
        ca = str(certificates().ca)
        echo_port = await self.listen(echo.EchoFactory(), tls=True)
        web_port = await self.listen(http.HTTPSite(hello.Root()), tls=True)
        for args in (
            ["echo", f"tls:localhost:{echo_port}", "hi"],
            ["get", f"https://localhost:{web_port}/"],
            ["ws", f"wss://localhost:{web_port}/ws", "hi"],
        ):
            keylog = pathlib.Path(self.mktemp())
            command, address, *rest = args
            options = ["--cacert", ca, "--tls-keylog", str(keylog)]
            result = await run(netlab(command, *options, address, *rest))
            self.assert_one_line(result, 0, b"--tls-keylog", str(keylog).encode())
            # NSS key log lines: LABEL CLIENT-RANDOM SECRET, in hex.
            lines = keylog.read_text().splitlines()
            self.assertTrue(lines)
            for line in lines:
                self.assertRegex(line, r"^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]+$")
            self.assertEqual(stat.S_IMODE(keylog.stat().st_mode), 0o600)
        result = await run(
            netlab("get", "http://127.0.0.1:1/", "--tls-keylog", self.mktemp())
        )
        self.assert_one_line(result, 2, b"TLS options need a https: address")
