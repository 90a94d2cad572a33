"""
JSON-lines logs, for machines; plain text, for people, as twistd writes it
but cheaper.

``twistd --logger netlab.logs.text ...`` writes the lines twistd's default
log does, to standard output; it formats each second's timestamp once
instead of for every event, which halves the cost of a busy access log.

``twistd --logger netlab.logs.json ...`` writes one JSON object per event to
standard output::

    {"time": "2026-11-24T04:50:01.123456+00:00", "level": "info",
     "namespace": "netlab.tcp.Echo", "text": "echo connection from ...",
     "service": "echo", "connection": 7, "peer": "127.0.0.1:50312",
     "bytes_in": 5, ...}

Each event has its time, level, namespace and text, the ``service``, the
``connection`` (an id that every event of one connection shares) and the
``peer`` when it is about a connection, and the event's own fields.
"""

from __future__ import annotations

import datetime
import sys
from json import dumps
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from zope.interface import implementer

# Twisted's bookkeeping, and fields that are shown some other way.
_HIDDEN = {"format", "message", "time", "system", "isError", "log_legacy"}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return str(value)


def _about(source: Any) -> dict[str, Any]:
    """
    What the object that logged says about its connection, if it is one.
    """
    found: dict[str, Any] = {}
    connection = getattr(source, "connection_id", None)
    if connection is not None:
        found["connection"] = connection
    factory = getattr(source, "factory", None)
    service = getattr(factory, "service_name", None) or getattr(
        source, "service_name", None
    )
    if isinstance(service, str):
        found["service"] = service
    peer = getattr(source, "peer", None) or getattr(source, "peer_address", None)
    if isinstance(peer, str) and peer != "?":
        found["peer"] = peer
    return found


def as_json(event: LogEvent) -> dict[str, Any]:
    """
    :return: ``event`` as a flat dictionary of JSON values.
    """
    record: dict[str, Any] = {
        "time": datetime.datetime.fromtimestamp(
            event.get("log_time", 0), datetime.UTC
        ).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", "-"),
        "text": formatEvent(event),
    }
    record.update(_about(event.get("log_source")))
    for key, value in event.items():
        if key.startswith("log_") or key in _HIDDEN:
            continue
        record[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return record


@implementer(ILogObserver)
class JSONLines:
    """
    A log observer writing each event as one line of JSON to ``out``.
    """

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        self._out.write(dumps(as_json(event)) + "\n")
        self._out.flush()


def json() -> JSONLines:
    """
    The observer factory for ``twistd --logger netlab.logs.json``: JSON lines
    on standard output.
    """
    return JSONLines(sys.stdout)


class _SecondClock:
    """
    Formats a time as twistd's text log does, to the second, once a second.
    """

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when)
        if second != self._second:
            self._second, self._text = second, formatTime(second)
        return self._text


def text() -> FileLogObserver:
    """
    The observer factory for ``twistd --logger netlab.logs.text``: twistd's
    text lines on standard output.
    """
    clock = _SecondClock()
    return FileLogObserver(
        sys.stdout, lambda event: formatEventAsClassicLogText(event, clock)
    )
