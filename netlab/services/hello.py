"""
The HTTP service: ``GET /`` says ``Hello, world!``, ``/echo`` reflects the
request as JSON, ``/healthz`` answers load balancers, ``/ws`` is the
WebSocket echo and ``/console`` a page to try it. Written on
:mod:`netlab.http` and :mod:`netlab.websocket` as a service of yours would
be; serve it with::

    endpoint.listen(HTTPSite(Root()))

or mount its routes in a tree of your own::

    root.putChild(b"hello", Hello())
    root.putChild(b"echo", Echo())
"""

from __future__ import annotations

import base64
from typing import Any

from twisted.web.http import parse_qs
from twisted.web.resource import Resource
from twisted.web.server import Request

from netlab.http import HEALTH, NOT_FOUND, Fixed, HTTPSite, Route, json_body
from netlab.services import wsecho
from netlab.services.console import Console, ConsoleScript, Favicon
from netlab.websocket import WebSocketMount

#: What ``GET /`` answers.
HELLO = b"Hello, world!"
#: Request headers that carry credentials: :class:`Echo` reflects each
#: with the value :data:`REDACTED`, as the access log redacts
#: ``access_token``, so that nothing on the page or in a proxy's cache
#: holds them.
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: What :class:`Echo` shows instead of a credential's value.
REDACTED = "REDACTED"


class Hello(Fixed):
    """
    ``GET /``: ``Hello, world!`` as plain text.
    """

    body = HELLO


class Echo(Route):
    """
    ``GET`` or ``POST /echo``: the request itself, as JSON.

    The reflection holds ``method``, ``path`` (without the query), ``query``
    (name to list of values), ``headers`` (lower-cased name to list of
    values; credentials redacted: see :data:`SECRET_HEADERS`), ``body``
    (text, or base64 when it is not UTF-8, as ``body_encoding`` says) and
    the ``client`` address.
    """

    methods = (b"GET", b"HEAD", b"POST")

    def render_GET(self, request: Request) -> bytes:
        return json_body(request, reflect(request))

    render_POST = render_GET


def _query(uri: bytes) -> dict[bytes, list[bytes]]:
    """
    :return: the arguments in ``uri``'s query (``request.args`` also holds
        those of a POSTed form).
    """
    _, mark, query = uri.partition(b"?")
    return parse_qs(query, 1) if mark else {}


def reflect(request: Request) -> dict[str, Any]:
    """
    :return: what :class:`Echo` answers for ``request``.
    """
    body = request.content.read() if request.content is not None else b""
    try:
        text, encoding = body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(body).decode("ascii"), "base64"
    client = request.getClientAddress()

    def decode(raw: bytes) -> str:
        return raw.decode("latin-1")

    return {
        "method": decode(request.method),
        "path": decode(request.path),
        "query": {
            key.decode("utf-8", "replace"): [v.decode("utf-8", "replace") for v in vs]
            for key, vs in _query(request.uri).items()
        },
        "headers": {
            name: [REDACTED if name in SECRET_HEADERS else decode(v) for v in values]
            for name, values in (
                (decode(raw).lower(), values)
                for raw, values in request.requestHeaders.getAllRawHeaders()
            )
        },
        "body": text,
        "body_encoding": encoding,
        "client": {
            "host": getattr(client, "host", None),
            "port": getattr(client, "port", None),
        },
    }


class Root(Hello):
    """
    The whole service: :class:`Hello` at ``/``, :class:`Echo` at ``/echo``,
    :class:`~netlab.http.Health` at ``/healthz``, the WebSocket echo
    (:class:`~netlab.services.wsecho.Echo`) at ``/ws``, a page to try it at
    ``/console`` with its icon at ``/favicon.svg``
    (:mod:`netlab.services.console`), and
    :class:`~netlab.http.NotFound` everywhere else.

    The WebSocket mount takes its limits, allowed origins and bearer-token
    protection from the :class:`~netlab.http.HTTPSite` that serves it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"echo", Echo())
        self.putChild(b"healthz", HEALTH)
        self.putChild(b"ws", WebSocketMount(wsecho.Echo))
        self.putChild(b"console", Console())
        self.putChild(b"console.js", ConsoleScript())
        self.putChild(b"favicon.svg", Favicon())

    def getChild(self, path: bytes, request: Request) -> Resource:
        if path == b"" and not request.postpath:
            return self
        return NOT_FOUND

    def fixed_route(self, path: bytes) -> Fixed | None:
        """
        :return: the :class:`~netlab.http.Fixed` resource that serves
            ``path`` (a request target without its query, as sent), if one
            does: :meth:`netlab.http.HTTPSite.fixed_route` answers its plain
            ``GET`` requests from the request head.
        """
        if path == b"/":
            return self
        child = self.children.get(path[1:])
        return child if isinstance(child, Fixed) else None


def site(**arguments: Any) -> HTTPSite:
    """
    :param arguments: what :class:`~netlab.http.HTTPSite` takes besides its
        resource (``limits``, ``allowed_origins``, ``protection``, ...).
    :return: the whole service, :class:`Root`, in a site of its own: what
        ``twistd netlab-http`` serves.
    """
    return HTTPSite(Root(), **arguments)
