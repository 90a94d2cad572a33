"""
The workloads: what each measures, against which kind of server, with what
the load generator is told.

- ``tcp-echo``: round trips per second with 1 connection and with
  ``--connections`` (100), 64-byte messages, one in flight per connection.
- ``tcp-bulk``: MB/s (10^6 bytes) echoed over one connection, 64 KiB writes,
  at most 4 of them not yet echoed.
- ``http``: keep-alive ``GET /`` requests per second over ``--connections``
  (100), one in flight per connection.
- ``ws``: WebSocket echo messages per second over ``--connections`` (100),
  32-byte text messages, one in flight per connection.
- ``idle``: idle connections held, and the server's memory per connection,
  at each of ``--idle-levels`` (1,000, 5,000, 10,000).
- ``ws-idle``: the same with WebSocket connections, each opened with a
  handshake and one message echoed.
- ``http-user``: like ``http``, for a user's own dynamic resource
  (:mod:`netlab.tools.bench.userapp`): keep-alive ``GET /hello?name=bench``, each
  answer ``Hello, bench!``.
- ``ws-user``: like ``ws``, for a user's own WebSocket handler
  (:mod:`netlab.tools.bench.userapp`), which answers ``Echo: m``.
- ``ws-broadcast``: ``--subscribers`` (1,000) WebSocket connections in one
  room and a publisher (``c/fanout.c``, or :mod:`netlab.tools.bench.fanout`
  without a C compiler): messages delivered
  per second, and the 99th percentile of publish-to-receive latency.
"""

from __future__ import annotations

from dataclasses import dataclass

from netlab.tools.bench.implementations import (
    ECHO,
    HTTP,
    HTTP_USER,
    USER_BODY,
    WS,
    WS_BROADCAST,
    WS_USER,
)

ECHO_SIZE = 64
BULK_SIZE = 65536
BULK_WINDOW = 4
WS_SIZE = 32
#: ws-broadcast: messages the publisher of the Python generator
#: (:mod:`netlab.tools.bench.fanout`) keeps in flight (its --window).
BROADCAST_WINDOW = 8
#: The same for the C generator (``c/fanout.c``). With 1,000 subscribers a
#: message takes some 100 ms to reach the last one, so 8 in flight cap the
#: rate by the window (Little's law), not by the server's CPU; 64 keep a
#: queue at the server (it is then at 100% CPU) while each server holds at
#: most 64 x 1,000 small frames (a few MB).
C_BROADCAST_WINDOW = 64
#: What the http workload asks for, and the body each answer must have.
HTTP_PATH = "/"
HTTP_BODY = "Hello, world!"
#: The same for http-user (:mod:`netlab.tools.bench.userapp`); USER_BODY too.
USER_PATH = "/hello?name=bench"


@dataclass(frozen=True)
class Metric:
    """
    One figure of a workload, one column of its table.

    :ivar key: its name in the JSON.
    :ivar label: its column heading.
    :ivar unit: what it counts.
    :ivar mode: the load generator's mode.
    :ivar connections: how many connections (0: ``--connections``).
    :ivar higher_is_better: so a chart says which way is good.
    :ivar compare: whether it gets a ratio to the baseline (and a chart).
    :ivar bounded: whether the generator's ceiling can bound it
        (throughput can; a count of connections or memory cannot).
    :ivar path: the request target of HTTP requests and of WebSocket
        handshakes.
    :ivar expect: the body each HTTP answer must have.
    """

    key: str
    label: str
    unit: str
    mode: str
    connections: int = 1
    higher_is_better: bool = True
    compare: bool = True
    bounded: bool = True
    path: str = HTTP_PATH
    expect: str = HTTP_BODY


@dataclass(frozen=True)
class Workload:
    """
    :ivar kind: the service a server must offer to take part.
    :ivar ceiling: the C server that gives the generator its ceiling.
    :ivar baseline: the default ``--baseline``.
    :ivar scaling: the one-process row that rows of several processes are
        also compared to (their *scaling*), if any.
    """

    name: str
    kind: str
    summary: str
    ceiling: str
    baseline: str
    scaling: str = ""

    @property
    def idle(self) -> bool:
        """
        Whether it holds idle connections (figures per level) rather than
        measuring a rate.
        """
        return self.name in ("idle", "ws-idle")

    def metrics(
        self, connections: int, levels: tuple[int, ...], subscribers: int = 1000
    ) -> list[Metric]:
        """
        :return: the workload's figures for ``--connections``,
            ``--idle-levels`` and ``--subscribers``.
        """
        if self.name == "ws-broadcast":
            # No C server broadcasts: nothing gives the generator a ceiling.
            return [
                Metric(
                    "delivered",
                    f"delivered/s, {subscribers:,} subs",
                    "messages delivered/s",
                    "ws-broadcast",
                    subscribers,
                    bounded=False,
                ),
                Metric(
                    "p99_ms",
                    "p99 ms",
                    "ms, publish to receive",
                    "ws-broadcast",
                    subscribers,
                    higher_is_better=False,
                    bounded=False,
                ),
            ]
        if self.name == "tcp-echo":
            return [
                Metric("rt_1", "1 conn", "round trips/s", "echo", 1),
                Metric(
                    f"rt_{connections}",
                    f"{connections} conn",
                    "round trips/s",
                    "echo",
                    connections,
                ),
            ]
        if self.name == "tcp-bulk":
            return [Metric("mb_s", "MB/s echoed", "MB/s", "bulk", 1)]
        if self.name in ("http", "http-user"):
            user = self.name == "http-user"
            return [
                Metric(
                    "req_s",
                    f"req/s, {connections} conn",
                    "requests/s",
                    "http",
                    connections,
                    path=USER_PATH if user else HTTP_PATH,
                    expect=USER_BODY if user else HTTP_BODY,
                )
            ]
        if self.name in ("ws", "ws-user"):
            return [
                Metric(
                    "msg_s",
                    f"msg/s, {connections} conn",
                    "messages/s",
                    "ws",
                    connections,
                )
            ]
        mode = self.name  # idle or ws-idle: the generator's mode too
        metrics = []
        for level in levels:
            metrics.append(
                Metric(
                    f"held_{level}",
                    f"held/{level:,}",
                    "connections",
                    mode,
                    level,
                    compare=False,
                    bounded=False,
                )
            )
            metrics.append(
                Metric(
                    f"kib_{level}",
                    f"KiB/conn at {level:,}",
                    "KiB per connection",
                    mode,
                    level,
                    higher_is_better=False,
                    bounded=False,
                )
            )
        return metrics


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "tcp-echo",
            ECHO,
            f"TCP echo round trips/s, {ECHO_SIZE}-byte messages, one in flight "
            "per connection",
            "c-echo",
            "bare-echo",
        ),
        Workload(
            "tcp-bulk",
            ECHO,
            f"TCP echo throughput, MB/s echoed (10^6 bytes), one connection, "
            f"{BULK_SIZE // 1024} KiB writes, at most {BULK_WINDOW} unechoed",
            "c-echo",
            "bare-echo",
        ),
        Workload(
            "http",
            HTTP,
            "HTTP/1.1 keep-alive GET / requests/s, one in flight per connection",
            "c-http",
            "bare-web",
        ),
        Workload(
            "ws",
            WS,
            f"WebSocket echo messages/s, {WS_SIZE}-byte text messages, one in "
            "flight per connection",
            "c-ws",
            "bare-ws",
        ),
        Workload(
            "http-user",
            HTTP_USER,
            f"a user's twisted.web resource, HTTP/1.1 keep-alive GET {USER_PATH} "
            f"({USER_BODY}) requests/s, one in flight per connection",
            "c-http-user",
            "bare-web-user",
        ),
        Workload(
            "ws-user",
            WS_USER,
            f"a user's WebSocket handler answering Echo: m, {WS_SIZE}-byte text "
            "messages/s, one in flight per connection",
            "c-ws",
            "bare-ws",
        ),
        Workload(
            "ws-broadcast",
            WS_BROADCAST,
            "WebSocket fan-out: one publisher, --subscribers in one room; "
            "messages delivered/s and p99 publish-to-receive latency, with a "
            "window of messages not yet delivered to every subscriber (its "
            "size on the generator line)",
            "",
            "ws-room-websockets",
            scaling="netlab-ws-room",
        ),
        Workload(
            "idle",
            ECHO,
            "idle TCP connections held, and the server's memory per connection "
            "(PSS of its processes, after minus before, over those held)",
            "c-echo",
            "bare-echo",
        ),
        Workload(
            "ws-idle",
            WS,
            "idle WebSocket connections held (each after its handshake and one "
            "echoed message), and the server's memory per connection",
            "c-ws",
            "bare-ws",
        ),
    )
}
