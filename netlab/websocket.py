"""
WebSocket services on autobahn, hardened, with a handler API that needs no
autobahn subclassing, and a client.

Write a service as a :class:`Handler` subclass (one instance per connection)
or as an ``async def handler(connection)`` (the ``websockets`` shape), and
serve it with :class:`WebSocketFactory` on an endpoint, or mount it at a
path of a web site with :class:`WebSocketMount`::

    async def handler(connection):
        async for message in connection:
            await connection.send(f"Echo: {message}")

    endpoint.listen(WebSocketFactory(handler))
    root.putChild(b"chat", WebSocketMount(WebSocketFactory(handler)))

autobahn's own defaults are unsafe to expose (no size limits, no pings, a
status page naming its version, and protocol errors shown as dropped TCP
connections); :func:`harden` sets netlab's :class:`~netlab.limits.Limits`.

The echo (:mod:`netlab.services.wsecho`) is a :class:`Handler` of a few
lines.
"""

from __future__ import annotations

import inspect
import re
import reprlib
import struct
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from autobahn.exception import PayloadCorruptError, PayloadExceededError
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket import USES_NVX
from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from autobahn.websocket.xormasker import create_xor_masker
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.server import Request
from zope.interface import implementer

from netlab import metrics
from netlab.auth import BEARER_SUBPROTOCOL, Protection, token_from_websocket
from netlab.deadline import with_deadline
from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.tcp import describe_address
from netlab.tls import ClientTLS, client_endpoint, describe_tls_error
from netlab.tracking import ConnectionTracker, Unavailable, refusal

#: Where ``twistd netlab-ws`` listens unless told otherwise.
DEFAULT_WS_LISTEN = "tcp:8765:interface=127.0.0.1"
#: Why an opening handshake over HTTP/1.0 is refused (``400``).
NEEDS_HTTP_1_1 = "WebSocket needs HTTP/1.1"
#: Seconds the client gives connecting plus the opening handshake.
DEFAULT_CLIENT_TIMEOUT = 10.0
#: The largest message the client accepts.
DEFAULT_MAX_REPLY = 64 * 1024 * 1024
#: The most bytes of messages that may wait for a client that is not
#: reading, unless the handler says otherwise.
DEFAULT_MAX_QUEUE = 1024 * 1024
#: What each waiting message counts against the queue's bound besides its
#: length: about what holding it costs, so that tiny messages are bounded too.
QUEUED_MESSAGE_COST = 64
#: The messages an ``async def`` handler may leave untaken before the server
#: stops reading from its client (it reads on once half are taken).
MAX_INCOMING = 16
#: What a handler's ``overflow`` may be.
OVERFLOW_POLICIES = ("close", "drop")

# Counted per message, so looked up once (see netlab.metrics).
_MESSAGES = metrics.WEBSOCKET_MESSAGES.values
_RECEIVED = metrics.BYTES_RECEIVED.values
_SENT = metrics.BYTES_SENT.values
_IN, _OUT = ("in",), ("out",)


class ConnectionClosed(Exception):
    """
    The WebSocket closed; ``code`` and ``reason`` say how.
    """

    def __init__(self, code: int | None, reason: str | None) -> None:
        super().__init__(f"closed with code {code}: {reason}")
        self.code = code
        self.reason = reason


def _accept_deflate(max_message: int):
    """
    :return: an offer chooser that accepts permessage-deflate with the
        inflated size bounded, so a compression bomb is refused, not inflated.
    """

    def accept(offers: list[Any]) -> PerMessageDeflateOfferAccept | None:
        for offer in offers:
            if isinstance(offer, PerMessageDeflateOffer):
                return PerMessageDeflateOfferAccept(offer, max_message_size=max_message)
        return None

    return accept


class _StrictDeflate(PerMessageDeflate):
    """
    permessage-deflate (RFC 7692) that notices a message inflating to just
    over its limit.

    autobahn asks zlib for at most the bytes left in the budget and takes "no
    input left over" for "no output left over". But zlib may have read all
    the input and still hold output: a message a few hundred bytes over the
    limit was cut to the limit and passed on as whole, instead of failed with
    1009 (RFC 6455 7.4.1). Asking for one byte more than the budget tells.
    """

    def decompress_message_data(
        self, data: bytes, max_output_len: int | None = None
    ) -> bytes:
        budgets = [] if max_output_len is None else [max_output_len]
        if self.max_message_size is not None:
            budgets.append(self.max_message_size - self._decompress_message_size)
        try:
            if not budgets:
                return self._decompressor.decompress(data)
            budget = max(min(budgets), 0)
            data = self._decompressor.decompress(data, budget + 1)
        except zlib.error as error:
            raise PayloadCorruptError(
                f"invalid permessage-deflate data: {error}"
            ) from error
        if len(data) > budget or self._decompressor.unconsumed_tail:
            raise PayloadExceededError("message inflates past the limit")
        self._decompress_message_size += len(data)
        return data


class _Timers:
    """
    autobahn's handshake and ping timers, one ``DelayedCall`` each.

    autobahn batches its timers into buckets; a cancelled timer still leaves
    its bucket's call scheduled, so a closed connection is not done with the
    reactor for up to a handshake timeout. Here cancelling unschedules.
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def call_later(self, delay: float, function: Any, *args: Any, **kwargs: Any) -> Any:
        return _Timer(self._clock.callLater(delay, function, *args, **kwargs))


class _Timer:
    def __init__(self, call: Any) -> None:
        self._call = call

    def cancel(self) -> None:
        # autobahn may cancel a timer that has already fired.
        if self._call.active():
            self._call.cancel()


def harden(factory: WebSocketServerFactory, limits: Limits = DEFAULT_LIMITS) -> None:
    """
    Set netlab's explicit, safe protocol options on an autobahn server factory.
    """
    factory.setProtocolOptions(
        # RFC 6455 only, not the draft (version 8) autobahn also speaks.
        versions=[13],
        webStatus=False,
        failByDrop=False,
        echoCloseCodeReason=True,
        utf8validateIncoming=True,
        requireMaskedClientFrames=True,
        maxFramePayloadSize=limits.max_message,
        maxMessagePayloadSize=limits.max_message,
        openHandshakeTimeout=limits.handshake_timeout,
        closeHandshakeTimeout=limits.handshake_timeout,
        autoPingInterval=limits.ping_interval,
        autoPingTimeout=limits.ping_timeout,
        perMessageCompressionAccept=_accept_deflate(limits.max_message),
        # Let an "Origin: null" through to WebSocketFactory.origin_allowed, which
        # refuses it with 403 like any foreign origin (RFC 6455 4.2.2, 10.2)
        # unless it is allowed; autobahn would refuse it with 400.
        allowNullOrigin=True,
    )
    factory._batched_timer = _Timers(factory.reactor)


def _valid_close_code(code: int) -> bool:
    """
    :return: whether a peer may send ``code`` in a close frame (RFC 6455 7.4).
    """
    return code in WebSocketServerProtocol.CLOSE_STATUS_CODES_ALLOWED or (
        3000 <= code <= 4999
    )


def _close_frame_problem(
    code: int | None, reason: bytes | None
) -> tuple[int, str] | None:
    """
    :return: the close code and reason to fail the connection with if a
        close frame with ``code`` and ``reason`` is malformed, else ``None``.
    """
    if code is not None and not _valid_close_code(code):
        return WebSocketServerProtocol.CLOSE_STATUS_CODE_PROTOCOL_ERROR, (
            f"invalid close code {code}"
        )
    if reason is not None:
        try:
            reason.decode("utf-8")
        except UnicodeDecodeError:
            # RFC 6455 5.5.1 and 8.1: the reason is UTF-8, else 1007.
            return WebSocketServerProtocol.CLOSE_STATUS_CODE_INVALID_PAYLOAD, (
                "close reason is not UTF-8"
            )
    return None


#: An HTTP/1.1 request line (RFC 9112 3): method, target and version split by
#: single spaces, no control bytes, ended by CRLF.
_REQUEST_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/\d\.\d\r")
#: What no header line may hold (RFC 9110 5.5): control bytes but tab, and
#: NEL (0x85), where autobahn's parser (``str.splitlines``) also ends a line.
_BAD_FIELD_BYTE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f\x85]")


# The fast path (see WebSocketProtocol.dataReceived).

#: The first byte of a whole (FIN) text or binary frame, no RSV bits.
_TEXT_FRAME, _BINARY_FRAME = 0x81, 0x82
#: The most a 64-bit frame length may be (RFC 6455 5.2: the top bit is 0).
_MAX_FRAME_LENGTH = 0x7FFFFFFFFFFFFFFF
#: Up to this length, unmasking through Python integers beats autobahn's
#: C masker (whose set-up costs more than the XOR of a short payload).
_SHORT_PAYLOAD = 1024
_HEAD_16 = struct.Struct("!BBH").pack
_HEAD_64 = struct.Struct("!BBQ").pack


def _unmask(data: bytes, mask: bytes) -> bytes:
    """
    :return: ``data`` XORed with the 4-byte ``mask`` repeated (RFC 6455 5.3).
    """
    size = len(data)
    if size > _SHORT_PAYLOAD and USES_NVX:
        return create_xor_masker(mask, size).process(data)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


def _payload(message: str | bytes) -> tuple[bytes, bool]:
    """
    :return: what a message is sent as: its payload, and whether it is binary.
    :raise TypeError: for a message that is neither ``str`` nor ``bytes``.
    """
    if type(message) is str:
        return message.encode("utf-8"), False
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message), True
    raise TypeError(
        "a WebSocket message is str (text) or bytes (binary), not "
        f"{type(message).__name__}"
    )


def _is_utf8(data: bytes) -> bool:
    """
    :return: whether ``data`` is UTF-8 as RFC 3629 has it (no surrogates, no
        overlong forms, nothing past U+10FFFF): what Python's strict decoder,
        which the fast path decodes text with, accepts.
    """
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _frame(first: int, payload: bytes) -> bytes:
    """
    :return: an unmasked server frame: first byte ``first``, then ``payload``.
    """
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _HEAD_16(first, 126, size) + payload
    return _HEAD_64(first, 127, size) + payload


_AUTOBAHN_TIMERS = (
    "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall",
    "autoPingPendingCall",
    "autoPingTimeoutCall",
    "serverConnectionDropTimeoutCall",
)


@implementer(IPushProducer)
class WebSocketProtocol(WebSocketServerProtocol):
    """
    One WebSocket connection, hardened, serving its factory's handler
    (:class:`Handler` or an ``async def handler(connection)``).

    Back-pressure: once open, the protocol is the producer feeding its own
    transport. When the client stops reading and the transport's buffer
    fills, the server stops reading that client, and messages the handler
    sends wait in a bounded queue (:meth:`send_message`) until the buffer
    drains; past its bound, the handler's overflow policy applies. So no
    client and no handler can make the server buffer without bound. (A
    client that never reads again misses its pongs and is dropped by the
    ping timeout.)

    Fast path: once open, the common frames (whole, uncompressed, masked
    text or binary frames within the limits, complete in the buffer) are
    parsed, unmasked, checked and handed to the handler here, and the
    handler's messages are written as one plain frame each, with
    autobahn's state and statistics kept as autobahn keeps them; everything
    else, from the first frame that is not one of those on, goes through
    autobahn unchanged. The bytes on the wire are the same either way.
    """

    #: Whether reading from the client is paused (its transport's buffer is
    #: full, or a coroutine handler has not taken the messages received).
    reading_paused = False
    #: Whether the transport's buffer is full: sends wait in the queue.
    writing_paused = False
    #: Whether received frames may take the fast path (set on open).
    _fast_receive = False
    #: Whether messages may be written as one plain frame (set on open).
    _fast_send = False
    #: The largest payload the fast path takes in, or sends as one frame.
    _fast_receive_limit = 0
    _fast_send_limit = 0

    _log = Logger()
    factory: WebSocketFactory
    peer_address = "?"
    #: With a protected handshake: the ``sub`` of the client's token.
    subject: str | None = None
    #: The handler's side of this connection: a :class:`Handler` instance or
    #: a :class:`ServerConnection`, once open.
    session: Handler | ServerConnection | None = None
    #: Messages the ``"drop"`` policy has dropped on this connection.
    dropped = 0
    _dropped_logged = 0
    #: Messages waiting for the transport, and what they count against
    #: ``max_queue`` (made on first use: most connections never need one).
    _queue: deque[tuple[bytes, bool]] | None = None
    _queued = 0
    #: A send that waits for room: ``(Deferred, payload, binary)``.
    _waiting_send: tuple[defer.Deferred[None], bytes, bool] | None = None
    _incoming_full = False
    _draining = False
    _on_message: Callable[[str | bytes], Any] | None = None
    _on_close: Callable[[int | None, str | None], Any] | None = None
    #: How the connection closed: ``(code, reason)``, once it has.
    closed_with: tuple[int | None, str | None] | None = None
    #: The connection's :mod:`netlab.pubsub` subscriptions (made on first
    #: use), ended as it closes.
    _subscriptions: dict[Any, None] | None = None

    def add_subscription(self, subscription: Any) -> None:
        """
        Hold ``subscription`` (a :class:`netlab.pubsub.Subscription`) until
        the connection closes, then end it.
        """
        if self._subscriptions is None:
            self._subscriptions = {}
        self._subscriptions[subscription] = None

    def discard_subscription(self, subscription: Any) -> None:
        """
        Forget ``subscription``: it has ended.
        """
        if self._subscriptions is not None:
            self._subscriptions.pop(subscription, None)

    def _end_subscriptions(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, None
        for subscription in subscriptions or ():
            subscription.cancel()

    @property
    def peer_text(self) -> str:
        """
        The client's address: ``host:port`` (``[host]:port`` for IPv6).
        (autobahn's own ``peer`` is ``tcp4:host:port``.)
        """
        peer = self.__dict__.get("_peer_text")
        if peer is None:
            # Kept, for a handler that asks once the connection is gone.
            peer = self._peer_text = describe_address(self.transport.getPeer())
        return peer

    def connectionMade(self) -> None:
        super().connectionMade()
        # The metrics' label, looked up once rather than per message.
        self._label = (self.factory.service_name,)
        self.factory.tracker.track(self)

    def processHandshake(self) -> None:
        # The opening handshake is an HTTP/1.1 request (RFC 6455 4.1), and a
        # malformed one is a 400 (RFC 9112 3 and 2.2). autobahn's own parser
        # splits lines with str.splitlines and words with str.split: it takes
        # control bytes for spaces and a bare LF (or 0x0b, 0x1c, 0x85, ...)
        # for a line end, and answers 101. (Mounted, it parses the head
        # twisted.web hands it again, which may still hold 0x0b, 0x1c, 0x85.)
        if getattr(self, "http_request_data", None) is None:  # head not yet read
            line_end = self.data.find(b"\n")
            if line_end >= 0 and not _REQUEST_LINE.fullmatch(self.data, 0, line_end):
                return self.failHandshake("malformed request line")
            head, found, _ = self.data.partition(b"\r\n\r\n")
            if found and any(
                b"\n" in line or _BAD_FIELD_BYTE.search(line)
                for line in head.split(b"\r\n")[1:]
            ):
                return self.failHandshake("malformed header line")
        return super().processHandshake()

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Any = None
    ) -> None:
        if code == 505:
            # RFC 6455 4.2.2: not an HTTP/1.1 request, so a bad request, as
            # WebSocketMount answers it (autobahn says 505).
            code, reason = 400, NEEDS_HTTP_1_1
        if code == 400 and self._unsupported_version():
            # RFC 6455 4.2.2 and 4.4: a version the server does not speak (a
            # number or not) gets 426 and the versions it does speak. autobahn
            # answers 400, naming them only when the version was a number.
            versions = ",".join(str(v) for v in sorted(self.versions, reverse=True))
            code, responseHeaders = 426, [("Sec-WebSocket-Version", versions)]
        if code == 426:
            # RFC 9110 15.5.22 and 7.8: a 426 names the protocol to upgrade to.
            responseHeaders = [
                *(responseHeaders or []),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
            ]
        super().failHandshake(reason, code, responseHeaders)

    def sendHttpErrorResponse(
        self, code: int, reason: str, responseHeaders: Any = None
    ) -> None:
        # autobahn puts the reason where the status line's phrase goes and
        # sends no body; a client shows the body, so say it there.
        body = reason.encode("utf-8", "replace") + b"\n"
        self.sendData(refusal(code, body, responseHeaders or ()))

    def _unsupported_version(self) -> bool:
        """
        :return: whether the opening handshake has a ``Sec-WebSocket-Version``
            which autobahn has not accepted (a missing one is a plain 400).
        """
        headers = getattr(self, "http_headers", None) or {}
        asked = headers.get("sec-websocket-version")
        if asked is None or getattr(self, "websocket_version", None) is not None:
            return False
        # A header sent twice arrives joined by commas: a malformed request
        # (400), unless it names a version the server does not speak.
        spoken = {str(version) for version in self.versions}
        return not {value.strip() for value in asked.split(",")} <= spoken

    def onConnect(self, request: ConnectionRequest) -> Any:
        self.peer_address = request.peer
        if not self.factory.origin_allowed(request):
            self._log.info(
                "websocket from {peer} refused: origin {origin} not allowed",
                peer=request.peer,
                origin=request.origin,
            )
            raise ConnectionDeny(403, "origin not allowed")
        protection = self.factory.protection
        if protection is not None and protection.covers(request.path):
            return self._authenticate(request, protection)
        return None

    async def _authenticate(
        self, request: ConnectionRequest, protection: Protection
    ) -> str | None:
        token = token_from_websocket(request.headers, request.params, request.protocols)
        if token is None:
            self._log.info("websocket from {peer} refused: no token", peer=request.peer)
            metrics.auth_failed("websocket")
            raise ConnectionDeny(401, "bearer token required")
        try:
            claims = await protection.checker.verify(token)
        except UnauthorizedLogin:
            # The checker has logged why; the client learns only that it failed.
            metrics.auth_failed("websocket")
            raise ConnectionDeny(401, "invalid token") from None
        self.subject = claims["sub"]
        self._log.info(
            "websocket from {peer}: token for {subject}",
            peer=request.peer,
            subject=self.subject,
        )
        # A browser that sent its token as a subprotocol also offers plain
        # "bearer" for the server to choose, so the token is not echoed.
        if BEARER_SUBPROTOCOL in request.protocols:
            return BEARER_SUBPROTOCOL
        return None

    def onOpen(self) -> None:
        self._log.info("websocket open from {peer}", peer=self.peer_address)
        if type(self._perMessageCompress) is PerMessageDeflate:
            # Nothing has been inflated yet; see _StrictDeflate for why.
            self._perMessageCompress.__class__ = _StrictDeflate
        self.registerProducer(self, True)
        self._choose_fast_paths()
        self._start_handler()

    def _start_handler(self) -> None:
        """
        Make the handler's side of the connection and start it.
        """
        factory = self.factory
        try:
            if factory.coroutine:
                connection = ServerConnection(self)
                self.session = connection
                self._on_message = connection._received
                self._on_close = connection._closed
                running = defer.Deferred.fromCoroutine(factory.handler(connection))
                running.addCallbacks(self._handler_returned, self.handler_failed)
            else:
                handler = factory.handler()
                handler._protocol = self
                self.session = handler
                self._on_message = self._run(handler.on_message)
                self._on_close = self._run(handler.on_close)
                self._run(handler.on_open)()
        except Exception:
            self.handler_failed(Failure())

    def _run(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """
        :return: ``method``, or for an ``async def`` one, a function that
            runs it on the reactor with its failure handled as a handler's.
        """
        if not inspect.iscoroutinefunction(method):
            return method

        def run(*arguments: Any) -> None:
            running = defer.Deferred.fromCoroutine(method(*arguments))
            running.addErrback(self.handler_failed)

        return run

    def _handler_returned(self, _: object) -> None:
        # A coroutine handler that returns is done with the connection.
        self.close_with(1000)

    def handler_failed(self, failure: Failure) -> None:
        """
        The handler raised ``failure``: log it, and close with 1011
        (internal error). A :class:`ConnectionClosed` is no failure: the
        handler used the connection after it closed.
        """
        if failure.check(ConnectionClosed):
            return
        self._log.failure(
            "websocket handler {handler} failed on the connection from {peer}",
            failure,
            level=LogLevel.error,
            handler=getattr(self.factory.handler, "__qualname__", self.factory.handler),
            peer=self.peer_address,
        )
        self.close_with(1011, "internal error")

    def _choose_fast_paths(self) -> None:
        """
        Decide whether this connection's frames may take the fast path
        (:meth:`dataReceived`), and its messages (:meth:`_write_message`), from its
        options: not when autobahn is to log or time each frame, or to do
        something with a frame that the fast path does not.
        """
        plain = not (self.logOctets or self.logFrames or self.trackTimings)
        self._fast_receive = plain and self.applyMask and self.websocket_version == 13
        self._fast_receive_limit = min(
            (
                limit
                for limit in (self.maxFramePayloadSize, self.maxMessagePayloadSize)
                if limit > 0
            ),
            default=_MAX_FRAME_LENGTH,
        )
        self._fast_send = (
            plain and self._perMessageCompress is None and not self.maskServerFrames
        )
        # Past autoFragmentSize, autobahn sends fragments.
        self._fast_send_limit = self.autoFragmentSize or _MAX_FRAME_LENGTH

    def dataReceived(self, data: bytes) -> None:
        # The fast path: the whole text and binary frames at the start of the
        # buffer are answered here; from the first other frame on (a control
        # frame, a fragment, a compressed, unmasked, oversized, malformed or
        # incomplete frame, text that is not UTF-8), autobahn reads the rest
        # as it would have, and fails the connection, or not, as it would
        # have. Only between messages, with nothing listening for autobahn's
        # "message" event (fired only by autobahn's own path).
        if not (
            self._fast_receive
            and self.state == self.STATE_OPEN
            and self.current_frame is None
            and not self.inside_message
            and self._listeners is None
        ):
            super().dataReceived(data)
            return
        stats = self.trafficStats
        stats.incomingOctetsWireLevel += len(data)
        buffered = self.data + data if self.data else data
        self.data = b""
        end = len(buffered)
        limit = self._fast_receive_limit
        validate = self.utf8validateIncoming
        position = 0
        try:
            while end - position >= 6:  # the shortest masked frame
                first = buffered[position]
                second = buffered[position + 1]
                if (
                    first != _TEXT_FRAME and first != _BINARY_FRAME
                ) or second < 0x80:  # not masked
                    break
                size = second & 0x7F
                if size < 126:
                    mask_at = position + 2
                elif size == 126:
                    mask_at = position + 4
                    if mask_at + 4 > end:
                        break
                    size = (buffered[position + 2] << 8) | buffered[position + 3]
                    if size < 126:  # not the shortest encoding: autobahn's 1002
                        break
                else:
                    mask_at = position + 10
                    if mask_at + 4 > end:
                        break
                    size = int.from_bytes(buffered[position + 2 : mask_at], "big")
                    if size < 65536:  # not the shortest encoding: 1002
                        break
                if size > limit:  # autobahn's 1009
                    break
                start = mask_at + 4
                stop = start + size
                if stop > end:  # incomplete: autobahn reads it as it comes
                    break
                payload = (
                    _unmask(buffered[start:stop], buffered[mask_at:start])
                    if size
                    else b""
                )
                if first == _BINARY_FRAME:
                    message: str | bytes = payload
                elif validate:
                    # Decoding checks the text as UTF-8 (RFC 3629), as
                    # autobahn's validator does; it is cheap for ASCII.
                    try:
                        message = payload.decode("utf-8")
                    except UnicodeDecodeError:
                        break  # autobahn's 1007
                else:
                    message = payload.decode("utf-8", "replace")
                position = stop
                stats.incomingOctetsWebSocketLevel += size
                stats.incomingOctetsAppLevel += size
                stats.incomingWebSocketFrames += 1
                stats.incomingWebSocketMessages += 1
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    # A data frame counts as the peer's answer to a ping, as
                    # in autobahn's onFrameEnd.
                    self._cancelAutoPingTimeoutCall()
                self._deliver(message, size)
                if self.state != self.STATE_OPEN:
                    break
        finally:
            # What is left is autobahn's, whatever happened above.
            self.data = buffered[position:] if position else buffered
        if self.data:
            self.consumeData()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # What autobahn's own path reads (fragments, compression, ...).
        if isBinary:
            self._deliver(payload, len(payload))
        else:
            # autobahn has checked the text as UTF-8 (utf8validateIncoming).
            self._deliver(payload.decode("utf-8", "replace"), len(payload))

    def _deliver(self, message: str | bytes, size: int) -> None:
        """
        Hand a received message (``size`` bytes on the wire) to the handler.
        """
        _MESSAGES[_IN] += 1
        _RECEIVED[self._label] += size
        # Once the connection is closing, the handler has no use for more.
        if self.state != self.STATE_OPEN:
            return
        try:
            self._on_message(message)  # type: ignore[misc]
        except Exception:
            self.handler_failed(Failure())

    def send_message(self, message: str | bytes) -> bool:
        """
        Send ``message``: text for ``str``, binary for ``bytes``.

        Written at once while the client keeps up; while its transport's
        buffer is full, queued (up to the handler's ``max_queue``) and
        written as it drains. When the queue would overflow, the handler's
        ``overflow`` policy applies: ``"close"`` closes the connection with
        its ``overflow_code`` (1008 unless set), ``"drop"`` drops this
        message and counts it in :attr:`dropped`.

        :return: whether the message was sent or queued (``False``: dropped,
            or the connection is closing or closed).
        :raise TypeError: for a message that is neither ``str`` nor ``bytes``.
        """
        if type(message) is str:
            return self._send_payload(message.encode("utf-8"), False)
        return self._send_payload(*_payload(message))

    def _send_payload(self, payload: bytes, binary: bool) -> bool:
        if self.state != self.STATE_OPEN:
            return False
        if self.writing_paused or self._queue or self._waiting_send:
            return self._enqueue(payload, binary)
        self._write_message(payload, binary)
        return True

    def _has_room(self, payload: bytes) -> bool:
        """
        :return: whether a message of ``payload`` may be written or queued
            now without overflowing the queue.
        """
        queue = self._queue
        return not queue or (
            self._queued + len(payload) + QUEUED_MESSAGE_COST <= self.factory.max_queue
        )

    def send_when_room(self, message: str | bytes) -> defer.Deferred[None]:
        """
        Send ``message`` now if the queue has room for it, else once it has
        (for one message at a time: while one waits, another send
        overflows the queue, and the policy applies).

        :return: a Deferred that fires once the message is written or
            queued, or fails with :class:`ConnectionClosed` if the
            connection closes first (or is closing).
        """
        payload, binary = _payload(message)
        if self.state == self.STATE_OPEN:
            if self._waiting_send is None and not self._has_room(payload):
                waiter: defer.Deferred[None] = defer.Deferred()
                self._waiting_send = (waiter, payload, binary)
                return waiter
            self._send_payload(payload, binary)
        if self.state != self.STATE_OPEN:
            return defer.fail(ConnectionClosed(*self._closing_with()))
        return defer.succeed(None)

    def _closing_with(self) -> tuple[int | None, str | None]:
        """
        :return: the code and reason the connection is closing (or closed)
            with, as far as known.
        """
        if self.closed_with is not None:
            return self.closed_with
        reason = self.localCloseReason
        return self.localCloseCode, reason.decode("utf-8") if reason else None

    def _enqueue(self, payload: bytes, binary: bool) -> bool:
        if self._waiting_send is not None:
            # Nothing may pass the message that waits for room.
            return self._overflow()
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        # An empty queue takes any one message, however large: the handler
        # holds it anyway, and a limit under --max-message would refuse
        # the answer to a message the server accepted.
        elif not self._has_room(payload):
            return self._overflow()
        cost = len(payload) + QUEUED_MESSAGE_COST
        queue.append((payload, binary))
        self._queued += cost
        return True

    def _overflow(self) -> bool:
        """
        The queue is full: apply the handler's policy.
        """
        factory = self.factory
        metrics.overflowed(factory.tracker.service_name, factory.overflow)
        if factory.overflow == "drop":
            self.dropped += 1
            return False
        self._log.info(
            "websocket to {peer} closed with {code}: it is not reading, and "
            "{queued} bytes of messages wait for it (the most is {most})",
            peer=self.peer_address,
            code=factory.overflow_code,
            queued=self._queued,
            most=factory.max_queue,
        )
        # What waits is dropped: the client gets what its transport holds,
        # then the close frame.
        self._discard_queue()
        self.close_with(factory.overflow_code, "outgoing queue full")
        return False

    def _discard_queue(self) -> None:
        if self._queue:
            self._queue.clear()
        self._queued = 0
        self._log_dropped()

    def _flush_queue(self, force: bool = False) -> None:
        """
        Write the queued messages while the transport takes them (all of
        them with ``force``: the connection is closing after them).
        """
        queue = self._queue
        while queue and (force or not self.writing_paused):
            payload, binary = queue.popleft()
            self._queued -= len(payload) + QUEUED_MESSAGE_COST
            self._write_message(payload, binary)
        if not queue:
            self._queued = 0
            self._log_dropped()

    def _log_dropped(self) -> None:
        if self.dropped > self._dropped_logged:
            self._log.info(
                "websocket to {peer}: {count} messages dropped while it was not "
                "reading ({total} in all)",
                peer=self.peer_address,
                count=self.dropped - self._dropped_logged,
                total=self.dropped,
            )
            self._dropped_logged = self.dropped

    def _write_message(self, payload: bytes, binary: bool) -> None:
        """
        Write ``payload`` as one message: as one plain frame written to the
        transport when autobahn would send just that, else with autobahn's
        ``sendMessage``. Either way it goes through the transport, whose
        buffer pauses the protocol when it fills (see :meth:`pauseProducing`).

        ``--max-message`` bounds what the client sends, not what the handler
        sends (the echo of a message of the largest size is longer):
        autobahn's
        :meth:`~autobahn.websocket.protocol.WebSocketProtocol.sendMessage`
        would refuse it with an exception, and the connection would be lost.
        """
        size = len(payload)
        _MESSAGES[_OUT] += 1
        _SENT[self._label] += size
        if (
            self._fast_send
            and self.state == self.STATE_OPEN
            and size <= self._fast_send_limit
            and not self.send_queue
        ):
            frame = _frame(_BINARY_FRAME if binary else _TEXT_FRAME, payload)
            self.transport.write(frame)
            stats = self.trafficStats
            stats.outgoingWebSocketMessages += 1
            stats.outgoingWebSocketFrames += 1
            stats.outgoingOctetsAppLevel += size
            stats.outgoingOctetsWebSocketLevel += size
            stats.outgoingOctetsWireLevel += len(frame)
            return
        limit, self.maxMessagePayloadSize = self.maxMessagePayloadSize, 0
        try:
            self.sendMessage(payload, isBinary=binary)
        finally:
            self.maxMessagePayloadSize = limit

    def close_with(self, code: int = 1000, reason: str = "") -> None:
        """
        Start the closing handshake with ``code`` and ``reason``, after the
        messages queued so far; nothing if it has already begun.

        :raise ValueError: for a code no endpoint may send (RFC 6455 7.4),
            or a reason over 123 bytes of UTF-8.
        """
        if not _valid_close_code(code):
            raise ValueError(f"{code} is not a close code a server may send")
        reason_bytes = reason.encode("utf-8")
        if len(reason_bytes) > 123:
            raise ValueError("a close reason is at most 123 bytes of UTF-8")
        if self.state != self.STATE_OPEN:
            return
        self._flush_queue(force=True)
        # sendClose() takes only 1000 and 3000-4999 (what autobahn lets
        # applications send); 1001, 1008, 1011 and 1013 are the server's.
        self.sendCloseFrame(code=code, reasonUtf8=reason_bytes or None, isReply=False)

    def pause_incoming(self, paused: bool) -> None:
        """
        Stop (or go on) reading from the client because the handler has not
        taken the messages received (or has).
        """
        self._incoming_full = paused
        self._update_reading()

    def _update_reading(self) -> None:
        pause = (self.writing_paused or self._incoming_full) and not self._draining
        if pause != self.reading_paused and self.transport is not None:
            self.reading_paused = pause
            if pause:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        # The transport's buffer is full.
        self.writing_paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        # The transport's buffer has drained: the queue first, then reading
        # (the queue may fill the transport again).
        self.writing_paused = False
        if self._queue:
            self._flush_queue()
        waiting = self._waiting_send
        if waiting is not None and self._has_room(waiting[1]):
            self._waiting_send = None
            self._send_payload(waiting[1], waiting[2])
            waiting[0].callback(None)
        self._update_reading()

    def stopProducing(self) -> None:
        pass

    def onFrameData(self, payload: bytes) -> bool | None:
        # Once the connection is failed, the rest of a data frame is skipped
        # unread (RFC 6455 7.1.7), but the frames after it are still read, so
        # that the client's close frame is seen and answered by closing the
        # TCP connection (7.1.1). Failing a compressed message (too large,
        # corrupt), autobahn returns False here and leaves the frame unfinished
        # for good: no later frame is read, and the connection lingers until
        # the closing handshake timeout.
        if not (self.failedByMe and self.current_frame.opcode < 8):
            result = super().onFrameData(payload)
            if result is not False or self.state != self.STATE_CLOSING:
                return result
        # Nor inflate nor check as UTF-8 the rest of the failed message.
        self._isMessageCompressed = False
        self.utf8validateIncomingCurrentMessage = False
        return None

    def onCloseFrame(self, code: int | None, reasonRaw: bytes | None) -> bool | None:
        problem = _close_frame_problem(code, reasonRaw)
        if problem is not None:
            # A malformed close frame fails the connection (RFC 6455 7.1.7):
            # the server sends its close frame, then closes the TCP connection
            # (7.1.1). autobahn queues its close frame, then takes the peer's
            # close for the reply to it and aborts the connection (a TCP
            # reset), losing the close frame.
            self._log.info(
                "websocket from {peer} sent a malformed close frame: {problem}",
                peer=self.peer_address,
                problem=problem[1],
            )
            self.wasNotCleanReason = f"malformed close frame: {problem[1]}"
            # Nothing is sent if autobahn has already sent its close frame.
            self.sendCloseFrame(
                code=problem[0], reasonUtf8=problem[1].encode(), isReply=False
            )
            self.dropConnection(abort=False)
            return True
        if self.state == self.STATE_CLOSING and self.failedByMe:
            # The connection is failed, by this close frame (one byte long,
            # over 125 bytes or fragmented: RFC 6455 5.5, 5.5.1) or by an
            # earlier frame. The same as above: close the TCP connection,
            # after the close frame autobahn has queued, not with a reset.
            if self.closeHandshakeTimeoutCall is not None:
                self.closeHandshakeTimeoutCall.cancel()
                self.closeHandshakeTimeoutCall = None
            self.remoteCloseCode, self.wasClean = code, True
            self.dropConnection(abort=False)
            return True
        return super().onCloseFrame(code, reasonRaw)

    def drain(self) -> None:
        """
        The service is stopping: close with 1001 (going away).
        """
        # Read on, to see the client's closing frame.
        self._draining = True
        self._update_reading()
        if self.state == self.STATE_OPEN:
            self._flush_queue(force=True)
            # sendClose() refuses 1001 (it is for applications, which may only
            # use 1000 and 3000-4999); the frame itself is what RFC 6455 says.
            self.sendCloseFrame(
                code=self.CLOSE_STATUS_CODE_GOING_AWAY,
                reasonUtf8=b"server going away",
                isReply=False,
            )
        else:
            self.dropConnection(abort=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        metrics.websocket_closed(code)
        self._log.info(
            "websocket from {peer} closed: code {code} ({reason}), clean: {clean}",
            peer=self.peer_address,
            code=code,
            reason=reason,
            clean=wasClean,
        )
        if wasClean and self.closedByMe and self.localCloseCode is not None:
            # The handler learns the code the server closed with, not the
            # code the client answered with (1000, from many clients).
            local = self.localCloseReason
            code, reason = self.localCloseCode, local.decode("utf-8") if local else None
        self.closed_with = (code, reason)
        # Before the handler hears of it: nothing more is delivered.
        self._end_subscriptions()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            try:
                on_close(code, reason)
            except Exception:
                self._log.failure(
                    "websocket handler {handler} failed as the connection from "
                    "{peer} closed",
                    level=LogLevel.error,
                    handler=getattr(
                        self.factory.handler, "__qualname__", self.factory.handler
                    ),
                    peer=self.peer_address,
                )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        tls_error = describe_tls_error(reason.value)
        if tls_error:
            # autobahn logs any TLS failure at error level, though a client's
            # failed handshake is no fault of the server's: at info here, as
            # netlab's other services log it, and as a plain loss to autobahn.
            self._log.info(
                "websocket connection from {peer} closed: {reason}",
                peer=describe_address(self.transport.getPeer()),
                reason=tls_error,
            )
            super().connectionLost(Failure(ConnectionLost(tls_error)))
        else:
            super().connectionLost(reason)
        # autobahn leaves some of its timers running once the connection is
        # gone (the close handshake timeout after a 1007, for one).
        for name in _AUTOBAHN_TIMERS:
            timer = getattr(self, name, None)
            if timer is not None and getattr(timer, "active", lambda: True)():
                timer.cancel()
            setattr(self, name, None)
        self._discard_queue()
        waiting, self._waiting_send = self._waiting_send, None
        if waiting is not None:
            waiting[0].errback(ConnectionClosed(*self._closing_with()))
        self.factory.tracker.forget(self, reason)


# The handler API: what a user's WebSocket service is written against.


class _ConnectionInfo:
    """
    What both handler shapes know about their connection.
    """

    __slots__ = ()
    _protocol: WebSocketProtocol

    @property
    def peer(self) -> str:
        """
        The client's address: ``host:port`` (``[host]:port`` for IPv6).
        """
        return self._protocol.peer_text

    @property
    def subject(self) -> str | None:
        """
        With ``protection`` (``--protect``): the ``sub`` of the client's
        bearer token; else ``None``.
        """
        return self._protocol.subject

    @property
    def path(self) -> str:
        """
        The path the client asked for in its opening handshake.
        """
        # autobahn keeps the handshake's path and headers (not the request).
        return getattr(self._protocol, "http_request_path", "/")

    @property
    def headers(self) -> dict[str, str]:
        """
        The opening handshake's headers, by lower-case name.
        """
        return dict(getattr(self._protocol, "http_headers", {}))

    @property
    def dropped(self) -> int:
        """
        How many messages the ``"drop"`` policy has dropped.
        """
        return self._protocol.dropped

    @property
    def closed_with(self) -> tuple[int | None, str | None] | None:
        """
        ``(code, reason)`` once the connection has closed, else ``None``.
        """
        return self._protocol.closed_with

    def subscribe(self, channel: str, hub: Any = None) -> Any:
        """
        Get each message published to ``channel`` (see :mod:`netlab.pubsub`)
        through :meth:`send`'s queue and overflow policy, until the
        connection closes or the subscription is cancelled.

        :param hub: a :class:`netlab.pubsub.Hub`; by default the
            process-wide one, which ``--broker`` spans processes with.
        :return: the :class:`netlab.pubsub.Subscription`.
        """
        from netlab import pubsub

        return (hub or pubsub.hub).subscribe(channel, self)


class Handler(_ConnectionInfo):
    """
    Subclass this for a WebSocket service: one instance per connection (so
    its attributes are that connection's state), made with no arguments as
    the connection opens::

        class Shout(Handler):
            def on_open(self):
                self.count = 0

            def on_message(self, message):
                self.count += 1
                self.send(message.upper() if isinstance(message, str) else message)

        factory = WebSocketFactory(Shout)

    :meth:`send` never waits: while the client is not reading, messages
    wait in a queue of at most :attr:`max_queue` bytes, and past it the
    :attr:`overflow` policy applies. An exception from a method is logged,
    and the connection closed with 1011. A method may be ``async def``: it
    runs on the reactor, and the next message does not wait for it.
    """

    # A slotted base, so that a slotted subclass (the echo) costs an idle
    # connection no dictionary.
    __slots__ = ("_protocol", "__weakref__")

    #: The most bytes of messages that may wait for a client that is not
    #: reading; each counts its length plus :data:`QUEUED_MESSAGE_COST`.
    max_queue: int = DEFAULT_MAX_QUEUE
    #: What happens when the queue would overflow: ``"close"`` (close with
    #: :attr:`overflow_code`) or ``"drop"`` (drop the new message, counted
    #: in the connection's ``dropped``).
    overflow: str = "close"
    #: The close code of the ``"close"`` policy: 1008 (policy violation) or
    #: 1013 (try again later).
    overflow_code: int = 1008

    def on_open(self) -> None:
        """
        The connection is open.
        """

    def on_message(self, message: str | bytes) -> None:
        """
        A message arrived: ``str`` for text, ``bytes`` for binary.
        """

    def on_close(self, code: int | None, reason: str | None) -> None:
        """
        The connection closed, with ``code`` and ``reason`` (1006 and no
        reason when it was lost without a closing handshake).
        """

    def send(self, message: str | bytes) -> bool:
        """
        Send ``message``: text for ``str``, binary for ``bytes``.

        :return: whether it was sent or queued (``False``: dropped by the
            ``"drop"`` policy, or the connection is closing or closed).
        """
        return self._protocol.send_message(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """
        Close the connection with ``code`` (1000, or 3000-4999 for your
        own) and ``reason``, after the messages already sent.
        """
        self._protocol.close_with(code, reason)


class ServerConnection(_ConnectionInfo):
    """
    What an ``async def handler(connection)`` gets: the lesson's shape, as
    in the ``websockets`` library, running on the reactor::

        async def handler(connection):
            async for message in connection:
                await connection.send(f"Echo: {message}")

    Iterating ends when the connection closes. When the handler returns,
    the connection closes with 1000; if it raises, the failure is logged
    and the connection closes with 1011. The handler awaits Deferreds (and
    coroutines that do); under the asyncio reactor, wrap an asyncio future
    with ``Deferred.fromFuture``.
    """

    __slots__ = ("_protocol", "_incoming", "_receivers", "_done")

    def __init__(self, protocol: WebSocketProtocol) -> None:
        self._protocol = protocol
        self._incoming: deque[str | bytes] = deque()
        self._receivers: deque[defer.Deferred[str | bytes]] = deque()
        self._done: list[defer.Deferred[tuple[int | None, str | None]]] = []

    def __aiter__(self) -> ServerConnection:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    def recv(self) -> defer.Deferred[str | bytes]:
        """
        :return: a Deferred of the next message (``str`` for text, ``bytes``
            for binary), which fails with :class:`ConnectionClosed` once the
            connection has closed and every message received was taken.
        """
        incoming = self._incoming
        if incoming:
            message = incoming.popleft()
            if len(incoming) <= MAX_INCOMING // 2 and self._protocol._incoming_full:
                self._protocol.pause_incoming(False)
            return defer.succeed(message)
        if self._protocol.closed_with is not None:
            return defer.fail(ConnectionClosed(*self._protocol.closed_with))
        receiver: defer.Deferred[str | bytes] = defer.Deferred(self._receivers.remove)
        self._receivers.append(receiver)
        return receiver

    def send(self, message: str | bytes) -> defer.Deferred[None]:
        """
        Send ``message``: text for ``str``, binary for ``bytes``.

        :return: a Deferred that fires at once if there is room in the queue
            (always, while the client reads), else once there is: back-pressure
            for a handler that awaits it. A send made while another still
            waits (sends not awaited, or many handlers sending to this one)
            overflows the queue, and its policy applies. It fails with
            :class:`ConnectionClosed` once the connection is closing.
        """
        return self._protocol.send_when_room(message)

    def close(
        self, code: int = 1000, reason: str = ""
    ) -> defer.Deferred[tuple[int | None, str | None]]:
        """
        Close the connection with ``code`` (1000, or 3000-4999 for your
        own) and ``reason``, after the messages already sent.

        :return: a Deferred of the ``(code, reason)`` it closed with, once
            it has (within the handshake timeout).
        """
        self._protocol.close_with(code, reason)
        return self.wait_closed()

    def wait_closed(self) -> defer.Deferred[tuple[int | None, str | None]]:
        """
        :return: a Deferred of the ``(code, reason)`` the connection closes
            with, whoever closes it.
        """
        if self._protocol.closed_with is not None:
            return defer.succeed(self._protocol.closed_with)
        waiter: defer.Deferred[tuple[int | None, str | None]] = defer.Deferred()
        self._done.append(waiter)
        return waiter

    def _received(self, message: str | bytes) -> None:
        if self._receivers:
            self._receivers.popleft().callback(message)
            return
        self._incoming.append(message)
        if len(self._incoming) >= MAX_INCOMING and not self._protocol._incoming_full:
            self._protocol.pause_incoming(True)

    def _closed(self, code: int | None, reason: str | None) -> None:
        closed = ConnectionClosed(code, reason)
        receivers, self._receivers = self._receivers, deque()
        for receiver in receivers:
            receiver.errback(closed)
        done, self._done = self._done, []
        for waiter in done:
            waiter.callback((code, reason))


def broadcast(
    connections: Iterable[Handler | ServerConnection], message: str | bytes
) -> int:
    """
    Send ``message`` to each of ``connections`` without waiting for any: a
    client that is not reading gets its handler's overflow policy, not the
    power to hold up the others. The message is encoded once.

    :return: to how many it was sent or queued.
    """
    payload, binary = _payload(message)
    return sum(
        connection._protocol._send_payload(payload, binary)
        for connection in connections
    )


def check_handler(handler: object) -> bool:
    """
    :return: whether ``handler`` is a coroutine function (else a
        :class:`Handler` subclass).
    :raise TypeError: with a one-line reason for anything else.
    """
    if inspect.iscoroutinefunction(handler):
        return True
    if isinstance(handler, type) and issubclass(handler, Handler):
        return False
    if isinstance(handler, Handler):
        raise TypeError(
            f"{type(handler).__name__} is a Handler instance: pass the class "
            "(one instance is made per connection)"
        )
    raise TypeError(
        "a WebSocket handler is an async function taking a connection, or a "
        f"netlab.websocket.Handler subclass, not {_describe(handler)}"
    )


def _describe(thing: object) -> str:
    if inspect.isfunction(thing) or inspect.ismethod(thing):
        return f"the plain function {thing.__qualname__} (a handler function is async)"
    if isinstance(thing, type):
        return f"the class {thing.__qualname__} (not a Handler subclass)"
    return f"{reprlib.repr(thing)} ({type(thing).__name__})"


class WebSocketFactory(ConnectionTracker, WebSocketServerFactory):
    """
    Serves a WebSocket handler with netlab's guarantees: the hardened
    protocol options (:func:`harden`), origin checks, bearer tokens,
    pings, the connection limits, drain with 1001, metrics, back-pressure
    with a bounded outgoing queue, and the fast frame path. Listen with it
    on an endpoint, or mount it in a site with :class:`WebSocketMount`.

    :param handler: an ``async def handler(connection)`` (see
        :class:`ServerConnection`) or a :class:`Handler` subclass.
    :param limits: sizes, timeouts, pings and connection caps.
    :param allowed_origins: the ``Origin`` values a browser page may connect
        from, besides its own (same-origin); clients that send no ``Origin``
        (not browsers) are always allowed.
    :param tracker: where the connections are counted: the factory itself
        unless it is mounted in a site that counts its own.
    :param protection: if given, a handshake on a path it covers needs a
        bearer token (``Authorization`` header, ``bearer.<token>``
        subprotocol, or ``access_token`` query parameter), else ``401``.
    :param max_queue: the outgoing queue's bound in bytes; by default the
        handler class's :attr:`Handler.max_queue`, or
        :data:`DEFAULT_MAX_QUEUE`.
    :param overflow: ``"close"`` or ``"drop"``; by default the handler
        class's, or ``"close"``.
    :param overflow_code: the ``"close"`` policy's code, 1008 or 1013; by
        default the handler class's, or 1008.
    :raise TypeError: for a handler of neither shape.
    :raise ValueError: for a bad queue setting.
    """

    protocol = WebSocketProtocol
    service_name = "ws"

    def __init__(
        self,
        handler: Any,
        *,
        limits: Limits = DEFAULT_LIMITS,
        allowed_origins: Iterable[str] = (),
        reactor: Any = None,
        tracker: ConnectionTracker | None = None,
        protection: Protection | None = None,
        max_queue: int | None = None,
        overflow: str | None = None,
        overflow_code: int | None = None,
    ) -> None:
        self.coroutine = check_handler(handler)
        self.handler = handler
        defaults = Handler if self.coroutine else handler
        self.max_queue = defaults.max_queue if max_queue is None else max_queue
        self.overflow = overflow or defaults.overflow
        self.overflow_code = overflow_code or defaults.overflow_code
        if self.overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow is 'close' or 'drop', not {self.overflow!r}")
        if self.overflow_code not in (1008, 1013) and not (
            3000 <= self.overflow_code <= 4999
        ):
            raise ValueError(
                f"overflow_code is 1008, 1013 or 3000-4999, not {self.overflow_code}"
            )
        if self.max_queue <= 0:
            raise ValueError(f"max_queue must be positive, not {self.max_queue}")
        ConnectionTracker.__init__(self)
        self.protection = protection
        # Say "netlab", not autobahn's name and version.
        WebSocketServerFactory.__init__(self, server="netlab", reactor=reactor)
        self.tracker = self if tracker is None else tracker
        self.limits = limits
        self.allowed_origins = {
            origin.lower().rstrip("/") for origin in allowed_origins
        }
        harden(self, limits)

    def buildProtocol(self, addr: Any) -> Any:
        # Mounted in a site, the site has admitted the connection already.
        if self.tracker is self and not self.admits(addr):
            return Unavailable(self.reactor)
        return super().buildProtocol(addr)

    def origin_allowed(self, request: ConnectionRequest) -> bool:
        """
        :return: whether ``request`` may connect, by its ``Origin``.
        """
        origin = request.headers.get("origin")
        if origin is None:
            return True
        origin = origin.lower().rstrip("/")
        if origin in self.allowed_origins:
            return True
        # Same-origin: the page came from the host the browser is talking to.
        try:
            parts = urlsplit(origin)
        except ValueError:  # "http://[::1", say: not an origin at all
            return False
        host = request.headers.get("host", "").lower()
        return parts.scheme in ("http", "https") and parts.netloc == host


class WebSocketMount(WebSocketResource):
    """
    Serves WebSocket at a path of a web site (``/ws``), so one port serves
    both HTTP and WebSocket.

    :param served: a :class:`WebSocketFactory`, or a handler (either shape).
        Given a handler, the mount makes its factory from the site that
        first serves it: a :class:`~netlab.http.HTTPSite`'s limits, allowed
        origins and bearer-token protection (the plugin's ``--max-message``,
        ``--allowed-origin``, ``--protect``, ...), with the site counting
        the connections, so its limits, drain and metrics cover them. A
        user's resource tree can then be served by ``twistd netlab-http
        --resource`` and get the plugin's settings::

            root.putChild(b"chat", WebSocketMount(ChatHandler))

    An upgrade over HTTP/1.0 is refused
    (:class:`~autobahn.twisted.resource.WebSocketResource` would replay it as
    HTTP/1.1 and accept it).
    """

    #: The factory that serves the upgrades: given, or made from the first
    #: site (``None`` until then).
    factory: WebSocketFactory | None

    def __init__(self, served: Any) -> None:
        if isinstance(served, WebSocketServerFactory):
            super().__init__(served)
            self.factory = served
        else:
            check_handler(served)
            self._handler = served
            self.factory = None

    def factory_for(self, site: Any) -> WebSocketFactory:
        """
        :return: the factory serving this mount, made from ``site`` if the
            mount was given a handler and has not served before.
        """
        if self.factory is None:
            self.factory = WebSocketFactory(
                self._handler,
                limits=getattr(site, "limits", DEFAULT_LIMITS),
                allowed_origins=getattr(site, "allowed_origins", ()),
                reactor=getattr(site, "reactor", None),
                tracker=site if isinstance(site, ConnectionTracker) else None,
                protection=getattr(site, "protection", None),
            )
            WebSocketResource.__init__(self, self.factory)
        return self.factory

    def render(self, request: Request) -> bytes | int:
        if request.clientproto != b"HTTP/1.1":
            request.setResponseCode(400)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return NEEDS_HTTP_1_1.encode() + b"\n"
        self.factory_for(request.site)
        channel = request.channel
        transport = channel.transport
        # The HTTP channel is its transport's producer; the WebSocket takes
        # that role as it opens (inside render), so the channel gives it up
        # first, and takes it back if the upgrade fails.
        transport.unregisterProducer()
        result = super().render(request)
        if channel.transport is not None:
            transport.registerProducer(channel, True)
            return result
        forget = getattr(channel.factory, "forget", None)
        if forget is not None:
            # The WebSocket owns the connection now and the channel will never
            # hear of its end: stop counting the channel here.
            forget(channel)
        return result


# The client.


class HandshakeRefused(Exception):
    """
    The server did not open the WebSocket.
    """


class _ClientProtocol(WebSocketClientProtocol):
    #: ``(code, reason)`` once the WebSocket has closed.
    closed_with: tuple[int | None, str | None] | None = None

    def __init__(self) -> None:
        super().__init__()
        # Cancelled by the caller's deadline: drop the half-open connection.
        self.opened: defer.Deferred[None] = defer.Deferred(
            lambda _: self.dropConnection(abort=True)
        )
        self.messages: defer.DeferredQueue[str | bytes] = defer.DeferredQueue()
        self._close_waiters: list[defer.Deferred[Any]] = []

    def onOpen(self) -> None:
        self.opened.callback(None)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.put(payload if isBinary else payload.decode("utf-8"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # autobahn turns the reason into text for onClose; keep a TLS failure
        # whole, so that the caller can tell why the server was not trusted.
        self._lost = reason
        super().connectionLost(reason)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed_with = (code, reason)
        lost = getattr(self, "_lost", None)
        if not self.opened.called:
            if lost is not None and describe_tls_error(lost.value):
                self.opened.errback(lost)
            else:
                self.opened.errback(HandshakeRefused(reason or "handshake refused"))
        waiting, self.messages.waiting = self.messages.waiting, []
        for receiver in waiting:
            receiver.errback(ConnectionClosed(code, reason))
        waiters, self._close_waiters = self._close_waiters, []
        for waiter in waiters:
            waiter.callback(self.closed_with)

    def when_closed(self) -> defer.Deferred[tuple[int | None, str | None]]:
        if self.closed_with is not None:
            return defer.succeed(self.closed_with)
        waiter: defer.Deferred[Any] = defer.Deferred()
        self._close_waiters.append(waiter)
        return waiter


class Connection:
    """
    An open WebSocket, from :func:`connect`.
    """

    def __init__(self, protocol: _ClientProtocol) -> None:
        self._protocol = protocol

    def send(self, message: str | bytes) -> None:
        """
        Send ``message``: text for ``str``, binary for ``bytes``.
        """
        if isinstance(message, str):
            self._protocol.sendMessage(message.encode("utf-8"), isBinary=False)
        else:
            self._protocol.sendMessage(message, isBinary=True)

    def receive(self) -> defer.Deferred[str | bytes]:
        """
        :return: a Deferred of the next message (``str`` for text), which
            fails with :class:`ConnectionClosed` if the WebSocket closes first.
        """
        closed_with = self._protocol.closed_with
        if closed_with is not None and not self._protocol.messages.pending:
            return defer.fail(ConnectionClosed(*closed_with))
        return self._protocol.messages.get()

    def closed(self) -> defer.Deferred[tuple[int | None, str | None]]:
        """
        :return: a Deferred of the ``(code, reason)`` the connection closes
            with, whoever closes it.
        """
        return self._protocol.when_closed()

    def close(
        self, code: int = 1000, reason: str | None = None
    ) -> defer.Deferred[tuple[int | None, str | None]]:
        """
        Start the closing handshake.

        :return: a Deferred of the ``(code, reason)`` the connection closed with.
        """
        if self._protocol.closed_with is None:
            self._protocol.sendClose(code, reason)
        return self._protocol.when_closed()


_DEFAULT_PORTS = {"ws": 80, "wss": 443}


def connect(
    url: str,
    *,
    reactor: Any = None,
    timeout: float = DEFAULT_CLIENT_TIMEOUT,
    max_message: int = DEFAULT_MAX_REPLY,
    handshake_timeout: float = DEFAULT_LIMITS.handshake_timeout,
    origin: str | None = None,
    tls: ClientTLS | None = None,
    headers: dict[str, str] | None = None,
) -> defer.Deferred[Connection]:
    """
    Open a WebSocket to ``url`` (``ws://host:port/path``, or ``wss://`` over TLS).

    :param timeout: seconds for connecting and the opening handshake.
    :param max_message: the largest message the client accepts, after
        decompression (the echo of a 1 MiB text is a little larger).
    :param handshake_timeout: seconds for the closing handshake.
    :param tls: how a ``wss://`` server is verified (the system's trusted CAs
        when not given).
    :param headers: more headers for the opening handshake, such as
        ``Authorization``.
    :raise ValueError: (through the Deferred) for a URL that is not ``ws://``
        or ``wss://``.
    """
    if reactor is None:
        from twisted.internet import reactor
    try:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"expected ws://HOST[:PORT]/PATH or wss://, not {url!r}")
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
        if parts.scheme == "wss":
            endpoint = client_endpoint(reactor, parts.hostname, port, tls)
        else:
            host = parts.hostname.replace(":", "\\:")
            endpoint = clientFromString(reactor, f"tcp:{host}:{port}")
    except ValueError as error:
        return defer.fail(error)
    factory = WebSocketClientFactory(
        url, origin=origin, headers=headers, reactor=reactor
    )
    if ":" in factory.host:
        # autobahn writes the Host header's IPv6 literal bare (::1:8765), which
        # a server must refuse: give it in brackets, as the URL does.
        factory.host = f"[{factory.host}]"
    factory.protocol = _ClientProtocol
    factory.setProtocolOptions(
        failByDrop=False,
        maxFramePayloadSize=max_message,
        maxMessagePayloadSize=max_message,
        # connect()'s own deadline covers the opening handshake.
        openHandshakeTimeout=0,
        closeHandshakeTimeout=handshake_timeout,
        perMessageCompressionOffers=[PerMessageDeflateOffer()],
        perMessageCompressionAccept=lambda response: (
            PerMessageDeflateResponseAccept(response, max_message_size=max_message)
            if isinstance(response, PerMessageDeflateResponse)
            else None
        ),
    )

    async def opening() -> Connection:
        protocol = await endpoint.connect(factory)
        await protocol.opened
        return Connection(protocol)

    return with_deadline(defer.Deferred.fromCoroutine(opening()), timeout, reactor)
