"""
``twistd -n netlab-ws --handler package.module:name`` as users run it: a
real ``twistd`` process serving a user's handler (``tests.ws_user_echo``)
with the plugin's options (TLS, ``--protect``, ``--workers``), and one-line
usage errors for a bad ``--handler``.
"""

from __future__ import annotations

import os
import pathlib
import signal

from twisted.internet.error import ProcessExitedAlready
from twisted.trial.unittest import TestCase

from netlab import auth, certs, tls, websocket
from tests.support import WAIT, bounded, run, spawn
from tests.test_twistd import LOOPBACK_ANY_PORT, TwistdCase, twistd

# The checkout's root: ``tests.ws_user_echo`` is importable from there, as
# a user's own package is from their project's folder.
ROOT = str(pathlib.Path(__file__).resolve().parent.parent)
USER_ECHO = "tests.ws_user_echo:handler"


class HandlerPluginTests(TestCase):
    timeout = 120

    async def start(
        self, *args: str, factory: str = "WebSocketFactory", twistd_args=()
    ):
        """
        Start ``twistd -n netlab-ws`` with ``args`` (and ``twistd_args``
        before the plugin's name); return the child and its port, read from
        twistd's log.
        """
        child = spawn(
            twistd("-n", "--pidfile=", *twistd_args, "netlab-ws", *args),
            watch=rb"%s(?: \(TLS\))? starting on (\d+)" % factory.encode(),
            cwd=ROOT,
        )
        self.addCleanup(self.kill, child)
        match = await bounded(child.protocol.seen)
        return child, int(match.group(1))

    def kill(self, child):
        if child.protocol.ended.called:
            return None
        try:
            child.signal("KILL")
        except ProcessExitedAlready:
            pass
        return child.ended()

    async def exchange(self, url: str, message: str, **arguments) -> str | bytes:
        connection = await websocket.connect(url, timeout=WAIT, **arguments)
        connection.send(message)
        reply = await bounded(connection.receive())
        await bounded(connection.close())
        return reply

    async def test_serves_the_handler_and_stops_on_sigterm(self) -> None:
        child, port = await self.start(
            "--handler", USER_ECHO, "--listen", LOOPBACK_ANY_PORT
        )
        url = f"ws://127.0.0.1:{port}/"
        self.assertEqual(await self.exchange(url, "hello"), "Echo: hello")
        held = await websocket.connect(url, timeout=WAIT)
        child.signal("TERM")
        code, _ = await bounded(held.closed())
        self.assertEqual(code, 1001)
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertNotIn(b"Traceback", result.out + result.err)

    async def test_class_handler_over_tls_with_tokens(self) -> None:
        # Absolute: twistd runs in another folder.
        made = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        secret = pathlib.Path(self.mktemp()).resolve()
        secret.write_bytes(os.urandom(32).hex().encode())
        listen = (
            "ssl:0:interface=127.0.0.1"
            f":privateKey={made.server_key}:certKey={made.server}"
        )
        _, port = await self.start(
            *("--handler", "tests.ws_user_echo:EchoHandler"),
            *("--listen", listen),
            *("--protect", "/", "--jwt-secret", str(secret)),
            factory="WebSocketFactory",
        )
        url = f"wss://localhost:{port}/"
        trust = tls.ClientTLS(cacert=str(made.ca))
        with self.assertRaises(websocket.HandshakeRefused):
            await self.exchange(url, "no token", tls=trust)
        token = auth.mint(secret, "alice")
        reply = await self.exchange(
            url, "count", tls=trust, headers={"Authorization": f"Bearer {token}"}
        )
        self.assertEqual(reply, "0", "not the user's handler")

    async def test_origins_and_limits(self) -> None:
        _, port = await self.start(
            *("--handler", "tests.ws_user_echo:EchoHandler"),
            *("--listen", LOOPBACK_ANY_PORT),
            *("--allowed-origin", "http://app.test", "--max-message", "10"),
        )
        url = f"ws://127.0.0.1:{port}/"
        reply = await self.exchange(url, "allowed", origin="http://app.test")
        self.assertEqual(reply, "Echo: allowed")
        with self.assertRaises(websocket.HandshakeRefused):
            await self.exchange(url, "refused", origin="http://evil.test")
        connection = await websocket.connect(url, timeout=WAIT)
        connection.send("x" * 11)
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1009)

    async def test_asyncio_reactor(self) -> None:
        _, port = await self.start(
            *("--handler", USER_ECHO, "--listen", LOOPBACK_ANY_PORT),
            twistd_args=("-r", "asyncio"),
        )
        reply = await self.exchange(f"ws://127.0.0.1:{port}/", "on asyncio")
        self.assertEqual(reply, "Echo: on asyncio")

    async def test_workers(self) -> None:
        _, port = await self.start(
            *("--handler", USER_ECHO, "--workers", "2"),
            *("--listen", LOOPBACK_ANY_PORT),
        )
        url = f"ws://127.0.0.1:{port}/"
        for index in range(4):
            self.assertEqual(await self.exchange(url, f"m{index}"), f"Echo: m{index}")

    async def test_without_handler_it_is_the_echo(self) -> None:
        _, port = await self.start("--listen", LOOPBACK_ANY_PORT, factory="EchoFactory")
        reply = await self.exchange(f"ws://127.0.0.1:{port}/", "plain")
        self.assertEqual(reply, "Echo: plain")

    async def test_bad_handlers_are_one_line(self) -> None:
        for path, words in (
            ("tests.ws_user_echo:not_a_handler", b"not 42 (int)"),
            ("tests.ws_user_echo:plain_function", b"is async"),
            ("tests.ws_user_echo:nothing", b"has no 'nothing'"),
            ("tests.no_such_module:handler", b"no module named"),
            ("not a path", b"expected package.module:name"),
        ):
            result = await run(
                twistd("-n", "--pidfile=", "netlab-ws", "--handler", path), cwd=ROOT
            )
            self.assertNotEqual(result.status, 0, (path, result))
            # twistd prints its usage, then the error on one line.
            last = (result.out + result.err).strip().splitlines()[-1]
            self.assertIn(b"--handler " + path.encode() + b": ", last, result)
            self.assertIn(words, last, path)
            self.assertNotIn(b"Traceback", result.out + result.err)


class RecordedAndCountedTests(TwistdCase):
    """
    A user's handler under ``--wiretap`` and ``--metrics``: recorded and
    counted as netlab's echo is.
    """

    async def test_wiretap_and_metrics(self) -> None:
        from netlab import http
        from tests.test_wiretap import fields

        capture = pathlib.Path(self.mktemp()).resolve()
        child, [metrics_port, port] = await self.start(
            "netlab-ws",
            *("--handler", USER_ECHO, "--listen", LOOPBACK_ANY_PORT),
            *("--wiretap", str(capture), "--metrics", LOOPBACK_ANY_PORT),
            factories=("HTTPSite", r"WebSocketFactory \(WiretapFactory\)"),
        )
        connection = await websocket.connect(f"ws://127.0.0.1:{port}/", timeout=WAIT)
        connection.send("recorded words")
        self.assertEqual(await bounded(connection.receive()), "Echo: recorded words")
        await bounded(connection.close())
        scraped = await http.fetch(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT
        )
        self.assertIn(
            b'netlab_connections_opened_total{service="ws"} 1.0', scraped.body
        )
        self.assertIn(
            b'netlab_websocket_messages_total{direction="in"} 1.0', scraped.body
        )
        await self.assert_stops_on_sigterm(child, port)
        texts = await fields(capture, "websocket", "websocket.payload.text")
        said = {value for row in texts for value in row if value}
        self.assertIn("recorded words", said)
        self.assertIn("Echo: recorded words", said)
