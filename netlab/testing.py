"""
Helpers for testing your own Twisted protocols (and netlab's) with trial.

Run a factory on an ephemeral loopback port for one test, and have it stopped
(listener closed, connections aborted and gone) when the test ends, so trial
never finds a dirty reactor::

    from netlab.tcp import exchange
    from netlab.testing import serve

    class UpperTests(TestCase):
        async def test_upper(self):
            served = await serve(self, UpperFactory())
            reply = await exchange(served.endpoint, b"hi")

Over TLS with certificates made for the test (``certificates=True``), and
with every connection recorded for Wireshark (``wiretap=True``: a failing
test keeps its capture and prints the path on stderr; a passing one's is
removed).

For unit tests without sockets, :class:`MemoryPair` connects two protocols
in memory and moves their bytes when told.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.testing import StringTransport
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from netlab.certs import Certificates, make_certificates
from netlab.tls import ClientTLS
from netlab.transport import flushing
from netlab.wiretap import Wiretap
from netlab.wrapping import wrapper_for

#: Seconds the clean-up waits for the connections to go.
CLEANUP_TIMEOUT = 10.0

_log = Logger()


class _Tracked(WrappingFactory):
    """
    Knows the live connections, to close them all and wait until they are gone.
    """

    def __init__(self, wrappedFactory: IProtocolFactory) -> None:
        super().__init__(wrappedFactory)
        self._gone: list[defer.Deferred[None]] = []

    def buildProtocol(self, addr: Any) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return wrapper_for(wrapped)(self, wrapped)

    def unregisterProtocol(self, protocol: Any) -> None:
        super().unregisterProtocol(protocol)
        if not self.protocols:
            waiting, self._gone = self._gone, []
            for waiter in waiting:
                waiter.callback(None)

    def close_all(self) -> defer.Deferred[None]:
        for protocol in list(self.protocols):
            protocol.transport.abortConnection()
        if not self.protocols:
            return defer.succeed(None)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._gone.append(waiter)
        return waiter


@dataclass
class Served:
    """
    Where a factory serves for a test, and how a client reaches it.
    """

    host: str
    port: int
    #: The certificates the server uses, when it speaks TLS.
    certificates: Certificates | None = None
    #: The pcapng file the wiretap writes, when there is one; removed when
    #: the test passes.
    capture: pathlib.Path | None = None
    _stop: Any = None

    async def stop(self) -> None:
        """
        Stop now rather than when the test ends: stop listening, abort the
        connections and wait until they are gone, and finish the capture.
        """
        await self._stop()

    @property
    def endpoint(self) -> str:
        """
        A client endpoint string for :func:`netlab.tcp.exchange` and the like:
        ``tcp:127.0.0.1:PORT``, or ``tls:localhost:PORT`` over TLS.
        """
        if self.certificates is not None:
            return f"tls:localhost:{self.port}"
        return f"tcp:{self.host}:{self.port}"

    def url(self, path: str = "/", scheme: str = "http") -> str:
        """
        :return: ``http://127.0.0.1:PORT/path`` (``https://localhost``...
            over TLS; ``scheme="ws"`` for WebSocket).
        """
        if self.certificates is not None:
            return f"{scheme}s://localhost:{self.port}{path}"
        return f"{scheme}://{self.host}:{self.port}{path}"

    @property
    def client_tls(self) -> ClientTLS | None:
        """
        What a client passes as ``tls=`` to trust this server.
        """
        if self.certificates is None:
            return None
        return ClientTLS(cacert=str(self.certificates.ca))


async def serve(
    case: Any,
    factory: IProtocolFactory,
    *,
    certificates: bool | Certificates = False,
    wiretap: bool = False,
    reactor: Any = None,
    backlog: int = 1024,
    port: int = 0,
) -> Served:
    """
    Listen with ``factory`` on 127.0.0.1 (on an ephemeral port, unless
    ``port`` names one) until the trial test ``case`` ends.

    :param certificates: speak TLS: with these certificates, or (``True``)
        with new ones from :func:`netlab.certs.make_certificates`.
    :param wiretap: record every connection in a pcapng file
        (:attr:`Served.capture`). When the test ends, the file is removed if
        the test passed; otherwise it is kept, and its path is printed on
        stderr and logged, to open in Wireshark beside the failure.
    :param backlog: the listen queue; Twisted's default of 50 overflows
        when a test opens hundreds of connections at once, and the kernel
        then retries their handshakes for seconds.
    :param port: the port to listen on; ``0``, a free one. Give a stopped
        server's port to start a server again where its clients reconnect.
    """
    if reactor is None:
        from twisted.internet import reactor
    if certificates is True:
        certificates = make_certificates(pathlib.Path(case.mktemp()))
    capture = tap = None
    if wiretap:
        capture = pathlib.Path(tempfile.mkdtemp(prefix="netlab-wiretap-")) / (
            f"{case.id()}.pcapng"
        )
        tap = Wiretap(str(capture), reactor=reactor)
        factory = tap.wrap(factory)
    tracked = _Tracked(factory)
    description = f"tcp:{port}:interface=127.0.0.1:backlog={backlog}"
    if certificates:
        description = (
            f"netlab-ssl:{port}:privateKey={_escaped(certificates.server_key)}"
            f":certKey={_escaped(certificates.server)}:backlog={backlog}"
        )
    # As netlab's plugins listen: replies leave with the read that made them.
    listening = await serverFromString(flushing(reactor), description).listen(tracked)

    async def stop() -> None:
        await listening.stopListening()
        await tracked.close_all().addTimeout(CLEANUP_TIMEOUT, reactor)
        if tap is not None:
            await tap.close()

    once = _Once(stop)

    async def cleanup() -> None:
        passed = False
        try:
            await once()
            passed = _passed(case)
        finally:
            if capture is not None and passed:
                shutil.rmtree(capture.parent, ignore_errors=True)
            elif capture is not None:
                _kept(case, capture)

    case.addCleanup(lambda: defer.Deferred.fromCoroutine(cleanup()))
    bound = listening.getHost().port
    return Served("127.0.0.1", bound, certificates or None, capture, once)


def _passed(case: Any) -> bool:
    """
    :return: whether ``case`` has passed so far. trial offers no public way
        to ask a test its outcome before it reports it; its own ``_passed``
        is true once the test method returned without failing, and stays
        false for a failure, an error, a skip or an expected failure. A
        trial without it keeps every capture: evidence is never lost.
    """
    return getattr(case, "_passed", False) is True


def _kept(case: Any, capture: pathlib.Path) -> None:
    # stderr, not only the log: trial shows it in the terminal as the test
    # runs (under trial -j, in _trial_temp/N/err.log), pytest beside the
    # failure; the log line is in the test.log next to the test's own.
    sys.stderr.write(f"{case.id()}: wiretap capture kept: {capture}\n")
    sys.stderr.flush()
    _log.info("wiretap capture of {test} kept: {path}", test=case.id(), path=capture)


class _Once:
    """
    Runs ``stop`` the first time it is called; every call gets its outcome.
    """

    def __init__(self, stop: Any) -> None:
        self._stop = stop
        self._outcome: list[Any] = []
        self._waiting: list[defer.Deferred[None]] = []

    def __call__(self) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        if self._outcome:
            self._fire(waiter, self._outcome[0])
            return waiter
        self._waiting.append(waiter)
        if len(self._waiting) == 1:
            defer.Deferred.fromCoroutine(self._stop()).addBoth(self._finished)
        return waiter

    def _finished(self, result: Any) -> None:
        self._outcome.append(result)
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            self._fire(waiter, result)

    @staticmethod
    def _fire(waiter: defer.Deferred[None], result: Any) -> None:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(None)


def _escaped(path: pathlib.Path) -> str:
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


class MemoryPair:
    """
    Two protocols connected in memory: what one writes, the other receives
    when :meth:`flush` is called. Closing either side closes both.

    :param server: the server's protocol (made by a factory, with its
        ``factory`` set, if it needs one).
    :param client: the client's protocol.
    """

    def __init__(self, server: IProtocol, client: IProtocol) -> None:
        self.server, self.client = server, client
        server_address = IPv4Address("TCP", "127.0.0.1", 8000)
        client_address = IPv4Address("TCP", "127.0.0.1", 50000)
        self.server_transport = StringTransport(server_address, client_address)
        self.client_transport = StringTransport(client_address, server_address)
        self.closed = False
        server.makeConnection(self.server_transport)
        client.makeConnection(self.client_transport)

    def flush(self, rounds: int = 1000) -> None:
        """
        Deliver what each side wrote, back and forth until neither writes
        more (at most ``rounds`` times), then any close.
        """
        for _ in range(rounds):
            moved = False
            for transport, receiver in (
                (self.client_transport, self.server),
                (self.server_transport, self.client),
            ):
                data = transport.value()
                if data and not self.closed:
                    transport.clear()
                    receiver.dataReceived(data)
                    moved = True
            if not moved:
                break
        if not self.closed and (
            self.server_transport.disconnecting or self.client_transport.disconnecting
        ):
            self.close()

    def close(self, reason: Failure | None = None) -> None:
        """
        End the connection: both protocols' ``connectionLost``.
        """
        if self.closed:
            return
        self.closed = True
        reason = reason or Failure(ConnectionDone())
        self.server.connectionLost(reason)
        self.client.connectionLost(reason)


__all__ = ["MemoryPair", "Served", "serve"]
