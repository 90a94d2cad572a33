"""
Prometheus metrics for every netlab service, in ``prometheus_client``'s
default registry.

The services count as they go (a few integer additions per event); nothing
is served until a plugin's ``--metrics ENDPOINT`` (or your own code) mounts
:func:`resource`, which answers ``GET /metrics`` with Prometheus text::

    root.putChild(b"metrics", netlab.metrics.resource())
"""

from __future__ import annotations

import functools
from typing import Any

from OpenSSL import SSL
from prometheus_client import Counter, Gauge, Histogram
from twisted.python.failure import Failure
from twisted.web.resource import Resource

CONNECTIONS_OPENED = Counter(
    "netlab_connections_opened", "Connections accepted.", ["service"]
)
CONNECTIONS_CLOSED = Counter(
    "netlab_connections_closed", "Connections closed.", ["service"]
)
CONNECTIONS_REFUSED = Counter(
    "netlab_connections_refused",
    "Connections refused: over a limit, or while draining.",
    ["service", "reason"],
)
CONNECTIONS_ACTIVE = Gauge(
    "netlab_connections_active", "Open connections.", ["service"]
)
BYTES_RECEIVED = Counter(
    "netlab_received_bytes", "Application bytes received.", ["service"]
)
BYTES_SENT = Counter("netlab_sent_bytes", "Application bytes sent.", ["service"])
HTTP_REQUESTS = Counter(
    "netlab_http_requests", "HTTP requests answered.", ["service", "method", "status"]
)
HTTP_DURATION = Histogram(
    "netlab_http_request_duration_seconds",
    "Time from a request's arrival to its last response byte.",
    ["service", "method"],
)
WEBSOCKET_MESSAGES = Counter(
    "netlab_websocket_messages", "WebSocket messages.", ["direction"]
)
WEBSOCKET_CLOSES = Counter(
    "netlab_websocket_closes", "WebSocket connections closed, by code.", ["code"]
)
TLS_FAILURES = Counter(
    "netlab_tls_handshake_failures",
    "TLS connections that ended in a TLS error (refused by the server, or "
    "alerted by the client).",
    ["service"],
)
AUTH_FAILURES = Counter(
    "netlab_auth_failures", "Requests refused for a missing or bad token.", ["via"]
)

# HTTP methods are the client's to choose: anything unusual is one label.
# (So every label set is from a short list, and the cache below stays small.)
_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}


@functools.lru_cache(maxsize=4096)
def _child(metric: Any, *labels: str) -> Any:
    """
    :return: ``metric.labels(*labels)``, looked up once: prometheus_client's
        own lookup costs more than the count it leads to.
    """
    return metric.labels(*labels)


def opened(service: str) -> None:
    """
    Count a connection to ``service`` as opened.
    """
    _child(CONNECTIONS_OPENED, service).inc()
    _child(CONNECTIONS_ACTIVE, service).inc()


def closed(service: str, reason: Failure | None = None) -> None:
    """
    Count a connection to ``service`` as closed, and a failed TLS handshake
    if that is why.
    """
    _child(CONNECTIONS_CLOSED, service).inc()
    _child(CONNECTIONS_ACTIVE, service).dec()
    if reason is not None and reason.check(SSL.Error):
        _child(TLS_FAILURES, service).inc()


def transferred(service: str, received: int, sent: int) -> None:
    """
    Count ``service``'s application bytes.
    """
    if received:
        _child(BYTES_RECEIVED, service).inc(received)
    if sent:
        _child(BYTES_SENT, service).inc(sent)


def http_request(service: str, method: str, status: int, seconds: float) -> None:
    """
    Count one HTTP request that ``service`` answered.
    """
    method = method if method in _METHODS else "other"
    _child(HTTP_REQUESTS, service, method, str(status)).inc()
    _child(HTTP_DURATION, service, method).observe(seconds)


def echoed_message(service: str, received: int, sent: int) -> None:
    """
    Count one WebSocket message that ``service`` received and answered.
    """
    _child(WEBSOCKET_MESSAGES, "in").inc()
    _child(WEBSOCKET_MESSAGES, "out").inc()
    transferred(service, received, sent)


def refused(service: str, reason: str) -> None:
    """
    Count a connection to ``service`` refused for ``reason``.
    """
    _child(CONNECTIONS_REFUSED, service, reason).inc()


def auth_failed(via: str) -> None:
    """
    Count a request refused for a missing or bad token, ``via`` HTTP or
    WebSocket.
    """
    _child(AUTH_FAILURES, via).inc()


def websocket_closed(code: int | None) -> None:
    """
    Count a WebSocket closed with ``code``.
    """
    _child(WEBSOCKET_CLOSES, str(code)).inc()


def resource() -> Resource:
    """
    :return: a resource that serves the metrics as Prometheus text.
    """
    # prometheus_client's Twisted module imports the global reactor: only
    # once twistd has installed the one it runs.
    from prometheus_client.twisted import MetricsResource

    return MetricsResource()
