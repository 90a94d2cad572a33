"""
A user's own TCP protocols, written against Twisted alone, for the tests
that serve them through netlab (``TCPFactory`` and ``twistd netlab-tcp``).
"""

from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer

from netlab.tcp import Backpressure


@implementer(IHandshakeListener)
class Upper(LineReceiver):
    """
    Answers each line in capitals; ``bye`` closes. Over TLS, says so first.
    """

    drained = False

    def lineReceived(self, line: bytes) -> None:
        if line == b"bye":
            self.transport.loseConnection()
            return
        self.sendLine(line.upper())

    def handshakeCompleted(self) -> None:
        self.sendLine(b"TLS")


class UpperFactory(Factory):
    """
    Makes :class:`Upper` protocols, and counts how often it was started.
    """

    protocol = Upper
    starts = 0

    def startFactory(self) -> None:
        self.starts += 1


#: A factory instance, as ``--factory tests.user_tcp:factory`` names it.
factory = UpperFactory()

#: Not a protocol factory, for the usage errors.
not_a_factory = 42


@implementer(IHalfCloseableProtocol)
class Mirror(Protocol):
    """
    The echo as a user writes it on netlab's public API: every byte back,
    with :class:`~netlab.tcp.Backpressure` and half-close. The echo contract
    runs against it (tests.test_conformance).
    """

    def connectionMade(self) -> None:
        self.backpressure = Backpressure(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)

    def readConnectionLost(self) -> None:
        self.backpressure.release()
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass
