"""
The HTTP contract, run over loopback against the Twisted service and the
``http.server`` twin, with a raw-socket client (for the exact bytes on the
wire) and with each real client.

Every real client also fetches from every server over HTTPS (the ``...TLS...``
test cases), trusting only a CA made for the test run.

A new server joins by one line in ``SERVERS``; a new client in ``CLIENTS``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from twisted.internet import reactor, task
from twisted.internet.threads import deferToThread

from netlab import certs, http, tls
from netlab.compat import http_client
from netlab.limits import Limits
from netlab.services import hello
from tests import user_http
from tests.support import (
    WAIT,
    Peer,
    TwinServer,
    TwistedServer,
    abort,
    bounded,
    connect,
    python,
    register,
    run,
)
from tests.test_http_fastpath import assert_current_date


def user_resource_site(limits: Limits) -> http.HTTPSite:
    """
    The contract's routes written by a user with twisted.web alone
    (:class:`tests.user_http.ContractRoot`), served as ``twistd netlab-http
    --resource`` serves it: ``/healthz`` is netlab's.
    """
    return http.HTTPSite(http.UserRoot(user_http.ContractRoot()), limits=limits)


SERVERS = {
    "Twisted": TwistedServer(hello.site),
    "UserResource": TwistedServer(user_resource_site),
    "HttpServer": TwinServer("netlab.compat.http_server"),
}

MAX_BODY = 1024 * 1024  # the documented default every server applies


# A client: (url, CA file to trust for https:// or None) -> (status code, body).
Client = Callable[[str, str | None], Awaitable[tuple[int, bytes]]]


async def treq_client(url: str, cacert: str | None) -> tuple[int, bytes]:
    trust = tls.ClientTLS(cacert=cacert) if cacert else None
    response = await http.fetch(url, timeout=WAIT, tls=trust)
    return response.code, response.body


async def compat_client(url: str, cacert: str | None) -> tuple[int, bytes]:
    return await deferToThread(http_client.fetch, url, WAIT, cacert)


def _cacert(cacert: str | None) -> list[str]:
    return ["--cacert", cacert] if cacert else []


def _printed(result) -> tuple[int, bytes]:
    if result.status != 0 or result.err:
        raise AssertionError(f"client failed: {result}")
    code, _, body = result.out.partition(b"\n")
    return int(code), body.removesuffix(b"\n")


async def netlab_cli(url: str, cacert: str | None) -> tuple[int, bytes]:
    return _printed(await run(python("-m", "netlab", "get", *_cacert(cacert), url)))


async def compat_cli(url: str, cacert: str | None) -> tuple[int, bytes]:
    args = python("-m", "netlab.compat.http_client", *_cacert(cacert), url)
    return _printed(await run(args))


CLIENTS: dict[str, Client] = {
    "treq": treq_client,
    "compat": compat_client,
    "netlab_cli": netlab_cli,
    "compat_cli": compat_cli,
}


def parse_responses(
    data: bytes, methods: list[bytes]
) -> list[tuple[int, dict[bytes, list[bytes]], bytes]]:
    """
    Split ``data`` into the responses to requests made with ``methods``, by
    ``Content-Length`` (every netlab server sends one). Stops at the first
    incomplete response.
    """
    responses = []
    for method in methods:
        head, found, rest = data.partition(b"\r\n\r\n")
        if not found:
            break
        status_line, *lines = head.split(b"\r\n")
        headers: dict[bytes, list[bytes]] = {}
        for line in lines:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        size = 0 if method == b"HEAD" else int(headers[b"content-length"][0])
        if len(rest) < size:
            break
        responses.append((int(status_line.split(b" ")[1]), headers, rest[:size]))
        data = rest[size:]
    return responses


class HTTPContract:
    """
    What every HTTP server in netlab does. A mixin: one TestCase per server.
    """

    timeout = 120
    server: TwistedServer | TwinServer
    tls: certs.Certificates | None = None

    async def setUp(self) -> None:
        await self.start(idle_timeout=30.0)

    async def start(self, **limits: float) -> None:
        running = await self.server.start(tls=self.tls, **limits)
        self.host, self.port = running.host, running.port
        self.cacert = running.cacert
        self.base = (
            f"{'https' if self.tls else 'http'}://{running.hostname}:{self.port}"
        )
        self.addCleanup(running.stop)

    async def connect(self) -> Peer:
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        return peer

    async def exchange(self, *requests: bytes) -> list:
        """
        Send raw ``requests`` in one write and return the parsed responses,
        once the server has answered them all.
        """
        peer = await self.connect()
        peer.transport.write(b"".join(requests))
        methods = [request.split(b" ", 1)[0] for request in requests]
        while True:
            responses = parse_responses(bytes(peer.received), methods)
            if len(responses) == len(requests):
                return responses
            await peer.received_at_least(len(peer.received) + 1)

    async def refused(self, request: bytes, status: int) -> None:
        """
        ``request`` is answered with ``status``, ``Connection: close``, and
        the server closes; then a normal client is served.
        """
        peer = await self.connect()
        peer.transport.write(request)
        await bounded(peer.closed)
        [(code, headers, body)] = parse_responses(bytes(peer.received), [b"GET"])
        self.assertEqual(code, status, body)
        # Each status with its own reason phrase (not "431 Error").
        line = b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())
        self.assertTrue(peer.received.startswith(line), bytes(peer.received[:80]))
        self.assertEqual(headers[b"connection"], [b"close"])
        self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
        await self.assert_serves_normally()

    async def assert_serves_normally(self) -> None:
        [(code, _, body)] = await self.exchange(get(b"/"))
        self.assertEqual((code, body), (200, b"Hello, world!"))

    async def test_hello(self) -> None:
        [(code, headers, body)] = await self.exchange(get(b"/"))
        self.assertEqual((code, body), (200, b"Hello, world!"))
        self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])
        self.assertEqual(headers[b"content-length"], [b"13"])

    async def test_date_is_now(self) -> None:
        """
        Every answer carries one ``Date``, a valid IMF-fixdate of the current
        time: the fast path's ``/`` and ``/healthz``, a rendered ``/echo``,
        a ``404``.
        """
        for target in (b"/", b"/healthz", b"/echo", b"/nowhere"):
            [(_, headers, _)] = await self.exchange(get(target))
            [date] = headers[b"date"]
            assert_current_date(self, date)

    async def test_head_has_no_body(self) -> None:
        [(code, headers, body)] = await self.exchange(get(b"/", method=b"HEAD"))
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers[b"content-length"], [b"13"])

    async def test_other_methods_are_405(self) -> None:
        responses = await self.exchange(
            get(b"/", method=b"DELETE"),
            get(b"/", method=b"POST"),
            get(b"/echo", method=b"FROB"),
            get(b"/healthz", method=b"PUT"),
        )
        self.assertEqual([code for code, _, _ in responses], [405] * 4)
        self.assertEqual(
            [headers[b"allow"] for _, headers, _ in responses],
            [[b"GET, HEAD"], [b"GET, HEAD"], [b"GET, HEAD, POST"], [b"GET, HEAD"]],
        )

    async def test_unknown_paths_are_404(self) -> None:
        paths = (b"/nope", b"/echo/", b"/healthz/x")
        responses = await self.exchange(*(get(path) for path in paths))
        for code, headers, body in responses:
            self.assertEqual((code, body), (404, b"Not found\n"))
            self.assertEqual(headers[b"content-type"], [b"text/plain; charset=utf-8"])

    async def test_health(self) -> None:
        [(code, headers, body)] = await self.exchange(get(b"/healthz"))
        self.assertEqual((code, json.loads(body)), (200, {"status": "ok"}))
        self.assertEqual(headers[b"content-type"], [b"application/json"])

    async def test_echo(self) -> None:
        body = "héllo".encode()
        [(code, headers, reply)] = await self.exchange(
            get(
                b"/echo?a=1&a=2&b=",
                method=b"POST",
                headers=b"X-Thing: one\r\nX-Thing: two\r\n",
                body=body,
            )
        )
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-type"], [b"application/json"])
        reflection = json.loads(reply)
        self.assertEqual(reflection["client"]["host"], "127.0.0.1")
        self.assertIsInstance(reflection["client"]["port"], int)
        del reflection["client"]
        self.assertEqual(
            reflection,
            {
                "method": "POST",
                "path": "/echo",
                "query": {"a": ["1", "2"], "b": [""]},
                "headers": {
                    "host": ["example.test"],
                    "x-thing": ["one", "two"],
                    "content-length": [str(len(body))],
                },
                "body": "héllo",
                "body_encoding": "utf-8",
            },
        )

    async def test_echo_redacts_credentials(self) -> None:
        [(code, _, reply)] = await self.exchange(
            get(
                b"/echo",
                headers=b"Authorization: Bearer secret.token\r\n"
                b"Proxy-Authorization: Basic c2VjcmV0\r\n"
                b"Cookie: session=secret\r\nX-Shown: kept\r\n",
            )
        )
        self.assertEqual(code, 200)
        headers = json.loads(reply)["headers"]
        for name in ("authorization", "proxy-authorization", "cookie"):
            self.assertEqual(headers[name], ["REDACTED"], name)
        self.assertEqual(headers["x-shown"], ["kept"])
        self.assertNotIn(b"secret", reply)
        self.assertNotIn(b"c2VjcmV0", reply)

    async def test_echo_binary_and_chunked(self) -> None:
        chunked = b"3\r\n\xff\x00\xfe\r\n0\r\n\r\n"
        [(_, _, reply)] = await self.exchange(
            get(
                b"/echo",
                method=b"POST",
                headers=b"Transfer-Encoding: chunked\r\n",
                raw_body=chunked,
            )
        )
        reflection = json.loads(reply)
        self.assertEqual(
            (reflection["body"], reflection["body_encoding"]), ("/wD+", "base64")
        )

    async def test_large_body_under_the_limit(self) -> None:
        body = b"x" * (MAX_BODY - 1000)
        [(code, _, reply)] = await self.exchange(
            get(b"/echo", method=b"POST", body=body)
        )
        self.assertEqual((code, json.loads(reply)["body"]), (200, body.decode()))

    async def test_body_of_exactly_the_limit(self) -> None:
        """
        A body of exactly the limit is served, announced or chunked (one
        byte more is 413: see below).
        """
        body = b"y" * MAX_BODY
        chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        for request in (
            get(b"/echo", method=b"POST", body=body),
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunked,
        ):
            [(code, _, reply)] = await self.exchange(request)
            self.assertEqual((code, len(json.loads(reply)["body"])), (200, MAX_BODY))

    async def test_keep_alive_and_pipelining(self) -> None:
        """
        One connection carries several requests, pipelined in one write, and
        the answers come back in order.
        """
        responses = await self.exchange(get(b"/healthz"), get(b"/"), get(b"/nope"))
        self.assertEqual([code for code, _, _ in responses], [200, 200, 404])
        self.assertEqual(responses[1][2], b"Hello, world!")

    async def test_absolute_form(self) -> None:
        [(code, _, reply)] = await self.exchange(
            b"GET http://example.test/echo?x=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"
        )
        reflection = json.loads(reply)
        self.assertEqual((code, reflection["path"]), (200, "/echo"))
        self.assertEqual(reflection["query"], {"x": ["1"]})

    async def test_missing_host_is_400(self) -> None:
        await self.refused(b"GET / HTTP/1.1\r\n\r\n", 400)

    async def test_body_over_limit_is_413(self) -> None:
        await self.refused(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n"
            % (MAX_BODY + 1,),
            413,
        )

    async def test_chunked_body_over_limit_is_413(self) -> None:
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        await self.refused(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk * (MAX_BODY // 65536 + 1),
            413,
        )

    async def test_long_request_line_is_414(self) -> None:
        await self.refused(
            b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414
        )

    async def test_long_header_is_431(self) -> None:
        await self.refused(
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431
        )

    async def test_control_byte_in_header_is_400(self) -> None:
        """
        RFC 9110 5.5: a recipient may refuse control bytes in a field value;
        every server does, so none reaches a log (a terminal escape) or an app.
        """
        await self.refused(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \x1b[2J\r\n\r\n", 400)

    async def test_too_many_headers_is_431(self) -> None:
        """
        100 header fields (the documented default) are served; 101 are 431.
        """
        headers = b"".join(b"X-%d: v\r\n" % (i,) for i in range(99))
        [(code, _, _)] = await self.exchange(get(b"/", headers=headers))
        self.assertEqual(code, 200)
        await self.refused(get(b"/", headers=headers + b"X-One-More: v\r\n"), 431)

    async def test_slow_loris_is_cut_off(self) -> None:
        """
        A client trickling its request head gets 408 once the head deadline
        passes, though each byte comes well within the idle timeout.
        """
        await self.start(idle_timeout=5.0, head_timeout=1.0)
        peer = await self.connect()
        peer.transport.write(b"GET / HTTP/1.1\r\nHost: h\r\n")
        for _ in range(40):  # 0.1 s apart: 4 s at most, the deadline is 1 s
            if peer.reason is not None:
                break
            peer.transport.write(b"X")
            await task.deferLater(reactor, 0.1)
        await bounded(peer.closed)
        [(code, headers, _)] = parse_responses(bytes(peer.received), [b"GET"])
        self.assertEqual((code, headers[b"connection"]), (408, [b"close"]))
        await self.assert_serves_normally()

    async def test_slow_body_is_cut_off(self) -> None:
        """
        A client trickling its request body, a byte well within the idle
        timeout each, gets 408 once the body deadline passes: it cannot hold
        a connection slot for as long as it likes.
        """
        await self.start(idle_timeout=5.0, head_timeout=5.0, body_timeout=1.0)
        for framing, byte in (
            (b"Content-Length: 1000\r\n", b"x"),
            (b"Transfer-Encoding: chunked\r\n", b"1\r\nx\r\n"),
        ):
            peer = await self.connect()
            peer.transport.write(b"POST /echo HTTP/1.1\r\nHost: h\r\n" + framing)
            peer.transport.write(b"\r\n")
            for _ in range(40):  # 0.1 s apart: 4 s at most, the deadline is 1 s
                if peer.reason is not None:
                    break
                peer.transport.write(byte)
                await task.deferLater(reactor, 0.1)
            await bounded(peer.closed)
            [(code, headers, _)] = parse_responses(bytes(peer.received), [b"POST"])
            self.assertEqual((code, headers[b"connection"]), (408, [b"close"]))
        await self.assert_serves_normally()

    async def test_smuggling_is_400(self) -> None:
        """
        Both Content-Length and Transfer-Encoding: refused, not guessed at.
        """
        await self.refused(
            b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
            400,
        )


def get(
    path: bytes,
    *,
    method: bytes = b"GET",
    headers: bytes = b"",
    body: bytes | None = None,
    raw_body: bytes = b"",
) -> bytes:
    """
    :return: one raw HTTP/1.1 request.
    """
    if body is not None:
        headers += b"Content-Length: %d\r\n" % (len(body),)
        raw_body = body
    return b"%s %s HTTP/1.1\r\nHost: example.test\r\n%s\r\n%s" % (
        method,
        path,
        headers,
        raw_body,
    )


class HTTPSContract:
    """
    Over HTTPS: each real client against the server listening with the test
    certificates; hostile cases of the TLS layer. A mixin: one TestCase per
    server, ``tls`` set by :func:`tests.support.register`.
    """

    timeout = 120
    server: TwistedServer | TwinServer
    tls: certs.Certificates

    setUp = HTTPContract.setUp
    start = HTTPContract.start
    connect = HTTPContract.connect

    async def assert_serves_normally(self) -> None:
        self.assertEqual(
            await treq_client(self.base + "/", self.cacert), (200, hello.HELLO)
        )

    async def test_plain_http_then_normal(self) -> None:
        """
        A plain-HTTP request to the HTTPS port is turned away, and does not
        hurt the next client.
        """
        peer = await self.connect()
        peer.transport.write(get(b"/"))
        await bounded(peer.closed)
        await self.assert_serves_normally()

    async def test_silent_client_dropped(self) -> None:
        """
        A client that connects and never starts its handshake is dropped.
        """
        # The next client's TLS handshake and request run against the same
        # timeouts: 2 s is many times what a loaded machine needs.
        await self.start(idle_timeout=2.0, head_timeout=2.0)
        peer = await self.connect()
        await bounded(peer.closed, 20)
        await self.assert_serves_normally()


def _client_test(name: str, client: Client):
    async def test(self) -> None:
        self.assertEqual(await client(self.base + "/", self.cacert), (200, hello.HELLO))

    test.__name__ = f"test_client_{name}"
    test.__doc__ = f"The {name} client fetches / from this server."
    return test


CLIENT_TESTS = {
    f"test_client_{name}": _client_test(name, c) for name, c in CLIENTS.items()
}
register(globals(), HTTPContract, SERVERS, CLIENT_TESTS)
register(globals(), HTTPSContract, SERVERS, CLIENT_TESTS, tls=True)
