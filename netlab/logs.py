"""
JSON-lines logs, for machines; plain text, for people, as twistd writes it
but cheaper.

:class:`TextLines` writes the lines twistd's default log does, for a fraction
of the cost per line: each second's timestamp is formatted once, an event
whose format is one text field (netlab's access log) skips the format parser,
and the lines of one reactor turn reach the file in one write instead of one
each. It is what a netlab plugin logs with when twistd is given no
``--logger``: :func:`default` writes where twistd's own observer would have
(standard output under ``-n``; otherwise ``--logfile``, ``twistd.log`` by
default, rotated by size and on SIGUSR1 as twistd rotates it), and
``--syslog`` is left to twistd. ``twistd --logger netlab.logs.twistd ...``
brings twistd's own observer back, writing to the same place.

``twistd --logger netlab.logs.text ...`` writes the same lines to standard
output, whatever ``--logfile`` says (as any ``--logger``).

``twistd --logger netlab.logs.json ...`` writes one JSON object per event to
standard output::

    {"time": "2026-11-24T04:50:01.123456+00:00", "level": "info",
     "namespace": "netlab.services.echo.Echo", "text": "echo connection from ...",
     "service": "echo", "connection": 7, "peer": "127.0.0.1:50312",
     "bytes_in": 5, ...}

Each event has its time, level, namespace and text, the ``service``, the
``connection`` (an id that every event of one connection shares) and the
``peer`` when it is about a connection, and the event's own fields.
"""

from __future__ import annotations

import atexit
import datetime
import signal
import sys
from collections import deque
from collections.abc import Callable, Mapping
from json import dumps
from typing import IO, Any, Generic, TypeVar

from twisted.logger import (
    ILogObserver,
    LogEvent,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
)
from twisted.python.logfile import LogFile
from twisted.python.threadable import isInIOThread
from zope.interface import implementer

T = TypeVar("T")

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


def source_fields(source: Any) -> dict[str, Any]:
    """
    :return: what the object that logged says about its connection, if it
        is one: its ``connection`` id, ``service`` and ``peer``.
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
    record.update(source_fields(event.get("log_source")))
    for key, value in event.items():
        if key.startswith("log_") or key in _HIDDEN:
            continue
        record[key] = _plain(value)
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return record


class Lines:
    """
    Writes lines to ``out``: those of one reactor turn in one write while a
    reactor runs (a busy server logs many lines per turn, and a system call
    each cost more than making them), at once otherwise.
    """

    #: Lines held at most before they are written, whatever the turn.
    max_held = 256

    def __init__(self, out: IO[str]) -> None:
        self._out = out
        # No lock: a signal handler that logs (twistd's, on SIGTERM) runs in
        # the middle of whatever the main thread was doing, a flush holding
        # a lock included. A deque's append and popleft are atomic, so each
        # line is written once, in order, from any thread.
        self._held: deque[str] = deque()
        self._flushing = False
        # Whatever a last turn left, when the process ends.
        atexit.register(self.flush)
        self._watched: Any = None

    def write_line(self, line: str) -> None:
        held = self._held
        held.append(line)
        count = len(held)
        # Only a reactor already installed: importing it here would install
        # the default one before twistd installs the one it was asked for.
        reactor: Any = sys.modules.get("twisted.internet.reactor")
        if count >= self.max_held or not getattr(reactor, "running", False):
            # No turn will end to write them (the reactor stopped, or never
            # ran: twistd's last lines come then), or enough are waiting.
            self.flush()
        elif count == 1:
            if isInIOThread():
                reactor.callLater(0, self.flush)
                if self._watched is not reactor:
                    # The turn that stops the reactor never ends: write what
                    # its shutdown logged once the shutdown is over.
                    reactor.addSystemEventTrigger("after", "shutdown", self.flush)
                    self._watched = reactor
            else:
                reactor.callFromThread(self.flush)

    def flush(self) -> None:
        """
        Write the lines held, if any.
        """
        if self._flushing:
            # Called from within a flush (a signal handler that logged): the
            # flush under way writes the new line too, and a nested write to
            # the same buffered file would fail.
            return
        held = self._held
        if not held:
            return
        self._flushing = True
        try:
            out = self._out
            write = out.write
            while held:
                # The lines held, in one write; but a file that rotates by
                # size (twistd's --logfile) gets its lines in as many writes
                # as it takes to rotate where it would have, line by line.
                room = _room(out)
                lines = [held.popleft()]
                size = len(lines[0])
                while held and size < room:
                    line = held.popleft()
                    lines.append(line)
                    size += len(line)
                write("".join(lines))
            out.flush()
        finally:
            self._flushing = False


def _room(out: Any) -> float:
    """
    :return: how much text ``out`` takes before it rotates: a
        :class:`~twisted.python.logfile.LogFile` rotates before a write when
        it holds its ``rotateLength`` or more, and starts empty.
    """
    if isinstance(out, LogFile) and out.rotateLength:
        if out.size >= out.rotateLength:
            return float(out.rotateLength)
        return float(out.rotateLength - out.size)
    return float("inf")


@implementer(ILogObserver)
class JSONLines(Lines):
    """
    A log observer writing each event as one line of JSON to ``out``.
    """

    def __call__(self, event: LogEvent) -> None:
        self.write_line(dumps(as_json(event)) + "\n")


def json() -> JSONLines:
    """
    The observer factory for ``twistd --logger netlab.logs.json``: JSON lines
    on standard output.
    """
    return JSONLines(sys.stdout)


class PerSecond(Generic[T]):
    """
    A time formatted by ``format``, to the second, once a second: a busy
    service formats the same second many times over (log lines, the HTTP
    ``Date`` header). ``None`` (no time) goes to ``format`` as it is.
    """

    def __init__(self, format: Callable[[Any], T]) -> None:
        self._format = format
        self._second: int | None = None
        self._text: Any = None

    def __call__(self, when: float | None) -> T:
        if when is None:
            return self._format(None)
        second = int(when)
        if second != self._second:
            self._second, self._text = second, self._format(second)
        return self._text


def classic_text(event: LogEvent, clock: Any = formatTime) -> str | None:
    """
    :return: ``event`` as :func:`twisted.logger.formatEventAsClassicLogText`
        writes it, the same text, made without the format parser when the
        event's format is one field holding text (``"{request}"``).
    """
    format = event.get("log_format")
    level = event.get("log_level")
    system = event.get("log_system")
    if (
        isinstance(format, str)
        and format[:1] == "{"
        and format[-1:] == "}"
        and format[1:-1].isidentifier()
        and level is not None
        and (system is None or isinstance(system, str))
        and "log_failure" not in event
    ):
        # A str field formats as itself; a flattened event (one relayed by
        # netlab.workers) is formatted from its flattened field, as
        # twisted.logger's flatFormat does.
        name = format[1:-1]
        flattened = event.get("log_flattened")
        if flattened is None:
            text = event.get(name)
        else:
            text = flattened.get(f"{name}!s:") if isinstance(flattened, dict) else None
        if isinstance(text, str) and text:
            when = clock(event.get("log_time"))
            if system is None:
                system = f"{event.get('log_namespace', '-')}#{level.name}"
            text = text.replace("\n", "\n\t")
            return f"{when} [{system}] {text}\n"
    return formatEventAsClassicLogText(event, clock)


@implementer(ILogObserver)
class TextLines(Lines):
    """
    A log observer writing twistd's text lines to ``out``.
    """

    def __init__(self, out: IO[str]) -> None:
        super().__init__(out)
        self._clock = PerSecond(formatTime)

    def __call__(self, event: LogEvent) -> None:
        line = classic_text(event, self._clock)
        if line:
            self.write_line(line)


def text() -> TextLines:
    """
    The observer factory for ``twistd --logger netlab.logs.text``: twistd's
    text lines on standard output.
    """
    return TextLines(sys.stdout)


# What twistd was told about its log (--logfile, --nodaemon, --syslog,
# --prefix), as a netlab plugin's options saw it: where default() and
# twistd() write. None: not under twistd with a netlab plugin.
_twistd_options: dict[str, Any] | None = None

#: The ``--logger`` that netlab's plugins give twistd when it has none.
DEFAULT = f"{__name__}.default"


def use_under_twistd(options: Mapping[str, Any]) -> None:
    """
    Make :func:`default` twistd's log observer factory, unless twistd was
    given its own (``--logger``) or logs to syslog (``--syslog``), or would
    refuse its options (``--logfile -`` for a daemon: twistd says so and
    exits, as always).

    Called by every netlab plugin's options once parsed, with twistd's own
    (which twistd reads its logger from only after that).

    :param options: twistd's parsed options (its ``ServerOptions``).
    """
    global _twistd_options
    _twistd_options = {
        name: options.get(name)
        for name in ("logfile", "nodaemon", "syslog", "prefix")
        if name in options
    }
    if options.get("logger") is not None or options.get("syslog"):
        return
    if options.get("logfile") == "-" and not options.get("nodaemon", True):
        return
    # A name, as twistd's own --logger is: twistd imports it next.
    options["logger"] = DEFAULT  # type: ignore[index]


def _twistd_log_file() -> IO[str]:
    """
    :return: where twistd's own observer writes, for the options recorded
        by :func:`use_under_twistd`: standard output under ``-n`` (or
        without twistd); otherwise ``--logfile`` (``twistd.log`` by
        default), a :class:`~twisted.python.logfile.LogFile` that rotates by
        size, and on SIGUSR1 unless something else handles that signal.
    """
    options = _twistd_options or {}
    path = options.get("logfile") or ""
    # twistd on Windows has no --nodaemon: it never detaches.
    nodaemon = options.get("nodaemon", True)
    if path == "-":
        if not nodaemon:
            sys.exit("Daemons cannot log to stdout, exiting!")
        return sys.stdout
    if nodaemon and not path:
        return sys.stdout
    return LogFile.fromFullPath(path or "twistd.log")


def _rotate_on_sigusr1(out: LogFile, before: Callable[[], None]) -> None:
    """
    Rotate ``out`` on SIGUSR1, as twistd does, after ``before``; unless the
    signal has a handler already.
    """
    number = getattr(signal, "SIGUSR1", None)
    if number is None or signal.getsignal(number):
        return

    def rotate(signal_number: int, frame: Any) -> None:
        from twisted.internet import reactor

        def in_the_reactor() -> None:
            before()
            out.rotate()

        reactor.callFromThread(in_the_reactor)  # type: ignore[attr-defined]

    signal.signal(number, rotate)


def default() -> ILogObserver:
    """
    The observer factory netlab's plugins give twistd when it has no
    ``--logger`` (``twistd --logger netlab.logs.default`` names it): twistd's
    text lines, as a :class:`TextLines`, where twistd's own observer would
    have written them (see :func:`use_under_twistd`). Without a netlab
    plugin's options to follow, standard output.
    """
    if (_twistd_options or {}).get("syslog"):
        return twistd()
    out = _twistd_log_file()
    observer = TextLines(out)
    if isinstance(out, LogFile):
        _rotate_on_sigusr1(out, observer.flush)
    return observer


def twistd() -> ILogObserver:
    """
    The observer factory for ``twistd --logger netlab.logs.twistd``:
    twistd's own default observer, made by twistd's own code, with the
    ``--logfile``, ``--syslog`` and ``--nodaemon`` that a netlab plugin's
    options saw (standard output without them). It writes the same lines as
    :func:`default`, at several times the cost.
    """
    if sys.platform == "win32":
        from twisted.application.app import AppLogger as Maker
    else:
        from twisted.scripts._twistd_unix import UnixAppLogger as Maker
    options = {"nodaemon": True} if _twistd_options is None else _twistd_options
    observer: Any = Maker(dict(options))._getLogObserver()
    if not ILogObserver.providedBy(observer):
        # twisted.python.syslog's observer is a legacy one.
        from twisted.logger import LegacyLogObserverWrapper

        observer = LegacyLogObserverWrapper(observer)
    return observer  # type: ignore[no-any-return]
