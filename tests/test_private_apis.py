"""
The private attributes of Twisted and autobahn that netlab relies on, one
test each, so that a release which renames or removes one fails here, with
the netlab code that needs it named, rather than somewhere deep in a
protocol.
"""

from __future__ import annotations

import sys

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import python, run


class PrivateAttributesTests(SynchronousTestCase):
    def assert_has(self, owner: object, names: tuple[str, ...], user: str) -> None:
        missing = [name for name in names if not hasattr(owner, name)]
        self.assertEqual(
            missing,
            [],
            f"{getattr(owner, '__qualname__', owner)} no longer has {missing}, "
            f"which {user} relies on",
        )

    def test_twisted_tcp_transport(self) -> None:
        from twisted.internet import abstract, tcp
        from twisted.internet.testing import MemoryReactor

        # Set as a descriptor is made: read from a fresh one.
        self.assert_has(
            abstract.FileDescriptor(MemoryReactor()),
            ("_tempDataBuffer", "_tempDataLen", "_writeDisconnected"),
            "netlab.transport.FlushingServer (holding a read's writes)",
        )
        self.assert_has(
            tcp.Server,
            ("_maybePauseProducer",),
            "netlab.transport.FlushingServer (pausing its producer)",
        )
        self.assert_has(
            abstract, ("_dataMustBeBytes",), "netlab.transport.FlushingServer.write"
        )

    def test_twisted_web_channel(self) -> None:
        from twisted.web.http import HTTPChannel

        self.assert_has(
            HTTPChannel,
            ("_send100Continue", "_respondToBadRequestAndDisconnect"),
            "netlab.http.LimitedChannel",
        )
        self.assert_has(
            HTTPChannel(),
            ("_handlingRequest", "_transferDecoder"),
            "netlab.http.LimitedChannel",
        )
        self.assert_has(
            HTTPChannel,
            ("_savedTimeOut",),
            "netlab.http.LimitedChannel._request_from_head (the idle timer)",
        )

    def test_twisted_logger(self) -> None:
        from twisted.logger import globalLogBeginner, globalLogPublisher
        from twisted.logger._flatten import KeyFlattener

        self.assertTrue(callable(KeyFlattener), "netlab.workers._flatten")
        self.assert_has(
            globalLogBeginner,
            ("_temporaryObserver",),
            "netlab.http._unobserved (no access event while nothing observes)",
        )
        self.assert_has(globalLogPublisher, ("_observers",), "netlab.http._unobserved")

    def test_autobahn(self) -> None:
        from autobahn.twisted.websocket import WebSocketServerProtocol
        from autobahn.websocket.compress import PerMessageDeflate

        self.assert_has(
            WebSocketServerProtocol,
            ("_cancelAutoPingTimeoutCall",),
            "netlab.websocket's fast path",
        )
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from netlab.websocket import EchoFactory

        # Set per connection by autobahn: read from a connected one, its
        # timers on a clock of its own.
        factory = EchoFactory(reactor=Clock())
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        protocol.makeConnection(StringTransport())
        self.assert_has(
            protocol, ("_perMessageCompress",), "netlab.websocket (deflate)"
        )
        self.assertIsNone(
            getattr(protocol, "_listeners", "missing"),
            "netlab.websocket's fast path reads autobahn's _listeners",
        )
        deflate = PerMessageDeflate(True, False, False, 15, 15, 8)
        deflate.start_decompress_message()
        self.assert_has(
            deflate,
            ("_decompressor", "_decompress_message_size"),
            "netlab.websocket._StrictDeflate",
        )

    def test_autobahn_batched_timer(self) -> None:
        from autobahn.twisted.websocket import WebSocketServerFactory

        self.assert_has(
            WebSocketServerFactory(),
            ("_batched_timer",),
            "netlab.websocket.harden (timers that really cancel)",
        )


class UnobservedTests(TestCase):
    """
    netlab builds no access event while nothing observes the log: true in
    a fresh process before logging begins, false once it has.
    """

    async def test_in_a_fresh_process(self) -> None:
        script = (
            "import sys\n"
            "from twisted.logger import globalLogBeginner, globalLogPublisher\n"
            "from netlab.http import _unobserved\n"
            "before = _unobserved(globalLogPublisher)\n"
            "globalLogBeginner.beginLoggingTo(\n"
            "    [lambda e: None], redirectStandardIO=False\n"
            ")\n"
            "after = _unobserved(globalLogPublisher)\n"
            "print(before, after)\n"
        )
        result = await run(python("-c", script))
        self.assertEqual(result.status, 0, result)
        self.assertEqual(result.out.split(), [b"True", b"False"], sys.version)
