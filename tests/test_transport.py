"""
netlab.transport: replies written during a read leave at the end of that
read, with Twisted's ordering, back-pressure and close semantics intact.

Every test listens on 127.0.0.1 with a real socket.
"""

from __future__ import annotations

import pathlib
import random
import socket
import struct
from typing import Any

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netlab.certs import make_certificates
from netlab.services.echo import echo
from netlab.testing import _escaped
from netlab.tls import ClientTLS
from netlab.transport import (
    FlushingPort,
    FlushingServer,
    PromptClient,
    flushing,
    prompt,
)
from tests.support import Peer, bounded, connect


async def tls_echo_listener(case: TestCase) -> tuple[Any, Any, ScriptedFactory]:
    """
    :return: a ``netlab-ssl:`` echo listener made with the flushing reactor
        (stopped as ``case`` ends), its certificates, and its factory.
    """
    certificates = make_certificates(pathlib.Path(case.mktemp()))
    factory = ScriptedFactory(lambda server, data: server.transport.write(data))
    description = (
        f"netlab-ssl:0:privateKey={_escaped(certificates.server_key)}"
        f":certKey={_escaped(certificates.server)}"
    )
    port = await serverFromString(flushing(reactor), description).listen(factory)
    case.addCleanup(port.stopListening)
    return port, certificates, factory


class Scripted(protocol.Protocol):
    """
    Answers each read by calling ``factory.on_read(self, data)``; ``lost``
    fires, and ``reason`` is set, when the connection ends.
    """

    def __init__(self) -> None:
        self.lost: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.factory.on_read(self, data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.reason = reason
        self.lost.callback(None)


class ScriptedFactory(protocol.Factory):
    protocol = Scripted

    def __init__(self, on_read: Any) -> None:
        self.on_read = on_read
        self.connections: list[Scripted] = []

    def buildProtocol(self, addr: Any) -> Scripted:
        built = super().buildProtocol(addr)
        self.connections.append(built)
        return built


class FlushingTests(TestCase):
    timeout = 60

    async def listen(
        self, on_read: Any, description: str = "tcp:0:interface=127.0.0.1", **kw: Any
    ) -> tuple[ScriptedFactory, Peer]:
        factory = ScriptedFactory(on_read)
        listening_reactor = kw.get("reactor", flushing(reactor))
        port = await serverFromString(listening_reactor, description).listen(factory)
        self.addCleanup(port.stopListening)
        peer = await connect("127.0.0.1", port.getHost().port)
        self.addCleanup(self.close, peer)
        return factory, peer

    async def close(self, peer: Peer) -> None:
        if peer.reason is None:
            peer.transport.abortConnection()
            await bounded(peer.closed)

    async def watched_after_read(self, listening_reactor: Any) -> bool:
        """
        :return: whether the server's transport is still waiting to write
            its reply on the reactor turn after the read that wrote it.
        """
        seen: defer.Deferred[bool] = defer.Deferred()

        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.writeSequence([b"re", b"p"])
            server.transport.write(b"ly")
            reactor.callLater(
                0, lambda: seen.callback(server.transport in reactor.getWriters())
            )

        _, peer = await self.listen(on_read, reactor=listening_reactor)
        peer.transport.write(b"request")
        watched = await bounded(seen)
        self.assertEqual(await peer.received_at_least(5), b"reply")
        return watched

    async def test_reply_leaves_with_the_read(self) -> None:
        """
        The reply is on the wire by the end of the read's reactor turn: the
        transport is not left watching for writability, as Twisted's own
        transport is.
        """
        plain = await self.watched_after_read(reactor)
        if not isinstance(reactor, AsyncioSelectorReactor):
            # The control: asyncio runs a turn's writers before its timers,
            # so only the default reactor shows the plain transport waiting.
            self.assertTrue(plain)
        self.assertFalse(await self.watched_after_read(flushing(reactor)))

    async def watched_after_broadcast(self, listening_reactor: Any) -> bool:
        """
        :return: whether a connection that another connection's read wrote
            to (a broadcast) is still waiting to write on the reactor turn
            after that read.
        """
        seen: defer.Deferred[bool] = defer.Deferred()

        def on_read(server: Scripted, data: bytes) -> None:
            if not data.endswith(b"broadcast"):
                return
            for other in factory.connections:
                if other is not server:
                    other.transport.write(b"one ")
                    other.transport.writeSequence([b"two ", b"three"])
            target = factory.connections[1].transport
            reactor.callLater(0, lambda: seen.callback(target in reactor.getWriters()))

        factory, sender = await self.listen(on_read, reactor=listening_reactor)
        sender.transport.write(b"hello")
        while not factory.connections:
            await _turn()
        port = factory.connections[0].transport.getHost().port
        listener = await connect("127.0.0.1", port)
        self.addCleanup(self.close, listener)
        listener.transport.write(b"hello")
        while len(factory.connections) < 2:
            await _turn()
        sender.transport.write(b"broadcast")
        watched = await bounded(seen)
        self.assertEqual(await listener.received_at_least(13), b"one two three")
        return watched

    async def test_broadcast_leaves_at_the_turns_end(self) -> None:
        """
        What a read writes to other connections is on the wire by the end
        of the reactor's turn, without the watch for writability Twisted's
        own transport sets.
        """
        watched = await self.watched_after_broadcast(flushing(reactor))
        if not isinstance(reactor, AsyncioSelectorReactor):
            # asyncio runs a turn's writers before its timers, so only the
            # default reactor shows the plain transport waiting, and only
            # there do such writes wait for the turn's end.
            self.assertTrue(await self.watched_after_broadcast(reactor))
            self.assertFalse(watched)

    async def test_connections_are_flushing(self) -> None:
        factory, peer = await self.listen(lambda server, data: None)
        peer.transport.write(b"x")
        for _ in range(1000):
            if factory.connections:
                break
            await _turn()
        self.assertIsInstance(factory.connections[0].transport, FlushingServer)

    async def test_order_kept_with_writes_outside_reads(self) -> None:
        """
        Writes during reads, from timers and in sizes that fill the socket
        buffer, arrive in the order they were made, and all of them.
        """
        rng = random.Random(11)
        written = bytearray()

        def send(server: Scripted, data: bytes) -> None:
            written.extend(data)
            server.transport.write(data)

        def on_read(server: Scripted, data: bytes) -> None:
            for _ in range(rng.randrange(4)):
                size = rng.choice((1, 100, 70_000, 300_000))
                chunk = bytes([rng.randrange(256)]) * size
                if rng.random() < 0.3:
                    reactor.callLater(0, send, server, chunk)
                else:
                    send(server, chunk)

        _, peer = await self.listen(on_read)
        for i in range(200):
            peer.transport.write(b"%d;" % i)
            if i % 20 == 0:
                # Stop reading for a few turns so that sends come up short.
                peer.transport.pauseProducing()
                for _ in range(5):
                    await _turn()
                peer.transport.resumeProducing()
            await _turn()
        await _turn()
        while len(peer.received) < len(written):
            await peer.received_at_least(len(written))
        self.assertEqual(bytes(peer.received), bytes(written))

    async def test_producer_paused_by_a_reader_that_stops(self) -> None:
        """
        A reply bigger than the buffer, written during a read, pauses the
        registered streaming producer, as Twisted's transport does.
        """
        paused: defer.Deferred[None] = defer.Deferred()

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self) -> None:
                if not paused.called:
                    paused.callback(None)

            def resumeProducing(self) -> None:
                pass

            def stopProducing(self) -> None:
                pass

        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.registerProducer(Producer(), True)
            server.transport.write(bytes(8 * 1024 * 1024))

        _, peer = await self.listen(on_read)
        peer.transport.pauseProducing()
        peer.transport.write(b"go")
        await bounded(paused)
        peer.transport.resumeProducing()
        await peer.received_at_least(8 * 1024 * 1024)

    async def test_producer_resumed_when_the_socket_took_it_all(self) -> None:
        """
        A reply over the buffer size pauses the producer even when the socket
        then takes all of it at once; the producer is resumed.
        """
        resumed: defer.Deferred[None] = defer.Deferred()

        @implementer(IPushProducer)
        class Producer:
            paused = False

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                if self.paused and not resumed.called:
                    resumed.callback(None)

            def stopProducing(self) -> None:
                pass

        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.registerProducer(Producer(), True)
            server.transport.write(bytes(server.transport.bufferSize + 1))

        _, peer = await self.listen(on_read)
        peer.transport.write(b"go")
        await bounded(resumed)

    async def test_close_after_write_in_read(self) -> None:
        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.write(b"a" * 500_000)
            server.transport.write(b"end")
            server.transport.loseConnection()

        _, peer = await self.listen(on_read)
        peer.transport.write(b"x")
        await bounded(peer.closed)
        peer.reason.trap(ConnectionDone)
        self.assertEqual(bytes(peer.received), b"a" * 500_000 + b"end")

    async def test_half_close_after_write_in_read(self) -> None:
        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.write(b"bye")
            server.transport.loseWriteConnection()

        _, peer = await self.listen(on_read)
        peer.transport.write(b"x")
        await bounded(peer.closed)
        self.assertEqual(bytes(peer.received), b"bye")

    async def test_abort_after_write_in_read_sends_nothing(self) -> None:
        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.write(b"never")
            server.transport.abortConnection()

        _, peer = await self.listen(on_read)
        peer.transport.write(b"x")
        await bounded(peer.closed)
        self.assertEqual(bytes(peer.received), b"")

    async def test_tls_listener(self) -> None:
        """
        ``netlab-ssl:`` endpoints made with the flushing reactor listen with
        it too: the TLS handshake and records leave with each read.
        """
        port, certificates, factory = await tls_echo_listener(self)
        reply = await echo(
            f"tls:127.0.0.1:{port.getHost().port}",
            b"over TLS",
            tls=ClientTLS(cacert=str(certificates.ca)),
        )
        self.assertEqual(reply, b"over TLS")
        self.assertIsInstance(
            factory.connections[0].transport.transport, FlushingServer
        )

    async def test_start_tls_in_a_read(self) -> None:
        """
        A protocol that answers in plain text and then calls ``startTLS``
        in the same read (STARTTLS): the answer leaves in the clear, and
        every later write goes through TLS.
        """
        certificates = make_certificates(pathlib.Path(self.mktemp()))
        server_options = PrivateCertificate.loadPEM(
            certificates.server.read_text() + certificates.server_key.read_text()
        ).options()
        trust = Certificate.loadPEM(certificates.ca.read_text())

        def on_read(server: Scripted, data: bytes) -> None:
            if data == b"STARTTLS\n":
                server.transport.write(b"OK\n")
                server.transport.startTLS(server_options)
            else:
                server.transport.write(b"got " + data)

        _, peer = await self.listen(on_read)
        peer.transport.write(b"STARTTLS\n")
        self.assertEqual(await peer.received_at_least(3), b"OK\n")
        peer.transport.startTLS(optionsForClientTLS("localhost", trust))
        peer.transport.write(b"secret")
        self.assertEqual(await peer.received_at_least(13), b"OK\ngot secret")

    async def test_peer_closes_or_resets(self) -> None:
        """
        The server's connection ends with ConnectionDone when the peer
        closes it (recv gives b""), and with ConnectionLost when the peer
        resets it (recv fails).
        """
        for reset, expected in ((False, ConnectionDone), (True, ConnectionLost)):
            factory, peer = await self.listen(
                lambda server, data: server.transport.write(data)
            )
            peer.transport.write(b"x")
            await peer.received_at_least(1)
            if reset:
                # A zero linger makes close() send a RST.
                peer.transport.getHandle().setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                peer.transport.abortConnection()
            else:
                peer.transport.loseConnection()
            server = factory.connections[0]
            await bounded(server.lost)
            server.reason.trap(expected)

    async def test_reply_to_a_full_socket_waits(self) -> None:
        """
        A reply written during a read whose send finds the socket buffer
        already full (EWOULDBLOCK) is kept and leaves once the peer reads.
        """
        filled: list[int] = []

        def on_read(server: Scripted, data: bytes) -> None:
            handle = server.transport.getHandle()
            chunk = bytes(65536)
            while True:
                try:
                    filled.append(handle.send(chunk))
                except BlockingIOError:
                    break
            server.transport.write(b"reply")

        _, peer = await self.listen(on_read)
        peer.transport.write(b"go")
        while not filled:
            await _turn()
        size = sum(filled)
        received = await peer.received_at_least(size + 5)
        self.assertEqual(bytes(received), bytes(size) + b"reply")

    async def test_failed_send_loses_the_connection(self) -> None:
        """
        A reply written during a read whose send fails (the socket is shut
        for writing: EPIPE) ends the connection with ConnectionLost, as
        Twisted's writer does, and nothing is logged.
        """
        read: defer.Deferred[Scripted] = defer.Deferred()

        def on_read(server: Scripted, data: bytes) -> None:
            server.transport.getHandle().shutdown(socket.SHUT_WR)
            server.transport.write(b"reply")
            read.callback(server)

        _, peer = await self.listen(on_read)
        peer.transport.write(b"go")
        server = await bounded(read)
        await bounded(server.lost)
        server.reason.trap(ConnectionLost)
        await bounded(peer.closed)
        self.assertEqual(bytes(peer.received), b"")

    async def test_reads_grow_for_bulk_and_shrink_back(self) -> None:
        """
        A stream that keeps the socket full is read in larger pieces, up to
        ``max_read``; a short read brings the read size back to
        ``bufferSize``. Every byte arrives, in order.
        """
        received: list[bytes] = []
        factory, peer = await self.listen(lambda server, data: received.append(data))
        payload = bytes(random.Random(7).getrandbits(8) for _ in range(1 << 16)) * 64
        peer.transport.write(payload)
        for _ in range(10_000):
            if sum(map(len, received)) >= len(payload):
                break
            await _turn()
        self.assertEqual(b"".join(received), payload)
        sizes = [len(chunk) for chunk in received]
        self.assertGreater(max(sizes), FlushingServer.bufferSize, sizes)
        self.assertLessEqual(max(sizes), FlushingServer.max_read, sizes)
        transport = factory.connections[0].transport
        peer.transport.write(b"small")
        for _ in range(1000):
            if received[-1].endswith(b"small"):
                break
            await _turn()
        self.assertEqual(transport._read_size, FlushingServer.bufferSize)

    def test_flushing_twice_is_once(self) -> None:
        once = flushing(reactor)
        self.assertIs(flushing(once), once)


class PromptTests(TestCase):
    timeout = 60

    async def connected(self) -> tuple[Peer, socket.socket]:
        """
        :return: a client connection made through :func:`prompt`, and the
            plain blocking socket it reached.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        endpoint = TCP4ClientEndpoint(
            prompt(reactor), "127.0.0.1", listener.getsockname()[1], timeout=10
        )
        client = await bounded(connectProtocol(endpoint, Peer()))
        self.addCleanup(self.close, client)
        listener.settimeout(10)
        accepted, _ = listener.accept()
        self.addCleanup(accepted.close)
        accepted.settimeout(10)
        return client, accepted

    async def close(self, client: Peer) -> None:
        if client.reason is None:
            client.transport.abortConnection()
            await bounded(client.closed)

    async def test_writes_leave_at_once(self) -> None:
        """
        Each write is on the wire when it returns: the peer reads it with no
        turn of the reactor in between.
        """
        client, accepted = await self.connected()
        self.assertIsInstance(client.transport, PromptClient)
        client.transport.write(b"ab")
        self.assertEqual(accepted.recv(100), b"ab")
        client.transport.writeSequence([b"c", b"d"])
        self.assertEqual(accepted.recv(100), b"cd")

    async def test_writes_after_a_full_socket_queue_behind(self) -> None:
        """
        A write the socket does not take whole is kept by Twisted's writer,
        and the writes after it wait behind it: all arrive, in order.
        """
        client, accepted = await self.connected()
        accepted.setblocking(False)
        written = bytearray()
        for size in (1, 3_000_000, 5, 70_000, 1):
            chunk = bytes([len(written) % 251]) * size
            written += chunk
            client.transport.write(chunk)
        self.assertTrue(client.transport.dataBuffer, "the socket took it all")
        received = bytearray()
        for _ in range(100_000):
            if len(received) >= len(written):
                break
            try:
                received += accepted.recv(1 << 20)
            except BlockingIOError:
                await _turn()
        self.assertEqual(bytes(received), bytes(written))

    async def test_tls_over_it(self) -> None:
        """
        A TLS client endpoint over it handshakes and carries data.
        """
        port, certificates, factory = await tls_echo_listener(self)
        trust = Certificate.loadPEM(certificates.ca.read_text())
        endpoint = wrapClientTLS(
            optionsForClientTLS("localhost", trust),
            TCP4ClientEndpoint(prompt(reactor), "127.0.0.1", port.getHost().port),
        )
        client = await bounded(connectProtocol(endpoint, Peer()))
        self.addCleanup(self.close, client)
        self.assertIsInstance(client.transport.transport, PromptClient)
        client.transport.write(b"over TLS")
        self.assertEqual(await client.received_at_least(8), b"over TLS")

    def test_only_real_reactors_and_once(self) -> None:
        clock = task.Clock()
        self.assertIs(prompt(clock), clock)
        once = prompt(reactor)
        self.assertIsNot(once, reactor)
        self.assertIs(prompt(once), once)


class _Flushed:
    """
    Stands for a connection whose read wrote a reply: notes its flush.
    """

    def __init__(self, name: str, flushed: list[str]) -> None:
        self.name = name
        self.flushed = flushed

    def _flush(self) -> None:
        self.flushed.append(self.name)


class TurnFlushTests(SynchronousTestCase):
    def test_busy_turns_flush_together_lone_reads_at_once(self) -> None:
        """
        Replies of one reactor turn's reads leave together at its end, in
        order; after a turn with a single one, the next ``quiet_reads``
        reads send at once (the caller flushes), then a turn is tried again.
        """
        clock = task.Clock()
        port = FlushingPort(0, protocol.Factory(), reactor=clock)
        flushed: list[str] = []
        a, b = _Flushed("a", flushed), _Flushed("b", flushed)
        self.assertTrue(port.flush_later(a))
        self.assertTrue(port.flush_later(b))
        self.assertEqual(flushed, [])
        clock.advance(0)
        self.assertEqual(flushed, ["a", "b"])
        self.assertTrue(port.flush_later(a))
        clock.advance(0)
        self.assertEqual(flushed, ["a", "b", "a"])
        for _ in range(port.quiet_reads):
            self.assertFalse(port.flush_later(a))
        self.assertTrue(port.flush_later(a))
        clock.advance(0)
        self.assertEqual(flushed, ["a", "b", "a", "a"])


async def _turn() -> None:
    """
    Let the reactor turn once.
    """
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    await d
