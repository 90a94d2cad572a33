"""
Serving behind a load balancer that speaks the PROXY protocol (v1 or v2),
such as HAProxy with ``send-proxy-v2``: the ``haproxy:`` endpoint prefix.

Twisted's own ``haproxy:`` wrapper builds the service's protocol as soon as
the proxy connects and only then reads the header, so whatever a protocol
notes as it connects (netlab's access log, its per-address count for
``--max-per-ip``, its connection log) sees the proxy's address, and a
proxy that never sends its header holds a connection slot for as long as
the service's idle timeout. Here the header comes first: the service's
factory is asked for a protocol only once the header is read, with the
client's address the header names, and from then on ``getPeer()`` (and
``getHost()``) answer with the header's addresses, for every part of
netlab at once. A header that is malformed, or not complete within
:data:`HEADER_TIMEOUT` seconds, drops the connection with one log line.

netlab's plugins listen on ``haproxy:`` strings this way (see
:func:`proxied`); so can any Twisted program, with :func:`server_endpoint`::

    from twisted.internet import reactor
    from netlab.proxy import server_endpoint

    server_endpoint(reactor, "haproxy:tcp:8080:interface=127.0.0.1").listen(site)

The header is read on the TCP connection itself, before any TLS: with
``haproxy:netlab-ssl:...`` (or ``haproxy:ssl:...``), netlab terminates TLS
that a proxy in TCP mode passes through, as HAProxy sends it.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from twisted.internet import address
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import alsoProvides, directlyProvides, providedBy

from netlab import metrics
from netlab.limits import DEFAULT_LIMITS
from netlab.tcp import describe_address, log_prefix
from netlab.wrapping import Wrapper

#: The endpoint prefix: ``haproxy:`` followed by any server endpoint string.
PREFIX = "haproxy"
#: Seconds a proxy has, from connecting, to send its whole PROXY header. A
#: proxy sends it at once, with (or before) the client's first bytes.
HEADER_TIMEOUT = 10.0
# The header's two signatures; a v2 header is 16 bytes, then its own length.
_V1_SIGNATURE = V1Parser.PROXYSTR + b" "
_V2_SIGNATURE = V2Parser.PREFIX
_V2_FIXED = 16


def split(description: str) -> tuple[str, bool]:
    """
    :return: the endpoint string under a leading ``haproxy:``, and whether
        there was one (``("tcp:8080", True)`` for ``"haproxy:tcp:8080"``).
    """
    prefix, separator, rest = description.partition(":")
    if separator and prefix == PREFIX:
        return rest, True
    return description, False


def server_endpoint(reactor: Any, description: str) -> IStreamServerEndpoint:
    """
    :return: the server endpoint ``description`` names, as
        :func:`~twisted.internet.endpoints.serverFromString` makes it,
        except that a ``haproxy:`` one reads the PROXY header with
        :class:`ProxyHeaderFactory`, before TLS and before the service's
        factory builds a protocol.
    """
    inner, proxied_ = split(description)
    if not proxied_:
        return serverFromString(reactor, description)
    return serverFromString(proxied(reactor), inner)


class _ProxyReactor:
    """
    A reactor whose stream listeners read a PROXY header first; everything
    else is the wrapped reactor's.

    Wrapping at ``listenTCP`` (rather than the endpoint's factory) puts the
    header before a TLS endpoint's own wrapping, where a proxy sends it.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        directlyProvides(self, *providedBy(reactor))

    def listenTCP(self, port: int, factory: Any, *args: Any, **kwargs: Any) -> Any:
        return self._reactor.listenTCP(
            port, ProxyHeaderFactory(factory, self._reactor), *args, **kwargs
        )

    def listenSSL(
        self,
        port: int,
        factory: Any,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> Any:
        # As Twisted's reactors listen with TLS (twisted.internet.posixbase),
        # with the header read before the TLS layer.
        tls = TLSMemoryBIOFactory(contextFactory, False, factory)
        return self.listenTCP(port, tls, backlog, interface)

    def listenUNIX(self, path: str, factory: Any, *args: Any, **kwargs: Any) -> Any:
        return self._reactor.listenUNIX(
            path, ProxyHeaderFactory(factory, self._reactor), *args, **kwargs
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def proxied(reactor: Any) -> Any:
    """
    :return: ``reactor``, except that every TCP, TLS and UNIX listener made
        with it reads a PROXY header on each connection first (see
        :class:`ProxyHeaderFactory`).
    """
    return _ProxyReactor(reactor)


def _checked(found: IAddress | None) -> IAddress | None:
    """
    :return: ``found``, an address a header names, with its host written
        as :mod:`ipaddress` writes it (``2001:db8::5``, where Twisted's v2
        parser writes every group); a UNIX path as it is.
    :raise InvalidProxyHeader: if it is not a well-formed IP address and
        port of the family the header says: Twisted's v1 parser takes any
        bytes for a host, and they would reach every log line.
    """
    if not isinstance(found, address.IPv4Address | address.IPv6Address):
        return found
    try:
        parsed = ipaddress.ip_address(found.host)
    except ValueError:
        raise InvalidProxyHeader() from None
    kind = type(found)
    version = 4 if kind is address.IPv4Address else 6
    if (
        parsed.version != version
        or getattr(parsed, "scope_id", None)
        or not 0 <= found.port <= 65535
    ):
        raise InvalidProxyHeader()
    return kind(found.type, str(parsed), found.port)


class ProxyHeaderProtocol(Wrapper):
    """
    Reads a PROXY header, then hands the connection to the protocol the
    wrapped factory builds for the client's address, as if that client had
    connected directly.

    Until the header is read, ``wrappedProtocol`` is ``None`` and
    nothing of the service runs.
    """

    _log = Logger()
    _timer: Any = None
    _parser: V1Parser | V2Parser | None = None
    _source: IAddress | None = None
    _destination: IAddress | None = None
    _waiting = False

    def __init__(self, factory: ProxyHeaderFactory) -> None:
        super().__init__(factory, None)
        self._buffer = b""

    def logPrefix(self) -> str:
        if self.wrappedProtocol is None:
            return self.factory.logPrefix()
        return super().logPrefix()

    def makeConnection(self, transport: Any) -> None:
        # netlab's Wrapper.makeConnection, without connecting the service's
        # protocol, which does not exist yet.
        self.provide_interfaces_of(transport)
        self.transport = transport
        self.connected = 1
        self.factory.registerProtocol(self)
        self._waiting = True
        self.factory.waiting += 1
        self._timer = self.factory.reactor.callLater(
            self.factory.timeout, self._expired
        )

    def dataReceived(self, data: bytes) -> None:
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if not self._waiting:
            return
        parser = self._parser
        if parser is None:
            data = self._buffer + data
            parser = self._parser = self._choose(data)
            if parser is None:
                return
            self._buffer = b""
        try:
            info, remaining = parser.feed(data)
            if info is None:
                return
            self._source = _checked(info.source)
            self._destination = _checked(info.destination)
        except (InvalidProxyHeader, ValueError):
            # Twisted's v1 parser lets a bad port or non-ASCII host out as
            # ValueError.
            self._drop("malformed")
            return
        self._start(remaining or b"")

    def _choose(self, data: bytes) -> V1Parser | V2Parser | None:
        """
        :return: the parser for the header ``data`` begins, or ``None``
            while too little has come to tell (then it is kept); a
            connection that begins with anything else is dropped.
        """
        if data.startswith(_V2_SIGNATURE) and len(data) >= _V2_FIXED:
            return V2Parser()  # which checks the version and the rest
        if data.startswith(_V1_SIGNATURE):
            return V1Parser()
        if (_V2_SIGNATURE.startswith(data[:12]) and len(data) < _V2_FIXED) or (
            _V1_SIGNATURE.startswith(data)
        ):
            self._buffer = data
            return None
        self._drop("malformed")
        return None

    def _stop_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.factory.waiting -= 1

    def _start(self, remaining: bytes) -> None:
        self._stop_waiting()
        self._cancel_timer()
        self._parser = None
        protocol = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if protocol is None:
            self.transport.loseConnection()
            return
        self.wrappedProtocol = protocol
        if IHalfCloseableProtocol.providedBy(protocol):
            alsoProvides(self, IHalfCloseableProtocol)
        protocol.makeConnection(self)
        if remaining and not self.disconnecting:
            protocol.dataReceived(remaining)

    def _expired(self) -> None:
        self._timer = None
        self._drop("timeout")

    def _drop(self, why: str) -> None:
        self._stop_waiting()
        self._buffer = b""
        self._parser = None
        self._cancel_timer()
        self._log.info(
            "{service} dropped a connection from {peer}: "
            + ("malformed PROXY header" if why == "malformed" else "no PROXY header")
            + (" in {seconds}s" if why == "timeout" else ""),
            service=self.factory.service_name,
            peer=describe_address(self.transport.getPeer()),
            seconds=self.factory.timeout,
            reason=f"proxy-header-{why}",
        )
        metrics.refused(self.factory.service_name, f"proxy-header-{why}")
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def getPeer(self) -> IAddress:
        """
        :return: the client's address, as the PROXY header names it (the
            proxy's own, for a header that names none: a health check).
        """
        return self._source or self.transport.getPeer()

    def getHost(self) -> IAddress:
        """
        :return: the address the client connected to, as the PROXY header
            names it.
        """
        return self._destination or self.transport.getHost()

    def readConnectionLost(self) -> None:
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        self.wrappedProtocol.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        self._stop_waiting()
        self.factory.unregisterProtocol(self)
        if self.wrappedProtocol is not None:
            self.wrappedProtocol.connectionLost(reason)
            # As Twisted's wrapper does: no reference cycle left behind. The
            # transport stays, for a protocol that writes after the end (a
            # closed transport drops the bytes) or asks for its addresses.
            self.wrappedProtocol = None


class ProxyHeaderFactory(WrappingFactory):
    """
    Wraps a factory so that its protocols are built only once each
    connection's PROXY header is read, for the client's address (see
    :class:`ProxyHeaderProtocol`).

    :param timeout: seconds for the whole header.
    """

    protocol = ProxyHeaderProtocol
    # The service's own factory says when it starts and stops.
    noisy = False

    def __init__(
        self,
        wrappedFactory: IProtocolFactory,
        reactor: Any,
        timeout: float = HEADER_TIMEOUT,
    ) -> None:
        super().__init__(wrappedFactory)
        self.reactor = reactor
        self.timeout = timeout
        #: Names the service in log events and metrics.
        self.service_name: str = getattr(wrappedFactory, "service_name", "tcp")
        limits = getattr(wrappedFactory, "limits", DEFAULT_LIMITS)
        #: The most connections still waiting for their header: the
        #: service's own ``max_connections``.
        self.max_waiting: int = limits.max_connections
        #: Connections whose header is not read yet.
        self.waiting = 0

    def buildProtocol(self, addr: IAddress) -> ProxyHeaderProtocol | None:
        if self.waiting >= self.max_waiting:
            self._log.info(
                "{service} refused a connection from {host}: "
                "too many waiting for their PROXY header",
                service=self.service_name,
                host=getattr(addr, "host", None),
            )
            metrics.refused(self.service_name, "max-connections")
            return None
        return self.protocol(self)

    _log = Logger()

    def logPrefix(self) -> str:
        # As Twisted's own PROXY wrapper names itself: "HTTPSite (PROXY)".
        return f"{log_prefix(self.wrappedFactory)} (PROXY)"
