"""
Knowing which connections a server has open, and when the last one closes.

Shared by every netlab factory: tests wait on it before they end, and a
graceful stop can close what is left.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from netlab import metrics

# Numbers each connection, for its log events (see netlab.logs).
_connection_ids = itertools.count(1)


class ConnectionTracker:
    """
    A factory mixin: ``connections`` holds the live protocols.

    Protocols call :meth:`track` when they connect and :meth:`forget` when
    they close; both are counted in :mod:`netlab.metrics` under
    :attr:`service_name`, and each protocol gets a ``connection_id`` that
    its log events carry.
    """

    #: Names the service in log events and metrics.
    service_name = "tcp"

    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self._drained: list[defer.Deferred[None]] = []

    def track(self, protocol: Any) -> None:
        """
        Count ``protocol`` as open.
        """
        if protocol not in self.connections:
            protocol.connection_id = next(_connection_ids)
            self.connections.add(protocol)
            metrics.opened(self.service_name)

    def forget(self, protocol: Any, reason: Failure | None = None) -> None:
        """
        Count ``protocol`` as closed, for ``reason`` (if known).
        """
        if protocol in self.connections:
            self.connections.remove(protocol)
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
        waiter: defer.Deferred[None] = defer.Deferred()
        self._drained.append(waiter)
        return waiter
