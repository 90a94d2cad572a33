"""
One contract per service, run against the Twisted service and each compat twin,
over real loopback sockets, and with each client against each server.

Every real client also talks to every server over TLS (the ``...TLS...``
test cases): the server shows a certificate of a CA made for the test run,
and the client trusts that CA alone and checks the name ``localhost``.

A new server joins by one line in ``ECHO_SERVERS`` or ``GREETING_SERVERS``; a
new client by one line in ``CLIENTS``.
"""

from __future__ import annotations

import random
import ssl
from collections.abc import Awaitable, Callable
from functools import partial

from twisted.internet import defer
from twisted.internet.threads import deferToThread

from netlab import certs, tcp
from netlab.compat import socket_client
from netlab.services import echo, greeting
from tests import user_tcp
from tests.support import (
    WAIT,
    Peer,
    Running,
    TwinServer,
    TwistedServer,
    abort,
    bounded,
    connect,
    python,
    raise_fd_limit,
    register,
    run,
)

ECHO_SERVERS = {
    "Twisted": TwistedServer(echo.EchoFactory),
    # A user's echo on the public API: what netlab promises any protocol.
    "UserProtocol": TwistedServer(partial(tcp.TCPFactory, user_tcp.Mirror)),
    "Selectors": TwinServer("netlab.compat.selectors_echo"),
    "Asyncio": TwinServer("netlab.compat.asyncio_echo"),
    "Threads": TwinServer("netlab.compat.threads_echo"),
    "Processes": TwinServer("netlab.compat.processes_echo"),
}
GREETING_SERVERS = {
    "Twisted": TwistedServer(greeting.GreetingFactory),
    "Socket": TwinServer("netlab.compat.socket_server"),
}


# A client: (command, server, message) -> the reply; command is "echo" or
# "greet". Over TLS when the server is (server.cacert is its CA).
Client = Callable[[str, Running, bytes], Awaitable[bytes]]


def _endpoint(server: Running) -> str:
    scheme = "tls" if server.tls else "tcp"
    return f"{scheme}:{server.hostname}:{server.port}"


def _cacert(server: Running) -> list[str]:
    return ["--cacert", server.cacert] if server.cacert else []


async def twisted_client(command: str, server: Running, message: bytes) -> bytes:
    send = echo.echo if command == "echo" else greeting.greet
    return await send(_endpoint(server), message, timeout=WAIT, tls=server.client_tls())


async def netlab_cli(command: str, server: Running, message: bytes) -> bytes:
    args = python("-m", "netlab", command, *_cacert(server), _endpoint(server), "-")
    return _output_of(await run(args, stdin=message))


async def compat_client(command: str, server: Running, message: bytes) -> bytes:
    context = None
    if server.cacert:
        context = ssl.create_default_context(cafile=server.cacert)
    return await deferToThread(
        socket_client.exchange, server.hostname, server.port, message, WAIT, context
    )


async def compat_cli(command: str, server: Running, message: bytes) -> bytes:
    args = python(
        "-m",
        "netlab.compat.socket_client",
        "--host",
        server.hostname,
        "--port",
        str(server.port),
        *_cacert(server),
        "-",
    )
    return _output_of(await run(args, stdin=message))


def _output_of(result) -> bytes:
    if result.status != 0 or result.err:
        raise AssertionError(f"client failed: {result}")
    return result.out


CLIENTS: dict[str, Client] = {
    "twisted": twisted_client,
    "netlab_cli": netlab_cli,
    "compat": compat_client,
    "compat_cli": compat_cli,
}


def payload(size: int, seed: int = 0) -> bytes:
    """
    :return: ``size`` reproducible bytes covering every byte value.
    """
    return random.Random(seed).randbytes(size)


class _Contract:
    """
    Starts ``server`` before each test and stops it after; hostile-input cases
    that every server must survive.

    A mixin: :func:`tests.support.register` makes one ``TestCase`` per server.
    """

    timeout = 120
    server: TwistedServer | TwinServer
    tls: certs.Certificates | None = None
    idle_timeout = 30.0

    async def setUp(self) -> None:
        await self.start_another(idle_timeout=self.idle_timeout)

    async def connect(self) -> Peer:
        peer = await connect(self.host, self.port)
        self.addCleanup(abort, peer)
        return peer

    async def assert_serves_normally(self) -> None:
        raise NotImplementedError

    async def test_garbage_then_normal(self) -> None:
        """
        A client that sends random bytes and vanishes does not hurt the next.
        """
        peer = await self.connect()
        peer.transport.write(payload(70_000, seed=1))
        peer.transport.abortConnection()
        await self.assert_serves_normally()

    async def test_reset_mid_message_then_normal(self) -> None:
        """
        A connection reset halfway through a message does not hurt the next.
        """
        peer = await self.connect()
        peer.transport.write(payload(1024 * 1024, seed=2))
        await peer.received_at_least(1)
        peer.transport.abortConnection()
        await self.assert_serves_normally()

    async def test_thousand_connects_then_normal(self) -> None:
        """
        1,000 simultaneous connects, each dropped at once, leave the server serving.
        """
        raise_fd_limit(4096)

        async def connect_and_drop() -> None:
            peer = await connect(self.host, self.port)
            peer.transport.abortConnection()

        results = await defer.DeferredList(
            [defer.ensureDeferred(connect_and_drop()) for _ in range(1000)],
            consumeErrors=True,
        )
        self.assertGreater(sum(ok for ok, _ in results), 900)
        await self.assert_serves_normally()

    async def test_idle_connection_dropped(self) -> None:
        """
        A client that says nothing is disconnected after the idle timeout.
        """
        await self.start_another(idle_timeout=0.5)
        peer = await self.connect()
        await bounded(peer.closed, 10)
        self.assertEqual(peer.received, b"")

    async def start_another(self, idle_timeout: float) -> None:
        running = await self.server.start(idle_timeout=idle_timeout)
        self.running = running
        self.host, self.port = running.host, running.port
        self.addCleanup(running.stop)


class EchoContract(_Contract):
    """
    Every byte comes back, in order, until the client closes; half-close is
    honoured.
    """

    async def assert_serves_normally(self) -> None:
        message = payload(10_000, seed=3)
        peer = await self.connect()
        self.assertEqual(await peer.reply_to(message), message)

    async def test_empty(self) -> None:
        peer = await self.connect()
        self.assertEqual(await peer.reply_to(b""), b"")

    async def test_binary_payloads(self) -> None:
        """
        Payloads from 1 byte to several MiB come back whole, even when the
        client shuts down writing before reading anything back.
        """
        for size in (1, 1000, 65_537, 4 * 1024 * 1024):
            message = payload(size, seed=size)
            peer = await self.connect()
            self.assertEqual(await peer.reply_to(message), message, size)

    async def test_interleaved_small_messages(self) -> None:
        """
        Each small message comes back before the next is sent.
        """
        peer = await self.connect()
        expected = b""
        for i in range(100):
            message = b"message %d\n" % (i,)
            expected += message
            peer.transport.write(message)
            self.assertEqual(await peer.received_at_least(len(expected)), expected)
        self.assertEqual(await peer.reply_to(b""), expected)

    async def test_concurrent_clients(self) -> None:
        """
        100 clients at once each get their own bytes back.
        """
        messages = [payload(20_000, seed=i) for i in range(100)]
        peers = [await self.connect() for _ in messages]
        replies = await defer.gatherResults(
            [
                defer.ensureDeferred(peer.reply_to(message))
                for peer, message in zip(peers, messages, strict=True)
            ]
        )
        self.assertEqual(replies, messages)


class GreetingContract(_Contract):
    """
    The first message is answered with exactly ``Hello from server!``, then
    the server closes.
    """

    async def assert_serves_normally(self) -> None:
        peer = await self.connect()
        self.assertEqual(await peer.reply_to(b"Hello from client!"), greeting.GREETING)

    async def test_greeting_without_half_close(self) -> None:
        """
        The server closes after its answer even if the client keeps its side open.
        """
        peer = await self.connect()
        peer.transport.write(b"Hello from client!")
        await bounded(peer.closed)
        self.assertEqual(peer.received, greeting.GREETING)

    async def test_silent_client(self) -> None:
        """
        A client that shuts down writing without a word is greeted too.
        """
        peer = await self.connect()
        self.assertEqual(await peer.reply_to(b""), greeting.GREETING)

    async def test_full_size_message(self) -> None:
        peer = await self.connect()
        message = payload(greeting.GREETING_READ_SIZE, seed=4)
        self.assertEqual(await peer.reply_to(message), greeting.GREETING)

    async def test_concurrent_clients(self) -> None:
        peers = [await self.connect() for _ in range(50)]
        replies = await defer.gatherResults(
            [defer.ensureDeferred(peer.reply_to(b"hi")) for peer in peers]
        )
        self.assertEqual(replies, [greeting.GREETING] * 50)


class TLSContract:
    """
    Over TLS: each real client (see ``_client_tests``) against the server
    listening with the test certificates; hostile cases of the TLS layer.

    A mixin: :func:`tests.support.register` makes one ``TestCase`` per
    server, and sets ``tls``.
    """

    timeout = 120
    server: TwistedServer | TwinServer
    tls: certs.Certificates
    command: str

    async def setUp(self) -> None:
        await self.start(idle_timeout=30.0)

    async def start(self, idle_timeout: float) -> None:
        self.running = await self.server.start(tls=self.tls, idle_timeout=idle_timeout)
        self.addCleanup(self.running.stop)

    async def connect(self) -> Peer:
        peer = await connect(self.running.host, self.running.port)
        self.addCleanup(abort, peer)
        return peer

    async def assert_serves_normally(self) -> None:
        await _client_test("twisted", twisted_client, self.command)(self)

    async def test_plain_client_then_normal(self) -> None:
        """
        A client that speaks no TLS is turned away, and does not hurt the next.
        """
        peer = await self.connect()
        peer.transport.write(b"Hello from client!\r\n" * 100)
        await bounded(peer.closed)
        await self.assert_serves_normally()

    async def test_garbage_handshake_then_normal(self) -> None:
        """
        A TLS record header followed by random bytes does not hurt the next.
        """
        peer = await self.connect()
        peer.transport.write(b"\x16\x03\x01\x02\x00" + payload(512, seed=6))
        await bounded(peer.closed)
        await self.assert_serves_normally()

    async def test_silent_client_dropped(self) -> None:
        """
        A client that connects and never starts its handshake is dropped.
        """
        # The next client's TLS handshake runs against the same idle
        # timeout: 2 s is many times what a loaded machine needs for it.
        await self.start(idle_timeout=2.0)
        peer = await self.connect()
        await bounded(peer.closed, 20)
        self.assertEqual(peer.received, b"")
        await self.assert_serves_normally()


class EchoTLSContract(TLSContract):
    command = "echo"


class GreetingTLSContract(TLSContract):
    command = "greet"


def _client_test(name: str, client: Client, command: str):
    async def test(self: _Contract | TLSContract) -> None:
        if command == "echo":
            for message in (b"Hello from client!", payload(256 * 1024, seed=5)):
                reply = await client(command, self.running, message)
                self.assertEqual(reply, message)
        else:
            reply = await client(command, self.running, b"Hello from client!")
            self.assertEqual(reply, greeting.GREETING)

    test.__name__ = f"test_client_{name}"
    test.__doc__ = f"The {name} client talks to this server."
    return test


def _client_tests(command: str) -> dict:
    return {
        f"test_client_{name}": _client_test(name, client, command)
        for name, client in CLIENTS.items()
    }


register(globals(), EchoContract, ECHO_SERVERS, _client_tests("echo"))
register(globals(), GreetingContract, GREETING_SERVERS, _client_tests("greet"))
register(globals(), EchoTLSContract, ECHO_SERVERS, _client_tests("echo"), tls=True)
register(
    globals(),
    GreetingTLSContract,
    GREETING_SERVERS,
    _client_tests("greet"),
    tls=True,
)
