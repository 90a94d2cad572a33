"""
The private (and undocumented) parts of Twisted and autobahn that netlab
relies on, one test for each netlab module that reaches into them, so that a
release which renames or removes one fails here, in one line that names the
release, the attribute and the netlab code that needs it, rather than deep in
a protocol (or not at all, where netlab overrides a private method or reads
an attribute with a default).

CI runs this with the oldest versions setup.cfg allows and with the newest
(see .ci/run). Keep the lists in step with netlab/transport.py,
netlab/http.py, netlab/websocket.py, netlab/workers.py, netlab/logs.py,
netlab/tls.py, netlab/proxy.py and (txredisapi) netlab/pubsub.py.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.support import python, run


def _release(module: str) -> str:
    """
    :return: the installed distribution of ``module``, as "twisted 24.7.0".
    """
    from importlib.metadata import PackageNotFoundError, version

    top = module.split(".")[0]
    try:
        return f"{top} {version(top)}"
    except PackageNotFoundError:
        return top


class PrivateAPITestCase(SynchronousTestCase):
    def load(self, path: str, user: str) -> Any:
        """
        :param path: ``"package.module"`` or ``"package.module:name"``.
        :return: that module, or that name in it.
        """
        module_name, _, name = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            self.fail(
                f"{_release(module_name)}: cannot import {module_name} ({error}), "
                f"which {user} relies on"
            )
        if not name:
            return module
        if not hasattr(module, name):
            self.fail(
                f"{_release(module_name)}: {module_name} has no {name}, "
                f"which {user} relies on"
            )
        return getattr(module, name)

    def assert_has(self, owner: object, names: tuple[str, ...], user: str) -> None:
        """
        Fail, in one line, unless ``owner`` has every one of ``names``.
        """
        missing = [name for name in names if not hasattr(owner, name)]
        if missing:
            where = owner if inspect.isclass(owner) else type(owner)
            self.fail(
                f"{_release(where.__module__)}: "
                f"{where.__module__}.{where.__qualname__} has no "
                f"{', '.join(missing)}, which {user} relies on"
            )

    def assert_mentions(self, module: Any, names: tuple[str, ...], user: str) -> None:
        """
        Fail, in one line, unless the source of ``module`` names each of
        ``names``: for attributes netlab sets for the library to read, which
        a fresh object does not have yet.
        """
        source = inspect.getsource(module)
        missing = [name for name in names if name not in source]
        if missing:
            self.fail(
                f"{_release(module.__name__)}: {module.__name__} no longer uses "
                f"{', '.join(missing)}, which {user} sets for it"
            )


class TwistedTests(PrivateAPITestCase):
    def test_transport(self) -> None:
        """
        netlab.transport (FlushingServer, PromptClient, adopt): Twisted's
        TCP write buffer, its read loop inlined, an adopted listening
        socket, and a connector's transport.
        """
        user = "netlab.transport"
        abstract = self.load("twisted.internet.abstract", user)
        self.load("twisted.internet.abstract:_dataMustBeBytes", user)
        tcp = self.load("twisted.internet.tcp", user)
        self.load("twisted.internet.tcp:EWOULDBLOCK", user)
        self.load("twisted.internet.tcp:ENOBUFS", user)
        from twisted.internet.testing import MemoryReactor

        # Set as a descriptor is made: read from a fresh one.
        self.assert_has(
            abstract.FileDescriptor(MemoryReactor()),
            (
                "_tempDataBuffer",
                "_tempDataLen",
                "_writeDisconnected",
                "_maybePauseProducer",
                "dataBuffer",
                "offset",
                "producer",
                "streamingProducer",
                "producerPaused",
            ),
            user,
        )
        self.assert_has(
            tcp.Server,
            ("_aborting", "TLS", "SEND_LIMIT", "bufferSize", "writeSomeData"),
            user,
        )
        if tcp.Port.transport is not tcp.Server:
            self.fail(
                f"{_release('twisted')}: twisted.internet.tcp.Port no longer makes "
                "its connections from its transport attribute, which "
                "netlab.transport.FlushingPort sets"
            )
        # adopt() (for --workers) and prompt()'s connector.
        self.assert_has(tcp.Port, ("_fromListeningDescriptor",), user)
        self.assert_has(tcp.Connector, ("_makeTransport",), user)

    def test_tls(self) -> None:
        """
        netlab.tls: the context CertificateOptions makes, its client side,
        and the TLS protocol's handshake flag.
        """
        user = "netlab.tls (_HardenedOptions, the handshake deadline)"
        options = self.load("twisted.internet.ssl:CertificateOptions", user)
        self.assert_has(options, ("_makeContext", "clientConnectionForTLS"), user)
        if "skipCiphers" not in inspect.signature(options._makeContext).parameters:
            self.fail(
                f"{_release('twisted')}: CertificateOptions._makeContext takes no "
                f"skipCiphers, which {user} passes on"
            )
        tls = self.load("twisted.protocols.tls:TLSMemoryBIOProtocol", user)
        self.assert_has(tls, ("_handshakeDone",), user)

    def test_proxy_header(self) -> None:
        """
        netlab.proxy: Twisted's PROXY header parsers (its own wrapper reads
        the header only after the service's protocol is built), their
        signatures and their feed/parse results.
        """
        user = "netlab.proxy.ProxyHeaderProtocol"
        v1 = self.load("twisted.protocols.haproxy._v1parser:V1Parser", user)
        v2 = self.load("twisted.protocols.haproxy._v2parser:V2Parser", user)
        self.load("twisted.protocols.haproxy._exceptions:InvalidProxyHeader", user)
        self.assert_has(v1, ("PROXYSTR", "feed"), user)
        self.assert_has(v2, ("PREFIX", "feed"), user)
        info, rest = v1().feed(b"PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nx")
        self.assert_has(info, ("source", "destination"), user)
        if rest != b"x" or info.source.host != "192.0.2.1":
            self.fail(
                f"{_release('twisted')}: V1Parser.feed no longer returns "
                f"(info, remaining bytes), which {user} relies on"
            )

    def test_web_channel(self) -> None:
        """
        netlab.http.LimitedChannel: HTTPChannel's parser state, and the
        private methods it overrides (an override of a renamed one would
        silently never run).
        """
        user = "netlab.http.LimitedChannel"
        http = self.load("twisted.web.http", user)
        self.assert_has(
            http.HTTPChannel,
            ("_send100Continue", "_respondToBadRequestAndDisconnect"),
            f"{user} (it overrides them)",
        )
        self.assert_has(
            http.HTTPChannel,
            ("_savedTimeOut",),
            f"{user}._request_from_head (the idle timer)",
        )
        self.assert_has(
            http.HTTPChannel(),
            (
                "_handlingRequest",
                "_transferDecoder",
                "_buffer",
                "totalHeadersSize",
                "maxHeaders",
                "MAX_LENGTH",
                "line_mode",
                "persistent",
                "requests",
            ),
            user,
        )
        decoder_class = self.load("twisted.web.http:_ChunkedTransferDecoder", user)
        decoder = decoder_class(lambda data: None, lambda rest: None)
        decoder.dataReceived(b"5\r\nab")
        state = (getattr(decoder, "state", None), getattr(decoder, "length", None))
        if state != ("BODY", 3):
            self.fail(
                f"{_release('twisted')}: twisted.web.http._ChunkedTransferDecoder "
                f"in a chunk's body has (state, length) {state}, not ('BODY', 3), "
                f"which {user}._announced_chunk_too_large reads"
            )

    def test_logger(self) -> None:
        """
        netlab.http._unobserved (no access event while nothing observes).
        """
        user = "netlab.http._unobserved"
        logger = self.load("twisted.logger", user)
        self.assert_has(logger.globalLogBeginner, ("_temporaryObserver",), user)
        self.assert_has(logger.globalLogPublisher, ("_observers",), user)

    def test_workers_log_relay(self) -> None:
        """
        netlab.workers._flatten: a worker's events reach the supervisor
        formatted by their own format spec, through Twisted's flattening.
        """
        user = "netlab.workers._flatten (the workers' log relay)"
        flattener = self.load("twisted.logger._flatten:KeyFlattener", user)
        self.assert_has(flattener(), ("flatKey",), user)
        from twisted.logger import formatEvent

        from netlab.workers import _flatten

        event = {"log_format": "{x:.2f} {y!r}", "x": 1.234, "y": "a"}
        _flatten(event)
        event["x"] = "lost"  # as in the supervisor: only the flattened text
        text = formatEvent(event)
        if text != "1.23 'a'":
            self.fail(
                f"{_release('twisted')}: formatEvent no longer reads log_flattened "
                f"by KeyFlattener's keys (gave {text!r}), which {user} writes"
            )

    def test_twistd_logger(self) -> None:
        """
        netlab.logs.twistd: twistd's own observer, made by twistd's code.
        """
        user = "netlab.logs.twistd"
        maker = self.load("twisted.scripts._twistd_unix:UnixAppLogger", user)
        self.assert_has(maker, ("_getLogObserver",), user)


class AutobahnTests(PrivateAPITestCase):
    def opened(self) -> Any:
        """
        :return: autobahn's own server protocol (not netlab's, which could
            hide a missing attribute), open after a client's handshake over a
            string transport, with no timer anywhere.
        """
        from autobahn.twisted.websocket import (
            WebSocketServerFactory,
            WebSocketServerProtocol,
        )
        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        factory = WebSocketServerFactory(reactor=Clock())
        factory.protocol = WebSocketServerProtocol
        factory.setProtocolOptions(openHandshakeTimeout=0, autoPingInterval=0)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        if not transport.value().startswith(b"HTTP/1.1 101"):
            self.fail(
                f"{_release('autobahn')}: autobahn's server did not open on a "
                f"plain RFC 6455 handshake: {transport.value()[:80]!r}"
            )
        return protocol

    def test_fast_path(self) -> None:
        """
        netlab.websocket.WebSocketProtocol.dataReceived: the fast path reads
        and updates autobahn's frame parser state.
        """
        user = "netlab.websocket's fast path (WebSocketProtocol.dataReceived)"
        self.load("autobahn.twisted.websocket:WebSocketServerProtocol", user)
        protocol = self.opened()
        self.assert_has(
            protocol,
            (
                "_cancelAutoPingTimeoutCall",
                "_perMessageCompress",
                "data",
                "current_frame",
                "inside_message",
                "consumeData",
                "trafficStats",
                "autoPingTimeoutCall",
                "autoPingRestartOnAnyTraffic",
                "maskServerFrames",
                "applyMask",
                "websocket_version",
            ),
            user,
        )
        listeners = getattr(protocol, "_listeners", "missing")
        if listeners is not None:
            self.fail(
                f"{_release('autobahn')}: a fresh connection's _listeners is "
                f"{listeners!r}, not None, which {user} takes for 'no one listens "
                "for autobahn's message event'"
            )

    def test_failing_and_closing(self) -> None:
        """
        netlab.websocket.WebSocketProtocol: failing a message, closing, and
        the timers it cancels once the connection is lost.
        """
        from netlab.websocket import _AUTOBAHN_TIMERS

        user = "netlab.websocket.WebSocketProtocol (onFrameData, connectionLost)"
        protocol = self.opened()
        self.assert_has(protocol, ("failedByMe", "wasNotCleanReason"), user)
        # Set when needed (the timers by name, some only on a client).
        self.assert_mentions(
            self.load("autobahn.websocket.protocol", user),
            (
                *_AUTOBAHN_TIMERS,
                "_isMessageCompressed",
                "utf8validateIncomingCurrentMessage",
            ),
            user,
        )

    def test_deflate(self) -> None:
        """
        netlab.websocket._StrictDeflate: autobahn's inflater and its count.
        """
        user = "netlab.websocket._StrictDeflate"
        deflate_class = self.load("autobahn.websocket.compress:PerMessageDeflate", user)
        self.assert_has(deflate_class, ("decompress_message_data",), user)
        deflate = deflate_class(True, False, False, 15, 15, 8)
        deflate.start_decompress_message()
        self.assert_has(
            deflate,
            ("_decompressor", "_decompress_message_size", "max_message_size"),
            user,
        )

    def test_batched_timer(self) -> None:
        """
        netlab.websocket.harden replaces the factory's batched timer.
        """
        user = "netlab.websocket.harden (timers that really cancel)"
        factory_class = self.load(
            "autobahn.twisted.websocket:WebSocketServerFactory", user
        )
        self.assert_has(factory_class(), ("_batched_timer",), user)
        self.assert_mentions(
            self.load("autobahn.websocket.protocol", user), ("_batched_timer",), user
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


class TxRedisAPITests(PrivateAPITestCase):
    def test_pubsub(self) -> None:
        """
        netlab.pubsub builds txredisapi's protocols itself (not through
        its factories), on its hiredis parser, whose ``_reader`` it asks
        how much is held, and stands in for the factory that
        ``connectionMade`` calls when ``AUTH`` fails.
        """
        user = "netlab.pubsub"
        base = self.load("txredisapi:BaseRedisProtocol", user)
        parameters = inspect.signature(base.__init__).parameters
        for name in (
            "charset",
            "replyTimeout",
            "password",
            "dbid",
            "convertNumbers",
            "username",
        ):
            if name not in parameters:
                self.fail(
                    f"{_release('txredisapi')}: BaseRedisProtocol takes no "
                    f"{name}=, which {user} passes"
                )
        self.assert_has(base, ("whenConnected",), user)
        hiredis_protocol = self.load("txredisapi:HiredisProtocol", user)
        for name in ("RedisProtocol", "SubscriberProtocol"):
            if not issubclass(self.load(f"txredisapi:{name}", user), hiredis_protocol):
                self.fail(
                    f"{_release('txredisapi')}: {name} is not on HiredisProtocol "
                    f"with hiredis installed, which {user} relies on"
                )
        reader = getattr(hiredis_protocol(), "_reader", None)
        if not callable(getattr(reader, "len", None)):
            self.fail(
                f"{_release('txredisapi')}, {_release('hiredis')}: "
                f"HiredisProtocol()._reader.len() is gone, which {user} "
                "calls to bound what it buffers"
            )
        self.assert_has(
            self.load("txredisapi:SubscriberProtocol", user),
            ("messageReceived", "subscribe", "unsubscribe"),
            user,
        )
        self.assert_has(self.load("txredisapi:RedisProtocol", user), ("publish",), user)
        self.assert_mentions(
            self.load("txredisapi", user),
            ("factory.stopTrying()", "factory.connectionError(", "factory.isLazy"),
            user,
        )
