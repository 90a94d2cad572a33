"""
netlab behind a real HAProxy: two ``twistd netlab-http`` instances listening
on ``haproxy:`` endpoints, balanced by Debian's haproxy with health checks
on ``/healthz``; one is drained with SIGTERM under load.

A check that needs both instances to share something (a broker) starts them
with ``Instances(self, extra=("--broker", url)).start()``, and finds which
instance holds a client with :meth:`Instances.until_logged`.
"""

from __future__ import annotations

import functools
import json
import pathlib
import re
import textwrap
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from netlab import http, tls, websocket
from tests.haproxy import HAProxy, configuration, need_haproxy, tls_configuration
from tests.redis import RedisServer
from tests.support import WAIT, abort, bounded, connect, shared_certificates, until
from tests.test_pubsub import numsub
from tests.test_twistd import TwistdCase

#: Each instance's listening endpoint: PROXY header first, loopback only.
LISTEN = "haproxy:tcp:0:interface=127.0.0.1"
#: What twistd logs as an instance starts listening.
STARTING = r"HTTPSite \(PROXY\)"
#: Seconds a drained instance gives its connections (its WebSockets close
#: with 1001 at once; this bounds an HTTP request in flight).
DRAIN_SECONDS = "5"


class Instances:
    """
    Two ``twistd netlab-http`` processes behind one HAProxy.

    :param extra: more arguments for both instances (a broker to share, say).
    """

    def __init__(self, case: TwistdCase, extra: tuple[str, ...] = ()) -> None:
        self.case = case
        self.extra = extra
        self.children: list[Any] = []
        self.ports: list[int] = []
        self.haproxy: HAProxy | None = None

    async def start(self) -> Instances:
        for _ in range(2):
            child, [port] = await self.case.start(
                "netlab-http",
                *("--listen", LISTEN, "--drain-seconds", DRAIN_SECONDS),
                *self.extra,
                factories=(STARTING,),
            )
            self.children.append(child)
            self.ports.append(port)
        self.haproxy = await HAProxy(self.case, self.ports).start()
        return self

    @property
    def url(self) -> str:
        assert self.haproxy is not None
        return f"http://127.0.0.1:{self.haproxy.port}"

    def log(self, index: int) -> str:
        """
        :return: what instance ``index`` has logged so far.
        """
        protocol = self.children[index].protocol
        return bytes(protocol.out + protocol.err).decode(errors="replace")

    def served(self, index: int, what: str) -> int:
        """
        :return: how many access log lines of instance ``index`` begin
            with ``what`` (``"GET /echo 200"``).
        """
        return len(re.findall(re.escape(what) + r" \d+ bytes", self.log(index)))

    def names(self, index: int, port: int) -> bool:
        """
        :return: whether instance ``index`` has logged the client at local
            ``port``.
        """
        return re.search(rf"\b127\.0\.0\.1:{port}\b", self.log(index)) is not None

    def holding(self, port: int) -> int:
        """
        :return: the instance whose log names the client at local ``port``.
        """
        found = [i for i in range(2) if self.names(i, port)]
        if len(found) != 1:
            raise AssertionError(f"client port {port} in the logs of {found}")
        return found[0]

    async def until_logged(self, port: int) -> int:
        """
        Wait (bounded) until one instance has logged the client at local
        ``port``; :return: which.
        """
        for _ in range(int(WAIT / 0.05)):
            if any(self.names(i, port) for i in range(2)):
                return self.holding(port)
            await task.deferLater(reactor, 0.05)
        raise AssertionError(f"no instance logged client port {port}")


async def until_event(child: Any, condition: Any) -> dict[str, Any]:
    """
    Wait (bounded) until ``child``, logging JSON lines, has logged an event
    for which ``condition(event)`` holds; :return: it.
    """
    for _ in range(int(WAIT / 0.05)):
        out = bytes(child.protocol.out)
        for line in out.splitlines():
            if line.startswith(b"{"):
                event = json.loads(line)
                if condition(event):
                    return event
        await task.deferLater(reactor, 0.05)
    raise AssertionError(f"no such event in {out[-2000:]!r}")


def _local_port(connection: websocket.Connection) -> int:
    return connection._protocol.transport.getHost().port


class HAProxyCase(TwistdCase):
    """
    A test that runs a real HAProxy (skipped without one, failed under CI).
    """

    timeout = 180

    def setUp(self) -> None:
        need_haproxy()
        super().setUp()


class BehindHAProxyTests(HAProxyCase):
    async def test_client_address_reaches_the_logs(self) -> None:
        """
        Through HAProxy (``send-proxy-v2``), an instance's access log and
        ``/echo`` name the client's own address and port, not HAProxy's
        connection to the instance.
        """
        instances = await Instances(self).start()
        peer = await connect("127.0.0.1", instances.haproxy.port)
        self.addCleanup(abort, peer)
        own = peer.transport.getHost().port
        peer.transport.write(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        await bounded(peer.closed)
        body = bytes(peer.received).partition(b"\r\n\r\n")[2]
        self.assertEqual(json.loads(body)["client"], {"host": "127.0.0.1", "port": own})
        index = await instances.until_logged(own)
        self.assertRegex(
            instances.log(index), rf"GET /echo 200 \d+ bytes \S+ 127\.0\.0\.1:{own}\b"
        )

    async def test_balanced_and_drained(self) -> None:
        """
        HTTP and WebSocket traffic reaches both instances; SIGTERM to one
        closes its WebSockets with 1001, they reconnect through HAProxy to
        the other, and a stream of HTTP requests made through the drain all
        get 200.
        """
        instances = await Instances(self).start()
        url = instances.url

        # Balanced: HTTP.
        for _ in range(6):
            response = await http.fetch(f"{url}/echo", timeout=WAIT)
            self.assertEqual(response.code, 200)
        for index in range(2):
            self.assertGreater(instances.served(index, "GET /echo 200"), 0)

        # Balanced: WebSocket.
        sockets = []
        for _ in range(4):
            connection = await websocket.connect(
                f"ws://127.0.0.1:{instances.haproxy.port}/ws", timeout=WAIT
            )
            sockets.append(connection)
            self.addCleanup(_close, connection)
            connection.send("hello")
            self.assertEqual(await bounded(connection.receive()), "Echo: hello")
        where = [await instances.until_logged(_local_port(c)) for c in sockets]
        self.assertEqual(sorted(set(where)), [0, 1], where)

        # Drain instance 0 while HTTP requests stream through HAProxy.
        drained, other = 0, 1
        codes: list[int] = []
        stop_stream = False

        async def stream() -> None:
            # Bounded: at most 2,000 requests, each within WAIT.
            while not stop_stream and len(codes) < 2000:
                codes.append((await http.fetch(f"{url}/", timeout=WAIT)).code)

        streams = [defer.Deferred.fromCoroutine(stream()) for _ in range(4)]
        await until(lambda: len(codes) >= 20, step=0.01)
        instances.children[drained].signal("TERM")

        # Each WebSocket on the drained instance closes with 1001, and its
        # client reconnects at once, before HAProxy's checks have noticed:
        # the closed port refuses it, and HAProxy redispatches it to the
        # other instance.
        on_drained = [c for c, w in zip(sockets, where, strict=True) if w == drained]
        self.assertTrue(on_drained)
        for connection in on_drained:
            code, _ = await bounded(connection.closed())
            self.assertEqual(code, 1001)
            again = await websocket.connect(
                f"ws://127.0.0.1:{instances.haproxy.port}/ws", timeout=WAIT
            )
            self.addCleanup(_close, again)
            again.send("again")
            self.assertEqual(await bounded(again.receive()), "Echo: again")
            self.assertEqual(await instances.until_logged(_local_port(again)), other)
        result = await instances.children[drained].ended()
        at_end = len(codes)
        self.assertNotIn("Traceback", result.out.decode() + result.err.decode())
        await instances.haproxy.until(lambda states: states["s1"] != "UP")

        # The stream went on through the drain and after it.
        await until(lambda: len(codes) >= at_end + 20, step=0.01)
        stop_stream = True
        await bounded(defer.gatherResults(streams))
        self.assertGreater(instances.served(drained, "GET / 200"), 0)
        self.assertEqual({code for code in codes}, {200}, codes)


class BroadcastBehindHAProxyTests(HAProxyCase):
    async def test_broadcast_through_redis(self) -> None:
        """
        Two instances sharing one real Redis (``--broker``) behind HAProxy:
        clients of one room land on both instances, and a message one of
        them publishes reaches every one of them, on either instance.
        """
        redis = await RedisServer(self).start()
        peek = await redis.client()
        instances = await Instances(
            self,
            extra=("--resource", "tests.ws_pubsub:root", "--broker", redis.url),
        ).start()
        room = f"ws://127.0.0.1:{instances.haproxy.port}/ws/room"
        clients = []
        for _ in range(4):
            connection = await websocket.connect(room, timeout=WAIT)
            self.addCleanup(_close, connection)
            clients.append(connection)
        where = [await instances.until_logged(_local_port(c)) for c in clients]
        self.assertEqual(sorted(set(where)), [0, 1], where)

        # Each instance subscribes to Redis once for the room, however many
        # of its clients are in it; publish only once both have.
        async def both_subscribed() -> bool:
            return await numsub(peek, "room") == 2

        await until(both_subscribed, step=0.01)

        for sender in (clients[where.index(0)], clients[where.index(1)]):
            text = f"from instance {where[clients.index(sender)]}"
            sender.send(text)
            for connection in clients:
                self.assertEqual(await bounded(connection.receive()), text)


class TLSBehindHAProxyTests(HAProxyCase):
    timeout = 120

    async def test_tls_at_netlab(self) -> None:
        """
        HAProxy in TCP mode passes TLS through after a PROXY header: netlab
        (``haproxy:ssl:``) terminates it, and its access log names the
        client's address and the certificate the client showed; HAProxy's
        health checks (TLS, after a LOCAL header) find it up.
        """
        paths = shared_certificates()
        child, [port] = await self.start(
            *("--logger", "netlab.logs.json", "netlab-http", "--listen"),
            f"haproxy:ssl:0:interface=127.0.0.1:privateKey={paths.server_key}"
            f":certKey={paths.server}:clientCA={paths.ca}",
            factories=(r"HTTPSite \(TLS\) \(PROXY\)",),
        )
        # HAProxy's health checks show a client certificate too: its own
        # and its key, in one file.
        crt = pathlib.Path(self.mktemp())
        crt.write_bytes(paths.client.read_bytes() + paths.client_key.read_bytes())
        haproxy = await HAProxy(
            self,
            [port],
            functools.partial(
                tls_configuration, ca=str(paths.ca), crt=str(crt.absolute())
            ),
            backend="netlab-tls",
        ).start()
        client = tls.ClientTLS(
            cacert=str(paths.ca), cert=str(paths.client), key=str(paths.client_key)
        )
        response = await http.fetch(
            f"https://localhost:{haproxy.port}/echo", tls=client, timeout=WAIT
        )
        self.assertEqual(response.code, 200)
        echoed = json.loads(response.body)["client"]
        access = await until_event(child, lambda e: e.get("path") == "/echo")
        self.assertEqual(access["peer"], f"127.0.0.1:{echoed['port']}")
        self.assertIn("CN=", access["client"])


class DocumentedTests(TestCase):
    def test_configurations_are_the_documented_ones(self) -> None:
        """
        docs/deployment.rst shows the configurations these tests run, with
        its own ports and paths.
        """
        text = (
            pathlib.Path(__file__).parent.parent / "docs" / "deployment.rst"
        ).read_text()
        for shown in (
            configuration(8080, [8081, 8082]),
            tls_configuration(
                8443,
                [8444],
                ca="/etc/haproxy/netlab-ca.pem",
                crt="/etc/haproxy/check-client.pem",
            ),
        ):
            block = textwrap.indent(shown, "   ", lambda line: line.strip() != "")
            self.assertIn(block, text)


def _close(connection: websocket.Connection) -> Any:
    if connection._protocol.closed_with is None:
        return bounded(connection.close())
    return None
