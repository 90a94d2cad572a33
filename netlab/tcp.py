"""
TCP: :class:`TCPFactory` serves any Twisted protocol with netlab's limits,
timeouts, drain and metrics, and :func:`exchange` is a one-shot client.

Serve your own protocol on any endpoint::

    from twisted.internet import endpoints, reactor
    from netlab.tcp import TCPFactory

    endpoint = endpoints.serverFromString(reactor, "tcp:8000:interface=127.0.0.1")
    endpoint.listen(TCPFactory(MyProtocol))

:class:`Backpressure` gives your protocol flow control in one line. The echo
and greeting (:mod:`netlab.services.echo`, :mod:`netlab.services.greeting`)
are written this way.

The client sends one message and returns a
:class:`~twisted.internet.defer.Deferred` of the reply::

    reply = await exchange("tcp:127.0.0.1:8000", b"ping")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.python.reflect import qual
from zope.interface import implementer

from netlab import metrics
from netlab.deadline import with_deadline
from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.tls import (
    ClientTLS,
    client_from_string,
    client_identity,
    describe_tls_error,
    is_tls,
)
from netlab.tracking import Closed, ConnectionTracker
from netlab.wrapping import HalfCloseableWrapper, Wrapper, wrapper_for

#: Seconds a client waits for the whole exchange, connect to close.
DEFAULT_CLIENT_TIMEOUT = 10.0
#: The largest reply a client accepts before it gives up on the server.
DEFAULT_MAX_REPLY = 64 * 1024 * 1024


def describe_address(address: IAddress) -> str:
    """
    :return: ``host:port`` for an IP address, or the address's own text otherwise.
    """
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is None or port is None:
        return str(address)
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def log_prefix(factory: Any) -> str:
    """
    :return: what Twisted's ports call ``factory`` in "... starting on PORT".
    """
    if ILoggingContext.providedBy(factory):
        return str(factory.logPrefix())
    return type(factory).__name__


class TCPFactory(ConnectionTracker, Factory):
    """
    Serves any Twisted protocol with netlab's guarantees: the connection
    caps (``max_connections``, ``max_per_ip``), the idle timeout, drain on
    stop, metrics, a log event as each connection opens and closes, and
    (through the plugins) TLS, the wiretap and ``--workers``.

    Each connection is the wrapped factory's own protocol inside a
    :class:`TCPConnection`, which counts and times it; the protocol sees an
    ordinary transport (half-close and TLS handshakes included)::

        endpoint.listen(TCPFactory(MyFactory(), limits=Limits(idle_timeout=30)))

    :param wrapped: the user's protocol factory; or a ``Protocol`` class (or
        any callable making a protocol), which gets a plain ``Factory``.
    :param limits: the caps and timeouts each connection is held to.
    :param reactor: the clock for the idle timeout (the global reactor by
        default).
    :param service_name: names the service in log events and metrics.

    On stop, each connection's protocol is asked to finish through its
    ``drain()`` method if it has one (as :class:`netlab.services.echo.Echo`
    has), else it is closed once what it wrote is sent.
    """

    def __init__(
        self,
        wrapped: IProtocolFactory | Callable[[], IProtocol],
        limits: Limits = DEFAULT_LIMITS,
        reactor: IReactorTime | None = None,
        service_name: str | None = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as _reactor

            reactor = _reactor
        # One "Starting factory" line in the log, naming the user's factory
        # when there is one.
        if IProtocolFactory.providedBy(wrapped):
            self._name = log_prefix(wrapped)
            self.noisy = False
        elif callable(wrapped):
            self._name = getattr(wrapped, "__name__", "TCPFactory")
            wrapped = Factory.forProtocol(wrapped)  # type: ignore[arg-type]
            wrapped.noisy = False
        else:
            raise TypeError(
                "expected a protocol factory or a Protocol class, "
                f"not {type(wrapped).__name__}"
            )
        self.wrapped = wrapped
        self.limits = limits
        self.reactor = reactor
        if service_name is not None:
            self.service_name = service_name

    def logPrefix(self) -> str:
        # What Twisted's ports call the factory in "... starting on PORT":
        # the user's factory (or protocol), or a subclass's own name.
        if type(self) is TCPFactory:
            return self._name
        return type(self).__name__

    def doStart(self) -> None:
        self.wrapped.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()
        super().doStop()

    def buildProtocol(self, addr: IAddress) -> IProtocol:
        if not self.admits(addr):
            return Closed()
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is None:
            # The user's factory refused it. (None would break TLS.)
            return Closed()
        connection: TCPConnection = wrapper_for(
            protocol, TCPConnection, HalfCloseableTCPConnection
        )(self, protocol)
        return connection

    def registerProtocol(self, protocol: Any) -> None:
        pass  # tracked in connectionMade (see ConnectionTracker.track)

    def unregisterProtocol(self, protocol: Any) -> None:
        pass  # forgotten in connectionLost


class TCPConnection(Wrapper, TimeoutMixin):
    """
    One connection of a :class:`TCPFactory`: the user's protocol inside,
    with its peer, byte counts and idle timer.
    """

    _log = Logger()
    factory: TCPFactory

    peer = "?"
    bytes_in = 0
    bytes_out = 0
    #: Over mutual TLS, the subject of the client's certificate.
    client: str | None = None

    def makeConnection(self, transport: Any) -> None:
        # Its events are in the namespace of the protocol it serves
        # (netlab.services.echo.Echo, myapp.Upper), not of this wrapper.
        self._log = Logger(namespace=qual(type(self.wrappedProtocol)), source=self)
        self.peer = describe_address(transport.getPeer())
        self.callLater = self.factory.reactor.callLater
        self.setTimeout(self.factory.limits.idle_timeout)
        # Tracked before the protocol starts: it may close at once.
        self.transport = transport
        self.factory.track(self)
        self._log.info(
            "{service} connection from {peer}",
            service=self.factory.service_name,
            peer=self.peer,
        )
        super().makeConnection(transport)

    def handshakeCompleted(self) -> None:
        """
        Over TLS: note who the client is, if it showed a certificate.
        """
        self.client = client_identity(self.transport)
        self._log.info(
            "{service} connection from {peer}: TLS"
            + (", client {client}" if self.client else ", no client certificate"),
            service=self.factory.service_name,
            peer=self.peer,
            client=self.client,
        )
        super().handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.bytes_in += len(data)
        self.wrappedProtocol.dataReceived(data)

    def write(self, data: bytes) -> None:
        self.bytes_out += len(data)
        self.transport.write(data)

    def writeSequence(self, data: Any) -> None:
        data = list(data)
        self.bytes_out += sum(map(len, data))
        self.transport.writeSequence(data)

    def drain(self) -> None:
        """
        The service is stopping: the protocol's own ``drain()`` if it has
        one, else close once what is written is sent.
        """
        finish = getattr(self.wrappedProtocol, "drain", None)
        if finish is not None:
            finish()
        else:
            self.transport.loseConnection()

    def timeoutConnection(self) -> None:
        self._log.info(
            "{service} connection from {peer} idle for {timeout}s, dropping it",
            service=self.factory.service_name,
            peer=self.peer,
            timeout=self.timeOut,
        )
        # Abort, not lose: a peer that stopped reading would keep a graceful
        # close waiting on its write buffer forever.
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        super().connectionLost(reason)
        self._log.info(
            "{service} connection from {peer} closed: "
            "{bytes_in} bytes in, {bytes_out} bytes out ({reason})",
            service=self.factory.service_name,
            peer=self.peer,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            reason=describe_tls_error(reason.value) or reason.getErrorMessage(),
        )
        metrics.transferred(self.factory.service_name, self.bytes_in, self.bytes_out)
        self.factory.forget(self, reason)


class HalfCloseableTCPConnection(TCPConnection, HalfCloseableWrapper):
    """
    A :class:`TCPConnection` whose protocol handles half-close.
    """


#: The name netlab's TCP factories had before :class:`TCPFactory`.
ServiceFactory = TCPFactory


@implementer(IPushProducer)
class Backpressure:
    """
    Flow control for a protocol that writes what it reads, as the echo does:
    registered as the producer feeding its own transport, it stops reading
    from the peer while the transport's write buffer is full, and reads
    again once it has drained. A peer that never reads then cannot make the
    server buffer without bound::

        def connectionMade(self):
            self.backpressure = Backpressure(self.transport)

    Call :meth:`release` before closing: a transport waits for its
    producer to unregister before it closes.
    """

    #: Whether reading is paused now.
    paused = False

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        transport.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        pass

    def release(self) -> None:
        """
        Stop being the transport's producer, so that it may close.
        """
        self.transport.unregisterProducer()


# A TLS alert or handshake record: what a TLS server says to a plain client.
_TLS_RECORD = re.compile(rb"[\x15\x16]\x03[\x00-\x04]")


class BadReply(Exception):
    """
    The server's reply is not what the service answers.
    """


class ReplyTooLarge(Exception):
    """
    The server sent more than the client agreed to keep.
    """


@implementer(IHandshakeListener)
class _Exchange(Protocol):
    """
    Sends one message, shuts down its writing side and keeps what comes back
    until the server closes.

    TLS has no half-close (a TLS close alert ends both directions), so over
    TLS an echo exchange instead closes once the whole message came back.
    """

    def __init__(self, message: bytes, max_reply: int, echoed: bool) -> None:
        self._message = message
        self._max_reply = max_reply
        self._echoed = echoed
        self._received: list[bytes] = []
        self._size = 0
        self.reply: defer.Deferred[bytes] = defer.Deferred(self._cancel)

    def _cancel(self, reply: defer.Deferred[bytes]) -> None:
        self.transport.abortConnection()

    def connectionMade(self) -> None:
        self.transport.write(self._message)
        if not is_tls(self.transport):
            self.transport.loseWriteConnection()

    def handshakeCompleted(self) -> None:
        # Closing before the handshake ends would abort it; an empty echo
        # is complete as soon as it may close.
        if self._echoed:
            self._close_when_echoed()

    def dataReceived(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max_reply:
            self.reply.errback(
                ReplyTooLarge(f"reply larger than {self._max_reply} bytes")
            )
            self.transport.abortConnection()
            return
        self._received.append(data)
        if self._echoed and is_tls(self.transport):
            self._close_when_echoed()

    def _close_when_echoed(self) -> None:
        if self._size >= len(self._message):
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.reply.called:
            return
        if not reason.check(ConnectionDone):
            self.reply.errback(reason)
            return
        reply = b"".join(self._received)
        if self._echoed and reply == self._message:
            self.reply.callback(reply)
        elif _TLS_RECORD.match(reply) and not is_tls(self.transport):
            self.reply.errback(
                BadReply("the server answered in TLS: use tls:HOST:PORT")
            )
        elif self._echoed and len(reply) < len(self._message):
            self.reply.errback(
                BadReply(
                    f"the server closed after echoing {len(reply)} of "
                    f"{len(self._message)} bytes"
                )
            )
        elif not self._echoed and not reply:
            self.reply.errback(BadReply("the server closed without answering"))
        else:
            self.reply.callback(reply)


def exchange(
    endpoint: IStreamClientEndpoint | str,
    message: bytes,
    *,
    expect_echo: bool = False,
    reactor: Any = None,
    timeout: float = DEFAULT_CLIENT_TIMEOUT,
    max_reply: int = DEFAULT_MAX_REPLY,
    tls: ClientTLS | None = None,
) -> defer.Deferred[bytes]:
    """
    Send ``message``, shut down the writing side, and collect what the
    server sends back until it closes.

    :param endpoint: a client endpoint, or a client endpoint string such as
        ``"tcp:127.0.0.1:8007"`` or, over TLS, ``"tls:localhost:8007"``.
    :param expect_echo: the reply must be ``message`` itself: a shorter one
        fails with :class:`BadReply`, and over TLS (which has no half-close)
        the client closes once all of it came back.
    :param tls: how a ``tls:`` endpoint string verifies the server (the
        system's trusted CAs when not given).
    :param timeout: seconds for the whole exchange, from connecting to the
        server's close; past it the Deferred fails with
        :class:`~twisted.internet.defer.TimeoutError`.
    :param max_reply: the most bytes kept before failing with
        :class:`ReplyTooLarge`.
    :return: a Deferred that fires with the whole reply once the server
        closes; with :class:`BadReply` if it closed without a word, or
        answered in TLS on a plain connection.
    """
    if reactor is None:
        from twisted.internet import reactor
    try:
        if isinstance(endpoint, str):
            endpoint = client_from_string(reactor, endpoint, tls)
    except Exception:
        return defer.fail()
    exchanged = _Exchange(message, max_reply, expect_echo)
    done = connectProtocol(endpoint, exchanged)
    done.addCallback(lambda _: exchanged.reply)
    return with_deadline(done, timeout, reactor)
