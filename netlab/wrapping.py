"""
Protocol wrappers that keep what the wrapped protocol is.

Twisted's :class:`~twisted.protocols.policies.ProtocolWrapper` hides the
interfaces a transport looks for on its protocol: wrap an echo protocol and
a peer's half-close becomes a full close; wrap anything inside TLS and it
never hears that the handshake completed. These pass both on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import directlyProvides, implementer, providedBy


@implementer(IHandshakeListener)
class Wrapper(ProtocolWrapper):
    """
    A :class:`~twisted.protocols.policies.ProtocolWrapper` that passes on TLS
    handshake completion.

    It shows the wrapped protocol every interface of the transport but
    ``ISSLTransport`` (and ``INegotiated``, which extends it): code that sees
    that interface (autobahn's channel binding) takes the transport for
    Twisted's own TLS protocol, which a wrapper is not. The certificate and
    the ALPN protocol still pass through as attributes
    (``getPeerCertificate()``, ``negotiatedProtocol``).
    """

    def makeConnection(self, transport: Any) -> None:
        self.provide_interfaces_of(transport)
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self.wrappedProtocol.makeConnection(self)

    def provide_interfaces_of(self, transport: Any) -> None:
        """
        Claim every interface of ``transport`` but ``ISSLTransport``.
        """
        interfaces = [
            i for i in providedBy(transport) if not i.isOrExtends(ISSLTransport)
        ]
        directlyProvides(self, *interfaces)

    def handshakeCompleted(self) -> None:
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.handshakeCompleted()


@implementer(IHalfCloseableProtocol)
class HalfCloseableWrapper(Wrapper):
    """
    A :class:`Wrapper` for a protocol that handles half-close.
    """

    def readConnectionLost(self) -> None:
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        self.wrappedProtocol.writeConnectionLost()


def wrapper_for(
    wrapped: Any,
    plain: type[Wrapper] = Wrapper,
    half_closeable: type[HalfCloseableWrapper] = HalfCloseableWrapper,
) -> type[Wrapper]:
    """
    :return: ``half_closeable`` if ``wrapped`` handles half-close, else
        ``plain``.
    """
    return half_closeable if IHalfCloseableProtocol.providedBy(wrapped) else plain
