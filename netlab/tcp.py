"""
TCP: :class:`TCPFactory` serves any Twisted protocol with netlab's limits,
timeouts, drain and metrics; the echo and greeting services are its first
users; and the clients that talk to them.

Serve your own protocol, or the echo, on any endpoint::

    from twisted.internet import endpoints, reactor
    from netlab.tcp import EchoFactory, TCPFactory

    endpoint = endpoints.serverFromString(reactor, "tcp:8007:interface=127.0.0.1")
    endpoint.listen(TCPFactory(MyProtocol))
    endpoint.listen(EchoFactory())

The clients return a :class:`~twisted.internet.defer.Deferred` of the reply::

    reply = await echo("tcp:127.0.0.1:8007", b"ping")
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
    IHalfCloseableProtocol,
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
    shut_down_writing,
)
from netlab.tracking import Closed, ConnectionTracker
from netlab.wrapping import HalfCloseableWrapper, Wrapper, wrapper_for

#: Where ``twistd netlab-echo`` listens unless told otherwise.
DEFAULT_ECHO_LISTEN = "tcp:8007:interface=127.0.0.1"
#: Where ``twistd netlab-greeting`` listens unless told otherwise.
DEFAULT_GREETING_LISTEN = "tcp:8008:interface=127.0.0.1"

#: The greeting server's whole answer.
GREETING = b"Hello from server!"
#: What the greeting client says when given nothing else to say.
DEFAULT_CLIENT_MESSAGE = b"Hello from client!"
#: How much of the first message the greeting server reads, like ``recv(1024)``.
GREETING_READ_SIZE = 1024
#: Seconds the greeting server waits, after answering, for the peer to close.
LINGER_SECONDS = 2.0

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
    ``drain()`` method if it has one (see :class:`Echo`), else it is closed
    once what it wrote is sent.
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
        # (netlab.tcp.Echo, myapp.Upper), not of this wrapper.
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


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Writes back every byte it receives, with flow control
    (:class:`Backpressure`) and half-close: when the peer shuts down its
    writing side, everything already received is still echoed before the
    connection closes.
    """

    backpressure: Backpressure

    def connectionMade(self) -> None:
        self.backpressure = Backpressure(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def drain(self) -> None:
        # Stop reading, send back all that was received, then close.
        self.backpressure.release()
        self.transport.pauseProducing()
        self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        self.backpressure.release()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


class EchoFactory(TCPFactory):
    """
    The echo service: :class:`Echo` connections served by :class:`TCPFactory`.
    """

    service_name = "echo"

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, reactor: IReactorTime | None = None
    ) -> None:
        super().__init__(Echo, limits, reactor)


@implementer(IHalfCloseableProtocol)
class Greeting(Protocol):
    """
    Reads the peer's first message, answers :data:`GREETING`, and closes.

    A peer that closes its writing side without saying anything is greeted too.

    The server reads only the start of a long message; closing with the rest
    unread would reset the connection, and a reset can destroy the answer
    before the peer reads it. So after answering the server shuts down its
    writing side and reads (and drops) the rest until the peer closes, for at
    most :data:`LINGER_SECONDS`.

    :param clock: schedules the end of that wait.
    """

    _log = Logger()
    answered = False
    _linger: Any = None

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    def dataReceived(self, data: bytes) -> None:
        if self.answered:
            return
        message = data[:GREETING_READ_SIZE]
        self._log.info(
            "greeting from {peer}: {said!r} ({size} bytes)",
            peer=describe_address(self.transport.getPeer()),
            said=message,
            size=len(message),
        )
        self._answer()

    def readConnectionLost(self) -> None:
        if not self.answered:
            self._answer()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def _answer(self) -> None:
        self.answered = True
        self.transport.write(GREETING)
        shut_down_writing(self.transport)
        if is_tls(self.transport):
            return
        self._linger = self._clock.callLater(
            LINGER_SECONDS, self.transport.abortConnection
        )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()


class GreetingFactory(TCPFactory):
    """
    The greeting service: :class:`Greeting` connections served by
    :class:`TCPFactory`.
    """

    service_name = "greeting"

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, reactor: IReactorTime | None = None
    ) -> None:
        super().__init__(lambda: Greeting(self.reactor), limits, reactor)


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


def _exchange(
    endpoint: IStreamClientEndpoint | str,
    message: bytes,
    reactor: Any,
    timeout: float,
    max_reply: int,
    tls: ClientTLS | None,
    echoed: bool,
) -> defer.Deferred[bytes]:
    if reactor is None:
        from twisted.internet import reactor
    try:
        if isinstance(endpoint, str):
            endpoint = client_from_string(reactor, endpoint, tls)
    except Exception:
        return defer.fail()
    exchange = _Exchange(message, max_reply, echoed)
    done = connectProtocol(endpoint, exchange)
    done.addCallback(lambda _: exchange.reply)
    return with_deadline(done, timeout, reactor)


def echo(
    endpoint: IStreamClientEndpoint | str,
    message: bytes,
    *,
    reactor: Any = None,
    timeout: float = DEFAULT_CLIENT_TIMEOUT,
    max_reply: int = DEFAULT_MAX_REPLY,
    tls: ClientTLS | None = None,
) -> defer.Deferred[bytes]:
    """
    Send ``message`` to an echo server and collect what it sends back.

    :param endpoint: a client endpoint, or a client endpoint string such as
        ``"tcp:127.0.0.1:8007"`` or, over TLS, ``"tls:localhost:8007"``.
    :param tls: how a ``tls:`` endpoint string verifies the server (the
        system's trusted CAs when not given).
    :param timeout: seconds for the whole exchange, from connecting to the
        server's close; past it the Deferred fails with
        :class:`~twisted.internet.defer.TimeoutError`.
    :param max_reply: the most bytes kept before failing with :class:`ReplyTooLarge`.
    :return: a Deferred that fires with the whole reply once the server closes.
    """
    return _exchange(endpoint, message, reactor, timeout, max_reply, tls, True)


def greet(
    endpoint: IStreamClientEndpoint | str,
    message: bytes = DEFAULT_CLIENT_MESSAGE,
    *,
    reactor: Any = None,
    timeout: float = DEFAULT_CLIENT_TIMEOUT,
    max_reply: int = DEFAULT_MAX_REPLY,
    tls: ClientTLS | None = None,
) -> defer.Deferred[bytes]:
    """
    Say ``message`` to a greeting server and collect its answer.

    Takes the same arguments as :func:`echo`.

    :return: a Deferred that fires with the server's answer once it closes.
    """
    return _exchange(endpoint, message, reactor, timeout, max_reply, tls, False)
