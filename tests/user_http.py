"""
A user's own HTTP applications, written against twisted.web and WSGI alone
(nothing from netlab), for the tests that serve them through netlab:
``twistd -n netlab-http --resource tests.user_http:root`` or
``--wsgi tests.user_http:app``.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request

TEXT = b"text/plain; charset=utf-8"


class Greeting(Resource):
    """
    ``GET /greet?name=NAME``: ``Hello, NAME!``, and with ``slow=S`` after S
    seconds (to have a request in flight).
    """

    isLeaf = True

    def render_GET(self, request: Request) -> Any:
        name = (request.args.get(b"name") or [b"world"])[0]
        request.setHeader(b"Content-Type", TEXT)
        body = b"Hello, " + name + b"!\n"
        slow = request.args.get(b"slow")
        if not slow:
            return body
        from twisted.internet import reactor

        def answer() -> None:
            if not request.finished and not request._disconnected:
                request.setHeader(b"Content-Length", b"%d" % len(body))
                request.write(body)
                request.finish()

        reactor.callLater(float(slow[0]), answer)
        return 1  # NOT_DONE_YET

    def render_POST(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", TEXT)
        return b"got %d bytes\n" % (len(request.content.read()),)


class Root(Resource):
    """
    The user's tree: ``/greet``. Made with no arguments (``--resource
    tests.user_http:Root`` works too).
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"greet", Greeting())


#: ``--resource tests.user_http:root``.
root = Root()

#: Not a resource: ``--resource tests.user_http:not_a_resource`` is refused.
not_a_resource = 42


def make_root() -> Resource:
    """
    A zero-argument callable returning a resource.
    """
    return Root()


class Seen:
    """
    What the WSGI app was given, to prove what it never saw.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []
        self.threads: set[str] = set()

    def add(self, method: str, path: str, body: int) -> None:
        with self.lock:
            self.requests.append((method, path, body))
            self.threads.add(threading.current_thread().name)


seen = Seen()
#: Set to make a request to ``/wait`` block its thread until it is released.
release = threading.Event()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """
    A WSGI app: ``GET /hello?name=N`` says ``Hello, N!``; ``POST`` answers
    how many body bytes it read; ``/wait`` waits for :data:`release` (at most
    30 s).
    """
    size = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(size) if size else b""
    path = environ["PATH_INFO"]
    seen.add(environ["REQUEST_METHOD"], path, len(body))
    if path == "/wait":
        release.wait(30)
    if environ["REQUEST_METHOD"] == "POST":
        text = f"got {len(body)} bytes\n"
    else:
        query = dict(
            part.split("=", 1)
            for part in environ["QUERY_STRING"].split("&")
            if "=" in part
        )
        text = f"Hello, {query.get('name', 'world')}! ({path})\n"
    answer = text.encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(answer))),
        ],
    )
    return [answer]


# netlab's HTTP contract (tests/test_http_conformance.py), implemented by a
# user with twisted.web alone: the routes, 404 and 405 as netlab's own do.


def _plain(request: Request, code: int, text: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", TEXT)
    return text


class _Page(Resource):
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def render(self, request: Request) -> bytes:
        if request.method not in self.methods:
            request.setHeader(b"Allow", b", ".join(self.methods))
            return _plain(request, 405, b"Method not allowed\n")
        return super().render(request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return _Missing()


class _Missing(Resource):
    isLeaf = True

    def render(self, request: Request) -> bytes:
        return _plain(request, 404, b"Not found\n")


def _reflected(name: bytes, value: bytes) -> str:
    # Credentials are not reflected (the contract's /echo redacts them).
    if name.lower() in (b"authorization", b"proxy-authorization", b"cookie"):
        return "REDACTED"
    return value.decode("latin-1")


class _Reflect(_Page):
    methods = (b"GET", b"HEAD", b"POST")

    def render_GET(self, request: Request) -> bytes:
        body = request.content.read()
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode(), "base64"
        client = request.getClientAddress()
        reflection = {
            "method": request.method.decode("latin-1"),
            "path": request.path.decode("latin-1"),
            "query": {
                k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()
            },
            "headers": {
                name.decode("latin-1").lower(): [_reflected(name, v) for v in values]
                for name, values in request.requestHeaders.getAllRawHeaders()
            },
            "body": text,
            "body_encoding": encoding,
            "client": {"host": client.host, "port": client.port},
        }
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(reflection).encode() + b"\n"

    render_POST = render_GET


class ContractRoot(_Page):
    """
    ``/`` says hello, ``/echo`` reflects the request, anything else is
    ``404``; ``/healthz`` is left to netlab.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"echo", _Reflect())

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return _Missing()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", TEXT)
        return b"Hello, world!"
