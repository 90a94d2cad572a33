"""
The WebSocket handler API (:mod:`netlab.websocket`): users' own services,
as a :class:`~netlab.websocket.Handler` subclass or an ``async def
handler(connection)``, served by :class:`~netlab.websocket.WebSocketFactory`
over loopback (and in memory for the fast path): open, message, close,
send, ``close(code, reason)``, the peer, the token's subject, handler
failures (1011), the bounded outgoing queue and its overflow policies,
the bounded incoming side, drain, and mounting in a site.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import auth, http, metrics, websocket
from netlab.limits import Limits
from netlab.services import hello, wsecho
from netlab.testing import serve
from netlab.websocket import (
    MAX_INCOMING,
    Handler,
    ServerConnection,
    WebSocketFactory,
    WebSocketMount,
    broadcast,
)
from tests import ws_user_echo
from tests.hostile import test_websocket as hostile
from tests.support import WAIT, bounded
from tests.test_protect import AUDIENCE, secret_file
from tests.test_ws_conformance import BINARY, KEY, TEXT, frame, parse_frame

LIMITS = Limits(max_message=1024 * 1024, handshake_timeout=10, ping_interval=30)


async def wait_for(condition: Any, what: str, seconds: float = WAIT) -> None:
    """
    Poll ``condition()`` until it is true, for at most ``seconds``.
    """
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await task.deferLater(reactor, 0.01)
    raise AssertionError(f"timed out waiting until {what}")


def random_payloads(size: int) -> list[bytes]:
    """
    :return: random payloads of ``size`` bytes, more of them than the
        client's permessage-deflate window holds: sent in turn, they do not
        compress (one sent again and again shrinks to a back-reference).
    """
    return [os.urandom(size) for _ in range(max(4, 2 * 32768 // size + 1))]


def server_buffered(protocol: websocket.WebSocketProtocol) -> int:
    """
    :return: the bytes the server holds for a client: in its TCP transport's
        buffers and in the WebSocket's outgoing queue.
    """
    transport = protocol.transport
    while not hasattr(transport, "dataBuffer"):
        transport = transport.transport
    held = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    return held + protocol._queued


class Served:
    """
    A handler served on loopback for one test, and clients for it.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case

    async def start(
        self, handler: Any, certificates: bool = False, **arguments: Any
    ) -> Served:
        """
        Serve ``handler`` (over TLS with ``certificates``).
        """
        arguments.setdefault("limits", LIMITS)
        self.factory = WebSocketFactory(handler, **arguments)
        self.served = await serve(self.case, self.factory, certificates=certificates)
        return self

    async def connect(self, path: str = "/", **arguments: Any) -> websocket.Connection:
        connection = await websocket.connect(
            self.served.url(path, scheme="ws"),
            timeout=WAIT,
            tls=self.served.client_tls,
            **arguments,
        )
        self.case.addCleanup(self.abort, connection)
        return connection

    @staticmethod
    def abort(connection: websocket.Connection) -> None:
        transport = connection._protocol.transport
        if transport is not None and transport.connected:
            transport.abortConnection()

    @property
    def protocol(self) -> websocket.WebSocketProtocol:
        [protocol] = self.factory.connections
        return protocol


async def receive(connection: websocket.Connection) -> str | bytes:
    return await bounded(connection.receive())


class ClassHandlerTests(TestCase):
    timeout = 120

    async def test_open_message_state_close(self) -> None:
        closes: list[tuple[Any, ...]] = []

        class Greeter(Handler):
            def on_open(self) -> None:
                self.seen = 0
                self.send(f"hello {self.peer} at {self.path}")

            def on_message(self, message: str | bytes) -> None:
                self.seen += 1
                if message == "bye":
                    self.close(4000, "see you")
                else:
                    self.send(message if isinstance(message, bytes) else str(self.seen))

            async def on_close(self, code: int | None, reason: str | None) -> None:
                # async def works too; the peer is still known.
                closes.append((code, reason, self.seen, self.peer))

        served = await Served(self).start(Greeter)
        connection = await served.connect("/room/1?x=1")
        client = connection._protocol.transport.getHost()
        self.assertEqual(
            await receive(connection), f"hello 127.0.0.1:{client.port} at /room/1"
        )
        connection.send("a")
        self.assertEqual(await receive(connection), "1")
        connection.send(b"\x00\xff")
        self.assertEqual(await receive(connection), b"\x00\xff")
        connection.send("bye")
        self.assertEqual(await bounded(connection.closed()), (4000, "see you"))
        await bounded(served.factory.drained())
        self.assertEqual(closes, [(4000, "see you", 3, f"127.0.0.1:{client.port}")])

    async def test_state_is_per_connection(self) -> None:
        served = await Served(self).start(ws_user_echo.EchoHandler)
        first, second = await served.connect(), await served.connect()
        for _ in range(3):
            first.send("x")
            await receive(first)
        first.send("count")
        second.send("count")
        self.assertEqual(await receive(first), "3")
        self.assertEqual(await receive(second), "0")

    async def test_subject_from_the_token(self) -> None:
        secret = secret_file(self)
        checker = auth.JWTChecker(auth.secret_from_file(secret), audience=AUDIENCE)

        class Who(Handler):
            def on_open(self) -> None:
                self.send(f"{self.subject} {self.headers.get('x-room')}")

        served = await Served(self).start(
            Who, protection=auth.Protection(checker, ("/",))
        )
        token = auth.mint(secret, "alice", audience=AUDIENCE)
        connection = await served.connect(
            headers={"Authorization": f"Bearer {token}", "X-Room": "7"}
        )
        self.assertEqual(await receive(connection), "alice 7")
        with self.assertRaises(websocket.HandshakeRefused):
            await served.connect()

    async def test_no_subject_without_protection(self) -> None:
        class Who(Handler):
            def on_open(self) -> None:
                self.send(repr(self.subject))

        served = await Served(self).start(Who)
        self.assertEqual(await receive(await served.connect()), "None")

    async def test_exception_closes_with_1011(self) -> None:
        class Broken(Handler):
            def on_message(self, message: str | bytes) -> None:
                raise ValueError("a bug")

        class BrokenLater(Handler):
            async def on_message(self, message: str | bytes) -> None:
                await task.deferLater(reactor, 0)
                raise ValueError("a later bug")

        for handler in (Broken, BrokenLater):
            served = await Served(self).start(handler)
            connection = await served.connect()
            connection.send("anything")
            code, _ = await bounded(connection.closed())
            self.assertEqual(code, 1011)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)

    async def test_exception_on_open_closes_with_1011(self) -> None:
        class Broken(Handler):
            def on_open(self) -> None:
                raise KeyError("a bug")

        served = await Served(self).start(Broken)
        connection = await served.connect()
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1011)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    async def test_drain_closes_with_1001(self) -> None:
        closes: list[int | None] = []

        class Note(Handler):
            def on_close(self, code: int | None, reason: str | None) -> None:
                closes.append(code)

        served = await Served(self).start(Note)
        connection = await served.connect()
        served.factory.drain()
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1001)
        await bounded(served.factory.drained())
        self.assertEqual(closes, [1001])

    async def test_mounted_in_a_site(self) -> None:
        class Where(ws_user_echo.EchoHandler):
            def on_open(self) -> None:
                super().on_open()
                self.send(f"{self.path} {self.peer}")

        site = http.HTTPSite(hello.Root(), limits=LIMITS)
        factory = WebSocketFactory(Where, limits=LIMITS, tracker=site)
        site.resource.putChild(b"chat", WebSocketMount(factory))
        served = await serve(self, site)
        connection = await websocket.connect(served.url("/chat", "ws"), timeout=WAIT)
        client = connection._protocol.transport.getHost()
        self.assertEqual(await receive(connection), f"/chat 127.0.0.1:{client.port}")
        connection.send("mounted")
        self.assertEqual(await receive(connection), "Echo: mounted")
        await bounded(connection.close())

    async def test_a_mount_given_a_handler_takes_the_sites_settings(self) -> None:
        """
        ``WebSocketMount(handler)`` gets its factory from the site serving
        it: the site's limits, allowed origins and protection, and the site
        counts its connections (so ``--max-message``, ``--allowed-origin``
        and ``--protect`` reach a user's tree under ``--resource``).
        """
        from twisted.web.resource import Resource

        secret = secret_file(self)
        checker = auth.JWTChecker(auth.secret_from_file(secret), audience=AUDIENCE)
        root = Resource()
        mount = WebSocketMount(ws_user_echo.EchoHandler)
        root.putChild(b"open", mount)

        class Who(Handler):
            def on_open(self) -> None:
                self.send(f"you are {self.subject}")

        root.putChild(b"closed", WebSocketMount(Who))
        site = http.HTTPSite(
            root,
            limits=Limits(max_message=100),
            allowed_origins=["http://ok.example"],
            protection=auth.Protection(checker, ("/closed",)),
        )
        served = await serve(self, site)
        connection = await websocket.connect(
            served.url("/open", "ws"), origin="http://ok.example", timeout=WAIT
        )
        connection.send("small")
        self.assertEqual(await receive(connection), "Echo: small")
        self.assertEqual(len(site.connections), 1)
        self.assertIsInstance(next(iter(site.connections)), mount.factory.protocol)
        connection.send("x" * 101)
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1009)
        with self.assertRaises(websocket.HandshakeRefused) as refused:
            await websocket.connect(
                served.url("/open", "ws"), origin="http://evil.example", timeout=WAIT
            )
        self.assertIn("403", str(refused.exception))
        with self.assertRaises(websocket.HandshakeRefused) as refused:
            await websocket.connect(served.url("/closed", "ws"), timeout=WAIT)
        self.assertIn("401", str(refused.exception))
        # As a browser sends it: not a header, which the site's own HTTP
        # guard would take, but in the handshake, which the mount checks.
        token = auth.mint(secret, "carol", audience=AUDIENCE)
        connection = await websocket.connect(
            served.url("/closed", "ws") + f"?access_token={token}", timeout=WAIT
        )
        self.assertEqual(await receive(connection), "you are carol")
        await bounded(connection.close())

    def test_a_mount_refuses_what_is_not_a_handler(self) -> None:
        error = self.assertRaises(TypeError, WebSocketMount, object())
        self.assertIn("a WebSocket handler is", str(error))


class CoroutineHandlerTests(TestCase):
    timeout = 120

    async def test_the_lessons_shape(self) -> None:
        served = await Served(self).start(ws_user_echo.handler)
        connection = await served.connect()
        for message, reply in (("hi", "Echo: hi"), (b"\x01", b"\x01"), ("", "Echo: ")):
            connection.send(message)
            self.assertEqual(await receive(connection), reply)
        self.assertEqual(await bounded(connection.close()), (1000, None))

    async def test_recv_peer_subject_and_close(self) -> None:
        seen: list[Any] = []

        async def handler(connection: ServerConnection) -> None:
            seen.append((connection.peer, connection.subject, connection.path))
            first = await connection.recv()
            await connection.send(f"got {first}")
            seen.append(await connection.close(4001, "done"))
            seen.append(connection.closed_with)

        served = await Served(self).start(handler)
        connection = await served.connect("/x")
        client = connection._protocol.transport.getHost()
        connection.send("one")
        self.assertEqual(await receive(connection), "got one")
        self.assertEqual(await bounded(connection.closed()), (4001, "done"))
        await bounded(served.factory.drained())
        self.assertEqual(
            seen,
            [
                (f"127.0.0.1:{client.port}", None, "/x"),
                (4001, "done"),
                (4001, "done"),
            ],
        )

    async def test_returning_closes_with_1000(self) -> None:
        async def handler(connection: ServerConnection) -> None:
            await connection.send("only this")

        served = await Served(self).start(handler)
        connection = await served.connect()
        self.assertEqual(await receive(connection), "only this")
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1000)

    async def test_raising_closes_with_1011_and_logs(self) -> None:
        async def handler(connection: ServerConnection) -> None:
            await connection.recv()
            raise ZeroDivisionError("a bug")

        served = await Served(self).start(handler)
        connection = await served.connect()
        connection.send("go")
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1011)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    async def test_iteration_ends_when_the_client_closes(self) -> None:
        ended: defer.Deferred[Any] = defer.Deferred()

        async def handler(connection: ServerConnection) -> None:
            received = [message async for message in connection]
            ended.callback((received, connection.closed_with))
            with self.assertRaises(websocket.ConnectionClosed):
                await connection.send("too late")

        served = await Served(self).start(handler)
        connection = await served.connect()
        connection.send("a")
        connection.send("b")
        await bounded(connection.close(4002, "leaving"))
        self.assertEqual(await bounded(ended), (["a", "b"], (4002, "leaving")))

    async def test_drain_ends_the_iteration(self) -> None:
        ended: defer.Deferred[Any] = defer.Deferred()

        async def handler(connection: ServerConnection) -> None:
            async for message in connection:
                await connection.send(message)
            ended.callback(connection.closed_with)

        served = await Served(self).start(handler)
        connection = await served.connect()
        connection.send("before")
        self.assertEqual(await receive(connection), "before")
        served.factory.drain()
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1001)
        self.assertEqual(await bounded(ended), (1001, "server going away"))

    async def test_metrics(self) -> None:
        """
        A user's handler is counted as the echo is: messages in and out,
        and their bytes, under the factory's service name.
        """
        served = await Served(self).start(ws_user_echo.handler)
        served.factory.service_name = "chat"
        names = (
            (metrics.WEBSOCKET_MESSAGES, ("in",)),
            (metrics.WEBSOCKET_MESSAGES, ("out",)),
            (metrics.BYTES_RECEIVED, ("chat",)),
            (metrics.BYTES_SENT, ("chat",)),
        )
        before = [family.values[labels] for family, labels in names]
        connection = await served.connect()
        for message in ("one", b"two!"):
            connection.send(message)
            await receive(connection)
        after = [family.values[labels] for family, labels in names]
        deltas = [a - b for a, b in zip(after, before, strict=True)]
        self.assertEqual(deltas, [2, 2, 7, 13])

    async def test_unread_messages_stop_reading(self) -> None:
        """
        A handler that does not take its messages makes the server stop
        reading from the client once :data:`MAX_INCOMING` wait; none is lost.
        """
        gate: defer.Deferred[None] = defer.Deferred()

        async def handler(connection: ServerConnection) -> None:
            await gate
            async for message in connection:
                await connection.send(message)

        served = await Served(self).start(handler)
        connection = await served.connect()
        count = 100
        for index in range(count):
            connection.send(f"m{index}")
            await task.deferLater(reactor, 0.005)
        await wait_for(lambda: served.protocol.reading_paused, "reading stopped")
        waiting = len(served.protocol.session._incoming)
        self.assertLessEqual(waiting, MAX_INCOMING + 2)
        gate.callback(None)
        for index in range(count):
            self.assertEqual(await receive(connection), f"m{index}")
        self.assertFalse(served.protocol.reading_paused)


class QueueTests(TestCase):
    """
    A client that stops reading while the server sends: what the server
    holds for it stays bounded, and the policy applies.
    """

    timeout = 180
    size = 16 * 1024
    max_queue = 256 * 1024
    # The transport's buffer pauses the protocol past 64 KiB, after the
    # write that crossed it.
    bound = max_queue + 64 * 1024 + 2 * (size + 100)

    async def flood(
        self, served: Served, targets: list[Any], total: int
    ) -> tuple[int, int]:
        """
        Broadcast ``total`` numbered messages to ``targets`` (a few per
        reactor turn) while the connection stays open.

        :return: how many were sent, and the most the server held.
        """
        protocol = served.protocol
        payloads = random_payloads(self.size)
        most = 0
        for index in range(total):
            if protocol.state != protocol.STATE_OPEN:
                return index, most
            payload = payloads[index % len(payloads)]
            broadcast(targets, struct.pack("!I", index) + payload)
            most = max(most, server_buffered(protocol))
            if index % 4 == 3:
                await task.deferLater(reactor, 0)
        return total, most

    @staticmethod
    def pause(connection: websocket.Connection) -> None:
        connection._protocol.transport.pauseProducing()

    @staticmethod
    def resume(connection: websocket.Connection) -> None:
        connection._protocol.transport.resumeProducing()

    async def test_drop_policy(self) -> None:
        class Room(Handler):
            members: list[Handler] = []
            max_queue = self.max_queue
            overflow = "drop"

            def on_open(self) -> None:
                self.members.append(self)

        served = await Served(self).start(Room)
        connection = await served.connect()
        self.pause(connection)
        total = 2000  # 32 MiB: more than the sockets' buffers hold
        before = dict(metrics.WEBSOCKET_OVERFLOWS.values)
        sent, most = await self.flood(served, Room.members, total)
        self.assertEqual(sent, total)
        self.assertLessEqual(most, self.bound)
        [room] = Room.members
        self.assertGreater(room.dropped, 0)
        key = ("ws", "drop")
        counted = metrics.WEBSOCKET_OVERFLOWS.values[key] - before.get(key, 0)
        self.assertEqual(counted, room.dropped)
        self.resume(connection)
        received = []
        for _ in range(total - room.dropped):
            message = await receive(connection)
            received.append(struct.unpack("!I", message[:4])[0])
        self.assertEqual(received, sorted(set(received)))
        self.assertEqual(len(received) + room.dropped, total)
        # Still open, and answering.
        room.send("still here")
        self.assertEqual(await receive(connection), "still here")

    async def test_close_policy(self) -> None:
        class Room(Handler):
            members: list[Handler] = []
            max_queue = self.max_queue

            def on_open(self) -> None:
                self.members.append(self)

        served = await Served(self).start(Room)
        connection = await served.connect()
        self.pause(connection)
        before = dict(metrics.WEBSOCKET_OVERFLOWS.values)
        sent, most = await self.flood(served, Room.members, 4000)
        self.assertLess(sent, 4000, "the queue never overflowed")
        self.assertLessEqual(most, self.bound)
        self.resume(connection)
        code, reason = await bounded(connection.closed())
        self.assertEqual((code, reason), (1008, "outgoing queue full"))
        key = ("ws", "close")
        counted = metrics.WEBSOCKET_OVERFLOWS.values[key] - before.get(key, 0)
        self.assertEqual(counted, 1)

    async def test_close_policy_over_tls(self) -> None:
        class Room(Handler):
            members: list[Handler] = []
            max_queue = self.max_queue

            def on_open(self) -> None:
                self.members.append(self)

        served = await Served(self).start(Room, certificates=True)
        connection = await served.connect()
        self.pause(connection)
        sent, most = await self.flood(served, Room.members, 4000)
        self.assertLess(sent, 4000, "the queue never overflowed")
        # TLS adds its records' overhead, and holds up to 64 KB of small
        # writes before it encrypts them.
        self.assertLessEqual(most, self.bound + 2 * 64 * 1024)
        self.resume(connection)
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1008)

    async def test_close_policy_1013_for_a_coroutine_handler(self) -> None:
        connections: list[ServerConnection] = []

        async def handler(connection: ServerConnection) -> None:
            connections.append(connection)
            await connection.wait_closed()

        served = await Served(self).start(
            handler, max_queue=self.max_queue, overflow_code=1013
        )
        connection = await served.connect()
        self.pause(connection)
        sent, most = await self.flood(served, connections, 4000)
        self.assertLess(sent, 4000, "the queue never overflowed")
        self.assertLessEqual(most, self.bound)
        self.resume(connection)
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1013)

    async def test_awaited_sends_wait(self) -> None:
        """
        ``await connection.send()`` waits while the queue is full: the
        server holds a bounded amount, and nothing is lost.
        """
        total = 1000
        payloads = random_payloads(self.size)

        async def handler(connection: ServerConnection) -> None:
            await connection.recv()
            for index in range(total):
                payload = payloads[index % len(payloads)]
                await connection.send(struct.pack("!I", index) + payload)
            await connection.wait_closed()

        served = await Served(self).start(handler, max_queue=self.max_queue)
        connection = await served.connect()
        self.pause(connection)
        connection.send("go")
        protocol = served.protocol
        await wait_for(lambda: protocol._waiting_send is not None, "a send waited")
        most = 0
        for _ in range(20):
            most = max(most, server_buffered(protocol))
            await task.deferLater(reactor, 0.01)
        self.assertLessEqual(most, self.bound)
        self.resume(connection)
        for index in range(total):
            message = await receive(connection)
            self.assertEqual(struct.unpack("!I", message[:4])[0], index)
        self.assertEqual(protocol.dropped, 0)

    async def test_a_second_waiting_send_overflows(self) -> None:
        """
        Sends not awaited: once one waits, the next overflows the queue.
        """
        payloads = random_payloads(self.size)

        async def handler(connection: ServerConnection) -> None:
            await connection.recv()
            index = 0
            while True:
                index += 1
                sending = connection.send(payloads[index % len(payloads)])
                sending.addErrback(lambda _: None)
                if not sending.called:
                    break
                await task.deferLater(reactor, 0)
            await connection.send(payloads[0])

        served = await Served(self).start(handler, max_queue=self.max_queue)
        connection = await served.connect()
        self.pause(connection)
        connection.send("go")
        await wait_for(
            lambda: served.protocol.state != served.protocol.STATE_OPEN, "closing"
        )
        self.resume(connection)
        code, _ = await bounded(connection.closed())
        self.assertEqual(code, 1008)

    async def test_nothing_passes_a_waiting_send(self) -> None:
        """
        While a send waits for room, another message (here a broadcast) is
        not queued ahead of it: the policy applies to it ("drop").
        """
        payloads = random_payloads(self.size)
        sent: list[int] = []
        connections: list[ServerConnection] = []

        async def handler(connection: ServerConnection) -> None:
            connections.append(connection)
            await connection.recv()
            index = 0
            while True:
                sending = connection.send(struct.pack("!I", index) + payloads[0])
                sent.append(index)
                index += 1
                if not sending.called:
                    break
                payloads.append(payloads.pop(0))
                await task.deferLater(reactor, 0)
            await sending
            await connection.send("last")
            await connection.wait_closed()

        served = await Served(self).start(
            handler, max_queue=self.max_queue, overflow="drop"
        )
        connection = await served.connect()
        self.pause(connection)
        connection.send("go")
        protocol = served.protocol
        await wait_for(lambda: protocol._waiting_send is not None, "a send waited")
        self.assertEqual(broadcast(connections, "cut in"), 0)
        self.assertEqual(protocol.dropped, 1)
        self.resume(connection)
        for index in sent:
            message = await receive(connection)
            self.assertEqual(struct.unpack("!I", message[:4])[0], index)
        self.assertEqual(await receive(connection), "last")


class FactoryTests(SynchronousTestCase):
    def test_wrong_kinds_of_handler(self) -> None:
        for wrong, words in (
            (42, "not 42 (int)"),
            (ws_user_echo.plain_function, "plain function plain_function"),
            (ws_user_echo.EchoHandler(), "pass the class"),
            (object, "the class object"),
        ):
            error = self.assertRaises(TypeError, WebSocketFactory, wrong)
            self.assertIn(words, str(error))
            self.assertNotIn("\n", str(error))

    def test_queue_settings(self) -> None:
        factory = WebSocketFactory(ws_user_echo.handler)
        self.assertEqual(
            (factory.max_queue, factory.overflow, factory.overflow_code),
            (websocket.DEFAULT_MAX_QUEUE, "close", 1008),
        )

        class Dropping(Handler):
            max_queue = 1000
            overflow = "drop"

        factory = WebSocketFactory(Dropping)
        self.assertEqual((factory.max_queue, factory.overflow), (1000, "drop"))
        factory = WebSocketFactory(Dropping, max_queue=5, overflow="close")
        self.assertEqual((factory.max_queue, factory.overflow), (5, "close"))
        for bad in ({"overflow": "block"}, {"overflow_code": 1000}, {"max_queue": 0}):
            self.assertRaises(ValueError, WebSocketFactory, Dropping, **bad)

    def test_echo_factory_keeps_its_signature(self) -> None:
        factory = wsecho.EchoFactory(LIMITS, ["http://a.test"], tracker=None)
        self.assertIsInstance(factory, WebSocketFactory)
        self.assertIs(factory.handler, wsecho.Echo)
        self.assertEqual(factory.allowed_origins, {"http://a.test"})


HANDSHAKE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8765\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: " + KEY + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def open_in_memory(
    case: SynchronousTestCase, handler: Any
) -> tuple[Any, StringTransport]:
    """
    :return: a server protocol serving ``handler`` on a ``StringTransport``,
        past its opening handshake (closed when ``case`` ends), and the
        transport.
    """
    factory = WebSocketFactory(handler, limits=LIMITS, reactor=MemoryReactorClock())
    address = IPv4Address("TCP", "127.0.0.1", 50000)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(IPv4Address("TCP", "127.0.0.1", 8765), address)
    protocol.makeConnection(transport)
    protocol.dataReceived(HANDSHAKE)
    case.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
    transport.clear()
    case.addCleanup(protocol.connectionLost)
    return protocol, transport


class CloseCodeTests(SynchronousTestCase):
    def test_codes_and_reasons(self) -> None:
        class Quiet(Handler):
            pass

        protocol, transport = open_in_memory(self, Quiet)
        handler = protocol.session
        for code in (999, 1004, 1005, 1006, 1015, 5000):
            self.assertRaises(ValueError, handler.close, code)
        self.assertRaises(ValueError, handler.close, 4000, "é" * 62)
        handler.close(4000, "é" * 61)
        (flags, opcode, payload), _ = parse_frame(transport.value())
        self.assertEqual(payload, struct.pack("!H", 4000) + "é".encode() * 61)
        for wrong in (5, None, ["x"]):
            self.assertRaises(TypeError, handler.send, wrong)
            self.assertRaises(TypeError, broadcast, [handler], wrong)
        handler.close(1000)  # already closing: nothing more
        self.assertFalse(handler.send("after"))
        self.assertEqual(len(transport.value()), 2 + 124)


class FastPathTests(SynchronousTestCase):
    """
    A user's handler gets the fast path: common frames never reach
    autobahn's parser, and its messages leave as one plain frame each.
    """

    def open(self, handler: Any) -> tuple[Any, StringTransport]:
        protocol, transport = open_in_memory(self, handler)
        self.assertTrue(protocol._fast_receive and protocol._fast_send)

        def refuse() -> bool:
            raise AssertionError("autobahn's parser was used")

        protocol.processData = refuse
        return protocol, transport

    def assert_answers(self, handler: Any) -> None:
        protocol, transport = self.open(handler)
        messages = ["a", "é" * 100, b"b" * 126, "c" * 65536, b""]
        protocol.dataReceived(
            b"".join(
                frame(TEXT, m.encode()) if isinstance(m, str) else frame(BINARY, m)
                for m in messages
            )
        )
        data, replies = transport.value(), []
        while data:
            (flags, opcode, payload), size = parse_frame(data)
            replies.append((flags, opcode, payload))
            data = data[size:]
        self.assertEqual(
            replies,
            [
                (0x80, TEXT, b"Echo: " + m.encode())
                if isinstance(m, str)
                else (0x80, BINARY, m)
                for m in messages
            ],
        )
        self.assertEqual(protocol.trafficStats.outgoingWebSocketMessages, len(messages))

    def test_class_handler(self) -> None:
        self.assert_answers(ws_user_echo.EchoHandler)

    def test_coroutine_handler(self) -> None:
        self.assert_answers(ws_user_echo.handler)


class UserHandlerHostileTests(hostile.Hostile, TestCase):
    """
    The hostile WebSocket suite against the echo written as a user's
    handler (``tests.ws_user_echo``): every bad handshake and frame gets the
    answer netlab's own echo gives.
    """

    path = "/"
    test_malformed_request_line_is_400 = (
        hostile.StandaloneTests.test_malformed_request_line_is_400
    )

    def factory(self) -> WebSocketFactory:
        return WebSocketFactory(ws_user_echo.handler, limits=hostile.LIMITS)
