"""
Protocol wrappers that keep what the wrapped protocol is.

Twisted's :class:`~twisted.protocols.policies.ProtocolWrapper` hides the
interfaces a transport looks for on its protocol: wrap an echo protocol and
a peer's half-close becomes a full close; wrap anything inside TLS and it
never hears that the handshake completed. These pass both on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer


@implementer(IHandshakeListener)
class Wrapper(ProtocolWrapper):
    """
    A :class:`ProtocolWrapper` that passes on TLS handshake completion.
    """

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
