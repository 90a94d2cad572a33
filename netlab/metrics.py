"""
Prometheus metrics for every netlab service, in ``prometheus_client``'s
default registry.

The services count as they go (an addition to a dictionary per event); nothing
is served until a plugin's ``--metrics ENDPOINT`` (or your own code) mounts
:func:`resource`, which answers ``GET /metrics`` with Prometheus text::

    root.putChild(b"metrics", netlab.metrics.resource())
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from OpenSSL import SSL
from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from twisted.python.failure import Failure
from twisted.web.resource import Resource

# The services count in plain dictionaries, which prometheus_client reads only
# when scraped: its own Counter takes a lock and a label lookup per count,
# which cost more than the request or message being counted. Every count
# happens in the reactor's thread.


class _Family:
    """
    One metric: its name, help, label names and values by label values.
    """

    def __init__(self, kind: Any, name: str, text: str, labels: tuple[str, ...]):
        self.kind, self.name, self.text, self.labels = kind, name, text, labels
        self.values: defaultdict[tuple[str, ...], float] = defaultdict(float)
        _FAMILIES.append(self)

    def collect(self) -> Any:
        family = self.kind(self.name, self.text, labels=self.labels)
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        return family


_FAMILIES: list[_Family] = []

CONNECTIONS_OPENED = _Family(
    CounterMetricFamily,
    "netlab_connections_opened",
    "Connections accepted.",
    ("service",),
)
CONNECTIONS_CLOSED = _Family(
    CounterMetricFamily,
    "netlab_connections_closed",
    "Connections closed.",
    ("service",),
)
CONNECTIONS_REFUSED = _Family(
    CounterMetricFamily,
    "netlab_connections_refused",
    "Connections refused: over a limit, while draining, or for a bad PROXY header.",
    ("service", "reason"),
)
CONNECTIONS_ACTIVE = _Family(
    GaugeMetricFamily,
    "netlab_connections_active",
    "Open connections.",
    ("service",),
)
BYTES_RECEIVED = _Family(
    CounterMetricFamily,
    "netlab_received_bytes",
    "Application bytes received.",
    ("service",),
)
BYTES_SENT = _Family(
    CounterMetricFamily,
    "netlab_sent_bytes",
    "Application bytes sent.",
    ("service",),
)
HTTP_REQUESTS = _Family(
    CounterMetricFamily,
    "netlab_http_requests",
    "HTTP requests answered.",
    ("service", "method", "status"),
)
WEBSOCKET_MESSAGES = _Family(
    CounterMetricFamily,
    "netlab_websocket_messages",
    "WebSocket messages.",
    ("direction",),
)
WEBSOCKET_CLOSES = _Family(
    CounterMetricFamily,
    "netlab_websocket_closes",
    "WebSocket connections closed, by code.",
    ("code",),
)
WEBSOCKET_OVERFLOWS = _Family(
    CounterMetricFamily,
    "netlab_websocket_overflows",
    "WebSocket messages a client was too slow to take: dropped (policy drop) "
    "or the connection closed (policy close).",
    ("service", "policy"),
)
TLS_FAILURES = _Family(
    CounterMetricFamily,
    "netlab_tls_handshake_failures",
    "TLS connections that ended in a TLS error (refused by the server, or "
    "alerted by the client).",
    ("service",),
)
AUTH_FAILURES = _Family(
    CounterMetricFamily,
    "netlab_auth_failures",
    "Requests refused for a missing or bad token.",
    ("via",),
)
PUBSUB_MESSAGES = _Family(
    CounterMetricFamily,
    "netlab_pubsub_messages",
    "Publish/subscribe messages: published here, delivered to subscribers "
    "here, sent to the broker, and received from it (from other processes).",
    ("event",),
)
PUBSUB_DROPPED = _Family(
    CounterMetricFamily,
    "netlab_pubsub_dropped",
    "Messages that did not cross the broker: it was down (broker_down), too "
    "many bytes awaited its answers (broker_busy), or too large (too_large).",
    ("reason",),
)
BROKER_UP = _Family(
    GaugeMetricFamily,
    "netlab_broker_up",
    "1 while the pub/sub broker (Redis) is connected, 0 while it is not.",
    (),
)
BROKER_RECONNECTS = _Family(
    CounterMetricFamily,
    "netlab_broker_reconnects",
    "Connections to the pub/sub broker made again after one was lost.",
    (),
)


class _Durations:
    """
    The HTTP request-duration histogram: counts per bucket (prometheus's
    default bounds), and the sum, by service and method.
    """

    name = "netlab_http_request_duration_seconds"
    text = "Time from a request's arrival to its last response byte."
    bounds = tuple(Histogram.DEFAULT_BUCKETS)

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[float]] = {}

    def observe(self, labels: tuple[str, str], seconds: float) -> None:
        counts = self.values.get(labels)
        if counts is None:
            # One count per bound, then the sum.
            counts = self.values[labels] = [0.0] * (len(self.bounds) + 1)
        counts[bisect.bisect_left(self.bounds, seconds)] += 1
        counts[-1] += seconds

    def collect(self) -> Any:
        family = HistogramMetricFamily(
            self.name, self.text, labels=("service", "method")
        )
        for labels, counts in list(self.values.items()):
            cumulative, buckets = 0.0, []
            for bound, count in zip(self.bounds, counts, strict=False):
                cumulative += count
                label = "+Inf" if bound == float("inf") else repr(float(bound))
                buckets.append((label, cumulative))
            family.add_metric(labels, buckets, counts[-1])
        return family


HTTP_DURATION = _Durations()


class _Collector:
    """
    What prometheus_client asks for at each scrape.
    """

    def collect(self) -> Iterator[Any]:
        for family in _FAMILIES:
            yield family.collect()
        yield HTTP_DURATION.collect()


REGISTRY.register(_Collector())

# HTTP methods are the client's to choose: anything unusual is one label.
_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
_IN, _OUT = ("in",), ("out",)


def opened(service: str) -> None:
    """
    Count a connection to ``service`` as opened.
    """
    CONNECTIONS_OPENED.values[(service,)] += 1
    CONNECTIONS_ACTIVE.values[(service,)] += 1


def closed(service: str, reason: Failure | None = None) -> None:
    """
    Count a connection to ``service`` as closed, and a failed TLS handshake
    if that is why.
    """
    CONNECTIONS_CLOSED.values[(service,)] += 1
    CONNECTIONS_ACTIVE.values[(service,)] -= 1
    if reason is not None and reason.check(SSL.Error):
        TLS_FAILURES.values[(service,)] += 1


def transferred(service: str, received: int, sent: int) -> None:
    """
    Count ``service``'s application bytes.
    """
    if received:
        BYTES_RECEIVED.values[(service,)] += received
    if sent:
        BYTES_SENT.values[(service,)] += sent


def http_request(
    service: str,
    method: str,
    status: int,
    seconds: float,
    received: int = 0,
    sent: int = 0,
) -> None:
    """
    Count one HTTP request that ``service`` answered, and its body bytes
    (as :func:`transferred` would: one call a request).
    """
    method = method if method in _METHODS else "other"
    HTTP_REQUESTS.values[(service, method, str(status))] += 1
    HTTP_DURATION.observe((service, method), seconds)
    if received:
        BYTES_RECEIVED.values[(service,)] += received
    if sent:
        BYTES_SENT.values[(service,)] += sent


def echoed_message(service: str, received: int, sent: int) -> None:
    """
    Count one WebSocket message that ``service`` received and answered.
    """
    messages = WEBSOCKET_MESSAGES.values
    messages[_IN] += 1
    messages[_OUT] += 1
    BYTES_RECEIVED.values[(service,)] += received
    BYTES_SENT.values[(service,)] += sent


def overflowed(service: str, policy: str) -> None:
    """
    Count a WebSocket message that found its client's outgoing queue full,
    and what ``policy`` did about it (``drop`` or ``close``).
    """
    WEBSOCKET_OVERFLOWS.values[(service, policy)] += 1


def refused(service: str, reason: str) -> None:
    """
    Count a connection to ``service`` refused for ``reason``.
    """
    CONNECTIONS_REFUSED.values[(service, reason)] += 1


def auth_failed(via: str) -> None:
    """
    Count a request refused for a missing or bad token, ``via`` HTTP or
    WebSocket.
    """
    AUTH_FAILURES.values[(via,)] += 1


def websocket_closed(code: int | None) -> None:
    """
    Count a WebSocket closed with ``code``.
    """
    WEBSOCKET_CLOSES.values[(str(code),)] += 1


def resource() -> Resource:
    """
    :return: a resource that serves the metrics as Prometheus text.
    """
    # prometheus_client's Twisted module imports the global reactor: only
    # once twistd has installed the one it runs.
    from prometheus_client.twisted import MetricsResource

    return MetricsResource()
