"""
The TCP greeting: read what the peer says first, answer
:data:`GREETING`, close. The lesson's second server, written on
:mod:`netlab.tcp`; and its client, :func:`greet`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netlab.limits import DEFAULT_LIMITS, Limits
from netlab.tcp import (
    TCPFactory,
    describe_address,
    exchange,
)
from netlab.tls import is_tls, shut_down_writing

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
    :class:`~netlab.tcp.TCPFactory`.
    """

    service_name = "greeting"

    def __init__(
        self, limits: Limits = DEFAULT_LIMITS, reactor: IReactorTime | None = None
    ) -> None:
        super().__init__(lambda: Greeting(self.reactor), limits, reactor)


def greet(
    endpoint: IStreamClientEndpoint | str,
    message: bytes = DEFAULT_CLIENT_MESSAGE,
    **options: Any,
) -> defer.Deferred[bytes]:
    """
    Say ``message`` to a greeting server and collect its answer.

    :param options: ``reactor``, ``timeout``, ``max_reply`` and ``tls``, as
        :func:`netlab.tcp.exchange` takes them.
    :return: a Deferred that fires with the server's answer once it closes.
    """
    return exchange(endpoint, message, **options)
