"""
HTTP: :class:`HTTPSite` serves any twisted.web resource tree, or a WSGI
application (:class:`WSGIApp`), with netlab's limits, access log, metrics,
drain and bearer tokens; and :func:`fetch` is a client on treq.

Serve your own tree, with ``/healthz`` added (:class:`UserRoot`)::

    endpoint = serverFromString(reactor, "tcp:8080:interface=127.0.0.1")
    endpoint.listen(HTTPSite(UserRoot(my_root)))

Small building blocks: :class:`Route` (answers only its methods),
:class:`Fixed` (a constant answer, served from the request head),
:class:`Health`, :class:`NotFound`. netlab's own HTTP service,
:mod:`netlab.services.hello`, is made of them.

:func:`fetch` returns a Deferred of a :class:`Response`.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger, LogLevel, globalLogBeginner, globalLogPublisher
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    PotentialDataLoss,
    ResponseDone,
)
from twisted.web.http import HTTPChannel, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site
from twisted.web.wsgi import WSGIResource

from netlab import metrics, pubsub
from netlab.auth import Protection, protect
from netlab.deadline import with_deadline
from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.logs import PerSecond
from netlab.tcp import describe_address
from netlab.tls import ClientTLS, client_identity, shut_down_writing
from netlab.tracking import ConnectionTracker, Unavailable, refusal
from netlab.tracking import drain as drain_trackers
from netlab.websocket import WebSocketMount

#: Where ``twistd netlab-http`` listens unless told otherwise.
DEFAULT_HTTP_LISTEN = "tcp:8080:interface=127.0.0.1"

#: The content types of plain text and JSON answers.
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
#: The ``Server`` header of every response.
SERVER = b"netlab"

#: Seconds the client gives a whole exchange, connect to last body byte.
DEFAULT_CLIENT_TIMEOUT = 10.0
#: The largest response body the client keeps.
DEFAULT_MAX_RESPONSE = 64 * 1024 * 1024

# After refusing a request, how long to keep reading (and dropping) what the
# client still sends, so that closing does not reset the connection before
# the client has read the refusal.
_LINGER_SECONDS = 2.0


_SECRET_PARAMETER = re.compile(rb"([?&]access_token=)[^&#]*")


def redact(uri: bytes) -> bytes:
    """
    :return: ``uri`` with the value of any ``access_token`` query parameter
        replaced, so that bearer tokens never reach a log.
    """
    if b"access_token=" not in uri:
        return uri
    return _SECRET_PARAMETER.sub(rb"\1REDACTED", uri)


def plain(request: Request, code: int, text: bytes) -> bytes:
    """
    Set ``request``'s status and a plain-text content type.

    :return: ``text``, for a ``render`` method to return.
    """
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", TEXT)
    return text


def json_body(request: Request, value: object) -> bytes:
    """
    :return: ``value`` as a JSON body, with its content type set.
    """
    request.setHeader(b"Content-Type", JSON)
    return json.dumps(value).encode() + b"\n"


class NotFound(Resource):
    """
    ``404`` with a short plain body, for any method.
    """

    isLeaf = True

    def render(self, request: Request) -> bytes:
        return plain(request, 404, b"Not found\n")


NOT_FOUND = NotFound()


class Route(Resource):
    """
    A resource that answers only :attr:`methods`: ``405`` with an ``Allow``
    header for any other (twisted.web's own answer to an unknown method is
    ``501``). It has no children: anything below it is :class:`NotFound`.
    """

    #: The methods the route answers.
    methods: tuple[bytes, ...] = (b"GET", b"HEAD")

    def render(self, request: Request) -> bytes:
        if request.method not in self.methods:
            request.setHeader(b"Allow", b", ".join(self.methods))
            return plain(request, 405, b"Method not allowed\n")
        return super().render(request)

    def getChild(self, path: bytes, request: Request) -> Resource:
        return NOT_FOUND


class Fixed(Route):
    """
    A route whose ``GET`` answer never depends on the request: ``200``,
    :attr:`content_type` and :attr:`body`.

    In any site it renders like any resource. :class:`HTTPSite` also answers
    a plain ``GET`` or ``HEAD`` of it (see :meth:`HTTPSite.fixed_route`)
    straight from the request head with the same bytes, without building a
    twisted.web ``Request``: most of a small response's cost is that object.
    """

    #: The answer's ``Content-Type``.
    content_type: bytes = TEXT
    #: The answer's body.
    body: bytes = b""

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Type", self.content_type)
        return self.body

    def response(self, date: bytes, head: bool) -> bytes:
        """
        :return: the whole response to a ``GET`` (or a ``HEAD``, when
            ``head``) sent at ``date``, as twisted.web would write it.
        """
        return b"HTTP/1.1 200 OK\r\nServer: %s\r\nDate: %s\r\n%s%s" % (
            SERVER,
            date,
            self._headers(),
            b"" if head else self.body,
        )

    def _headers(self) -> bytes:
        return b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n" % (
            self.content_type,
            len(self.body),
        )


class Health(Fixed):
    """
    ``GET /healthz``: ``{"status": "ok"}``, for load balancers and orchestrators.

    With a pub/sub broker (``--broker``), its state too:
    ``{"status": "ok", "broker": "up"}``, or ``{"status": "degraded",
    "broker": "down"}`` while it is unreachable, still with ``200``: the
    service goes on serving, delivering in the process, and a load balancer
    that took every instance out when Redis blips would take the whole
    service down (see :meth:`netlab.pubsub.Hub.health`).
    """

    content_type = JSON
    _bodies: dict[str, bytes] = {}

    @property  # type: ignore[override]
    def body(self) -> bytes:
        """
        The answer, as the process-wide hub's health says.
        """
        broker = pubsub.hub.broker
        state = "" if broker is None else broker.state
        body = self._bodies.get(state)
        if body is None:
            body = json.dumps(pubsub.hub.health()).encode() + b"\n"
            self._bodies[state] = body
        return body


class Guarded(Resource):
    """
    Serves ``root``, asking for a bearer token on the paths ``protection``
    covers (through :func:`netlab.auth.protect`, so a refusal is a ``401``
    with a ``WWW-Authenticate: Bearer`` challenge).

    A WebSocket mount that checks tokens itself is passed through: its
    handshake also takes a token where browsers can put one (the query or a
    subprotocol).
    """

    def __init__(self, root: Resource, protection: Protection) -> None:
        super().__init__()
        self._root = root
        self._protection = protection
        self._guard = protect(root, protection.checker, protection.realm)

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        if not self._protection.covers(request.path):
            return self._root.getChildWithDefault(path, request)
        # Looked up, not traversed: traversal may move the request's path
        # (a leaf under UserRoot), and the guard traverses again.
        child = getattr(self._root, "children", {}).get(path)
        if (
            isinstance(child, WebSocketMount)
            and child.factory_for(request.site).protection
        ):
            return child
        return self._guard.getChildWithDefault(path, request)

    def render(self, request: Request) -> Any:
        if self._protection.covers(request.path):
            return self._guard.render(request)
        return self._root.render(request)


#: What netlab answers at ``/healthz``.
HEALTH = Health()


class UserRoot(Resource):
    """
    Serves ``resource`` (any twisted.web resource tree, or a leaf such as a
    :class:`~twisted.web.wsgi.WSGIResource`) as the root of an
    :class:`HTTPSite`, and answers ``/healthz`` with :class:`Health` unless
    ``health`` is false or ``resource`` has a child of its own there
    (``putChild(b"healthz", ...)``). It is what ``twistd netlab-http
    --resource`` and ``--wsgi`` serve.

    :param resource: the user's root resource.
    :param health: whether netlab may answer ``/healthz``.
    """

    def __init__(self, resource: IResource, health: bool = True) -> None:
        super().__init__()
        self.resource = resource
        # The user's own static children, where Guarded looks up WebSocket
        # mounts.
        self.children = getattr(resource, "children", {})
        #: Whether netlab answers ``/healthz``.
        self.health = health and b"healthz" not in self.children
        #: The targets :meth:`fixed_route` may answer: HTTPSite skips its
        #: fixed-answer parser for a request head naming any other.
        self.fixed_paths: tuple[bytes, ...] = (b"/healthz",) if self.health else ()

    def getChildWithDefault(self, path: bytes, request: Request) -> Any:
        if path == b"healthz" and self.health:
            return HEALTH
        if self.resource.isLeaf:
            # twisted.web moved this segment to prepath before asking: give
            # it back, so that a leaf (a WSGI app) sees the whole path.
            request.postpath.insert(0, request.prepath.pop())
            return self.resource
        return self.resource.getChildWithDefault(path, request)

    def render(self, request: Request) -> Any:
        return self.resource.render(request)

    def fixed_route(self, path: bytes) -> Fixed | None:
        """
        :return: :class:`Health` for ``/healthz``, when netlab answers it.
        """
        return HEALTH if self.health and path == b"/healthz" else None


class WSGIApp(Service):
    """
    A WSGI application served by twisted.web on a bounded thread pool of its
    own, which this service starts and stops::

        app = WSGIApp(flask_app, threads=10)
        app.setServiceParent(parent)  # or app.run_with(site), below
        site = HTTPSite(UserRoot(app.resource))

    :param app: the WSGI application, ``app(environ, start_response)``.
    :param threads: the most requests the application handles at once;
        the others wait in the pool's queue.
    :param reactor: the reactor serving the requests (the global one if not
        given).
    """

    _log = Logger()

    def __init__(self, app: Any, threads: int = 10, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        if threads < 1:
            raise ValueError(f"a WSGI app needs at least one thread, not {threads}")
        self.app = app
        self.threads = threads
        self._reactor = reactor
        # Threads are made on demand: a --workers supervisor builds one of
        # these and never serves a request.
        self.pool = ThreadPool(minthreads=0, maxthreads=threads, name="netlab-wsgi")
        #: The resource to mount (it serves every path below it).
        self.resource = WSGIResource(reactor, self.pool, app)
        self._stopping: defer.Deferred[None] | None = None

    def startService(self) -> None:
        super().startService()
        if self._stopping is None and not self.pool.started:
            self.pool.start()

    def stopService(self) -> defer.Deferred[None]:
        """
        Stop the pool, once however often this is called (a second
        ``ThreadPool.stop`` raises ``AlreadyQuit``); requests under way
        finish first.

        :return: a Deferred that fires when the pool's threads are gone.
        """
        super().stopService()
        if self._stopping is None:
            self._stopping = defer.Deferred()
            # Joined from a thread of its own: a request under way writes
            # through the reactor (blockingCallFromThread), which must keep
            # running until the pool's threads are done.
            waiter = self._stopping
            stopper = threading.Thread(
                target=self._stop_pool, args=(waiter,), name="netlab-wsgi-stop"
            )
            stopper.start()
        done: defer.Deferred[None] = defer.Deferred()
        self._stopping.addBoth(lambda result: (done.callback(None), result)[1])
        return done

    def _stop_pool(self, waiter: defer.Deferred[None]) -> None:
        if self.pool.started:
            self.pool.stop()
        self._reactor.callFromThread(self._stopped, waiter)

    def _stopped(self, waiter: defer.Deferred[None]) -> None:
        self._log.info("WSGI thread pool stopped")
        waiter.callback(None)

    def run_with(self, site: ConnectionTracker, drain: bool = True) -> None:
        """
        Start the pool when the reactor runs, and stop it as the reactor
        shuts down once ``site`` has no connection left, so that requests
        under way finish first: for a program with no service tree to add
        this service to.

        :param drain: drain ``site`` first (see :func:`netlab.tracking.drain`);
            false when something else drains it, as twistd's plugins do.
        """
        self._reactor.callWhenRunning(self.startService)

        async def stop() -> None:
            if drain:
                await drain_trackers([site], site.limits.drain_seconds, self._reactor)
            await site.drained()
            await self.stopService()

        self._reactor.addSystemEventTrigger(
            "before", "shutdown", lambda: defer.Deferred.fromCoroutine(stop())
        )


_TLS_HELLO = re.compile(rb"\x16\x03[\x00-\x04]")
_ABSOLUTE_FORM = re.compile(rb"(?i)https?://")
# RFC 3986 host (reg-name, IPv4, or an IP literal in brackets) and port.
_HOST = re.compile(rb"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(:[0-9]*)?")

# A request head simple enough to answer without twisted.web: GET or HEAD of
# an origin-form target over HTTP/1.1, each header line a token, a colon and
# visible ASCII separated by spaces or tabs. Any other head, valid or not,
# goes through twisted.web and netlab's checks on it.
_SIMPLE_HEAD = re.compile(
    rb"(GET|HEAD) (/[!-~]*) HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*(?:[!-~]+(?:[ \t]+[!-~]+)*)?[ \t]*\r\n)*)"
    rb"\r\n"
)
# Control bytes a header line must not hold (HTAB is whitespace).
_CONTROL_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A header line starting with one of these continues the one before.
_FOLDING = b" \t"
_HEADER_LINE = re.compile(rb"([^:]+):[ \t]*(.*?)[ \t]*\r\n")
# Headers whose meaning a fixed answer would ignore (a body, an upgrade, an
# expectation, closing): a head with any of these takes twisted.web's path.
_NOT_SIMPLE = frozenset(
    [b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"expect"]
)


# Not looked up yet (None is a client without a certificate).
_UNKNOWN = object()


class LimitedRequest(Request):
    """
    A request that keeps within :class:`~netlab.limits.Limits` and serves
    what RFC 9112 asks of a server: absolute-form targets, and ``400`` for an
    HTTP/1.1 request without exactly one valid ``Host``.
    """

    channel: LimitedChannel

    body_size = 0
    started = 0.0

    def setHeader(self, name: bytes | str, value: bytes | str) -> None:
        # Twisted says "Server: TwistedWeb/<version>" on every response
        # (OPTIONS * and GET * included): say less.
        # (Every response sets several headers: look closer only at a name
        # as long as "Server".)
        if len(name) == 6 and name.lower() in (b"server", "server"):
            value = SERVER
        # What twisted.web's setHeader does, without its call.
        self.responseHeaders.setRawHeaders(name, [value])

    def handleContentChunk(self, data: bytes) -> None:
        self.body_size += len(data)
        if self.body_size > self.channel.limits.max_body:
            self.channel.refuse(413, b"Content too large\n")
        elif not self.channel.refused:
            super().handleContentChunk(data)

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.limits.max_body:
            # Refused before one byte of the body is read (or stored).
            self.channel.refuse(413, b"Content too large\n")
            length = 0
        super().gotLength(length)

    def connectionLost(self, reason: Failure) -> None:
        channel = self.channel
        if (
            not self.finished
            and self.started
            and channel is not None
            and not channel.refused
        ):
            # Gone before finish(), which logs: a client that stopped
            # waiting, or one that closed as soon as it had the whole body
            # (a WSGI app's answer is on the wire before the app's thread
            # finishes the request). Each request still gets its event;
            # 499, as nginx says it, when nothing of the answer was sent.
            code = self.code if self.startedWriting else 499
            channel.factory.access(
                self.method,
                self.uri,
                code,
                self.sentLength,
                _body_size(self),
                self.started,
                channel,
            )
        super().connectionLost(reason)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.started = self.channel.factory.reactor.seconds()
        if b"\x7f" in path:
            # Twisted refuses the control bytes below 0x20, not DEL.
            self.channel.refuse(400, b"Bad request: control byte in the target\n")
            return
        if path[:1] != b"/" and _ABSOLUTE_FORM.match(path):
            target = urlsplit(path)
            if not target.netloc:
                self.channel.refuse(400, b"Bad request: no host in the target\n")
                return
            self.requestHeaders.setRawHeaders(b"Host", [target.netloc])
            path = (target.path or b"/") + (
                b"?" + target.query if target.query else b""
            )
        hosts = self.requestHeaders.getRawHeaders(b"Host") or []
        if version == b"HTTP/1.1" and (
            len(hosts) != 1 or not _HOST.fullmatch(hosts[0])
        ):
            self.channel.refuse(400, b"Bad request: one valid Host header needed\n")
            return
        super().requestReceived(command, path, version)


class LimitedChannel(HTTPChannel):
    """
    An HTTP/1.1 connection held to :class:`~netlab.limits.Limits`.

    Each refusal is a complete response (status, plain body, ``Connection:
    close``) followed by a lingering close, so that the client reads it.
    """

    _log = Logger()
    limits: Limits = DEFAULT_LIMITS
    factory: HTTPSite
    refused = False
    _awaiting_request_line = True
    _in_body = False
    _head_size = 0
    _header_count = 0
    _deadline_timer: Any = None
    _deadline: float | None = None
    _max_header_block = DEFAULT_LIMITS.max_header_block
    _max_headers = DEFAULT_LIMITS.max_headers
    _last_byte = b""
    _linger: Any = None
    _blank_line_seen = False
    _peer_address: Any = None
    _host_address: Any = None
    _client: Any = _UNKNOWN
    #: Whether simple heads of any target get their request made at once
    #: (see _request_from_head): with netlab's own request class.
    _fast_requests = False
    peer = "?"

    def connectionMade(self) -> None:
        # Twisted's own checks (silent drop, bare 400) are set looser than
        # netlab's, which answer with the status the RFCs name.
        self.MAX_LENGTH = self.limits.max_request_line
        self.totalHeadersSize = (
            self.limits.max_request_line + self.limits.max_header_block
        )
        self.maxHeaders = self.limits.max_headers + 1
        self._max_header_block = self.limits.max_header_block
        self._max_headers = self.limits.max_headers
        self._longest_head = (
            self.limits.max_request_line + 2 + self.limits.max_header_block
        )
        self.peer = describe_address(self.transport.getPeer())
        self._fast_requests = isinstance(self.requestFactory, type) and issubclass(
            self.requestFactory, LimitedRequest
        )
        super().connectionMade()
        self.factory.track(self)

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return
        if self._between_requests():
            self.resetTimeout()
            data = self._serve_simple_heads(data)
            if not data or self.refused:
                return
        if self._awaiting_request_line and _TLS_HELLO.match(data) and not self.requests:
            # A TLS client on a plain port: nothing here can answer it, so
            # close at once rather than wait for a request head.
            self._log.info(
                "closed a TLS handshake from {peer}: this port is plain HTTP",
                peer=self.peer,
            )
            self.refused = True
            self.transport.abortConnection()
            return
        if self._bare_lf_request_line(data):
            # LineReceiver would wait for a CRLF that never comes.
            self.refuse(400, b"Bad request: lines end with CRLF\n")
            return
        self._last_byte = data[-1:]
        if self._deadline is None and not (self._handlingRequest or self._in_body):
            self._set_deadline(self.limits.head_timeout)
        super().dataReceived(data)
        if self._announced_chunk_too_large():
            self.refuse(413, b"Content too large\n")

    def _between_requests(self) -> bool:
        """
        :return: whether nothing of a request has arrived yet: the next byte
            starts a request head.
        """
        return (
            self._awaiting_request_line
            and not self._buffer
            and not self.requests
            and not (self._handlingRequest or self._in_body)
            and self.line_mode
            and self.persistent
            # twisted.web has eaten the one empty line it allows before a
            # request line, and forgets it only once a request is parsed.
            and not self._blank_line_seen
            and not self.factory.draining
        )

    def _serve_simple_heads(self, data: bytes) -> bytes:
        """
        Serve each whole, simple request head (see :meth:`_simple_head`) at
        the start of ``data``, a read that starts a request, without
        twisted.web's line-by-line parser: a :class:`Fixed` route is answered
        straight from the head, any other target gets its ``Request`` made at
        once (:meth:`_request_from_head`). Either way the bytes on the wire,
        the access-log event and the metrics are twisted.web's path's.

        :return: the rest of ``data``, from the first head that is not a
            simple one (or that arrived while a request is still being
            answered), for twisted.web's path.
        """
        site = self.factory
        heads = site._fixed_heads
        while data and self._between_requests():
            # The fixed routes' heads are known (UserRoot's): look one up
            # only for those.
            fixed = site._fixed_route is not None and (
                heads is None or data.startswith(heads)
            )
            if not (fixed or self._fast_requests):
                return data
            head = self._simple_head(data)
            if head is None:
                return data
            end, method, target, headers = head
            route = site.fixed_route(target.split(b"?", 1)[0]) if fixed else None
            if route is not None:
                self._answer_fixed(route, method, target)
            elif self._fast_requests:
                self._request_from_head(method, target, headers)
            else:
                return data
            # The head ended with CRLF (see _bare_lf_request_line).
            self._last_byte = b"\n"
            data = data[end:]
        return data

    def _simple_head(
        self, data: bytes
    ) -> tuple[int, bytes, bytes, list[tuple[bytes, bytes]]] | None:
        """
        :return: where the request head at the start of ``data`` ends, its
            method, target and header lines (name and value), when it is
            whole and simple: ``GET`` or ``HEAD`` of an origin-form target
            over HTTP/1.1 (``_SIMPLE_HEAD``), within every limit, with
            exactly one valid ``Host`` and nothing about a body, an upgrade,
            an expectation or closing (``_NOT_SIMPLE``); otherwise ``None``,
            and twisted.web's path parses it, or refuses it with netlab's
            status.
        """
        limits = self.limits
        head = _SIMPLE_HEAD.match(data, 0, self._longest_head)
        if head is None:
            return None
        block = head.group(3)
        if (
            head.start(3) - 2 > limits.max_request_line
            or len(block) + 2 > limits.max_header_block
            or (
                # Each header line is held to the request line's limit.
                len(block) > limits.max_request_line
                and max(map(len, block.split(b"\r\n"))) > limits.max_request_line
            )
        ):
            return None
        headers = _HEADER_LINE.findall(block)
        if len(headers) > limits.max_headers:
            return None
        host = None
        for name, value in headers:
            name = name.lower()
            if name == b"host":
                if host is not None:
                    return None
                host = value
            elif name in _NOT_SIMPLE and not (
                name == b"connection" and value.lower() == b"keep-alive"
            ):
                return None
        if host is None or _HOST.fullmatch(host) is None:
            return None
        return head.end(), head.group(1), head.group(2), headers

    def _answer_fixed(self, route: Fixed, method: bytes, target: bytes) -> None:
        """
        Answer a simple head for the :class:`Fixed` ``route`` as twisted.web
        would, with its access-log event and metrics, without a ``Request``.
        """
        site = self.factory
        started = site.reactor.seconds()
        is_head = method == b"HEAD"
        self.transport.write(route.response(_http_date(time.time()), is_head))
        site.access(
            method, target, 200, 0 if is_head else len(route.body), 0, started, self
        )

    def _request_from_head(
        self, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """
        Make and serve the request of a simple head, as twisted.web's
        ``lineReceived``, ``headerReceived``, ``allHeadersReceived`` and
        ``allContentReceived`` would for it (no body, kept alive: see
        :meth:`_simple_head`), in one go.
        """
        request = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        add = request.requestHeaders.addRawHeader
        cookies = False
        for name, value in headers:
            add(name, value)
            cookies = cookies or name.lower() == b"cookie"
        if cookies:
            request.parseCookies()
        request.gotLength(0)
        # What allContentReceived sets, but the idle timer: a request answered
        # before this returns leaves it running (no reactor turn can fire
        # it meanwhile), sparing a cancel and a new timer per request.
        self._handlingRequest = True
        self.setRawMode()
        # LimitedRequest.requestReceived's checks (the target, one valid
        # Host) are _simple_head's: go on to twisted.web's.
        request.started = self.factory.reactor.seconds()
        Request.requestReceived(request, method, target, b"HTTP/1.1")
        if self._handlingRequest and self.timeOut:
            # Answered later: no idle timeout while it is under way, as on
            # twisted.web's path (requestDone sets it again).
            self._savedTimeOut = self.setTimeout(None)

    def _announced_chunk_too_large(self) -> bool:
        """
        :return: whether the chunk being read would take the body past
            ``max_body``, judged from its size line: Twisted's decoder only
            reports a chunk's bytes as they arrive, so a refusal that waited
            for them would wait on the client.
        """
        decoder = self._transferDecoder
        if getattr(decoder, "state", None) != "BODY" or not self.requests:
            return False
        request = self.requests[-1]
        announced = getattr(request, "body_size", 0) + decoder.length
        return announced > self.limits.max_body

    def _bare_lf_request_line(self, data: bytes) -> bool:
        """
        :return: whether ``data`` ends a request line with a bare LF (looked
            at only while a request line is awaited, never in a body).
        """
        if not self._awaiting_request_line or self._in_body or self._handlingRequest:
            return False
        if self._last_byte == b"\r" and data.startswith(b"\n"):
            return False
        return b"\n" in data.split(b"\r\n", 1)[0]

    def lineReceived(self, line: bytes) -> None:
        if self._awaiting_request_line or self.refused:
            if self.refused:
                return
            if line:
                self._awaiting_request_line = False
                self._head_size = self._header_count = 0
            else:
                self._blank_line_seen = True
        else:
            # Every line of every head passes here: the limits are read from
            # the channel's own attributes, and Twisted's method called
            # directly (its only base).
            size = self._head_size = self._head_size + len(line) + 2
            if line and line[0] not in _FOLDING:
                self._header_count += 1
            if size > self._max_header_block or self._header_count > self._max_headers:
                self.refuse(431, b"Request header fields too large\n")
                return
            if _CONTROL_BYTE.search(line):
                # RFC 9110 5.5 lets a recipient refuse them; kept, they
                # would reach the access log and the app (terminal escapes).
                self.refuse(400, b"Bad request: control byte in a header\n")
                return
        HTTPChannel.lineReceived(self, line)

    def lineLengthExceeded(self, line: bytes) -> None:
        if self._awaiting_request_line:
            self.refuse(414, b"URI too long\n")
        else:
            self.refuse(431, b"Request header fields too large\n")

    def allHeadersReceived(self) -> None:
        self._deadline_met()
        self._in_body = True
        super().allHeadersReceived()
        if self.length != 0 and not self.refused:
            # A body follows (a length, or chunks): it has a deadline of its
            # own, else a client sending a byte now and then, each within
            # the idle timeout, would hold the connection for ever.
            self._set_deadline(self.limits.body_timeout)

    def allContentReceived(self) -> None:
        if self.refused:
            return
        self._deadline_met()
        self._in_body = False
        self._awaiting_request_line = True
        self._blank_line_seen = False
        super().allContentReceived()

    def _send100Continue(self) -> None:
        # Not after a refusal: the client must not send the body.
        if not self.refused:
            super()._send100Continue()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's own answer to a malformed request: make it a whole one.
        self.refuse(400, b"Bad request\n")

    def drain(self) -> None:
        """
        The service is stopping: an idle connection closes now; a request
        under way is answered, with ``Connection: close``, and then closes.
        """
        if self._handlingRequest or self._in_body or not self._awaiting_request_line:
            self.persistent = False
            for request in self.requests:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
        else:
            self.loseConnection()

    def getPeer(self) -> Any:
        # Every Request asks for both addresses (twisted.web keeps them on
        # it), and getHost is a system call: a connection's addresses do
        # not change, so each is asked of the transport once.
        peer = self._peer_address
        if peer is None:
            peer = self._peer_address = self.transport.getPeer()
        return peer

    def getHost(self) -> Any:
        host = self._host_address
        if host is None:
            host = self._host_address = self.transport.getHost()
        return host

    def client_identity(self) -> str | None:
        """
        :return: the subject of the client's certificate, as
            :func:`~netlab.tls.client_identity` says it, looked up once per
            connection (the first request comes after the TLS handshake).
        """
        if self._client is _UNKNOWN:
            self._client = client_identity(self.transport)
        return self._client

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        if self.factory.draining:
            # A request that came while the service stops: answer, then close.
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return super().checkPersistence(request, version)

    def _set_deadline(self, seconds: float) -> None:
        """
        The head, or the body, must be in within ``seconds`` (``408`` after).
        One timer per connection, moved on rather than cancelled and made
        anew for each request of a kept-alive connection.
        """
        self._deadline = deadline = self.factory.reactor.seconds() + seconds
        timer = self._deadline_timer
        if timer is None:
            self._deadline_timer = self.callLater(seconds, self._deadline_passed)
        elif timer.getTime() > deadline:
            # A body deadline sooner than the head's.
            timer.reset(seconds)

    def _deadline_passed(self) -> None:
        self._deadline_timer = None
        if self._deadline is None:
            return  # no head or body under way: the next sets a timer again
        left = self._deadline - self.factory.reactor.seconds()
        if left > 0:
            self._deadline_timer = self.callLater(left, self._deadline_passed)
        else:
            self.refuse(408, b"Request timeout\n")

    def _deadline_met(self) -> None:
        # The timer stays: it finds no deadline, or the next one.
        self._deadline = None

    def _stop_deadline_timer(self) -> None:
        self._deadline = None
        if self._deadline_timer is not None:
            if self._deadline_timer.active():
                self._deadline_timer.cancel()
            self._deadline_timer = None

    def refuse(self, code: int, text: bytes) -> None:
        """
        Answer ``code`` with ``text``, stop parsing, and close.
        """
        if self.refused or self.transport is None:
            return
        self.refused = True
        self._stop_deadline_timer()
        self._log.info(
            "refused a request from {peer}: {status} {reason}",
            peer=self.peer,
            status=code,
            reason=text.decode().strip(),
        )
        self.transport.write(refusal(code, text))
        # Keep reading (and dropping) for a moment, then close for good.
        self.transport.resumeProducing()
        self.setTimeout(None)
        self._linger = self.callLater(_LINGER_SECONDS, self.transport.abortConnection)
        shut_down_writing(self.transport)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._stop_deadline_timer()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)
        self.factory.forget(self, reason)


class HTTPSite(ConnectionTracker, Site):
    """
    A :class:`~twisted.web.server.Site` held to :class:`~netlab.limits.Limits`,
    with one structured access-log event per request.

    :param resource: the root resource. Wrap your own in :class:`UserRoot`
        to add ``/healthz``; netlab's own is
        :class:`netlab.services.hello.Root`.
    :param allowed_origins: for the WebSocket mounts given a handler: the
        browser origins allowed besides the page's own.
    :param protection: the paths that need a bearer token (see
        :class:`Guarded`).
    """

    _log = Logger()
    protocol = LimitedChannel
    service_name = "http"
    requestFactory = LimitedRequest
    displayTracebacks = False

    def __init__(
        self,
        resource: IResource,
        limits: Limits = DEFAULT_LIMITS,
        reactor: IReactorTime | None = None,
        allowed_origins: Iterable[str] = (),
        protection: Protection | None = None,
    ) -> None:
        ConnectionTracker.__init__(self)
        self._fixed_route = getattr(resource, "fixed_route", None)
        # A root that lists the paths it answers fixed (UserRoot) spares the
        # other requests the fast path's parser.
        fixed_paths = getattr(resource, "fixed_paths", None)
        self._fixed_heads: tuple[bytes, ...] | None = None
        if fixed_paths is not None:
            self._fixed_heads = tuple(
                method + path + end
                for path in fixed_paths
                for method in (b"GET ", b"HEAD ")
                for end in (b" ", b"?")
            )
            if not fixed_paths:
                self._fixed_route = None
        #: What a :class:`~netlab.websocket.WebSocketMount` given a handler
        #: takes from the site, besides its limits.
        self.allowed_origins = tuple(allowed_origins)
        self.protection = protection
        self._protection = protection
        if protection is not None:
            resource = Guarded(resource, protection)
        Site.__init__(self, resource, timeout=limits.idle_timeout, reactor=reactor)
        self.limits = limits
        # The access log's own Logger, made once rather than on each request
        # (the class attribute is a descriptor that makes one per access).
        self._access_log = Logger(namespace=self._log.namespace, source=self)

    def forget(self, protocol: Any, reason: Failure | None = None) -> None:
        # Also when a WebSocket takes the connection over (the channel never
        # hears of its end): its head timer must not outlive it.
        stop = getattr(protocol, "_stop_deadline_timer", None)
        if stop is not None:
            stop()
        super().forget(protocol, reason)

    def buildProtocol(self, addr: Any) -> Any:
        if not self.admits(addr):
            return Unavailable(self.reactor)
        channel = super().buildProtocol(addr)
        channel.limits = self.limits
        return channel

    def fixed_route(self, path: bytes) -> Fixed | None:
        """
        :return: the :class:`Fixed` resource that answers a request for
            ``path`` (a target without its query, as sent), when the root
            resource names one through a ``fixed_route(path)`` method of its
            own (as :class:`UserRoot` and :class:`netlab.services.hello.Root`
            do) and no bearer token is needed there. Its simple ``GET`` and
            ``HEAD`` requests are answered without building a twisted.web
            ``Request``.
        """
        if self._fixed_route is None:
            return None
        if self._protection is not None and self._protection.covers(path):
            return None
        return self._fixed_route(path)

    def log(self, request: LimitedRequest) -> None:
        self.access(
            request.method,
            request.uri,
            request.code,
            request.sentLength,
            _body_size(request),
            request.started,
            request.channel,
        )

    def access(
        self,
        method_bytes: bytes,
        uri: bytes,
        code: int,
        sent: int,
        received: int,
        started: float,
        channel: LimitedChannel,
    ) -> None:
        """
        Log and count one request that has been answered.

        :param sent: the body bytes of the response.
        :param received: the body bytes of the request.
        :param started: when its head arrived, on the site's reactor's clock.
        """
        method = method_bytes.decode("latin-1")
        duration = self.reactor.seconds() - started
        path = redact(uri).decode("latin-1")
        peer = channel.peer
        access = self._access_log
        metrics.http_request(self.service_name, method, code, duration, received, sent)
        if code == 401:
            metrics.auth_failed("http")
        if _unobserved(access.observer):
            return
        # What Logger.info would hand its observer, made directly: it is one
        # event per request, and Logger's checks cost more than the event.
        # The one field to format, ``request``, is made here: a log
        # observer's formatter costs far more per field than an f-string.
        access.observer(
            {
                "log_logger": access,
                "log_level": LogLevel.info,
                "log_namespace": access.namespace,
                "log_source": self,
                "log_format": "{request}",
                "log_time": time.time(),
                "request": (
                    f"{method} {path} {code} {sent} bytes {duration:.4f}s {peer}"
                ),
                "method": method,
                "path": path,
                "status": code,
                "bytes": sent,
                "duration": duration,
                "peer": peer,
                "connection": getattr(channel, "connection_id", None),
                "client": channel.client_identity(),
            }
        )


def _unobserved(observer: Any) -> bool:
    """
    :return: whether ``observer`` is Twisted's global publisher while no one
        has begun logging or added an observer: it would keep the last
        65,536 events (each access event, a request's worth of work) only to
        replay them if logging ever began.
    """
    # Private attributes, read defensively: if Twisted renames them, events
    # are simply published as before.
    temporary = getattr(globalLogBeginner, "_temporaryObserver", None)
    return (
        temporary is not None
        and observer is globalLogPublisher
        and getattr(globalLogPublisher, "_observers", None) == [temporary]
    )


#: The ``Date`` header's value.
_http_date = PerSecond(datetimeToString)


def _body_size(request: Request) -> int:
    try:
        return request.content.seek(0, io.SEEK_END) if request.content else 0
    except ValueError:  # already closed
        return 0


@dataclass(frozen=True)
class Response:
    """
    A whole HTTP response, as :func:`fetch` gives it.
    """

    code: int
    phrase: bytes
    headers: Headers
    body: bytes


class ResponseTooLarge(Exception):
    """
    The server sent more body than the client agreed to keep.
    """


class _BoundedBody(Protocol):
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0
        self.done: defer.Deferred[bytes] = defer.Deferred(
            lambda _: self.transport.stopProducing()
        )

    def dataReceived(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.limit:
            self.transport.stopProducing()
            if not self.done.called:
                self.done.errback(
                    ResponseTooLarge(f"response body larger than {self.limit} bytes")
                )
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def _treq_url(url: str) -> Any:
    """
    :return: ``url`` as treq may take it. treq sends every URL through
        hyperlink's ``to_uri()``, which IDNA-encodes the host and so fails
        on an IPv6 literal (python-hyper/hyperlink#68): such a URL goes as
        one that leaves its literal host alone.
    """
    from hyperlink import EncodedURL
    from twisted.internet.abstract import isIPv6Address

    if not isIPv6Address(EncodedURL.from_text(url).host):
        return url

    class LiteralHostURL(EncodedURL):
        def to_uri(self) -> EncodedURL:
            return EncodedURL.to_uri(self.replace(host="")).replace(host=self.host)

    return LiteralHostURL.from_text(url)


def fetch(
    url: str,
    *,
    method: str = "GET",
    headers: dict[str, list[str]] | None = None,
    data: bytes | None = None,
    timeout: float = DEFAULT_CLIENT_TIMEOUT,
    max_body: int = DEFAULT_MAX_RESPONSE,
    reactor: Any = None,
    tls: ClientTLS | None = None,
) -> defer.Deferred[Response]:
    """
    Make one HTTP request with treq and read the whole response.

    The connection is not kept for reuse, so nothing is left open when the
    Deferred fires (tests see a clean reactor).

    :param timeout: seconds for the whole exchange, from connecting to the last
        byte of the body (treq's own ``timeout`` covers only the headers);
        past it the Deferred fails with
        :class:`~twisted.internet.defer.TimeoutError`.
    :param max_body: the most body bytes kept before failing with
        :class:`ResponseTooLarge`.
    :param tls: how an ``https://`` server is verified (the system's trusted
        CAs when not given).
    """
    if reactor is None:
        from twisted.internet import reactor
    client = HTTPClient(
        Agent(
            reactor,
            contextFactory=(tls or ClientTLS()).policy(),
            pool=HTTPConnectionPool(reactor, persistent=False),
        )
    )

    async def exchange() -> Response:
        response = await client.request(
            method, _treq_url(url), headers=headers, data=data
        )
        body = _BoundedBody(max_body)
        response.deliverBody(body)
        return Response(
            response.code, response.phrase, response.headers, await body.done
        )

    return with_deadline(defer.Deferred.fromCoroutine(exchange()), timeout, reactor)
