"""
The conformance suites hold netlab's servers to the contracts as the twistd
plugins serve them: on the endpoint the plugins listen on, with the flushing
transport (:mod:`netlab.transport`), not a stock Twisted port.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import TestCase

from netlab import tap
from netlab.services import echo
from netlab.testing import serve
from netlab.transport import FlushingServer
from tests import test_conformance, test_http_conformance, test_ws_conformance
from tests.support import WAIT, TwistedServer, abort, connect, shared_certificates


def transports(protocol: Any) -> list[type]:
    """
    :return: the classes of the transports under ``protocol``, outermost
        first (a TLS layer, then the TCP connection).
    """
    found = []
    transport = protocol.transport
    while transport is not None and len(found) < 5:
        found.append(type(transport))
        transport = getattr(transport, "transport", None)
    return found


async def served_connection(factory: Any, host: str, port: int) -> Any:
    """
    Connect to ``host:port`` and wait (bounded) until ``factory`` holds the
    connection.

    :return: the peer and the server's protocol for it.
    """
    from twisted.internet import reactor

    peer = await connect(host, port)
    for _ in range(int(WAIT / 0.01)):
        if factory.connections:
            return peer, next(iter(factory.connections))
        await task.deferLater(reactor, 0.01)
    raise AssertionError("the server never saw the connection")


def contract_servers() -> dict[str, TwistedServer]:
    """
    :return: every in-process server of the conformance suites, by name.
    """
    servers = {
        **{f"echo {k}": v for k, v in test_conformance.ECHO_SERVERS.items()},
        **{f"greeting {k}": v for k, v in test_conformance.GREETING_SERVERS.items()},
        **{f"http {k}": v for k, v in test_http_conformance.SERVERS.items()},
        **{f"ws {k}": at.server for k, at in test_ws_conformance.SERVERS.items()},
    }
    return {k: v for k, v in servers.items() if isinstance(v, TwistedServer)}


class ContractListenerTests(TestCase):
    timeout = 120

    async def test_contract_servers_listen_as_the_plugins(self) -> None:
        """
        Each Twisted server of the conformance suites, plain and over TLS,
        serves its connections on the flushing transport, as a plugin's
        listening service does.
        """
        servers = contract_servers()
        self.assertEqual(len(servers), 8, sorted(servers))
        for name, server in servers.items():
            for tls in (None, shared_certificates()):
                running = await server.start(tls=tls)
                try:
                    peer, protocol = await served_connection(
                        running.factory, running.host, running.port
                    )
                    self.assertIn(
                        FlushingServer, transports(protocol), (name, tls is not None)
                    )
                    await abort(peer)
                finally:
                    await running.stop()

    async def test_plugins_and_testing_serve_listen_alike(self) -> None:
        """
        What the contracts are compared with: a plugin's listening service
        (:func:`netlab.tap.listening_service`) and :func:`netlab.testing.serve`
        (the hostile suites') both serve on the flushing transport.
        """
        factory = echo.EchoFactory()
        service = tap.listening_service(["tcp:0:interface=127.0.0.1"], factory)
        # The endpoint the plugin's service would listen on, listened on here
        # without starting the service (the public way to learn the port).
        [endpoint] = [s.endpoint for s in service if hasattr(s, "endpoint")]
        port = await endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        peer, protocol = await served_connection(
            factory, "127.0.0.1", port.getHost().port
        )
        self.assertIn(FlushingServer, transports(protocol))
        await abort(peer)

        other = echo.EchoFactory()
        served = await serve(self, other)
        peer, protocol = await served_connection(other, served.host, served.port)
        self.assertIn(FlushingServer, transports(protocol))
        await abort(peer)
