"""
The ``netlab`` command and the compat client, run as users run them.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import TestCase

from netlab import __version__, http
from netlab.services import echo, greeting, hello
from netlab.tracking import ConnectionTracker
from tests.support import bounded, python, run


@contextmanager
def loopback_port(listening: bool) -> Iterator[int]:
    """
    A loopback port held for the block: bound only, it refuses connections;
    listening, the kernel accepts them and nobody ever answers.
    """
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        if listening:
            held.listen()
        yield held.getsockname()[1]


def netlab(*args: str) -> list[str]:
    return python("-m", "netlab", *args)


class CommandTests(TestCase):
    timeout = 120

    async def serve(self, factory: ConnectionTracker) -> str:
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            factory
        )
        self.addCleanup(port.stopListening)
        self.addCleanup(lambda: bounded(factory.drained()))
        return f"tcp:127.0.0.1:{port.getHost().port}"

    def assert_one_line_failure(self, result, status: int, *words: bytes) -> None:
        self.assertEqual(result.status, status, result)
        self.assertEqual(result.out, b"", result)
        self.assertEqual(result.err.count(b"\n"), 1, result)
        self.assertNotIn(b"Traceback", result.err)
        for word in words:
            self.assertIn(word, result.err)

    async def test_greet(self) -> None:
        where = await self.serve(greeting.GreetingFactory())
        result = await run(netlab("greet", where))
        self.assertEqual((result.status, result.out), (0, b"Hello from server!\n"))

    async def test_echo_message(self) -> None:
        where = await self.serve(echo.EchoFactory())
        result = await run(netlab("echo", where, "héllo"))
        self.assertEqual((result.status, result.out), (0, "héllo\n".encode()))

    async def test_echo_stdin_is_byte_exact(self) -> None:
        where = await self.serve(echo.EchoFactory())
        data = bytes(range(256)) * 1000
        result = await run(netlab("echo", where, "-"), stdin=data)
        self.assertEqual((result.status, result.out), (0, data))

    async def test_refused(self) -> None:
        with loopback_port(listening=False) as port:
            result = await run(netlab("greet", f"tcp:127.0.0.1:{port}"))
        self.assert_one_line_failure(result, 1, b"connection refused")

    async def test_timeout(self) -> None:
        with loopback_port(listening=True) as port:
            result = await run(
                netlab("greet", "--timeout", "0.5", f"tcp:127.0.0.1:{port}")
            )
        self.assert_one_line_failure(result, 1, b"timed out")

    async def test_bad_endpoint(self) -> None:
        for bad in ("nonsense:1", "tcp:127.0.0.1", "tcp:[::1]", "tcp:h:port"):
            result = await run(netlab("echo", bad, "x"))
            self.assert_one_line_failure(result, 2, f"bad endpoint {bad!r}".encode())

    async def test_usage_mistakes(self) -> None:
        for args in ((), ("echo",), ("echo", "tcp:h:1", "a", "b"), ("frobnicate",)):
            result = await run(netlab(*args))
            self.assert_one_line_failure(result, 2, b"netlab")
        result = await run(netlab("greet", "--timeout", "-1", "tcp:h:1"))
        self.assert_one_line_failure(result, 2, b"must be positive")

    async def test_version(self) -> None:
        result = await run(netlab("--version"))
        self.assertEqual(result.out, f"netlab {__version__}\n".encode())

    async def test_get(self) -> None:
        base = "http://" + (await self.serve(http.HTTPSite(hello.Root()))).removeprefix(
            "tcp:"
        )
        result = await run(netlab("get", base + "/nope"))
        self.assertEqual((result.status, result.out), (0, b"404\nNot found\n"))
        result = await run(
            netlab("get", "--json", "-H", "X-A: 1", "--data", "hi", base + "/echo")
        )
        self.assertEqual(result.status, 0, result)
        code, _, body = result.out.partition(b"\n")
        self.assertEqual(code, b"200")
        self.assertIn(b'\n  "method": "POST",\n', body)
        reflection = json.loads(body)
        self.assertEqual(
            (reflection["body"], reflection["headers"]["x-a"]), ("hi", ["1"])
        )
        result = await run(netlab("get", "--data", "-", base + "/echo"), stdin=b"\xff")
        self.assertEqual(json.loads(result.out.partition(b"\n")[2])["body"], "/w==")

    async def test_get_failures(self) -> None:
        with loopback_port(listening=False) as port:
            result = await run(netlab("get", f"http://127.0.0.1:{port}/"))
        self.assert_one_line_failure(result, 1, b"connection refused")
        for args in (
            ("notaurl",),
            ("ftp://127.0.0.1/",),
            ("-H", "no colon", "http://127.0.0.1/"),
            ("--timeout", "0", "http://127.0.0.1/"),
        ):
            result = await run(netlab("get", *args))
            self.assert_one_line_failure(result, 2, b"netlab get")

    async def test_get_timeout_covers_the_body(self) -> None:
        with loopback_port(listening=True) as port:
            result = await run(
                netlab("get", "--timeout", "0.5", f"http://127.0.0.1:{port}/")
            )
        self.assert_one_line_failure(result, 1, b"timed out")

    async def test_ws(self) -> None:
        site = http.HTTPSite(hello.Root())
        where = await self.serve(site)
        url = "ws://" + where.removeprefix("tcp:") + "/ws"
        result = await run(netlab("ws", url, "one", "twö"))
        self.assertEqual(
            (result.status, result.out), (0, "Echo: one\nEcho: twö\n".encode())
        )
        result = await run(netlab("ws", url), stdin=b"a\nb c\n")
        self.assertEqual((result.status, result.out), (0, b"Echo: a\nEcho: b c\n"))
        refused = "ws://" + where.removeprefix("tcp:") + "/nope"
        result = await run(netlab("ws", refused, "x"))
        self.assert_one_line_failure(result, 1, b"handshake refused")

    async def test_ws_failures(self) -> None:
        with loopback_port(listening=False) as port:
            result = await run(netlab("ws", f"ws://127.0.0.1:{port}/", "x"))
        self.assert_one_line_failure(result, 1, b"connection refused")
        for url in ("http://127.0.0.1/", "ws://", "ws://127.0.0.1:99999/", "nonsense"):
            result = await run(netlab("ws", url, "x"))
            self.assert_one_line_failure(result, 2, b"bad URL")
        with loopback_port(listening=True) as port:
            result = await run(
                netlab("ws", "--timeout", "0.5", f"ws://127.0.0.1:{port}/")
            )
        self.assert_one_line_failure(result, 1, b"timed out")

    async def test_compat_client_refused(self) -> None:
        with loopback_port(listening=False) as port:
            result = await run(
                python("-m", "netlab.compat.socket_client", "--port", str(port))
            )
        self.assert_one_line_failure(result, 1, b"Connection refused")
