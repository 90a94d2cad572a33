"""
Bearer tokens on netlab's own services: ``--protect`` paths of the HTTP
service, the WebSocket handshake (header, query and subprotocol), the
plugins' options, and the ``netlab token`` / ``--token`` commands.

The token checks themselves (every refusal) are in ``test_auth``.
"""

from __future__ import annotations

import base64
import os
import pathlib

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import auth, http, websocket
from netlab.services import hello
from netlab.tap import http as http_tap
from netlab.tap import lab as lab_tap
from netlab.tap import ws as ws_tap
from tests.support import WAIT, Peer, bounded, connect, python, run
from tests.test_tap import listeners

AUDIENCE = "netlab-tests"


def secret_file(case: SynchronousTestCase) -> pathlib.Path:
    path = pathlib.Path(case.mktemp())
    path.write_bytes(os.urandom(32).hex().encode() + b"\n")
    return path


class ProtectedSite:
    """
    netlab's HTTP service on loopback, with some paths protected.
    """

    def __init__(self, case: TestCase, *paths: str) -> None:
        self.case = case
        self.secret = secret_file(case)
        checker = auth.JWTChecker(auth.secret_from_file(self.secret), audience=AUDIENCE)
        self.site = http.HTTPSite(
            hello.Root(), protection=auth.Protection(checker, paths)
        )

    def token(self, subject: str = "alice", **claims) -> str:
        return auth.mint(self.secret, subject, audience=AUDIENCE, **claims)

    async def start(self) -> str:
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            self.site
        )
        self.case.addCleanup(port.stopListening)
        self.case.addCleanup(lambda: bounded(self.site.drained()))
        self.port = port.getHost().port
        return f"http://127.0.0.1:{self.port}"


def bearer(token: str) -> dict[str, list[str]]:
    return {"Authorization": [f"Bearer {token}"]}


class HTTPProtectionTests(TestCase):
    timeout = 60

    async def test_only_protected_paths_ask(self) -> None:
        served = ProtectedSite(self, "/echo")
        base = await served.start()
        hello = await http.fetch(base + "/", timeout=WAIT)
        self.assertEqual(hello.code, 200)
        refused = await http.fetch(base + "/echo", timeout=WAIT)
        self.assertEqual(refused.code, 401)
        self.assertEqual(
            refused.headers.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="netlab"'],
        )
        below = await http.fetch(base + "/echo/deeper?x=1", timeout=WAIT)
        self.assertEqual(below.code, 401)
        allowed = await http.fetch(
            base + "/echo", headers=bearer(served.token()), timeout=WAIT
        )
        self.assertEqual(allowed.code, 200)
        self.assertIn(b'"path": "/echo"', allowed.body)

    async def test_everything_but_health(self) -> None:
        served = ProtectedSite(self, "/")
        base = await served.start()
        for path in ("/", "/echo", "/console", "/nowhere"):
            response = await http.fetch(base + path, timeout=WAIT)
            self.assertEqual(response.code, 401, path)
        health = await http.fetch(base + "/healthz", timeout=WAIT)
        self.assertEqual(health.code, 200)
        answer = await http.fetch(base + "/", headers=bearer(served.token()))
        self.assertEqual((answer.code, answer.body), (200, hello.HELLO))

    async def test_bad_tokens_refused_without_detail(self) -> None:
        served = ProtectedSite(self, "/")
        base = await served.start()
        expired = served.token(ttl=-120)
        other = auth.mint(secret_file(self), "mallory", audience=AUDIENCE)
        with capturedLogs() as events:
            for token in (expired, other, "garbage"):
                response = await http.fetch(
                    base + "/", headers=bearer(token), timeout=WAIT
                )
                self.assertEqual(response.code, 401)
                self.assertEqual(
                    response.headers.getRawHeaders(b"www-authenticate"),
                    [b'Bearer realm="netlab", error="invalid_token"'],
                )
                self.assertNotIn(token[-20:].encode(), response.body)
        logged = repr(events)
        for token in (expired, other):
            self.assertNotIn(token.split(".")[2], logged)

    async def test_query_token_redacted_in_access_log(self) -> None:
        served = ProtectedSite(self, "/echo")
        base = await served.start()
        token = served.token()
        with capturedLogs() as events:
            await http.fetch(f"{base}/?a=1&access_token={token}&b=2", timeout=WAIT)
        [path] = [e["path"] for e in events if "path" in e and "status" in e]
        self.assertEqual(path, "/?a=1&access_token=REDACTED&b=2")
        self.assertNotIn(token.split(".")[2], repr(events))


async def response_head(peer: Peer) -> bytes:
    """
    :return: what ``peer`` received, once it holds a whole response head.
    """
    size = 1
    while b"\r\n\r\n" not in (received := await bounded(peer.received_at_least(size))):
        size = len(received) + 1
    return received


class WebSocketProtectionTests(TestCase):
    timeout = 60

    async def served(self, *paths: str) -> tuple[ProtectedSite, str]:
        served = ProtectedSite(self, *paths)
        base = await served.start()
        return served, "ws" + base.removeprefix("http") + "/ws"

    async def echo(self, url: str, **kw) -> str:
        connection = await websocket.connect(url, timeout=WAIT, **kw)
        connection.send("hi")
        reply = await bounded(connection.receive())
        await bounded(connection.close())
        return reply

    async def test_header_token(self) -> None:
        served, url = await self.served("/ws")
        authorization = {"Authorization": f"Bearer {served.token()}"}
        self.assertEqual(await self.echo(url, headers=authorization), "Echo: hi")

    async def test_no_or_bad_token_refused_with_401(self) -> None:
        served, url = await self.served("/ws")
        for headers in (None, {"Authorization": "Bearer garbage"}):
            with self.assertRaises(websocket.HandshakeRefused) as caught:
                await self.echo(url, headers=headers)
            self.assertIn("[401]", str(caught.exception))

    async def test_query_token_kept_out_of_logs(self) -> None:
        served, url = await self.served("/")
        token = served.token()
        with capturedLogs() as events:
            reply = await self.echo(f"{url}?access_token={token}")
        self.assertEqual(reply, "Echo: hi")
        self.assertNotIn(token.split(".")[2], repr(events))

    async def test_subprotocol_token_not_echoed(self) -> None:
        """
        A browser offers ``bearer`` and ``bearer.<token>``: the server opens
        with ``bearer``, and the token never comes back.
        """
        served, url = await self.served("/ws")
        token = served.token()
        for protocols, status in (
            (f"bearer, bearer.{token}", b"101"),
            ("bearer, bearer.garbage", b"401"),
        ):
            peer = await connect("127.0.0.1", served.port)
            key = base64.b64encode(os.urandom(16))
            peer.transport.write(
                b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: " + key + b"\r\n"
                b"Sec-WebSocket-Protocol: " + protocols.encode() + b"\r\n\r\n"
            )
            head = await response_head(peer)
            peer.transport.abortConnection()
            await bounded(peer.closed)
            self.assertTrue(head.startswith(b"HTTP/1.1 " + status), head)
            if status == b"101":
                self.assertIn(b"Sec-WebSocket-Protocol: bearer\r\n", head)
            self.assertNotIn(token.encode(), head)

    async def test_unprotected_path_stays_open(self) -> None:
        served, url = await self.served("/echo")
        self.assertEqual(await self.echo(url), "Echo: hi")


class PluginOptionTests(SynchronousTestCase):
    def test_protect_needs_keys_and_keys_need_protect(self) -> None:
        secret = str(secret_file(self))
        for args, expected in (
            (["--protect", "/echo"], "--protect needs keys"),
            (["--jwt-secret", secret], "needs --protect"),
            (["--protect", "echo", "--jwt-secret", secret], "starts with /"),
            (["--protect", "/healthz", "--jwt-secret", secret], "stay open"),
            (
                ["--protect", "/", "--jwt-secret", secret, "--jwks-url", "x"],
                "give one of",
            ),
            (["--protect", "/", "--jwt-secret", "/nonexistent"], "/nonexistent"),
            (["--protect", "/", "--jwks-url", "http://example.com/"], "http"),
        ):
            for options in (http_tap.Options(), ws_tap.Options(), lab_tap.Options()):
                error = self.assertRaises(usage.UsageError, options.parseOptions, args)
                self.assertIn(expected, str(error), (args, options))

    def test_protection_reaches_the_services(self) -> None:
        secret = str(secret_file(self))
        args = ["--protect", "/", "--jwt-secret", secret, "--jwt-audience", "a"]
        options = http_tap.Options()
        options.parseOptions(args)
        protection = options["protection"]
        self.assertEqual(protection.paths, ("/",))
        self.assertEqual(protection.checker.audience, ["a"])
        options = lab_tap.Options()
        options.parseOptions(args)
        service = lab_tap.makeService(options)
        factories = {s.name: s for s in service}
        site = listeners(factories["http"])[0].factory
        self.assertIsInstance(site.resource, http.Guarded)
        ws_factory = listeners(factories["ws"])[0].factory
        self.assertIs(ws_factory.protection, options["protection"])


class CommandTests(TestCase):
    timeout = 120

    async def test_token_and_clients(self) -> None:
        served = ProtectedSite(self, "/")
        base = await served.start()
        minted = await run(
            python(
                "-m",
                "netlab",
                "token",
                "--key",
                str(served.secret),
                "--sub",
                "bob",
                "--aud",
                AUDIENCE,
            )
        )
        self.assertEqual(minted.status, 0, minted)
        token = minted.out.strip().decode()
        claims = await served.site.resource._protection.checker.verify(token)
        self.assertEqual((claims["sub"], claims["aud"]), ("bob", AUDIENCE))

        result = await run(python("-m", "netlab", "get", "--token", token, base + "/"))
        self.assertEqual(result.out, b"200\nHello, world!\n", result)
        result = await run(python("-m", "netlab", "get", base + "/"))
        self.assertTrue(result.out.startswith(b"401\n"), result)
        ws = "ws" + base.removeprefix("http") + "/ws"
        os.environ["NETLAB_TOKEN"] = token
        try:
            result = await run(python("-m", "netlab", "ws", ws, "yo"))
        finally:
            del os.environ["NETLAB_TOKEN"]
        self.assertEqual((result.status, result.out), (0, b"Echo: yo\n"), result)
        result = await run(python("-m", "netlab", "ws", ws, "yo"))
        self.assertEqual(result.status, 1, result)
        self.assertIn(b"401", result.err)
        self.assertEqual(result.err.count(b"\n"), 1, result)

    async def test_token_usage(self) -> None:
        for args in (
            ["token", "--sub", "x"],
            ["token", "--key", "/nonexistent", "--sub", "x"],
        ):
            result = await run(python("-m", "netlab", *args))
            self.assertEqual(result.status, 2, (args, result))
            self.assertEqual(result.err.count(b"\n"), 1, (args, result))
