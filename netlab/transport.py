"""
A TCP listener whose connections send a reply at the end of the read that
produced it (or, while many connections are busy, at the end of the
reactor's turn: see :class:`FlushingPort`), instead of on the reactor's next
turn.

Twisted's ``transport.write()`` only buffers: it asks the reactor to watch
the socket for writability (one ``epoll_ctl``), the bytes leave on the next
turn of the reactor, and the watch is dropped again (another ``epoll_ctl``).
For request-reply services, where nearly every reply is written while a read
is handled, that is most of the cost of a small exchange. A
:class:`FlushingServer` keeps what is written during a read and sends it in
one ``send()`` when the read is done, so replies to one read still leave
together; whatever the socket does not take goes through Twisted's own
buffering, producers and close handling, unchanged. Writes made outside a
read (a broadcast from another connection's read, timers, Deferreds) wait
for the end of the reactor's turn, and each connection sends what it got in
one ``send()``, without the two ``epoll_ctl`` (under the asyncio reactor they
take Twisted's path).

netlab's plugins listen through :func:`flushing`; so can any Twisted
program::

    from twisted.internet import endpoints, reactor
    from netlab.transport import flushing

    endpoints.serverFromString(flushing(reactor), "tcp:8007").listen(factory)

A client connection whose every write is awaited elsewhere (netlab's link
that publishes to Redis, whose messages other processes wait for while this
one is busy) connects through :func:`prompt`: each write leaves at once, in
its own ``send()``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import main, tcp
from twisted.internet.abstract import _dataMustBeBytes
from twisted.internet.interfaces import IReactorTCP
from twisted.internet.posixbase import PosixReactorBase
from zope.interface import directlyProvides, providedBy


def _send_at_once(self: Any, data: bytes) -> None:
    """
    Send ``data``, which nothing else waits before, on the connection
    ``self`` now; hand what the socket does not take (or an error) to
    Twisted's writer. What :class:`FlushingServer` and
    :class:`PromptClient` share.
    """
    if len(data) > self.SEND_LIMIT:
        sent = self.writeSomeData(data)
    else:
        # Connection.writeSomeData without the memoryview slice it makes
        # to cap a send at SEND_LIMIT; Python retries EINTR (PEP 475).
        try:
            sent = self.socket.send(data)
        except OSError as e:
            if e.args[0] in (tcp.EWOULDBLOCK, tcp.ENOBUFS):
                sent = 0
            else:
                sent = main.CONNECTION_LOST
    if isinstance(sent, int) and sent == len(data):
        if self.producer is not None and (
            not self.streamingProducer or self.producerPaused
        ):
            # The buffer is empty: doWrite tells the producer, as usual.
            self.startWriting()
        return
    # A full socket buffer, or an error that doWrite will report through
    # the usual connectionLost.
    self.dataBuffer = data
    self.offset = sent if isinstance(sent, int) and sent > 0 else 0
    if not self.producerPaused:
        self._maybePauseProducer()
    self.startWriting()


class FlushingServer(tcp.Server):
    """
    A server-side TCP connection that sends what it is given during a read
    once that read is handled.
    """

    _reading = False
    #: The most one read takes. A read that fills its buffer makes the next
    #: one four times larger, up to this (a bulk transfer then costs a
    #: quarter of the reads, and of the protocol's calls); one shorter than
    #: ``bufferSize`` brings it back, so small reads never pay for a large
    #: allocation.
    max_read = 262144
    _read_size = tcp.Server.bufferSize

    def doRead(self) -> Any:
        # Twisted's Connection.doRead and _dataReceived, inlined (same
        # results; dataReceived's return value is ignored, as there): this
        # runs for every read, and the super() and two calls it saves show.
        self._reading = True
        try:
            size = self._read_size
            try:
                data = self.socket.recv(size)
            except OSError as e:
                if e.args[0] == tcp.EWOULDBLOCK:
                    return None
                return main.CONNECTION_LOST
            if not data:
                return main.CONNECTION_DONE
            got = len(data)
            if got == size and size < self.max_read:
                self._read_size = min(size * 4, self.max_read)
            elif got < self.bufferSize < size:
                self._read_size = self.bufferSize
            self.protocol.dataReceived(data)
            return None
        finally:
            self._reading = False
            if self._tempDataLen and not self._flushed_later():
                self._flush()

    def _flushed_later(self) -> bool:
        """
        :return: whether the port sends what this read wrote at the end of
            the reactor's turn (a :class:`FlushingPort` under load).
        """
        later = getattr(self.server, "flush_later", None)
        return later is not None and bool(later(self))

    def _holding(self) -> bool:
        """
        :return: whether a write now waits: for the end of the read during
            one, else for the end of the reactor's turn (if the port sends
            then: see :meth:`FlushingPort.flush_at_turn_end`); not with a
            send already under way (Twisted's buffering keeps the order
            then), nor after ``startTLS`` (whose writes must go through the
            TLS layer).
        """
        if self.dataBuffer or self.TLS:
            return False
        # Bytes already held are sent with these: by the read's end, the
        # turn's end, or Twisted's writer, which sends all it holds.
        if self._reading or self._tempDataLen:
            return True
        at_turn_end = getattr(self.server, "flush_at_turn_end", None)
        return at_turn_end is not None and bool(at_turn_end(self))

    def write(self, data: bytes) -> None:
        if not self._holding():
            super().write(data)
            return
        self._hold(data)

    def writeSequence(self, iovec: Any) -> None:
        # Twisted's own would watch the socket for a send the read's end
        # makes anyway (twisted.web writes each response head this way).
        if not self._holding():
            super().writeSequence(iovec)
            return
        self._hold(b"".join(iovec))

    def _hold(self, data: bytes) -> None:
        """
        Keep ``data`` for the send that :meth:`_holding` said is coming.
        """
        _dataMustBeBytes(data)
        if not self.connected or self._writeDisconnected or not data:
            return
        self._tempDataBuffer.append(data)
        self._tempDataLen += len(data)
        self._maybePauseProducer()

    def _flush(self) -> None:
        """
        Send what the read left in the buffer; hand the rest (or an error)
        to Twisted's writer.
        """
        if (
            not self._tempDataLen
            or self.dataBuffer
            or not self.connected
            or getattr(self, "_aborting", False)
        ):
            return
        data = b"".join(self._tempDataBuffer)
        self._tempDataBuffer = []
        self._tempDataLen = 0
        _send_at_once(self, data)


class FlushingPort(tcp.Port):
    """
    A TCP listening port whose connections are :class:`FlushingServer`\\ s.

    While its connections are busy, what their reads wrote leaves at the end
    of the reactor's turn, all of it, rather than at the end of each read:
    under load (many connections readable at once) a send made while the
    peer is still busy with the previous ones costs the server far less
    than one that wakes it (with 100 keep-alive HTTP connections, server
    CPU per request went from about 170 to 155 us). A turn that flushed
    only one connection gained nothing by waiting, and a lone connection
    pays for it in latency (the reactor sleeps on the reply): the next
    :attr:`quiet_reads` reads send at once again, then a turn is tried again.
    Under the asyncio reactor every reply leaves with its read: asyncio runs
    a timer due now only after one more poll, whose reads would come first.
    """

    transport = FlushingServer
    #: Reads whose replies leave at once after a turn that flushed one
    #: connection.
    quiet_reads = 32
    _due: list[FlushingServer] | None = None
    _quiet = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        self._asyncio = isinstance(self.reactor, AsyncioSelectorReactor)

    def flush_later(self, connection: FlushingServer) -> bool:
        """
        :return: whether what ``connection``'s read wrote is sent at the end
            of the reactor's turn, rather than now, by the caller.
        """
        if self._due is None and (self._quiet or self._asyncio):
            self._quiet -= bool(self._quiet)
            return False
        return self.flush_at_turn_end(connection)

    def flush_at_turn_end(self, connection: FlushingServer) -> bool:
        """
        Send what ``connection`` is given outside its reads at the end of
        the reactor's turn, with what the turn's other writes gave it and
        the others (a broadcast): one ``send()`` each, and no watch for
        writability. Not under the asyncio reactor (see above).

        :return: whether it will be sent then (else the caller writes it
            the usual way).
        """
        if self._asyncio:
            return False
        due = self._due
        if due is None:
            due = self._due = []
            self.reactor.callLater(0, self._flush_due)
        due.append(connection)
        return True

    def _flush_due(self) -> None:
        due, self._due = self._due or [], None
        if len(due) == 1:
            self._quiet = self.quiet_reads
        for connection in due:
            connection._flush()


class PromptClient(tcp.Client):
    """
    A client-side TCP connection that sends each write at once, in its own
    ``send()``, rather than on the reactor's next turn: for a connection
    whose bytes others wait for while this process stays busy (many writes
    in one turn cost a ``send()`` each). While Twisted's buffer holds
    anything (the socket was full), writes queue behind it, as usual.
    """

    def _at_once(self) -> bool:
        """
        :return: whether a write may go out now: nothing waits before it,
            and the transport is neither closed, aborted, nor TLS (whose
            writes go through its own layer).
        """
        return (
            self.connected
            and not self.dataBuffer
            and not self._tempDataLen
            and not self.TLS
            and not self._writeDisconnected
            and not getattr(self, "_aborting", False)
        )

    def write(self, data: bytes) -> None:
        if not self._at_once():
            super().write(data)
            return
        _dataMustBeBytes(data)
        if data:
            _send_at_once(self, data)

    def writeSequence(self, iovec: Any) -> None:
        if not self._at_once():
            super().writeSequence(iovec)
            return
        for data in iovec:
            _dataMustBeBytes(data)
        self.write(b"".join(iovec))


class _PromptConnector(tcp.Connector):
    def _makeTransport(self) -> PromptClient:
        return PromptClient(self.host, self.port, self.bindAddress, self, self.reactor)


class _Wrapped:
    """
    A reactor that is the wrapped one, but for what a subclass overrides.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        directlyProvides(self, *providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class _FlushingReactor(_Wrapped):
    """
    A reactor whose ``listenTCP`` listens with a :class:`FlushingPort`;
    everything else is the wrapped reactor's.
    """

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> FlushingPort:
        listening = FlushingPort(port, factory, backlog, interface, self._reactor)
        listening.startListening()
        return listening


class _PromptReactor(_Wrapped):
    """
    A reactor whose ``connectTCP`` connects with a :class:`PromptClient`;
    everything else is the wrapped reactor's.
    """

    def connectTCP(
        self,
        host: str,
        port: int,
        factory: Any,
        timeout: float = 30.0,
        bindAddress: Any = None,
    ) -> _PromptConnector:
        connector = _PromptConnector(
            host, port, factory, timeout, bindAddress, self._reactor
        )
        connector.connect()
        return connector


def adopt(reactor: Any, fd: int, family: int, factory: Any) -> FlushingPort:
    """
    ``reactor.adoptStreamPort(fd, family, factory)``, listening with a
    :class:`FlushingPort`: for a listening socket opened elsewhere (a
    ``--workers`` supervisor's). ``fd`` stays the caller's to close.
    """
    port = FlushingPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port


def flushing(reactor: Any) -> Any:
    """
    :return: ``reactor``, except that its TCP listeners (and so every
        ``tcp:``, ``ssl:`` and ``netlab-ssl:`` endpoint made with it) use
        :class:`FlushingPort`. A reactor without TCP is returned as it is.
    """
    if not IReactorTCP.providedBy(reactor) or isinstance(reactor, _FlushingReactor):
        return reactor
    return _FlushingReactor(reactor)


def prompt(reactor: Any) -> Any:
    """
    :return: ``reactor``, except that its TCP client connections (and so
        every client endpoint made with it: ``HostnameEndpoint``,
        ``TCP4ClientEndpoint``, their TLS wrappings) are
        :class:`PromptClient`\\ s. Any other reactor (a test's
        ``MemoryReactor``, say) is returned as it is.
    """
    if not isinstance(reactor, PosixReactorBase):
        return reactor
    return _PromptReactor(reactor)
