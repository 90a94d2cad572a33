"""
Knowing which connections a server has open: admitting new ones within the
limits, draining them on stop, and knowing when the last one is gone.

Shared by every netlab factory: tests wait on it before they end, and
twistd's stop drains through it (:func:`drain`).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from netlab import metrics
from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.tls import shut_down_writing

# Numbers each connection, for its log events (see netlab.logs).
_connection_ids = itertools.count(1)

#: Seconds a client told ``503`` is asked to wait before it tries again.
RETRY_AFTER = 5
# After a refusal, how long to keep reading (and dropping) what the client
# sends, so that closing does not reset the connection before the client has
# read the refusal.
_LINGER_SECONDS = 2.0


def _host(address: IAddress | None) -> str | None:
    return getattr(address, "host", None)


class ConnectionTracker:
    """
    A factory mixin: ``connections`` holds the live protocols.

    Protocols call :meth:`track` when they connect and :meth:`forget` when
    they close; both are counted in :mod:`netlab.metrics` under
    :attr:`service_name`, and each protocol gets a ``connection_id`` that
    its log events carry. A factory asks :meth:`admits` before it builds a
    protocol, and :meth:`drain` closes them all gracefully.
    """

    #: Names the service in log events and metrics.
    service_name = "tcp"
    limits: Limits = DEFAULT_LIMITS
    _log = Logger()

    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.draining = False
        self._per_host: Counter[str] = Counter()
        self._drained: list[defer.Deferred[None]] = []

    def admits(self, address: IAddress | None) -> bool:
        """
        :return: whether a connection from ``address`` fits within the
            limits (and the service is not draining); if not, the refusal
            is logged and counted.
        """
        if self.draining:
            reason = "draining"
        elif len(self.connections) >= self.limits.max_connections:
            reason = "max-connections"
        elif self._per_host[_host(address) or ""] >= self.limits.max_per_ip:
            reason = "max-per-ip"
        else:
            return True
        self._log.info(
            "{service} refused a connection from {host}: {reason}",
            service=self.service_name,
            host=_host(address),
            reason=reason,
        )
        metrics.refused(self.service_name, reason)
        return False

    def track(self, protocol: Any) -> None:
        """
        Count ``protocol`` as open.
        """
        if protocol not in self.connections:
            protocol.connection_id = next(_connection_ids)
            protocol.tracked_host = _host(protocol.transport.getPeer()) or ""
            self._per_host[protocol.tracked_host] += 1
            self.connections.add(protocol)
            metrics.opened(self.service_name)

    def forget(self, protocol: Any, reason: Failure | None = None) -> None:
        """
        Count ``protocol`` as closed, for ``reason`` (if known).
        """
        if protocol in self.connections:
            self.connections.remove(protocol)
            host = protocol.tracked_host
            self._per_host[host] -= 1
            if not self._per_host[host]:
                del self._per_host[host]
            metrics.closed(self.service_name, reason)
        if not self.connections:
            waiters, self._drained = self._drained, []
            for waiter in waiters:
                waiter.callback(None)

    def drained(self) -> defer.Deferred[None]:
        """
        :return: a Deferred that fires once no connection is left open.
        """
        if not self.connections:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred(self._drained.remove)
        self._drained.append(waiter)
        return waiter

    def drain(self) -> None:
        """
        Refuse new connections, and ask each open one to finish: its
        ``drain()`` if it has one (an HTTP request in flight completes, a
        WebSocket closes with 1001, an echo returns what it received), else
        a graceful close.
        """
        self.draining = True
        for protocol in list(self.connections):
            finish = getattr(protocol, "drain", None)
            if finish is not None:
                finish()
            else:
                protocol.transport.loseConnection()

    def abort_all(self) -> None:
        """
        Abort every connection still open.
        """
        for protocol in list(self.connections):
            transport = protocol.transport
            if transport is not None:
                transport.abortConnection()


async def drain(
    trackers: Iterable[ConnectionTracker], seconds: float, reactor: Any
) -> None:
    """
    Drain ``trackers`` (see :meth:`ConnectionTracker.drain`), give their
    connections ``seconds`` to finish, then abort what is left.
    """
    trackers = list(trackers)
    for tracker in trackers:
        tracker.drain()

    async def finished() -> None:
        for tracker in trackers:
            await tracker.drained()

    try:
        await defer.Deferred.fromCoroutine(finished()).addTimeout(seconds, reactor)
    except defer.TimeoutError:
        left = sum(len(t.connections) for t in trackers)
        Logger().warn(
            "{count} connections did not finish within {seconds}s: aborted",
            count=left,
            seconds=seconds,
        )
        for tracker in trackers:
            tracker.abort_all()
        await finished()


class Closed(Protocol):
    """
    Closes at once: what a raw TCP service says to a connection over its
    limits. (A factory cannot simply return ``None`` under TLS.)
    """

    def connectionMade(self) -> None:
        self.transport.abortConnection()


def refusal(code: int, text: bytes, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """
    :return: a whole HTTP/1.1 response refusing a request: ``code`` with its
        own reason phrase, ``headers``, ``text`` as a plain body, and
        ``Connection: close``.
    """
    extra = b"".join(f"{name}: {value}\r\n".encode() for name, value in headers)
    return (
        b"HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
        % (code, HTTPStatus(code).phrase.encode(), extra, len(text), text)
    )


class Unavailable(Protocol):
    """
    Answers ``503 Service Unavailable`` with ``Retry-After`` and closes: what
    an HTTP or WebSocket service says to a connection over its limits.
    """

    _linger: Any = None

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connectionMade(self) -> None:
        self.transport.write(
            refusal(
                503,
                b"Service unavailable: too many connections\n",
                [("Retry-After", str(RETRY_AFTER))],
            )
        )
        self._linger = self._reactor.callLater(
            _LINGER_SECONDS, self.transport.abortConnection
        )
        shut_down_writing(self.transport)

    def dataReceived(self, data: bytes) -> None:
        pass  # the request, unread: it will not be answered

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
