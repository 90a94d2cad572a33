"""
The limits and timeouts every netlab service shares.

They live here, once: each service reads the :class:`Limits` it is given, and
each twistd plugin offers the options for the limits that apply to it, with
the same names and documented defaults everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from twisted.python import usage


@dataclass(frozen=True)
class Limits:
    """
    Bounds a netlab server puts on each connection and request.

    :ivar idle_timeout: seconds a connection may stay silent (nothing
        received) before the server drops it; for HTTP, also how long a
        kept-alive connection waits for its next request.
    :ivar head_timeout: seconds an HTTP client has, from the start of a
        request, to send the whole request line and headers (``408`` after).
    :ivar body_timeout: seconds an HTTP client has, once the head is in, to
        send the whole request body: a deadline for the body, not a gap
        between reads, so a client trickling a byte at a time is cut off
        (``408`` after). 60 s is 1 MiB (the default ``max_body``) at about
        140 kbit/s.
    :ivar max_body: the largest HTTP request body, in bytes (``413`` above).
    :ivar max_request_line: the longest HTTP request line, in bytes (``414``).
    :ivar max_header_block: the most bytes of HTTP headers in one request, and
        the longest single header line is ``max_request_line`` (``431``).
    :ivar max_headers: the most HTTP header fields in one request (``431``).
    :ivar max_message: the largest WebSocket message or frame, in bytes, after
        decompression (close ``1009`` above).
    :ivar handshake_timeout: seconds for a WebSocket opening handshake, and
        again for a closing one.
    :ivar ping_interval: seconds between the server's WebSocket pings.
    :ivar ping_timeout: seconds a WebSocket peer has to answer a ping before
        it is dropped as dead.
    :ivar max_connections: the most connections a service holds at once;
        over it, a TCP connection is closed at once, and HTTP and WebSocket
        clients get ``503`` with ``Retry-After``.
    :ivar max_per_ip: the most connections from one client address.
    :ivar drain_seconds: on stop, how long open connections get to finish
        (requests in flight, echoes of what was received, WebSocket closing
        handshakes) before they are aborted.
    """

    idle_timeout: float = 60.0
    head_timeout: float = 10.0
    body_timeout: float = 60.0
    max_body: int = 1024 * 1024
    max_request_line: int = 8192
    max_header_block: int = 16384
    max_headers: int = 100
    max_message: int = 1024 * 1024
    handshake_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 10.0
    max_connections: int = 10000
    max_per_ip: int = 1000
    drain_seconds: float = 10.0

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{field.name} must be positive, not {value}")


#: What a server uses when given no :class:`Limits`.
DEFAULT_LIMITS = Limits()


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def coerce(value: str) -> Any:
        number = kind(value)
        if not (number > 0 and math.isfinite(number)):
            raise ValueError(f"must be a positive number, not {value}")
        return number

    coerce.coerceDoc = "Must be a positive number."  # type: ignore[attr-defined]
    return coerce


# Each limit's option: its name on the command line, its help, its type.
_OPTIONS: dict[str, tuple[str, str, Callable[[str], Any]]] = {
    "idle_timeout": (
        "idle-timeout",
        "Seconds a connection may stay silent before it is dropped.",
        _positive(float),
    ),
    "head_timeout": (
        "head-timeout",
        "Seconds a client has to send a whole HTTP request head.",
        _positive(float),
    ),
    "body_timeout": (
        "body-timeout",
        "Seconds a client has, once the head is in, to send a whole HTTP request body.",
        _positive(float),
    ),
    "max_body": ("max-body", "Largest HTTP request body, in bytes.", _positive(int)),
    "max_request_line": (
        "max-request-line",
        "Longest HTTP request line or header line, in bytes.",
        _positive(int),
    ),
    "max_header_block": (
        "max-header-block",
        "Most bytes of HTTP headers in one request.",
        _positive(int),
    ),
    "max_headers": (
        "max-headers",
        "Most HTTP header fields in one request.",
        _positive(int),
    ),
    "max_message": (
        "max-message",
        "Largest WebSocket message, in bytes (after decompression).",
        _positive(int),
    ),
    "handshake_timeout": (
        "handshake-timeout",
        "Seconds for a WebSocket opening (or closing) handshake.",
        _positive(float),
    ),
    "ping_interval": (
        "ping-interval",
        "Seconds between WebSocket pings.",
        _positive(float),
    ),
    "ping_timeout": (
        "ping-timeout",
        "Seconds a WebSocket peer has to answer a ping.",
        _positive(float),
    ),
    "max_connections": (
        "max-connections",
        "Most connections the service holds at once.",
        _positive(int),
    ),
    "max_per_ip": (
        "max-per-ip",
        "Most connections from one client address.",
        _positive(int),
    ),
    "drain_seconds": (
        "drain-seconds",
        "On stop, seconds open connections get to finish before they are aborted.",
        _positive(float),
    ),
}

# What every service shares: admission and the drain on stop.
_EVERY_SERVICE = ("max_connections", "max_per_ip", "drain_seconds")
#: The limits that apply to a raw TCP service.
TCP_LIMITS = ("idle_timeout", *_EVERY_SERVICE)
#: The limits that apply to a WebSocket service.
WS_LIMITS = (
    *_EVERY_SERVICE,
    "idle_timeout",
    "max_message",
    "handshake_timeout",
    "ping_interval",
    "ping_timeout",
)
#: The limits that apply to an HTTP service (which also serves WebSocket).
HTTP_LIMITS = tuple(_OPTIONS)


def limit_parameters(names: tuple[str, ...]) -> list[list[Any]]:
    """
    :return: ``optParameters`` entries for the named :class:`Limits` fields.
    """
    return [
        [option, None, getattr(DEFAULT_LIMITS, name), doc, coerce]
        for name, (option, doc, coerce) in _OPTIONS.items()
        if name in names
    ]


class LimitOptions(usage.Options):
    """
    The command-line face of :class:`Limits`, mixed into every netlab plugin.

    Subclasses list the limits they offer with :func:`limit_parameters`.
    """

    def limits(self) -> Limits:
        """
        :return: the :class:`Limits` these options describe; limits without
            an option keep their defaults.
        """
        given = {
            name: self[option]
            for name, (option, _, _) in _OPTIONS.items()
            if option in self
        }
        try:
            return Limits(**given)
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
