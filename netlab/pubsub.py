"""
Publish/subscribe: a message published to a named channel reaches every
subscriber of that channel, in this process at the end of the reactor's
turn and, with a broker (Redis), in every netlab process that shares it:
``--workers`` processes and processes on other hosts.

::

    from netlab import pubsub

    subscription = pubsub.subscribe("news", print)  # any callable
    pubsub.publish("news", "hello")  # print("hello") runs at this turn's end
    subscription.cancel()

:func:`publish` returns at once: the message leaves for the broker then,
and this process's subscribers get it at the end of the reactor's turn,
with everything else published in that turn. So the other processes
deliver it while this one does, and a subscriber that publishes as it is
told does not re-enter the hub.

A WebSocket connection subscribes itself, and gets each message through its
own ``send``: its bounded queue and its handler's ``overflow`` policy apply,
so a slow or dead client never holds up the publisher or anyone else, and
the subscription ends when the connection closes::

    class Feed(Handler):
        def on_open(self):
            self.subscribe("news")

The plugins (``twistd netlab-ws``, ``netlab-http``, ``netlab``) bridge the
process-wide :data:`hub` to Redis with ``--broker redis://HOST:PORT/DB`` (see
:class:`Broker`). Without one, delivery stays in the process.

Delivery through the broker is at most once, as Redis pub/sub is: a message
published while the broker is unreachable reaches this process's
subscribers only (it is dropped for the others, and counted), and a process
whose broker link is down misses what the others publish meanwhile.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.interfaces import IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from netlab import metrics
from netlab.deadline import with_deadline
from netlab.tls import ClientTLS
from netlab.transport import prompt
from netlab.websocket import Handler, ServerConnection

#: The largest message :meth:`Hub.publish` takes (its payload, in bytes).
DEFAULT_MAX_MESSAGE = 1024 * 1024
#: The longest channel name, in bytes of UTF-8.
MAX_CHANNEL = 200
#: The most bytes of publishes that may wait for the end of the reactor's
#: turn to be delivered here; past it, they are delivered at once.
DEFAULT_MAX_WAITING = 4 * 1024 * 1024
#: What a waiting publish counts for besides its payload, and per subscriber.
_WAITING_COST, _WAITING_SUBSCRIBER_COST = 200, 8
#: The most bytes of publishes that may wait for the broker's answers; past
#: it, publishes are not sent to the broker (they are still delivered here).
DEFAULT_MAX_PENDING = 4 * 1024 * 1024
#: Seconds to connect to the broker, and to wait for each of its answers.
DEFAULT_BROKER_TIMEOUT = 5.0
#: The first and the longest wait before connecting to the broker again.
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
#: A broker connection up this long counts as good: the waits between
#: attempts start over once it is lost.
STABLE_SECONDS = 10.0
#: Where a ``redis://`` URL without a port connects.
REDIS_PORT = 6379

# What a netlab process puts before each message it publishes to the broker:
# a marker, its origin (so that it can skip its own messages as Redis hands
# them back), and whether the payload is text or binary.
_MAGIC = b"netlab\x01"
_ORIGIN_SIZE = 8
_HEAD = len(_MAGIC) + _ORIGIN_SIZE + 1
_TEXT, _BINARY = b"t", b"b"
# What a message's reply from Redis holds besides its payload (its framing
# and channel name), and what the parser may keep of replies already read.
_REPLY_OVERHEAD = 1024 + MAX_CHANNEL + 1024

_log = Logger()


def _check_channel(channel: str) -> None:
    if type(channel) is not str:
        raise TypeError(f"a channel is a str, not {type(channel).__name__}")
    if not channel or len(channel.encode("utf-8")) > MAX_CHANNEL:
        raise ValueError(f"a channel name is 1 to {MAX_CHANNEL} bytes of UTF-8")


def _encode(message: str | bytes) -> tuple[bytes, bool]:
    """
    :return: ``message``'s payload, and whether it is binary.
    """
    if type(message) is str:
        return message.encode("utf-8"), False
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message), True
    raise TypeError(
        f"a message is str (text) or bytes (binary), not {type(message).__name__}"
    )


class Subscription:
    """
    One subscriber's subscription to one channel, from :meth:`Hub.subscribe`.
    """

    __slots__ = ("hub", "channel", "subscriber", "active", "_protocol")

    def __init__(self, hub: Hub, channel: str, subscriber: Any) -> None:
        #: The hub it was made with.
        self.hub = hub
        #: The channel subscribed to.
        self.channel = channel
        #: The callable or WebSocket connection that receives the messages.
        self.subscriber = subscriber
        #: Whether messages still reach it.
        self.active = True
        # A WebSocket connection's protocol: messages go to its queue.
        self._protocol: Any = None
        if isinstance(subscriber, Handler | ServerConnection):
            self._protocol = subscriber._protocol

    def cancel(self) -> None:
        """
        End the subscription (again is harmless).
        """
        self.hub.unsubscribe(self)

    def __repr__(self) -> str:
        state = "active" if self.active else "ended"
        return f"<Subscription {self.channel!r} {state}>"


class Hub:
    """
    Channels and their subscribers, in one process; with a :class:`Broker`,
    bridged to every other hub that uses the same one.

    :param max_message: the largest payload :meth:`publish` takes, and
        that is taken from the broker.
    :param max_waiting: the most bytes of publishes that wait for the end
        of the reactor's turn (see :meth:`publish`).
    :param reactor: what schedules that (the global reactor by default).
    """

    _log = Logger()

    def __init__(
        self,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        max_waiting: int = DEFAULT_MAX_WAITING,
        reactor: Any = None,
    ) -> None:
        self.max_message = max_message
        self.max_waiting = max_waiting
        self._reactor = reactor
        # Publishes of this turn, for delivery here at its end: who was
        # subscribed, and what.
        self._waiting: list[tuple[tuple[Subscription, ...], str, Any, bytes, bool]] = []
        self._waiting_size = 0
        self._delivery: Any = None
        #: The broker messages also go through, if any (see :meth:`use`).
        self.broker: Broker | None = None
        #: What marks this hub's own messages when the broker hands them back.
        self.origin = os.urandom(_ORIGIN_SIZE)
        self._channels: dict[str, dict[Subscription, None]] = {}

    def subscribe(self, channel: str, subscriber: Any) -> Subscription:
        """
        Deliver each message published to ``channel`` to ``subscriber``: a
        callable taking the message (``str`` for text, ``bytes`` for
        binary), or a WebSocket connection (a
        :class:`~netlab.websocket.Handler` or
        :class:`~netlab.websocket.ServerConnection`), which gets it through
        its queue and overflow policy, and whose subscriptions end when it
        closes.

        :raise TypeError: for a channel that is not ``str``, or a subscriber
            of neither kind.
        :raise ValueError: for an empty or too long channel name.
        """
        _check_channel(channel)
        subscription = Subscription(self, channel, subscriber)
        protocol = subscription._protocol
        if protocol is not None:
            if protocol.closed_with is not None:
                subscription.active = False
                return subscription
            protocol.add_subscription(subscription)
        elif not callable(subscriber):
            raise TypeError(
                "a subscriber is a callable or a WebSocket connection, not "
                f"{type(subscriber).__name__}"
            )
        subscribers = self._channels.get(channel)
        if subscribers is None:
            subscribers = self._channels[channel] = {}
            if self.broker is not None:
                self.broker.listen(channel)
        subscribers[subscription] = None
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """
        End ``subscription`` (again is harmless).
        """
        if not subscription.active:
            return
        subscription.active = False
        protocol = subscription._protocol
        if protocol is not None:
            protocol.discard_subscription(subscription)
        subscribers = self._channels.get(subscription.channel)
        if subscribers is None:
            return
        subscribers.pop(subscription, None)
        if not subscribers:
            del self._channels[subscription.channel]
            if self.broker is not None:
                self.broker.unlisten(subscription.channel)

    def subscribers(self, channel: str) -> int:
        """
        :return: how many subscriptions to ``channel`` this hub holds.
        """
        return len(self._channels.get(channel, ()))

    def channels(self) -> list[str]:
        """
        :return: the channels that have a subscriber here.
        """
        return list(self._channels)

    def publish(self, channel: str, message: str | bytes) -> int:
        """
        Publish ``message`` (text for ``str``, binary for ``bytes``) to
        ``channel``: send it to the broker, if there is one, now, and at the
        end of the reactor's turn deliver it to this process's subscribers
        of ``channel`` as they are now (those still subscribed then), in
        the order of publishing, without waiting for any. Once over
        ``max_waiting`` bytes of publishes wait so, they are delivered at
        once.

        :return: to how many subscribers here it goes.
        :raise TypeError: for a message that is neither ``str`` nor ``bytes``.
        :raise ValueError: for a bad channel name, or a message over
            ``max_message`` bytes.
        """
        _check_channel(channel)
        payload, binary = _encode(message)
        if len(payload) > self.max_message:
            raise ValueError(
                f"a message is at most {self.max_message} bytes, not {len(payload)}"
            )
        _PUBSUB[_PUBLISHED] += 1
        if binary:
            message = payload
        broker = self.broker
        if broker is not None:
            # At once (see Broker.endpoint), and before the deliveries
            # here: the other processes deliver it while this one does.
            broker.send(
                channel,
                b"".join((_MAGIC, self.origin, _BINARY if binary else _TEXT, payload)),
            )
        subscribers = self._channels.get(channel)
        if not subscribers:
            return 0
        here = tuple(subscribers)
        self._waiting.append((here, channel, message, payload, binary))
        self._waiting_size += (
            len(payload) + _WAITING_COST + _WAITING_SUBSCRIBER_COST * len(here)
        )
        if self._waiting_size > self.max_waiting:
            self._deliver_waiting()
        elif self._delivery is None:
            clock = self._reactor
            if clock is None:
                from twisted.internet import reactor as clock
            self._delivery = clock.callLater(0, self._deliver_waiting)
        return len(here)

    def _deliver_waiting(self) -> None:
        # Deliver what this turn published (or what is over max_waiting).
        delivery, self._delivery = self._delivery, None
        if delivery is not None and delivery.active():
            delivery.cancel()
        waiting, self._waiting = self._waiting, []
        self._waiting_size = 0
        for subscribers, channel, message, payload, binary in waiting:
            self._deliver(subscribers, channel, message, payload, binary)

    def _deliver(
        self,
        subscribers: tuple[Subscription, ...],
        channel: str,
        message: str | bytes,
        payload: bytes,
        binary: bool,
    ) -> int:
        delivered = 0
        for subscription in subscribers:
            if not subscription.active:
                continue
            protocol = subscription._protocol
            if protocol is not None:
                delivered += protocol._send_payload(payload, binary)
                continue
            try:
                subscription.subscriber(message)
            except Exception:
                self._log.failure(
                    "subscriber {subscriber!r} of channel {channel} failed",
                    subscriber=subscription.subscriber,
                    channel=channel,
                )
            else:
                delivered += 1
        _PUBSUB[_DELIVERED] += delivered
        return delivered

    def received(self, channel: str, data: bytes) -> None:
        """
        Deliver here what the broker brought for ``channel``: a message
        another netlab process published (this hub's own are skipped), or
        one from any other Redis client (text if it is UTF-8, else binary).
        """
        if data.startswith(_MAGIC) and len(data) >= _HEAD:
            if data[len(_MAGIC) : _HEAD - 1] == self.origin:
                return
            binary = data[_HEAD - 1 : _HEAD] != _TEXT
            payload = data[_HEAD:]
        else:
            payload, binary = data, False
        if len(payload) > self.max_message:
            _DROPPED[_TOO_LARGE] += 1
            return
        message: str | bytes = payload
        if not binary:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        _PUBSUB[_BROKER_IN] += 1
        subscribers = self._channels.get(channel)
        if subscribers:
            # A copy: a subscriber may subscribe or leave as it is told.
            self._deliver(tuple(subscribers), channel, message, payload, binary)

    def use(self, broker: Broker | None) -> None:
        """
        Send and receive through ``broker`` from now on (``None``: stay in
        the process); its service (:class:`BrokerService`) calls this.
        """
        self.broker = broker
        if broker is not None:
            for channel in self._channels:
                broker.listen(channel)

    def health(self) -> dict[str, Any]:
        """
        :return: what ``/healthz`` reports: ``{"status": "ok"}``, and with a
            broker, its state; ``"status"`` is ``"degraded"`` while the
            broker is down (the service still answers: see
            :class:`~netlab.http.Health`).
        """
        if self.broker is None:
            return {"status": "ok"}
        state = self.broker.state
        return {"status": "ok" if state == "up" else "degraded", "broker": state}


#: The process-wide hub: what :func:`publish` and :func:`subscribe` use,
#: and what ``--broker`` bridges.
hub = Hub()


def _process_hub() -> Hub:
    return hub


def publish(channel: str, message: str | bytes) -> int:
    """
    :meth:`Hub.publish` on the process-wide :data:`hub`.
    """
    return hub.publish(channel, message)


def subscribe(channel: str, subscriber: Any) -> Subscription:
    """
    :meth:`Hub.subscribe` on the process-wide :data:`hub`.
    """
    return hub.subscribe(channel, subscriber)


# Counted per message, so looked up once (see netlab.metrics).
_PUBSUB = metrics.PUBSUB_MESSAGES.values
_DROPPED = metrics.PUBSUB_DROPPED.values
_PUBLISHED, _DELIVERED = ("published",), ("delivered",)
_BROKER_OUT, _BROKER_IN = ("to_broker",), ("from_broker",)
_BROKER_DOWN, _BROKER_BUSY, _TOO_LARGE = (
    ("broker_down",),
    ("broker_busy",),
    ("too_large",),
)


# The Redis bridge.


@dataclass(frozen=True)
class BrokerAddress:
    """
    Where the broker is: what ``--broker redis://HOST:PORT/DB`` (or
    ``rediss://``, over TLS) says.
    """

    host: str
    port: int = REDIS_PORT
    db: int = 0
    tls: bool = False
    #: For Redis 6 ACLs (``redis://USER@HOST``); the password comes from a
    #: file, never the URL.
    username: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """
        :raise ValueError: with a one-line reason for anything but
            ``redis[s]://[USER@]HOST[:PORT][/DB]``.
        """
        expected = "expected redis://HOST[:PORT][/DB] or rediss://"
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise ValueError(f"bad broker URL {url!r}: {error}") from None
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ValueError(f"bad broker URL {url!r}: {expected}")
        if parts.password is not None:
            raise ValueError(
                "the broker URL holds a password, which anyone can read on the "
                "command line: give it in a file (--broker-password-file)"
            )
        if parts.query or parts.fragment:
            raise ValueError(f"bad broker URL {url!r}: {expected}")
        db = parts.path.lstrip("/") or "0"
        if "/" in parts.path[1:] or not (db.isascii() and db.isdigit()):
            raise ValueError(f"bad broker URL {url!r}: the DB is a number (/0)")
        if int(db) >= 2**31:
            raise ValueError(f"bad broker URL {url!r}: DB {db} is too large")
        return cls(
            host=parts.hostname,
            port=REDIS_PORT if port is None else port,
            db=int(db),
            tls=parts.scheme == "rediss",
            username=unquote(parts.username) if parts.username else None,
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.username}@" if self.username else ""
        return (
            f"{'rediss' if self.tls else 'redis'}://{user}{host}:{self.port}/{self.db}"
        )


def backoff(
    attempt: int, first: float = BACKOFF_FIRST, most: float = BACKOFF_MAX
) -> float:
    """
    :return: seconds to wait before connecting again after ``attempt``
        failures in a row: doubling from ``first`` up to ``most``, each
        wait a random half to whole of that, so that many processes that
        lost the same broker do not all come back at once.
    """
    delay = min(first * 2 ** min(max(attempt - 1, 0), 32), most)
    return delay * (0.5 + random.random() / 2)


def read_password(path: str) -> str:
    """
    :return: the broker's password: the first line of the file at ``path``.
    :raise ValueError: with a one-line reason if there is none.
    """
    try:
        with open(path, encoding="utf-8") as file:
            password = file.readline(4097).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ValueError(f"--broker-password-file {path}: {reason}") from None
    if not password or len(password) > 4096:
        raise ValueError(f"--broker-password-file {path}: no password in it")
    return password


class _LinkFactory(Factory):
    """
    Makes a :class:`_Link`'s txredisapi protocols, and takes the calls
    txredisapi makes on its own factory when ``AUTH`` fails.
    """

    noisy = False
    # txredisapi's connectionMade reads this when AUTH fails.
    isLazy = False

    def __init__(self, link: _Link) -> None:
        self.link = link

    def buildProtocol(self, addr: Any) -> Any:
        broker = self.link.broker
        protocol = self.link.protocol_class(
            charset=None,
            replyTimeout=broker.timeout,
            password=broker.password,
            dbid=None,
            convertNumbers=False,
            username=broker.address.username,
        )
        protocol.factory = self
        protocol.link = self.link
        return protocol

    def stopTrying(self) -> None:
        """
        txredisapi gives up after a refused ``AUTH``; netlab keeps trying
        (with its back-off), as a fixed password file may come with a
        restart of Redis rather than of netlab.
        """

    def connectionError(self, why: str) -> None:
        self.link.broker._log.error(
            "broker {broker}: {why}", broker=str(self.link.broker.address), why=why
        )


_PROTOCOLS: dict[str, type] = {}


def check_client() -> None:
    """
    :raise ValueError: with a one-line reason if the broker's client cannot
        run here: txredisapi parses with hiredis when it is installed (as
        netlab's requirements have it), and netlab needs that parser.
    """
    try:
        import hiredis  # noqa: F401
    except ImportError:
        raise ValueError(
            "the Redis broker needs hiredis, which netlab requires: pip install hiredis"
        ) from None


def _protocols() -> dict[str, type]:
    """
    :return: the txredisapi protocols netlab uses, made on first use:
        txredisapi imports the global reactor, which must wait until twistd
        has installed the one it runs.
    """
    if _PROTOCOLS:
        return _PROTOCOLS
    check_client()
    import txredisapi

    @implementer(IHandshakeListener)
    class Bounded:
        """
        Readiness (and over TLS, the handshake) as a Deferred, the link told
        of the loss, and no reply larger than the hub takes buffered
        (txredisapi would buffer any size).

        On hiredis's parser (txredisapi's ``HiredisProtocol``): each read's
        messages are delivered in that read, so a subscriber's share of
        them leaves in one ``send()``. txredisapi's own parser takes a
        reactor turn for each bulk string, three for each message.
        """

        link: _Link

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.ready: defer.Deferred[Any] = defer.Deferred()
            self.handshake: defer.Deferred[None] = defer.Deferred()
            self.whenConnected().addCallback(self._now_ready)

        def handshakeCompleted(self) -> None:
            self.handshake.callback(None)

        def _now_ready(self, _: object) -> None:
            if not self.ready.called:
                self.ready.callback(self)

        def dataReceived(self, data: bytes, unpause: bool = False) -> None:
            super().dataReceived(data)
            # What hiredis holds is the reply it has not had whole yet (and
            # under 1 KiB of read ones, which it drops in 1 KiB steps).
            held = self._reader.len()
            if held > self.link.broker.max_bulk + _REPLY_OVERHEAD and self.connected:
                _DROPPED[_TOO_LARGE] += 1
                self.link.broker._log.warn(
                    "broker {broker} sent a reply of over {size} bytes: over "
                    "the limit, so the connection is dropped",
                    broker=str(self.link.broker.address),
                    size=held,
                )
                self.transport.abortConnection()

        def connectionLost(self, reason: Failure) -> None:
            super().connectionLost(reason)
            for waiting in (self.handshake, self.ready):
                if not waiting.called:
                    waiting.errback(reason)
                    # Awaited, or never will be (no TLS, or the handshake
                    # failed first): not an unhandled error.
                    waiting.addErrback(_ignore)
            self.link.lost(self, reason)

    class Publisher(Bounded, txredisapi.RedisProtocol):
        pass

    class Subscriber(Bounded, txredisapi.SubscriberProtocol):
        def messageReceived(self, pattern: Any, channel: bytes, message: Any) -> None:
            self.link.broker.received(channel, message)

    _PROTOCOLS.update(publisher=Publisher, subscriber=Subscriber)
    return _PROTOCOLS


class _Link:
    """
    One connection to the broker, made again after :func:`backoff` each time
    it fails or is lost, until stopped.

    (Not Twisted's ``ClientService``: a connection lost while its
    ``prepareConnection`` waits, as when Redis refuses ``AUTH``, is an
    unhandled transition there.)
    """

    def __init__(self, broker: Broker, kind: str) -> None:
        self.broker = broker
        self.kind = kind
        self.protocol_class = _protocols()[kind]
        #: The connection, while it is up.
        self.protocol: Any = None
        self.connections = 0
        self._stopped = False
        self._waiting: defer.Deferred[Any] | None = None
        # The latest connection, ready or not.
        self._current: Any = None
        self._running: defer.Deferred[None] | None = None

    def start(self) -> None:
        self._running = defer.Deferred.fromCoroutine(self._keep_up())

    async def _keep_up(self) -> None:
        broker = self.broker
        attempt = 0
        while not self._stopped:
            started = broker.reactor.seconds()
            try:
                await self._connect()
            except Exception as error:
                if self._stopped:
                    return
                attempt += 1
                self._log_failure(attempt, error)
            else:
                # A connection that stays up a while starts the waits over;
                # one dropped at once (Redis full, say) does not.
                lasted = broker.reactor.seconds() - started
                attempt = 1 if lasted > STABLE_SECONDS else attempt + 1
            if self._stopped:
                return
            self._waiting = task.deferLater(
                broker.reactor, backoff(attempt, *broker.backoff), lambda: None
            )
            try:
                await self._waiting
            except defer.CancelledError:
                return
            finally:
                self._waiting = None

    async def _connect(self) -> None:
        """
        Connect, wait until ready (``AUTH`` done), and then until lost.
        """
        broker = self.broker
        self._waiting = with_deadline(
            broker.endpoint().connect(_LinkFactory(self)),
            broker.timeout,
            broker.reactor,
        )
        try:
            protocol = await self._waiting
        finally:
            self._waiting = None
        self._current = protocol
        try:
            protocol.gone = defer.Deferred()
            if self._stopped:
                raise defer.CancelledError()
            if broker.address.tls:
                # Not ready until the server is verified.
                await with_deadline(protocol.handshake, broker.timeout, broker.reactor)
            await with_deadline(protocol.ready, broker.timeout, broker.reactor)
            if protocol.gone.called:
                raise ConnectionError("lost while it was made ready")
        except BaseException:
            protocol.transport.abortConnection()
            raise
        self.connections += 1
        self.protocol = protocol
        broker.link_up(self)
        await protocol.gone

    def _log_failure(self, attempt: int, error: Exception) -> None:
        # Each failure in a row at debug, the first one of an outage louder.
        self.broker._log.emit(
            LogLevel.info if attempt == 1 else LogLevel.debug,
            "broker {broker}: {connection} connection failed: {reason} "
            "(attempt {attempt})",
            broker=str(self.broker.address),
            connection=self.kind,
            reason=_describe(error),
            attempt=attempt,
        )

    def lost(self, protocol: Any, reason: Failure) -> None:
        if protocol is self.protocol:
            self.protocol = None
            self.broker.link_down(self, reason)
        gone = getattr(protocol, "gone", None)
        if gone is not None and not gone.called:
            gone.callback(None)

    def stop(self) -> defer.Deferred[None]:
        """
        Stop connecting, and close the connection.

        :return: a Deferred that fires once it is closed.
        """
        self._stopped = True
        if self._waiting is not None:
            self._waiting.cancel()
        current = self._current
        if current is not None and current.transport is not None:
            current.transport.loseConnection()
        return self._running or defer.succeed(None)


def _describe(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text.splitlines()[0] if text else type(error).__name__


def _ignore(failure: Failure) -> None:
    # A command that found the connection gone: its link is being redone.
    return None


class Broker:
    """
    A Redis server that :class:`Hub` instances in many processes (and on
    many hosts) publish and subscribe through, with txredisapi: a
    Twisted-native client, so no asyncio reactor or thread is needed.

    Each process keeps two connections: one that publishes, and one that
    subscribes with ``SUBSCRIBE`` to each channel as it gains its first
    subscriber in the process (``UNSUBSCRIBE`` as it loses its last one).
    Channel ``room`` is Redis channel ``netlab:DB:room``: Redis pub/sub
    ignores the DB, so netlab makes it part of the name, and deployments on
    different DBs of one Redis stay apart.

    When a connection is lost, it is made again after :func:`backoff`, the
    channels are subscribed to again, and the state (:attr:`state`, in
    ``/healthz`` and the metrics) goes ``"down"`` then ``"up"``. While it is
    down, publishing goes on in each process; what would have crossed
    through Redis is dropped and counted (``netlab_pubsub_dropped``).

    :param address: where Redis is (a :class:`BrokerAddress` or its URL).
    :param password: for Redis's ``AUTH``.
    :param tls: how a ``rediss://`` server is verified (the system's trusted
        CAs by default).
    :param timeout: seconds to connect, and to wait for each answer.
    :param max_pending: the most bytes of publishes awaiting Redis's answers.
    :param backoff: the first and longest wait between connection attempts.
    """

    _log = Logger()

    def __init__(
        self,
        address: BrokerAddress | str,
        *,
        password: str | None = None,
        tls: ClientTLS | None = None,
        timeout: float = DEFAULT_BROKER_TIMEOUT,
        max_pending: int = DEFAULT_MAX_PENDING,
        backoff: tuple[float, float] = (BACKOFF_FIRST, BACKOFF_MAX),
        reactor: Any = None,
    ) -> None:
        if isinstance(address, str):
            address = BrokerAddress.parse(address)
        check_client()
        if reactor is None:
            from twisted.internet import reactor
        #: Where Redis is.
        self.address = address
        self.password = password
        self.tls = tls
        #: Seconds to connect, and to wait for each answer.
        self.timeout = timeout
        #: The most bytes of publishes that may await Redis's answers.
        self.max_pending = max_pending
        #: The first and longest wait between connection attempts.
        self.backoff = backoff
        self.reactor = reactor
        #: What Redis channel names start with (see the class docstring).
        self.prefix = f"netlab:{address.db}:".encode()
        #: Connections made again after one was lost.
        self.reconnects = 0
        self.hub: Hub | None = None
        self.max_bulk = DEFAULT_MAX_MESSAGE + _HEAD
        self._pending = 0
        self._links: list[_Link] = []
        self._up = False

    @property
    def state(self) -> str:
        """
        ``"up"`` while both connections are, else ``"down"``.
        """
        return "up" if self._up else "down"

    def endpoint(self) -> Any:
        """
        :return: the client endpoint Redis is reached through.
        """
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        address = self.address
        # Each publish leaves at once: other processes deliver it while
        # this one delivers it to its own subscribers.
        endpoint: Any = HostnameEndpoint(
            prompt(self.reactor), address.host, address.port, timeout=self.timeout
        )
        if address.tls:
            endpoint = wrapClientTLS(
                (self.tls or ClientTLS()).creator(address.host), endpoint
            )
        return endpoint

    def start(self, hub: Hub) -> None:
        """
        Connect, for ``hub``, and keep connecting until :meth:`stop`.
        """
        self.hub = hub
        self.max_bulk = hub.max_message + _HEAD
        self._links = [_Link(self, "publisher"), _Link(self, "subscriber")]
        metrics.BROKER_UP.values[()] = 0
        self._log.info(
            "connecting to broker {broker}", broker=str(self.address), state="down"
        )
        for link in self._links:
            link.start()

    def stop(self) -> defer.Deferred[Any]:
        """
        Disconnect, and stop connecting.

        :return: a Deferred that fires once both connections are closed
            (within :attr:`timeout`).
        """
        links, self._links = self._links, []
        self._up = False
        stopping = defer.gatherResults(
            [link.stop() for link in links],
            consumeErrors=True,
        )
        return with_deadline(stopping, self.timeout, self.reactor).addErrback(
            lambda failure: self._log.failure(
                "broker {broker}: not closed cleanly",
                failure,
                broker=str(self.address),
            )
        )

    def _link(self, kind: str) -> Any:
        for link in self._links:
            if link.kind == kind:
                return link.protocol
        return None

    def link_up(self, link: _Link) -> None:
        """
        ``link`` has (re)connected: subscribe again, and say so if the
        broker is up now.
        """
        if link.connections > 1:
            self.reconnects += 1
            metrics.BROKER_RECONNECTS.values[()] += 1
        if link.kind == "subscriber" and self.hub is not None:
            for channel in self.hub.channels():
                self.listen(channel)
        if not self._up and all(each.protocol is not None for each in self._links):
            self._up = True
            metrics.BROKER_UP.values[()] = 1
            self._log.info(
                "broker {broker} up (reconnects: {reconnects})",
                broker=str(self.address),
                state="up",
                reconnects=self.reconnects,
            )

    def link_down(self, link: _Link, reason: Failure) -> None:
        """
        ``link`` is lost: say so, once, while it is made again.
        """
        if link.kind == "publisher":
            self._pending = 0
        if self._up:
            self._up = False
            metrics.BROKER_UP.values[()] = 0
            self._log.warn(
                "broker {broker} down ({connection} connection: {reason}): "
                "local delivery goes on, other processes miss messages until "
                "it is back",
                broker=str(self.address),
                state="down",
                connection=link.kind,
                reason=reason.getErrorMessage(),
            )

    def listen(self, channel: str) -> None:
        """
        Subscribe to ``channel`` on Redis (if connected: else it is, on
        connecting).
        """
        subscriber = self._link("subscriber")
        if subscriber is not None:
            subscriber.subscribe([self.prefix + channel.encode()]).addErrback(_ignore)

    def unlisten(self, channel: str) -> None:
        """
        Unsubscribe from ``channel`` on Redis.
        """
        subscriber = self._link("subscriber")
        if subscriber is not None:
            subscriber.unsubscribe([self.prefix + channel.encode()]).addErrback(_ignore)

    def send(self, channel: str, data: bytes) -> bool:
        """
        Publish ``data`` to ``channel`` on Redis, unless it is down or
        :attr:`max_pending` bytes already wait for its answers: then drop it
        (counted).

        :return: whether it was sent.
        """
        publisher = self._link("publisher")
        if publisher is None:
            _DROPPED[_BROKER_DOWN] += 1
            return False
        size = len(data)
        if self._pending + size > self.max_pending:
            _DROPPED[_BROKER_BUSY] += 1
            return False
        try:
            sent = publisher.publish(self.prefix + channel.encode(), data)
        except Exception:
            # txredisapi's "Not connected": lost, and not yet told.
            _DROPPED[_BROKER_DOWN] += 1
            return False
        self._pending += size
        sent.addBoth(self._answered, size, publisher)
        _PUBSUB[_BROKER_OUT] += 1
        return True

    def _answered(self, result: Any, size: int, publisher: Any) -> None:
        if publisher is self._link("publisher"):
            self._pending -= size
        if isinstance(result, Failure):
            _DROPPED[_BROKER_DOWN] += 1

    def received(self, channel: bytes, data: Any) -> None:
        """
        Hand the hub a message Redis brought.
        """
        if self.hub is None or not channel.startswith(self.prefix):
            return
        if not isinstance(data, bytes):
            return
        try:
            name = channel[len(self.prefix) :].decode("utf-8")
        except UnicodeDecodeError:
            return
        self.hub.received(name, data)


class BrokerService(Service):
    """
    Bridges a hub (the process-wide :data:`hub` by default) to a
    :class:`Broker` while running: what ``--broker`` adds to a plugin.
    """

    def __init__(self, broker: Broker, hub: Hub | None = None) -> None:
        self.broker = broker
        self.hub = _process_hub() if hub is None else hub

    def startService(self) -> None:
        super().startService()
        self.hub.use(self.broker)
        self.broker.start(self.hub)

    def stopService(self) -> defer.Deferred[Any]:
        super().stopService()
        if self.hub.broker is self.broker:
            self.hub.use(None)
        return self.broker.stop()
