"""
The TCP echo: every byte back, with flow control and half-close. The
lesson's first server, written on :mod:`netlab.tcp` as any protocol of
yours would be; and its client, :func:`echo`.

Serve it on any endpoint::

    endpoint.listen(EchoFactory())
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.tcp import (
    Backpressure,
    TCPFactory,
    exchange,
)

#: Where ``twistd netlab-echo`` listens unless told otherwise.
DEFAULT_ECHO_LISTEN = "tcp:8007:interface=127.0.0.1"


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """
    Writes back every byte it receives, with flow control
    (:class:`~netlab.tcp.Backpressure`) and half-close: when the peer shuts
    down its writing side, everything already received is still echoed before
    the connection closes.
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
    The echo service: :class:`Echo` connections served by
    :class:`~netlab.tcp.TCPFactory`.
    """

    service_name = "echo"

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, reactor: IReactorTime | None = None
    ) -> None:
        super().__init__(Echo, limits, reactor)


def echo(
    endpoint: IStreamClientEndpoint | str, message: bytes, **options: Any
) -> defer.Deferred[bytes]:
    """
    Send ``message`` to an echo server and collect what it sends back.

    :param options: ``reactor``, ``timeout``, ``max_reply`` and ``tls``, as
        :func:`netlab.tcp.exchange` takes them.
    :return: a Deferred that fires with the whole reply once the server
        closes; with :class:`~netlab.tcp.BadReply` if it was not all of
        ``message``.
    """
    return exchange(endpoint, message, expect_echo=True, **options)
