"""
``netlab.testing``, used the way a user would: on a protocol of their own,
and on netlab's services.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import http
from netlab.services import echo, greeting, hello
from netlab.testing import MemoryPair, serve
from tests.support import WAIT, Peer, bounded, connect
from tests.test_wiretap import fields


class Upper(LineReceiver):
    """
    A user's protocol: answers one line in capitals, and closes.
    """

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())
        self.transport.loseConnection()


class ServeTests(TestCase):
    timeout = 60

    async def test_own_protocol(self) -> None:
        served = await serve(self, Factory.forProtocol(Upper))
        self.assertEqual(served.host, "127.0.0.1")
        reply = await greeting.greet(served.endpoint, b"shout\r\n", timeout=WAIT)
        self.assertEqual(reply, b"SHOUT\r\n")

    async def test_tls(self) -> None:
        served = await serve(self, http.HTTPSite(hello.Root()), certificates=True)
        self.assertTrue(served.url().startswith("https://localhost:"))
        response = await http.fetch(served.url(), tls=served.client_tls, timeout=WAIT)
        self.assertEqual((response.code, response.body), (200, hello.HELLO))

    async def test_stop_closes_what_is_open(self) -> None:
        served = await serve(self, echo.EchoFactory())
        peer = await connect(served.host, served.port)
        await served.stop()
        await bounded(peer.closed)
        self.assertIsNotNone(peer.reason)
        await served.stop()  # the clean-up calls it again: harmless

    async def test_wiretap(self) -> None:
        served = await serve(self, echo.EchoFactory(), wiretap=True)
        reply = await echo.echo(served.endpoint, b"recorded", timeout=WAIT)
        self.assertEqual(reply, b"recorded")  # half-close passes the wrappers
        await served.stop()
        data = await fields(served.capture, "tcp.len > 0", "tcp.payload")
        self.assertEqual(data, [[b"recorded".hex()]] * 2)


class MemoryPairTests(SynchronousTestCase):
    def test_greeting(self) -> None:
        factory = greeting.GreetingFactory()
        server = factory.buildProtocol(None)
        client = Peer()
        pair = MemoryPair(server, client)
        client.transport.write(b"hello")
        pair.flush()
        self.assertEqual(bytes(client.received), greeting.GREETING)
        self.assertTrue(pair.closed)
        self.assertTrue(client.closed.called)

    def test_echo_both_ways(self) -> None:
        server = echo.EchoFactory().buildProtocol(None)
        client = Peer()
        pair = MemoryPair(server, client)
        for chunk in (b"one", b"two"):
            client.transport.write(chunk)
            pair.flush()
        self.assertEqual(bytes(client.received), b"onetwo")
        pair.close()
        self.assertEqual(server.bytes_in, 6)
