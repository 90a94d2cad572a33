"""
The plugins as users run them: real ``twistd`` processes, started outside the
checkout so that only the installed package is seen.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import sys
import tempfile

from twisted.internet import reactor, task
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    ProcessExitedAlready,
)
from twisted.trial.unittest import TestCase

from netlab import auth, certs, http, tls, websocket
from netlab.services import echo, greeting, hello
from tests.support import WAIT, abort, bounded, connect, python, run, spawn
from tests.test_wiretap import fields


async def refused(port: int) -> bool:
    """
    :return: whether connecting to ``port`` on loopback is refused.
    """
    try:
        peer = await connect("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectError):
        # A reset while connecting: the port closed with this connection
        # still in its queue.
        return True
    await abort(peer)
    return False


def twistd(*args: str) -> list[str]:
    """
    :return: the command line of the ``twistd`` installed beside this Python.
    """
    script = os.path.join(os.path.dirname(sys.executable), "twistd")
    if os.path.exists(script):
        return [script, *args]
    return python("-c", "from twisted.scripts.twistd import run; run()", *args)


LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"


class TwistdCase(TestCase):
    """
    Running ``twistd`` as a user does, outside the checkout: shared by the
    test cases of every plugin.
    """

    timeout = 120

    def setUp(self) -> None:
        # Outside the checkout: from its root, the source tree on sys.path
        # would hide a packaging mistake.
        self.outside = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, self.outside)

    async def start(self, *args: str, factories: tuple[str, ...]) -> tuple:
        """
        Start ``twistd -n`` with ``args``; return the child and the port of
        each factory, read from twistd's own log.
        """
        pattern = b"(?s)" + b".*".join(
            b"%s starting on (\\d+)" % (name.encode(),) for name in factories
        )
        child = spawn(
            twistd("-n", "--pidfile=", *args),
            watch=pattern,
            cwd=self.outside,
        )
        self.addCleanup(self.kill, child)
        match = await bounded(child.protocol.seen)
        return child, [int(port) for port in match.groups()]

    def kill(self, child) -> None:
        if child.protocol.ended.called:
            return
        try:
            child.signal("KILL")
        except ProcessExitedAlready:
            pass
        return child.ended()

    async def assert_stops_on_sigterm(self, child, port: int) -> None:
        """
        SIGTERM closes open connections and the listening port, and ends twistd
        the way it always ends on a signal, without a traceback.
        """
        held = await connect("127.0.0.1", port)
        child.signal("TERM")
        await bounded(held.closed)
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertNotIn(b"Traceback", result.out + result.err)
        self.assertIn(b"Server Shut Down.", result.out)
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", port)), 0)


class TwistdTests(TwistdCase):
    async def test_help_lists_plugins(self) -> None:
        result = await run(twistd("--help"), cwd=self.outside)
        self.assertEqual(result.status, 0, result)
        for name in (
            *(b"netlab ", b"netlab-echo ", b"netlab-greeting "),
            *(b"netlab-http ", b"netlab-tcp ", b"netlab-ws "),
        ):
            self.assertIn(b"    " + name, result.out)

    async def test_echo_plugin(self) -> None:
        child, [port] = await self.start(
            "netlab-echo", "--listen", LOOPBACK_ANY_PORT, factories=("EchoFactory",)
        )
        reply = await echo.echo(f"tcp:127.0.0.1:{port}", b"ping", timeout=WAIT)
        self.assertEqual(reply, b"ping")
        await self.assert_stops_on_sigterm(child, port)

    async def test_lab_on_asyncio_reactor(self) -> None:
        """
        ``twistd -r asyncio netlab`` runs every service (the plugin module must
        not import a reactor before twistd installs one).
        """
        child, [echo_port, greeting_port, http_port, ws_port] = await self.start(
            "-r",
            "asyncio",
            "netlab",
            *("--echo", LOOPBACK_ANY_PORT),
            *("--greeting", LOOPBACK_ANY_PORT),
            *("--http", LOOPBACK_ANY_PORT),
            *("--ws", LOOPBACK_ANY_PORT),
            factories=("EchoFactory", "GreetingFactory", "HTTPSite", "EchoFactory"),
        )
        for url in (f"ws://127.0.0.1:{ws_port}/", f"ws://127.0.0.1:{http_port}/ws"):
            connection = await websocket.connect(url, timeout=WAIT)
            connection.send("hi")
            self.assertEqual(await bounded(connection.receive()), "Echo: hi")
            await bounded(connection.close())
        response = await http.fetch(f"http://127.0.0.1:{http_port}/", timeout=WAIT)
        self.assertEqual((response.code, response.body), (200, hello.HELLO))
        self.assertEqual(
            await greeting.greet(f"tcp:127.0.0.1:{greeting_port}", timeout=WAIT),
            greeting.GREETING,
        )
        self.assertEqual(
            await echo.echo(f"tcp:127.0.0.1:{echo_port}", b"x" * 100_000, timeout=WAIT),
            b"x" * 100_000,
        )
        result_text = child.protocol.out
        self.assertIn(b"AsyncioSelectorReactor", result_text)
        await self.assert_stops_on_sigterm(child, echo_port)

    async def test_lab_over_tls_with_mutual_tls_and_tokens(self) -> None:
        """
        ``ssl:`` strings in the plugin's options get netlab's TLS endpoint:
        every service over TLS, HTTP asking for a client certificate and a
        bearer token.
        """
        paths = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        secret = pathlib.Path(self.mktemp()).resolve()
        secret.write_bytes(os.urandom(32).hex().encode())
        tls_port = f"ssl:0:privateKey={paths.server_key}:certKey={paths.server}"
        child, [echo_port, http_port] = await self.start(
            "netlab",
            *("--echo", tls_port, "--greeting", "off", "--ws", "off"),
            *("--http", f"{tls_port}:clientCA={paths.ca}"),
            *("--protect", "/", "--jwt-secret", str(secret)),
            factories=(r"EchoFactory \(TLS\)", r"HTTPSite \(TLS\)"),
        )
        trusting = tls.ClientTLS(cacert=str(paths.ca))
        reply = await echo.echo(
            f"tls:localhost:{echo_port}", b"x" * 100_000, tls=trusting, timeout=WAIT
        )
        self.assertEqual(reply, b"x" * 100_000)

        url = f"https://localhost:{http_port}/"
        with self.assertRaises(Exception) as caught:
            await http.fetch(url, tls=trusting, timeout=WAIT)
        self.assertIn("certificate required", str(caught.exception))
        client = tls.ClientTLS(
            cacert=str(paths.ca), cert=str(paths.client), key=str(paths.client_key)
        )
        refused = await http.fetch(url, tls=client, timeout=WAIT)
        self.assertEqual(refused.code, 401)
        token = auth.mint(secret, "alice")
        response = await http.fetch(
            url,
            tls=client,
            headers={"Authorization": [f"Bearer {token}"]},
            timeout=WAIT,
        )
        self.assertEqual((response.code, response.body), (200, hello.HELLO))
        self.assertNotIn(token.split(".")[2].encode(), child.protocol.out)
        await self.assert_stops_on_sigterm(child, http_port)

    async def test_wiretap(self) -> None:
        """
        ``--wiretap``: HTTP over TLS and a WebSocket echo, recorded by the
        lab while it runs, and read back by tshark once it stops.
        """
        paths = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        capture = pathlib.Path(self.mktemp()).resolve()
        tls_port = f"ssl:0:privateKey={paths.server_key}:certKey={paths.server}"
        child, [http_port, ws_port] = await self.start(
            "netlab",
            *("--echo", "off", "--greeting", "off"),
            *("--http", tls_port, "--ws", LOOPBACK_ANY_PORT),
            *("--wiretap", str(capture)),
            factories=(
                r"HTTPSite \(WiretapFactory\) \(TLS\)",
                r"EchoFactory \(WiretapFactory\)",
            ),
        )
        trusting = tls.ClientTLS(cacert=str(paths.ca))
        for path in ("/", "/healthz"):
            await http.fetch(
                f"https://localhost:{http_port}{path}", tls=trusting, timeout=WAIT
            )
        connection = await websocket.connect(f"ws://127.0.0.1:{ws_port}/", timeout=WAIT)
        connection.send("on the wire")
        await bounded(connection.receive())
        await bounded(connection.close())
        await self.assert_stops_on_sigterm(child, ws_port)

        uris = await fields(capture, "http.request", "http.request.uri")
        self.assertEqual(uris, [["/"], ["/healthz"], ["/"]])
        texts = await fields(
            capture, "websocket.payload.text", "websocket.payload.text"
        )
        self.assertEqual(texts, [["on the wire"], ["Echo: on the wire"]])

    async def test_metrics(self) -> None:
        child, [metrics_port, port] = await self.start(
            "netlab-echo",
            *("--metrics", LOOPBACK_ANY_PORT, "--listen", LOOPBACK_ANY_PORT),
            factories=("HTTPSite", "EchoFactory"),
        )
        await echo.echo(f"tcp:127.0.0.1:{port}", b"counted", timeout=WAIT)
        response = await http.fetch(
            f"http://127.0.0.1:{metrics_port}/metrics", timeout=WAIT
        )
        self.assertEqual(response.code, 200)
        self.assertIn(b'netlab_received_bytes_total{service="echo"} 7.0', response.body)
        await self.assert_stops_on_sigterm(child, port)

    async def test_json_logs(self) -> None:
        child, [port] = await self.start(
            "--logger",
            "netlab.logs.json",
            "netlab-echo",
            *("--listen", LOOPBACK_ANY_PORT),
            factories=("EchoFactory",),
        )
        await echo.echo(f"tcp:127.0.0.1:{port}", b"logged", timeout=WAIT)
        await self.assert_stops_on_sigterm(child, port)
        records = [json.loads(line) for line in child.protocol.out.splitlines()]
        closed = [r for r in records if r.get("bytes_in") == 6]
        self.assertEqual(len(closed), 1, records)
        self.assertEqual(records[-1]["text"], "Server Shut Down.", records[-3:])
        self.assertEqual(closed[0]["service"], "echo")
        self.assertIsInstance(closed[0]["connection"], int)

    async def test_text_logs(self) -> None:
        """
        ``--logger netlab.logs.text`` writes twistd's usual text lines, to
        the last: a shutdown with no connection open takes one reactor turn,
        which never ends, and twistd then kills itself with the signal (no
        atexit), yet the shutdown's lines are written.
        """
        child, [port] = await self.start(
            "--logger",
            "netlab.logs.text",
            "netlab-echo",
            *("--listen", LOOPBACK_ANY_PORT),
            factories=("EchoFactory",),
        )
        await echo.echo(f"tcp:127.0.0.1:{port}", b"logged", timeout=WAIT)
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        out = result.out.decode()
        self.assertRegex(
            out,
            r"\n\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} "
            r"\[netlab\.services\.echo\.Echo#info\] "
            r"echo connection from 127\.0\.0\.1:\d+ closed: 6 bytes in, 6 bytes out",
        )
        for line in ("Received SIGTERM", "Stopping factory", "Main loop terminated."):
            self.assertIn(f"] {line}", out)
        self.assertTrue(out.endswith("] Server Shut Down.\n"), out[-300:])

    async def half_a_request(self, peer) -> None:
        """
        Start a POST of 10 bytes on ``peer``, and return once the server has
        read its head (it says ``100 Continue``): a request in flight.
        """
        peer.transport.write(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        continued = await bounded(peer.received_at_least(25))
        self.assertTrue(continued.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"))

    async def test_sigterm_drains(self) -> None:
        """
        An HTTP request in flight completes with its whole body; open
        WebSockets get 1001; connecting after SIGTERM is refused; twistd
        exits as it does on a signal.
        """
        child, [http_port, ws_port] = await self.start(
            "netlab",
            *("--echo", "off", "--greeting", "off", "--drain-seconds", "20"),
            *("--http", LOOPBACK_ANY_PORT, "--ws", LOOPBACK_ANY_PORT),
            factories=("HTTPSite", "EchoFactory"),
        )
        mounted = await websocket.connect(f"ws://127.0.0.1:{http_port}/ws")
        standalone = await websocket.connect(f"ws://127.0.0.1:{ws_port}/")
        slow = await connect("127.0.0.1", http_port)
        await self.half_a_request(slow)

        child.signal("TERM")
        for _ in range(200):
            if await refused(http_port):
                break
            await task.deferLater(reactor, 0.05)
        else:
            self.fail("the port still accepts after SIGTERM")

        for connection in (mounted, standalone):
            code, _ = await bounded(connection.closed())
            self.assertEqual(code, 1001)
        slow.transport.write(b"half more!")
        await bounded(slow.closed)
        head, _, body = (
            bytes(slow.received).partition(b"\r\n\r\n")[2].partition(b"\r\n\r\n")
        )
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertIn(b"Connection: close", head)
        self.assertIn(b'"body": "half more!"', body)

        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertNotIn(b"Traceback", result.out + result.err)

    async def test_grace_period_ends_stragglers(self) -> None:
        child, [port] = await self.start(
            "netlab-http",
            *("--listen", LOOPBACK_ANY_PORT, "--drain-seconds", "1"),
            factories=("HTTPSite",),
        )
        stuck = await connect("127.0.0.1", port)
        await self.half_a_request(stuck)  # and the body never comes
        child.signal("TERM")
        await bounded(stuck.closed)
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertIn(b"did not finish within 1.0s: aborted", result.out)
        self.assertNotIn(b"Traceback", result.out + result.err)

    async def test_port_in_use_is_one_line(self) -> None:
        """
        A plugin that cannot listen says why in one line, exits 1, and
        leaves neither twistd's pid file nor an empty wiretap capture.
        """
        pidfile = os.path.join(self.outside, "twistd.pid")
        capture = os.path.join(self.outside, "capture.pcapng")
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            taken = f"tcp:{port}:interface=127.0.0.1"
            for plugin in (
                ("netlab-greeting", "--listen", taken),
                ("netlab", "--echo", taken, "--http", LOOPBACK_ANY_PORT),
            ):
                result = await run(
                    twistd("-n", f"--pidfile={pidfile}", *plugin, "--wiretap", capture),
                    cwd=self.outside,
                )
                self.assertEqual(result.status, 1, result)
                self.assertNotIn(b"Traceback", result.out + result.err)
                self.assertTrue(
                    re.search(
                        rb"cannot listen on 127\.0\.0\.1:%d: .*Address already in use"
                        % port,
                        result.out,
                    ),
                    result,
                )
                self.assertFalse(os.path.exists(pidfile), plugin)
                self.assertFalse(os.path.exists(capture), plugin)

    async def test_bad_option_is_one_line(self) -> None:
        result = await run(
            twistd("-n", "netlab-echo", "--listen", "tcp:nope"), cwd=self.outside
        )
        self.assertEqual(result.status, 1, result)
        self.assertNotIn(b"Traceback", result.out + result.err)
        self.assertIn(b"bad endpoint 'tcp:nope'", result.out + result.err)
