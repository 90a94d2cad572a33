"""
Publish/subscribe (:mod:`netlab.pubsub`): the hub in one process, real
WebSocket subscribers with their queues and overflow policies, and the
Redis bridge between real ``twistd`` processes sharing a real
``redis-server`` (started here on a free loopback port, stopped by its
process id): across processes, across ``--workers``, and through Redis
stopping and starting again under load.
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import random
import re
import signal
import socket
import sys
from string import ascii_letters
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import capturedLogs
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import http, metrics, pubsub, websocket
from netlab.tap import http as http_tap
from netlab.tap import ws as ws_tap
from tests import ws_pubsub
from tests.redis import RedisServer
from tests.support import WAIT, bounded, run, until
from tests.test_twistd import LOOPBACK_ANY_PORT, TwistdCase, twistd


class _Recorder:
    """
    Stands where a :class:`~netlab.pubsub.Broker` would, recording what the
    hub sends it: for the hub's side of the bridge alone.
    """

    state = "up"

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.listening: list[str] = []

    def send(self, channel: str, data: bytes) -> bool:
        self.sent.append((channel, data))
        return True

    def listen(self, channel: str) -> None:
        self.listening.append(channel)

    def unlisten(self, channel: str) -> None:
        self.listening.remove(channel)


class HubTests(SynchronousTestCase):
    def hub(self, **options: Any) -> tuple[pubsub.Hub, task.Clock]:
        clock = task.Clock()
        return pubsub.Hub(reactor=clock, **options), clock

    def test_subscribers_get_each_message_until_cancelled(self) -> None:
        hub, clock = self.hub()
        first: list = []
        second: list = []
        one = hub.subscribe("news", first.append)
        hub.subscribe("news", second.append)
        hub.subscribe("other", self.fail)
        self.assertEqual(hub.publish("news", "a"), 2)
        self.assertEqual(hub.publish("news", b"\x00b"), 2)
        clock.advance(0)
        one.cancel()
        one.cancel()  # again is harmless
        self.assertFalse(one.active)
        self.assertEqual(hub.publish("news", "c"), 1)
        clock.advance(0)
        self.assertEqual(first, ["a", b"\x00b"])
        self.assertEqual(second, ["a", b"\x00b", "c"])
        self.assertEqual(hub.publish("nobody", "x"), 0)
        self.assertEqual(sorted(hub.channels()), ["news", "other"])

    def test_delivered_at_the_end_of_the_turn(self) -> None:
        """
        A publish is delivered here at the end of the reactor's turn, with
        the turn's others, in order; to the subscribers of the moment of
        publishing that are still subscribed then.
        """
        hub, clock = self.hub()
        got: list = []
        leaving: list = []
        hub.subscribe("c", got.append)
        gone = hub.subscribe("c", leaving.append)
        self.assertEqual(hub.publish("c", "one"), 2)
        self.assertEqual(hub.publish("c", "two"), 2)
        late: list = []
        hub.subscribe("c", late.append)
        gone.cancel()
        self.assertEqual(got, [])
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0)
        self.assertEqual(got, ["one", "two"])
        self.assertEqual((leaving, late), ([], []))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_subscriber_that_publishes_waits_for_the_next_turn(self) -> None:
        hub, clock = self.hub()
        got: list = []

        def answer(message: str) -> None:
            got.append(message)
            if message == "ping":
                self.assertEqual(hub.publish("c", "pong"), 1)
                # Not told again before this returns.
                self.assertEqual(got, ["ping"])

        hub.subscribe("c", answer)
        hub.publish("c", "ping")
        clock.advance(0)
        self.assertEqual(got, ["ping", "pong"])

    def test_past_max_waiting_delivered_at_once(self) -> None:
        """
        What waits for the turn's end is bounded: once over
        ``max_waiting`` bytes, the waiting publishes are delivered at once.
        """
        hub, clock = self.hub(max_waiting=1200)
        got: list = []
        hub.subscribe("c", got.append)
        hub.publish("c", "x" * 300)
        hub.publish("c", "y" * 300)
        self.assertEqual(got, [])
        hub.publish("c", "z" * 300)
        self.assertEqual(got, ["x" * 300, "y" * 300, "z" * 300])
        clock.advance(0)
        self.assertEqual(len(got), 3)

    def test_a_failing_subscriber_stops_nobody(self) -> None:
        hub, clock = self.hub()
        got: list = []

        def fails(message: object) -> None:
            raise RuntimeError("boom")

        hub.subscribe("c", fails)
        hub.subscribe("c", got.append)
        with capturedLogs() as events:
            self.assertEqual(hub.publish("c", "m"), 2)
            clock.advance(0)
        self.assertEqual(got, ["m"])
        self.assertEqual([e["channel"] for e in events if "failure" in e], ["c"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_subscriber_may_leave_while_told(self) -> None:
        hub, clock = self.hub()
        got: list = []
        subscription = hub.subscribe("c", lambda m: subscription.cancel())
        hub.subscribe("c", got.append)
        hub.publish("c", "m")
        clock.advance(0)
        hub.publish("c", "n")
        clock.advance(0)
        self.assertEqual(got, ["m", "n"])
        self.assertEqual(hub.subscribers("c"), 1)

    def test_bad_input(self) -> None:
        hub = pubsub.Hub(max_message=10)
        self.assertRaises(TypeError, hub.publish, b"chan", "m")
        self.assertRaises(ValueError, hub.publish, "", "m")
        self.assertRaises(ValueError, hub.publish, "x" * (pubsub.MAX_CHANNEL + 1), "m")
        self.assertEqual(hub.publish("x" * pubsub.MAX_CHANNEL, "m"), 0)
        self.assertRaises(TypeError, hub.publish, "c", 42)
        self.assertRaises(ValueError, hub.publish, "c", "x" * 11)
        self.assertEqual(hub.publish("c", "x" * 10), 0)
        self.assertRaises(TypeError, hub.subscribe, "c", "not callable")
        self.assertEqual(hub.channels(), [])

    def test_the_bridge_skips_its_own_and_keeps_text_and_binary(self) -> None:
        """
        What one hub sends its broker reaches another hub's subscribers as
        it was published (text or binary), and the sender's own messages,
        handed back by Redis, are not delivered twice.
        """
        clock = task.Clock()
        here, there = pubsub.Hub(reactor=clock), pubsub.Hub(reactor=clock)
        recorder = _Recorder()
        here.use(recorder)
        got_here: list = []
        got_there: list = []
        here.subscribe("c", got_here.append)
        there.subscribe("c", got_there.append)
        self.assertEqual(recorder.listening, ["c"])
        here.publish("c", "text é")
        here.publish("c", b"\xff\x00")
        # Sent at once, before the deliveries here.
        self.assertEqual(len(recorder.sent), 2)
        self.assertEqual(got_here, [])
        clock.advance(0)
        for channel, data in recorder.sent:
            here.received(channel, data)  # Redis hands it back
            there.received(channel, data)
        self.assertEqual(got_here, ["text é", b"\xff\x00"])
        self.assertEqual(got_there, ["text é", b"\xff\x00"])

    def test_messages_from_other_redis_clients(self) -> None:
        hub = pubsub.Hub(max_message=8)
        got: list = []
        hub.subscribe("c", got.append)
        hub.received("c", b"plain")
        hub.received("c", b"\xff\xfe")
        dropped = metrics.PUBSUB_DROPPED.values[("too_large",)]
        hub.received("c", b"x" * 9)
        self.assertEqual(got, ["plain", b"\xff\xfe"])
        self.assertEqual(metrics.PUBSUB_DROPPED.values[("too_large",)], dropped + 1)

    def test_channels_are_listened_to_as_they_come_and_go(self) -> None:
        hub = pubsub.Hub()
        hub.subscribe("before", print)
        recorder = _Recorder()
        hub.use(recorder)
        self.assertEqual(recorder.listening, ["before"])
        one = hub.subscribe("c", print)
        two = hub.subscribe("c", print)
        self.assertEqual(recorder.listening, ["before", "c"])
        one.cancel()
        self.assertEqual(recorder.listening, ["before", "c"])
        two.cancel()
        self.assertEqual(recorder.listening, ["before"])

    def test_health(self) -> None:
        hub = pubsub.Hub()
        self.assertEqual(hub.health(), {"status": "ok"})
        broker = pubsub.Broker("redis://127.0.0.1:1/0")
        hub.use(broker)
        self.assertEqual(hub.health(), {"status": "degraded", "broker": "down"})
        broker._up = True
        self.assertEqual(hub.health(), {"status": "ok", "broker": "up"})


class BrokerAddressTests(SynchronousTestCase):
    def test_good(self) -> None:
        parse = pubsub.BrokerAddress.parse
        self.assertEqual(parse("redis://h"), pubsub.BrokerAddress("h", 6379, 0))
        self.assertEqual(
            parse("rediss://app@[::1]:7000/3"),
            pubsub.BrokerAddress("::1", 7000, 3, True, "app"),
        )
        self.assertEqual(
            str(parse("rediss://app@[::1]:7000/3")), "rediss://app@[::1]:7000/3"
        )
        self.assertEqual(pubsub.Broker("redis://h/5").prefix, b"netlab:5:")

    def test_bad(self) -> None:
        for url, said in (
            ("http://h", "expected redis://"),
            ("redis://", "expected redis://"),
            ("redis://h:99999", "Port out of range"),
            ("redis://h:x", "bad broker URL"),
            ("redis://h/db", "the DB is a number"),
            ("redis://h/1/2", "the DB is a number"),
            ("redis://h/-1", "the DB is a number"),
            ("redis://h?x=1", "expected"),
            ("redis://:secret@h", "--broker-password-file"),
            ("redis://u:secret@h", "--broker-password-file"),
        ):
            with self.assertRaises(ValueError, msg=url) as raised:
                pubsub.BrokerAddress.parse(url)
            self.assertIn(said, str(raised.exception), url)
            self.assertNotIn("secret", str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))

    def test_backoff_doubles_up_to_its_cap_with_jitter(self) -> None:
        random.seed(15)
        for attempt, whole in ((1, 0.2), (2, 0.4), (3, 0.8), (6, 5.0), (1000, 5.0)):
            waits = [pubsub.backoff(attempt) for _ in range(200)]
            self.assertTrue(all(whole / 2 <= w <= whole for w in waits), attempt)
            self.assertGreater(max(waits) - min(waits), whole / 4)


class OptionTests(SynchronousTestCase):
    def test_broker_options(self) -> None:
        password = pathlib.Path(self.mktemp())
        password.write_text("s3cret\n")
        options = ws_tap.Options()
        options.parseOptions(
            [
                "--broker",
                "redis://127.0.0.1:7/2",
                "--broker-password-file",
                str(password),
            ]
        )
        config = options["broker_config"]
        self.assertEqual(config["address"], pubsub.BrokerAddress("127.0.0.1", 7, 2))
        self.assertEqual(config["password"], "s3cret")
        plain = http_tap.Options()
        plain.parseOptions([])
        self.assertIsNone(plain["broker_config"])

    def test_bad_broker_options_are_one_line(self) -> None:
        empty = pathlib.Path(self.mktemp())
        empty.write_text("\n")
        for args, said in (
            (["--broker", "tcp:127.0.0.1:6379"], "--broker: bad broker URL"),
            (["--broker", "redis://:pw@h"], "--broker-password-file"),
            (["--broker-password-file", str(empty)], "needs --broker"),
            (
                ["--broker", "redis://h", "--broker-password-file", "/nonexistent"],
                "No such file",
            ),
            (
                ["--broker", "redis://h", "--broker-password-file", str(empty)],
                "no password",
            ),
            (["--broker", "redis://h", "--broker-ca", str(empty)], "needs a rediss://"),
            (["--broker", "rediss://h", "--broker-ca", "/nonexistent"], "--broker-ca"),
        ):
            with self.assertRaises(usage.UsageError, msg=args) as raised:
                http_tap.Options().parseOptions(args)
            self.assertIn(said, str(raised.exception), args)
            self.assertNotIn("\n", str(raised.exception))

    def test_without_hiredis_one_line(self) -> None:
        """
        Without hiredis (which netlab requires, and txredisapi parses with
        when it is there), ``--broker`` and a Broker are refused with one
        line that says so.
        """
        # What an import finds where the package is not installed.
        hiredis = importlib.import_module("hiredis")
        self.addCleanup(sys.modules.__setitem__, "hiredis", hiredis)
        sys.modules["hiredis"] = None  # type: ignore[assignment]
        with self.assertRaises(usage.UsageError) as raised:
            ws_tap.Options().parseOptions(["--broker", "redis://127.0.0.1:7/2"])
        self.assertEqual(
            str(raised.exception),
            "--broker: the Redis broker needs hiredis, which netlab requires: "
            "pip install hiredis",
        )
        self.assertRaises(ValueError, pubsub.Broker, "redis://127.0.0.1:7/2")


class Served:
    """
    :mod:`tests.ws_pubsub` served in this process, on loopback.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.site = http.HTTPSite(ws_pubsub.make_root())

    async def start(self) -> Served:
        port = await serverFromString(reactor, LOOPBACK_ANY_PORT).listen(self.site)
        self.case.addCleanup(port.stopListening)
        self.case.addCleanup(lambda: bounded(self.site.drained()))
        self.port = port.getHost().port
        return self

    async def client(self, path: str) -> websocket.Connection:
        return await client(self.case, self.port, path)


async def client(case: TestCase, port: int, path: str) -> websocket.Connection:
    """
    :return: a WebSocket client of ``ws://127.0.0.1:port/path``, closed in
        cleanup.
    """
    connection = await websocket.connect(f"ws://127.0.0.1:{port}{path}", timeout=WAIT)

    def close() -> object:
        if connection._protocol.closed_with is None:
            return bounded(connection.close())
        return None

    case.addCleanup(close)
    return connection


def _channel() -> str:
    return f"c{os.urandom(6).hex()}"


class InProcessTests(TestCase):
    """
    No broker: WebSocket connections subscribed on the process-wide hub.
    """

    timeout = 60

    async def test_every_subscriber_and_only_them(self) -> None:
        served = await Served(self).start()
        channel = _channel()
        clients = [await served.client(f"/ws/{channel}") for _ in range(3)]
        other = await served.client(f"/ws/{_channel()}")
        await until(lambda: pubsub.hub.subscribers(channel) == 3)
        clients[0].send("hello")
        clients[1].send(b"\x00\x01")
        for connection in clients:
            self.assertEqual(await bounded(connection.receive()), "hello")
            self.assertEqual(await bounded(connection.receive()), b"\x00\x01")
        # A message published by any Twisted code reaches them too.
        self.assertEqual(pubsub.publish(channel, "from code"), 3)
        for connection in clients:
            self.assertEqual(await bounded(connection.receive()), "from code")
        other.send("elsewhere")
        self.assertEqual(await bounded(other.receive()), "elsewhere")
        # The subscription ends as the connection closes.
        await bounded(clients[2].close())
        await until(lambda: pubsub.hub.subscribers(channel) == 2)
        await bounded(clients[0].close())
        await bounded(clients[1].close())
        await until(lambda: channel not in pubsub.hub.channels())

    async def stall(self, path: str) -> tuple:
        """
        Subscribe a client that stops reading and one that reads, and
        publish far more than the stalled one's queue and socket buffers
        hold, checking that the reading one gets everything as it goes.

        :return: the stalled client and the server's side of it.
        """
        served = await Served(self).start()
        channel = _channel()
        stalled = await served.client(f"{path}/{channel}")
        reader = await served.client(f"{path}/{channel}")
        await until(lambda: pubsub.hub.subscribers(channel) == 2)
        stalled._protocol.transport.pauseProducing()
        (server_side,) = [
            c
            for c in served.site.connections
            if c.peer_address.endswith(f":{stalled._protocol.transport.getHost().port}")
        ]
        letters = random.Random(15)
        # Far more than the queue and both sides' socket buffers hold.
        for n in range(3000):
            # Random letters: permessage-deflate would shrink a repeated one.
            text = f"{n} " + "".join(letters.choices(ascii_letters, k=16000))
            started = reactor.seconds()
            pubsub.publish(channel, text)
            # Publishing never waits for a subscriber.
            self.assertLess(reactor.seconds() - started, 1.0)
            self.assertTrue((await bounded(reader.receive())).startswith(f"{n} "))
            if server_side.dropped or server_side.state != server_side.STATE_OPEN:
                break
        return stalled, server_side

    async def test_a_stalled_subscriber_gets_its_drop_policy(self) -> None:
        stalled, server_side = await self.stall("/ws")
        self.assertGreater(server_side.dropped, 0)
        self.assertEqual(server_side.state, server_side.STATE_OPEN)

    async def test_a_stalled_subscriber_gets_its_close_policy(self) -> None:
        stalled, server_side = await self.stall("/close")
        stalled._protocol.transport.resumeProducing()
        code, _ = await bounded(stalled.closed())
        self.assertEqual(code, 1013)


class BrokerTests(TestCase):
    """
    :class:`~netlab.pubsub.Broker` in this process against a real
    redis-server: two hubs, each with its own broker connections, stand for
    two processes.
    """

    timeout = 60

    async def bridge(self, url: str, max_message: int = 1000, **options) -> tuple:
        """
        :return: a hub bridged to ``url``, and its broker (stopped in
            cleanup).
        """
        hub = pubsub.Hub(max_message=max_message)
        broker = pubsub.Broker(url, backoff=(0.05, 0.2), **options)
        service = pubsub.BrokerService(broker, hub)
        service.startService()
        self.addCleanup(service.stopService)
        return hub, broker

    async def test_other_processes_have_it_before_local_delivery(self) -> None:
        """
        A publish made in a read (as a WebSocket handler's is) leaves for
        the broker before this process delivers it to its own subscribers
        (at once: not on the reactor's next turn, after them), so the other
        processes deliver it meanwhile: a plain Redis subscriber has it
        while a local subscriber is still being called.
        """
        redis = await RedisServer(self).start()
        here, here_broker = await self.bridge(redis.url)
        await until(lambda: here_broker.state == "up")
        other = socket.create_connection(("127.0.0.1", redis.port), timeout=10)
        self.addCleanup(other.close)
        other.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$10\r\nnetlab:0:c\r\n")
        confirmed = b""
        while not confirmed.endswith(b":1\r\n"):
            confirmed += other.recv(4096)
        seen_there: list[bytes] = []

        def local(message: str) -> None:
            # The reactor does not turn until this returns.
            data = b""
            while b"first" not in data:
                data += other.recv(4096)
            seen_there.append(data)

        here.subscribe("c", local)

        class Publisher(Protocol):
            def dataReceived(self, data: bytes) -> None:
                here.publish("c", "first")

        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            Factory.forProtocol(Publisher)
        )
        self.addCleanup(port.stopListening)
        trigger = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(trigger.close)
        trigger.sendall(b"publish")
        await until(lambda: seen_there)

    async def test_delivery_and_a_message_too_large_to_read(self) -> None:
        """
        A message over the hub's limit on a subscribed channel (from any
        Redis client) is dropped and counted; one too large to hold (over
        the limit by more than a reply's framing, still arriving) is not
        buffered: the connection is dropped and made again. Delivery goes
        on after each.
        """
        redis = await RedisServer(self).start()
        peek = await redis.client()
        here, here_broker = await self.bridge(redis.url)
        there, there_broker = await self.bridge(redis.url)
        await until(lambda: here_broker.state == there_broker.state == "up")
        got: list = []
        there.subscribe("c", got.append)
        await until(lambda: numsub(peek, "c"))
        here.publish("c", "across")
        await until(lambda: got == ["across"])

        too_large = metrics.PUBSUB_DROPPED.values[("too_large",)]
        await bounded(peek.publish("netlab:0:c", "x" * 1001))
        here.publish("c", "after one too large")
        await until(lambda: got == ["across", "after one too large"])
        self.assertEqual(metrics.PUBSUB_DROPPED.values[("too_large",)], too_large + 1)
        self.assertEqual(there_broker.reconnects, 0)

        await bounded(peek.publish("netlab:0:c", "x" * 300_000))
        await until(lambda: there_broker.reconnects == 1)
        self.assertEqual(metrics.PUBSUB_DROPPED.values[("too_large",)], too_large + 2)
        await until(lambda: there_broker.state == "up")
        await until(lambda: numsub(peek, "c"))
        here.publish("c", "still")
        await until(lambda: got[2:] == ["still"])

    async def test_a_stalled_redis_buffers_a_bounded_amount(self) -> None:
        """
        Redis stops answering (SIGSTOP): publishes awaiting its answers stay
        under ``max_pending`` bytes (the rest are dropped and counted), the
        answer timeout drops the connection, and once Redis answers again
        the broker comes back.
        """
        redis = await RedisServer(self).start()
        hub, broker = await self.bridge(redis.url, timeout=1.0, max_pending=20_000)
        await until(lambda: broker.state == "up")
        busy = metrics.PUBSUB_DROPPED.values[("broker_busy",)]
        stopped = redis.child.process
        stopped.signalProcess(signal.SIGSTOP)
        self.addCleanup(resume, stopped)
        got: list = []
        hub.subscribe("c", got.append)
        for n in range(100):
            hub.publish("c", f"{n:04}" + "x" * 996)
            self.assertLessEqual(broker._pending, 20_000)
        # Every one delivered here; 19 or 20 sent, the rest dropped.
        await until(lambda: len(got) == 100)
        self.assertGreaterEqual(
            metrics.PUBSUB_DROPPED.values[("broker_busy",)] - busy, 80
        )
        await until(lambda: broker.state == "down")
        stopped.signalProcess(signal.SIGCONT)
        await until(lambda: broker.state == "up")

    async def test_password(self) -> None:
        redis = await RedisServer(self).start("--requirepass", "s3cret")
        with capturedLogs() as events:
            _, wrong = await self.bridge(redis.url, password="wrong")
            await until(
                lambda: any("could not auth" in str(e.get("why")) for e in events)
            )
        self.assertEqual(wrong.state, "down")
        self.assertNotIn("wrong", repr([e.get("log_format") for e in events]))
        hub, right = await self.bridge(redis.url, password="s3cret")
        await until(lambda: right.state == "up")
        got: list = []
        hub.subscribe("c", got.append)
        self.assertEqual(hub.publish("c", "m"), 1)

    async def test_rediss_is_verified(self) -> None:
        """
        ``rediss://``: TLS, with the server checked against the given CA
        (the system's trusted CAs do not know this test's own).
        """
        from netlab import certs, tls

        made = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        redis = RedisServer(self)
        await redis.start(
            *("--port", "0", "--tls-port", str(redis.port)),
            *("--tls-cert-file", str(made.server)),
            *("--tls-key-file", str(made.server_key)),
            *("--tls-ca-cert-file", str(made.ca), "--tls-auth-clients", "no"),
        )
        url = f"rediss://localhost:{redis.port}/0"
        with capturedLogs() as events:
            _, untrusted = await self.bridge(url)
            await until(
                lambda: (
                    sum("connection failed" in e.get("log_format", "") for e in events)
                    >= 4
                )
            )
        self.assertEqual(untrusted.state, "down")
        here, here_broker = await self.bridge(
            url, tls=tls.ClientTLS(cacert=str(made.ca))
        )
        there, there_broker = await self.bridge(
            url, tls=tls.ClientTLS(cacert=str(made.ca))
        )
        await until(lambda: here_broker.state == there_broker.state == "up")
        got: list = []
        there.subscribe("c", got.append)
        # No plain client to ask Redis who listens: publish until it arrives.
        await until(lambda: here.publish("c", "over TLS") == 0 and got)
        self.assertEqual(set(got), {"over TLS"})


def resume(process) -> None:
    """
    Let a stopped process go on (so that it can be stopped for good).
    """
    try:
        process.signalProcess(signal.SIGCONT)
    except ProcessExitedAlready:
        pass


# Across processes, through a real redis-server.


def _relay(*more: str) -> list[str]:
    return [
        "netlab-http",
        *("--resource", "tests.ws_pubsub:root", "--listen", LOOPBACK_ANY_PORT),
        *more,
    ]


async def numsub(redis, channel: str) -> int:
    """
    :return: how many connections are subscribed to netlab's ``channel``
        (on DB 0) on ``redis``.
    """
    answer = await bounded(
        redis.execute_command("PUBSUB", "NUMSUB", f"netlab:0:{channel}")
    )
    return int(answer[1])


class Instance:
    """
    One twistd running :func:`_relay`: its WebSocket and metrics ports.
    """

    def __init__(self, case: TwistdCase, child, metrics_port: int, port: int) -> None:
        self.case, self.child, self.metrics_port, self.port = (
            case,
            child,
            metrics_port,
            port,
        )

    async def health(self) -> dict:
        response = await http.fetch(
            f"http://127.0.0.1:{self.port}/healthz", timeout=WAIT
        )
        self.case.assertEqual(response.code, 200)
        return json.loads(response.body)

    async def metric(self, name: str) -> float:
        response = await http.fetch(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=WAIT
        )
        found = re.search(
            rb"^%s (\S+)$" % re.escape(name.encode()), response.body, re.M
        )
        return float(found.group(1)) if found else 0.0

    async def client(self, path: str) -> websocket.Connection:
        return await client(self.case, self.port, path)


async def received_until(connection: websocket.Connection, last: str) -> list:
    """
    :return: what ``connection`` receives up to and including ``last``.
    """
    got = []
    while not got or got[-1] != last:
        got.append(await bounded(connection.receive()))
    return got


class AcrossProcessesTests(TwistdCase):
    timeout = 180

    async def setUp(self) -> None:
        TwistdCase.setUp(self)
        self.redis = await RedisServer(self).start()
        self.peek = await self.redis.client()
        # twistd runs outside the checkout; the relay is a test module.
        os.symlink(pathlib.Path(ws_pubsub.__file__).parent, f"{self.outside}/tests")
        self.addCleanup(os.unlink, f"{self.outside}/tests")

    async def instance(self, *more: str) -> Instance:
        child, [metrics_port, port] = await self.start(
            *_relay("--broker", self.redis.url, "--metrics", LOOPBACK_ANY_PORT, *more),
            factories=("HTTPSite", "HTTPSite"),
        )
        instance = Instance(self, child, metrics_port, port)
        await until(lambda: self._up(instance))
        return instance

    async def _up(self, instance: Instance) -> bool:
        return (await instance.health()).get("broker") == "up"

    async def test_a_message_reaches_subscribers_of_another_process(self) -> None:
        one, two = await self.instance(), await self.instance()
        self.assertEqual(await one.health(), {"status": "ok", "broker": "up"})
        channel = _channel()
        here = await one.client(f"/ws/{channel}")
        there = await two.client(f"/ws/{channel}")
        await until(lambda: self._numsub_is(channel, 2))
        for sender, message in (
            (here, "hello"),
            (there, b"\x00binary"),
            (here, "last"),
        ):
            sender.send(message)
            for connection in (here, there):
                self.assertEqual(await bounded(connection.receive()), message)
        # Each once: a process skips its own messages as Redis hands them
        # back (a second "last" would come before this).
        there.send("marker")
        for connection in (here, there):
            self.assertEqual(await bounded(connection.receive()), "marker")
        self.assertEqual(await one.metric("netlab_broker_up"), 1.0)
        self.assertGreaterEqual(
            await two.metric('netlab_pubsub_messages_total{event="from_broker"}'), 2
        )
        # The last subscriber gone, the process unsubscribes on Redis.
        await bounded(there.close())
        await until(lambda: self._numsub_is(channel, 1))

    async def _numsub_is(self, channel: str, count: int) -> bool:
        return await numsub(self.peek, channel) == count

    async def test_workers_share_through_redis(self) -> None:
        """
        ``--workers 2``: each worker connects on its own (the supervisor
        does not), and a message reaches the clients of both.
        """
        child, [port] = await self.start(
            *_relay("--broker", self.redis.url, "--workers", "2"),
            factories=("HTTPSite",),
        )
        workers = Instance(self, child, 0, port)
        channel = _channel()
        clients = []
        # The kernel hands each connection to one worker: connect until both
        # have a subscriber (each worker subscribes once on Redis).
        for _ in range(60):
            clients.append(await workers.client(f"/ws/{channel}"))
            if len(clients) >= 2 and await numsub(self.peek, channel) == 2:
                break
        self.assertEqual(await numsub(self.peek, channel), 2)
        clients[0].send("to all")
        for connection in clients:
            self.assertEqual(await bounded(connection.receive()), "to all")
        # Two connections from each worker (publisher and subscriber), and
        # this test's own: none from the supervisor.
        listing = await bounded(self.peek.execute_command("CLIENT", "LIST"))
        self.assertEqual(len(listing.strip().splitlines()), 5, listing)

    async def test_redis_stops_and_starts_again_under_load(self) -> None:
        """
        Redis stops while messages flow: local delivery goes on, /healthz
        (still 200) and the metrics say the broker is down, what is
        published meanwhile never reaches the other process (at most once:
        dropped and counted, not queued), and once Redis is back on the
        same port both reconnect, subscribe again, and delivery across
        resumes.
        """
        one, two = await self.instance(), await self.instance()
        channel = _channel()
        sender = await one.client(f"/ws/{channel}")
        local = await one.client(f"/ws/{channel}")
        remote = await two.client(f"/ws/{channel}")
        await until(lambda: self._numsub_is(channel, 2))

        sent = []

        def send(text: str) -> None:
            sent.append(text)
            sender.send(text)

        for n in range(20):
            send(f"before {n}")
        self.assertEqual(await received_until(remote, "before 19"), sent)

        # Stop Redis while a message goes out every 10 ms, until the
        # publishing process says the broker is down.
        stopping = defer_stop(self.redis)
        n = 0
        while (await one.health())["broker"] != "down":
            send(f"stopping {n}")
            n += 1
            await task.deferLater(reactor, 0.01, lambda: None)
            self.assertLess(n, 3000)
        await stopping
        self.assertEqual(await one.health(), {"status": "degraded", "broker": "down"})
        await until(lambda: self._down(two))
        self.assertEqual(await one.metric("netlab_broker_up"), 0.0)
        dropped = 'netlab_pubsub_dropped_total{reason="broker_down"}'
        before = await one.metric(dropped)
        for n in range(20):
            send(f"down {n}")
        self.assertEqual(await one.metric(dropped), before + 20)

        await self.redis.start()
        self.peek = await self.redis.client()
        await until(lambda: self._up(one))
        await until(lambda: self._up(two))
        await until(lambda: self._numsub_is(channel, 2))
        self.assertGreaterEqual(await one.metric("netlab_broker_reconnects_total"), 2)
        send("after")

        # Local delivery never stopped: everything, in order.
        self.assertEqual(await received_until(local, "after"), sent)
        # Across (all that came before was checked): some of what was sent
        # as Redis stopped, none of what was sent while it was down, each
        # at most once and in order, then what came after.
        got = await received_until(remote, "after")
        middle = got[:-1]
        self.assertTrue(all(text.startswith("stopping ") for text in middle), middle)
        self.assertEqual(middle, [t for t in sent if t in set(middle)])

    async def _down(self, instance: Instance) -> bool:
        return (await instance.health())["broker"] == "down"


def defer_stop(redis: RedisServer):
    from twisted.internet import defer

    return defer.Deferred.fromCoroutine(redis.stop())


class CommandLineTests(TwistdCase):
    async def test_a_bad_broker_is_one_line_and_exit_1(self) -> None:
        for bad in ("http://127.0.0.1:6379", "redis://:pw@127.0.0.1"):
            result = await run(
                twistd("-n", "--pidfile=", "netlab-ws", "--broker", bad),
                cwd=self.outside,
            )
            self.assertNotEqual(result.status, 0, result)
            self.assertNotIn(b"Traceback", result.out + result.err)
            last = result.out.strip().splitlines()[-1]
            self.assertIn(b"--broker", last)
            self.assertNotIn(b"pw", result.out + result.err)
