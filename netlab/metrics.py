"""
Prometheus metrics for every netlab service, in ``prometheus_client``'s
default registry.

The services count as they go (a few integer additions per event); nothing
is served until a plugin's ``--metrics ENDPOINT`` (or your own code) mounts
:func:`resource`, which answers ``GET /metrics`` with Prometheus text::

    root.putChild(b"metrics", netlab.metrics.resource())
"""

from __future__ import annotations

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
_METHODS = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}


def opened(service: str) -> None:
    """
    Count a connection to ``service`` as opened.
    """
    CONNECTIONS_OPENED.labels(service).inc()
    CONNECTIONS_ACTIVE.labels(service).inc()


def closed(service: str, reason: Failure | None = None) -> None:
    """
    Count a connection to ``service`` as closed, and a failed TLS handshake
    if that is why.
    """
    CONNECTIONS_CLOSED.labels(service).inc()
    CONNECTIONS_ACTIVE.labels(service).dec()
    if reason is not None and reason.check(SSL.Error):
        TLS_FAILURES.labels(service).inc()


def transferred(service: str, received: int, sent: int) -> None:
    """
    Count ``service``'s application bytes.
    """
    if received:
        BYTES_RECEIVED.labels(service).inc(received)
    if sent:
        BYTES_SENT.labels(service).inc(sent)


def http_request(service: str, method: str, status: int, seconds: float) -> None:
    """
    Count one HTTP request that ``service`` answered.
    """
    method = method if method in _METHODS else "other"
    HTTP_REQUESTS.labels(service, method, str(status)).inc()
    HTTP_DURATION.labels(service, method).observe(seconds)


def resource() -> Resource:
    """
    :return: a resource that serves the metrics as Prometheus text.
    """
    # prometheus_client's Twisted module imports the global reactor: only
    # once twistd has installed the one it runs.
    from prometheus_client.twisted import MetricsResource

    return MetricsResource()
