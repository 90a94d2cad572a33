"""
Worker processes on one port: ``--workers N``.

With ``--workers`` over 1, the ``twistd`` process becomes a *supervisor*: it
opens every listening socket itself, once (so ``tcp:0`` means one port for
all of them), serves nothing, and runs N *workers*: ``twistd`` child processes
with the same plugin and options, each adopting the sockets
(``reactor.adoptStreamPort``) and accepting from them. The kernel hands each
new connection to one worker.

- A worker listens through the same endpoint code as a lone process, so a
  ``ssl:`` endpoint gets netlab's hardened TLS, its handshake deadline and
  its client-certificate check in every worker.
- A worker that dies is started again, after a back-off that doubles with
  each quick death (:data:`RESTART_MIN_SECONDS` to
  :data:`RESTART_MAX_SECONDS`), so a crash loop cannot spin.
- SIGTERM (or SIGINT) to the supervisor sends SIGTERM to each worker, which
  drains as a lone process does (``--drain-seconds``); the supervisor exits
  once they all have. A worker still running :data:`STOP_GRACE_SECONDS`
  after its drain time is killed.
- A worker whose supervisor is gone (even killed with SIGKILL) sees its
  standard input close, and stops the same way.
- Each worker sends its log events to the supervisor, which logs them with
  the worker's number and process id (the ``worker`` and ``worker_pid``
  fields; in text logs, ``[worker 1, pid 4242: ...]``).

Limits are per worker: each worker admits up to ``--max-connections`` (and
``--max-per-ip``), as a lone process would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import string
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import address, defer
from twisted.internet.abstract import isIPv6Address
from twisted.internet.error import CannotListenError, ProcessExitedAlready
from twisted.internet.interfaces import (
    IListeningPort,
    IReadDescriptor,
)
from twisted.internet.main import CONNECTION_DONE
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    eventAsJSON,
    eventFromJSON,
    formatEvent,
    globalLogPublisher,
)
from twisted.python import usage
from twisted.python.failure import Failure
from zope.interface import implementer

from netlab import proxy
from netlab.logs import Lines, source_fields
from netlab.tcp import log_prefix
from netlab.tls import PREFIX as TLS_PREFIX
from netlab.tls import hardened
from netlab.transport import adopt

#: The most worker processes ``--workers`` allows.
MAX_WORKERS = 64
#: Seconds before a worker that died is started again, after its first quick
#: death; each further quick death doubles it, up to
#: :data:`RESTART_MAX_SECONDS`.
RESTART_MIN_SECONDS = 0.5
#: The longest wait before a worker that died is started again.
RESTART_MAX_SECONDS = 30.0
#: A worker that ran this long before it died counts as healthy: it is started
#: again after :data:`RESTART_MIN_SECONDS`.
STABLE_SECONDS = 30.0
#: Seconds a stopping worker gets beyond its ``--drain-seconds`` before it
#: is killed.
STOP_GRACE_SECONDS = 5.0

#: The endpoint kinds whose sockets workers can share.
SHAREABLE = ("tcp", "tcp6", TLS_PREFIX)

# What the supervisor tells a worker (JSON): its number and its sockets.
_ENVIRONMENT = "NETLAB_WORKER"
# A worker's descriptors: 0 is a pipe from the supervisor (it closes when the
# supervisor is gone), 1 and 2 pipes to it, 3 carries log events as JSON
# lines, and the shared sockets follow.
_LOG_FD = 3
_FIRST_SOCKET_FD = 4
# Where a relayed event keeps the traceback of its failure.
_TRACEBACK = "netlab_worker_traceback"
# How a worker process starts: deaf to SIGINT at once (the terminal's Ctrl-C
# reaches every process of the group; it is the supervisor's to act on, and a
# worker still importing would print a KeyboardInterrupt traceback), then
# twistd, with the supervisor's first sys.path entry (the script's folder, or
# the current one under python -m).
_WORKER_MAIN = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "import sys; sys.path[0] = {path!r}; "
    "from twisted.scripts.twistd import run; run()"
)


def worker_count(value: str) -> int:
    """
    :return: ``value`` as a number of workers.
    :raise ~twisted.python.usage.UsageError: with a one-line reason unless it is a whole
        number from 1 to :data:`MAX_WORKERS`.
    """
    count = int(value) if value.isascii() and value.isdigit() else 0
    if not 1 <= count <= MAX_WORKERS:
        raise usage.UsageError(
            f"--workers must be a whole number from 1 to {MAX_WORKERS}, not {value!r}"
        )
    return count


class WorkerOptions(usage.Options):
    """
    ``--workers N``, mixed into every netlab plugin's options. Keeps the
    arguments it parsed, for the workers' command lines.
    """

    #: The arguments given to
    #: :meth:`~twisted.python.usage.Options.parseOptions`.
    arguments: list[str]

    def __init__(self) -> None:
        super().__init__()
        self["workers"] = 1
        self.arguments = []
        self.docs["workers"] = (
            "Serve from this many processes sharing the listening ports (1 to "
            f"{MAX_WORKERS}); over 1, this process supervises them. Limits are "
            "per process. [default: 1]"
        )

    def parseOptions(self, options: list[str] | None = None) -> None:
        self.arguments = list(sys.argv[1:] if options is None else options)
        super().parseOptions(options)

    def opt_workers(self, value: str) -> None:
        """
        Serve from this many processes sharing the listening ports.
        """
        self["workers"] = worker_count(value)

    def check_workers(self, descriptions: list[str]) -> None:
        """
        With more than one worker, check that what the options ask for can
        be shared: every endpoint in ``descriptions``, and no per-process
        file or port (``--wiretap``, ``--metrics``).

        :raise ~twisted.python.usage.UsageError: with a one-line reason.
        """
        if self["workers"] == 1:
            return
        for option in ("metrics", "wiretap"):
            if self.get(option) is not None:
                raise usage.UsageError(
                    f"--{option} cannot be combined with --workers: each worker "
                    "process would need its own"
                )
        for description in descriptions:
            # Behind a proxy, the socket is the one under haproxy:.
            kind = hardened(proxy.split(description)[0]).partition(":")[0]
            if kind not in SHAREABLE:
                raise usage.UsageError(
                    "--workers shares tcp:, tcp6: and ssl: endpoints "
                    "(and haproxy: over them), "
                    f"not {description!r}"
                )


def serve(options: Any, build: Callable[[Any], MultiService]) -> IService:
    """
    Build the service that ``options`` ask for, as one process, a supervisor
    or a worker.

    :param options: a plugin's parsed options (a :class:`WorkerOptions`).
    :param build: makes the service tree; it passes the reactor it is given
        to every listening endpoint (``None``: the global reactor).
    """
    from twisted.internet import reactor

    count = options["workers"]
    if count == 1:
        return build(None)
    worker = os.environ.pop(_ENVIRONMENT, None)
    if worker is not None:
        spec = json.loads(worker)
        service = build(_AdoptingReactor(reactor, spec["sockets"]))
        _WorkerControl(spec["index"], reactor).setServiceParent(service)
        return service
    sharing = _SharingReactor(reactor, count)
    service = build(sharing)
    Supervisor(
        count,
        sharing.sockets,
        _plugin_name(options),
        list(options.arguments),
        options.limits().drain_seconds,
        reactor,
    ).setServiceParent(service)
    return service


def supervising(reactor: Any) -> bool:
    """
    :return: whether ``reactor`` is what :func:`serve` hands the build
        function in a supervisor (which listens for its workers and serves
        nothing), so that per-process clients (a broker's) are left to the
        workers.
    """
    return isinstance(reactor, _SharingReactor)


def _plugin_name(options: Any) -> str:
    """
    :return: the twistd plugin whose options ``options`` are.
    """
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins

    module = type(options).__module__
    for maker in getPlugins(IServiceMaker):
        if getattr(maker, "module", None) == module:
            return str(maker.tapname)
    raise usage.UsageError(f"--workers: no twistd plugin runs {module}")


def _reactor_name(reactor: Any) -> str | None:
    """
    :return: the twistd ``--reactor`` name of ``reactor``, if it has one.
    """
    from twisted.application.reactors import getReactorTypes

    module = type(reactor).__module__
    for installer in getReactorTypes():
        if installer.moduleName == module:
            return str(installer.shortName)
    return None


@dataclass
class _Shared:
    """
    A listening socket the supervisor opened for its workers, and what the
    endpoint asked for (which the workers check).
    """

    socket: socket.socket
    port: int
    interface: str

    def spec(self, fd: int) -> dict[str, Any]:
        return {
            "fd": fd,
            "family": int(self.socket.family),
            "port": self.port,
            "interface": self.interface,
        }


class _Proxy:
    """
    Passes everything to a reactor, but ``listenTCP``.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


class _SharingReactor(_Proxy):
    """
    The supervisor's listening: each ``listenTCP`` opens a socket, as
    Twisted would, for the workers, and reads nothing from it.
    """

    _log = Logger()

    def __init__(self, reactor: Any, workers: int) -> None:
        super().__init__(reactor)
        self._workers = workers
        #: The sockets opened, in the order they were asked for.
        self.sockets: list[_Shared] = []

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        family = socket.AF_INET6 if isIPv6Address(interface) else socket.AF_INET
        listening = socket.socket(family, socket.SOCK_STREAM)
        try:
            # As Twisted's own ports do on POSIX.
            listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            where: Any = (interface, port)
            if family == socket.AF_INET6:
                numeric = socket.AI_NUMERICHOST
                where = socket.getaddrinfo(
                    interface, port, family, socket.SOCK_STREAM, 0, numeric
                )[0][4]
            listening.bind(where)
            listening.listen(backlog)
            listening.setblocking(False)
        except OSError as error:
            listening.close()
            raise CannotListenError(interface, port, error) from None
        shared = _Shared(listening, port, interface)
        self.sockets.append(shared)
        number = listening.getsockname()[1]
        self._log.info(
            "{factory} starting on {port}, shared by {workers} workers",
            factory=log_prefix(factory),
            port=number,
            workers=self._workers,
        )
        return _SharedPort(shared)


@implementer(IListeningPort)
class _SharedPort:
    """
    The supervisor's copy of a shared socket; stopping closes that copy
    only (the workers close theirs as they stop).
    """

    def __init__(self, shared: _Shared) -> None:
        self._shared = shared
        kind: Any = address.IPv4Address
        if shared.socket.family == socket.AF_INET6:
            kind = address.IPv6Address
        host, port = shared.socket.getsockname()[:2]
        self._host = kind("TCP", host, port)

    def startListening(self) -> None:
        pass

    def stopListening(self) -> defer.Deferred[None]:
        self._shared.socket.close()
        return defer.succeed(None)

    def getHost(self) -> Any:
        return self._host


class _AdoptingReactor(_Proxy):
    """
    A worker's listening: each ``listenTCP`` adopts the next socket the
    supervisor passed down, instead of opening one.
    """

    def __init__(self, reactor: Any, sockets: list[dict[str, Any]]) -> None:
        super().__init__(reactor)
        self._sockets = list(sockets)

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        if not self._sockets:
            raise RuntimeError(
                "the supervisor passed fewer sockets than this worker listens on"
            )
        spec = self._sockets.pop(0)
        try:
            if (spec["port"], spec["interface"]) != (port, interface):
                raise RuntimeError(
                    f"the supervisor's socket for {spec['interface']}:{spec['port']}"
                    f" is not the one this worker listens on ({interface}:{port})"
                )
            return adopt(self._reactor, spec["fd"], spec["family"], factory)
        finally:
            # Twisted keeps a copy of the descriptor; this one is closed.
            os.close(spec["fd"])


@dataclass
class _Worker:
    index: int
    process: Any
    started: float
    pid: int = field(init=False)

    def __post_init__(self) -> None:
        self.pid = self.process.pid


class Supervisor(Service):
    """
    Runs the workers: starts them, starts again any that dies, and stops
    them all when it stops.

    :param count: how many workers.
    :param sockets: the listening sockets to pass them (opened before the
        workers start, when twistd starts the services that listen).
    :param plugin: the twistd plugin they run.
    :param arguments: the plugin's arguments.
    :param drain_seconds: how long a stopping worker may drain.
    """

    _log = Logger()

    def __init__(
        self,
        count: int,
        sockets: list[_Shared],
        plugin: str,
        arguments: list[str],
        drain_seconds: float,
        reactor: Any,
    ) -> None:
        self.count = count
        self.sockets = sockets
        self.plugin = plugin
        self.arguments = arguments
        self.drain_seconds = drain_seconds
        self._reactor = reactor
        #: The workers running, by number.
        self.workers: dict[int, _Worker] = {}
        self._quick_deaths: dict[int, int] = {}
        self._restarts: dict[int, Any] = {}
        self._stopped: defer.Deferred[None] | None = None
        self._kill_timer: Any = None

    def startService(self) -> None:
        super().startService()
        self._reactor.callWhenRunning(self._start_all)

    def _start_all(self) -> None:
        if not self.running:
            return
        for index in range(1, self.count + 1):
            self._start(index)

    def command(self) -> list[str]:
        """
        :return: a worker's command line.
        """
        reactor = _reactor_name(self._reactor)
        return [
            sys.executable,
            "-c",
            _WORKER_MAIN.format(path=sys.path[0]),
            "--nodaemon",
            "--pidfile=",
            f"--logger={__name__}.relay",
            *([f"--reactor={reactor}"] if reactor else []),
            self.plugin,
            *self.arguments,
        ]

    def _start(self, index: int) -> None:
        self._restarts.pop(index, None)
        if not self.running:
            return
        descriptors: dict[int, Any] = {0: "w", 1: "r", 2: "r", _LOG_FD: "r"}
        specs = []
        for offset, shared in enumerate(self.sockets):
            descriptors[_FIRST_SOCKET_FD + offset] = shared.socket.fileno()
            specs.append(shared.spec(_FIRST_SOCKET_FD + offset))
        environment = dict(os.environ)
        environment[_ENVIRONMENT] = json.dumps({"index": index, "sockets": specs})
        protocol = _WorkerProtocol(self, index)
        try:
            process = self._reactor.spawnProcess(
                protocol,
                sys.executable,
                self.command(),
                env=environment,
                childFDs=descriptors,
            )
        except Exception:
            self._log.failure("cannot start worker {worker}", worker=index)
            self._again(index, 0.0)
            return
        worker = _Worker(index, process, self._reactor.seconds())
        protocol.worker = worker
        self.workers[index] = worker
        self._log.info(
            "worker {worker} started (pid {worker_pid})",
            worker=index,
            worker_pid=worker.pid,
        )

    def ended(self, worker: _Worker, reason: Failure) -> None:
        """
        A worker's process ended: start it again, unless stopping.
        """
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        status = getattr(reason.value, "exitCode", None)
        number = getattr(reason.value, "signal", None)
        if number is not None:
            how = f"was killed by signal {number} ({_signal_name(number)})"
        else:
            how = f"exited with status {status}"
        if not self.running:
            self._log.info(
                "worker {worker} (pid {worker_pid}) {how}",
                worker=worker.index,
                worker_pid=worker.pid,
                how=how,
                exit_status=status,
                exit_signal=number,
            )
            if not self.workers and self._stopped is not None:
                if self._kill_timer is not None and self._kill_timer.active():
                    self._kill_timer.cancel()
                stopped, self._stopped = self._stopped, None
                stopped.callback(None)
            return
        uptime = self._reactor.seconds() - worker.started
        delay = self._again(worker.index, uptime)
        self._log.warn(
            "worker {worker} (pid {worker_pid}) {how} after {uptime:.1f}s; "
            "starting it again in {delay:.1f}s",
            worker=worker.index,
            worker_pid=worker.pid,
            how=how,
            exit_status=status,
            exit_signal=number,
            uptime=uptime,
            delay=delay,
        )

    def _again(self, index: int, uptime: float) -> float:
        """
        Start worker ``index`` again later, after it ran for ``uptime``.

        :return: how much later: :data:`RESTART_MIN_SECONDS`, doubled for
            each quick death before this one, at most
            :data:`RESTART_MAX_SECONDS`.
        """
        quick = self._quick_deaths.get(index, 0)
        if uptime >= STABLE_SECONDS:
            quick = 0
        delay = min(RESTART_MIN_SECONDS * 2**quick, RESTART_MAX_SECONDS)
        self._quick_deaths[index] = quick + 1
        self._restarts[index] = self._reactor.callLater(delay, self._start, index)
        return delay

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        for call in self._restarts.values():
            if call.active():
                call.cancel()
        self._restarts.clear()
        if not self.workers:
            return None
        self._log.info(
            "stopping {count} workers; each drains within {seconds}s",
            count=len(self.workers),
            seconds=self.drain_seconds,
        )
        self._stopped = defer.Deferred()
        stopped = self._stopped
        for worker in list(self.workers.values()):
            _signal(worker, "TERM")
        self._kill_timer = self._reactor.callLater(
            self.drain_seconds + STOP_GRACE_SECONDS, self._kill_the_rest
        )
        return stopped

    def _kill_the_rest(self) -> None:
        for worker in list(self.workers.values()):
            self._log.warn(
                "worker {worker} (pid {worker_pid}) did not stop within {seconds}s: "
                "killing it",
                worker=worker.index,
                worker_pid=worker.pid,
                seconds=self.drain_seconds + STOP_GRACE_SECONDS,
            )
            _signal(worker, "KILL")


def _signal(worker: _Worker, name: str) -> None:
    try:
        worker.process.signalProcess(name)
    except ProcessExitedAlready:
        pass


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "?"


class _WorkerProtocol(ProcessProtocol):
    """
    The supervisor's side of one worker: relays what it logs and prints,
    and tells the supervisor when it ends.
    """

    _log = Logger()
    # A line longer than this is relayed in pieces.
    _MAX_LINE = 1024 * 1024
    worker: _Worker

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self._buffers: dict[int, bytes] = {}

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        buffer = self._buffers.get(childFD, b"") + data
        *lines, rest = buffer.split(b"\n")
        if len(rest) > self._MAX_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[childFD] = rest
        for line in lines:
            self._line(childFD, line)

    def _line(self, childFD: int, line: bytes) -> None:
        text = line.decode("utf-8", "replace").rstrip("\r")
        if not text:
            return
        if childFD == _LOG_FD:
            self._event(text)
        else:
            self._text(text, "stderr" if childFD == 2 else "stdout")

    def _prefix(self) -> str:
        return f"worker {self.index}, pid {self.worker.pid}"

    def _event(self, text: str) -> None:
        try:
            event = eventFromJSON(text)
        except Exception:
            event = None
        if not isinstance(event, dict) or "log_time" not in event:
            self._text(text, "log")
            return
        traceback = event.pop(_TRACEBACK, None)
        if isinstance(traceback, str):
            event["log_failure"] = RelayedFailure(traceback)
        system = event.get("log_system")
        if system is None:
            level = event.get("log_level")
            system = f"{event.get('log_namespace', '-')}#{getattr(level, 'name', '-')}"
        event["log_system"] = f"{self._prefix()}: {system}"
        event["worker"] = self.index
        event["worker_pid"] = self.worker.pid
        globalLogPublisher(event)

    def _text(self, text: str, stream: str) -> None:
        self._log.emit(
            LogLevel.warn if stream == "stderr" else LogLevel.info,
            "{line}",
            line=text,
            worker=self.index,
            worker_pid=self.worker.pid,
            log_system=f"{self._prefix()}: {stream}",
        )

    def processEnded(self, reason: Failure) -> None:
        for childFD, rest in sorted(self._buffers.items()):
            self._line(childFD, rest)
        self._buffers.clear()
        self.supervisor.ended(self.worker, reason)


class WorkerError(Exception):
    """
    An error a worker logged, relayed with its traceback as text.
    """


class RelayedFailure(Failure):
    """
    A failure a worker logged: its traceback, as the worker formatted it.
    """

    def __init__(self, traceback: str) -> None:
        lines = traceback.strip().splitlines()
        super().__init__(WorkerError(lines[-1] if lines else "error in a worker"))
        self.traceback = traceback

    def getTraceback(self, *args: Any, **kwargs: Any) -> str:
        return self.traceback


@implementer(ILogObserver)
class _Relay(Lines):
    """
    A worker's log observer: each event, as a line of JSON, to the
    supervisor (a reactor turn's lines in one write, as netlab.logs writes).
    """

    _gone = False

    def __call__(self, event: LogEvent) -> None:
        if self._gone:
            return
        event = dict(event)
        failure = event.pop("log_failure", None)
        event.pop("failure", None)  # a legacy event's copy of it
        if failure is not None:
            event[_TRACEBACK] = _traceback(failure)
        _flatten(event)
        for key, value in event.items():
            if not key.startswith("log_"):
                event[key] = _plain(value)
        source = event.get("log_source")
        if source is not None:
            for name, value in source_fields(source).items():
                event.setdefault(name, value)
        try:
            line = eventAsJSON(event)
        except Exception:
            line = eventAsJSON(
                {
                    "log_time": event.get("log_time"),
                    "log_level": event.get("log_level"),
                    "log_namespace": event.get("log_namespace"),
                    "log_format": "{text}",
                    "text": formatEvent(event),
                }
            )
        self.write_line(line + "\n")

    def flush(self) -> None:
        try:
            super().flush()
        except (OSError, ValueError):
            # The supervisor is gone; this worker is about to stop.
            self._gone = True


def _plain(value: Any) -> Any:
    """
    :return: ``value``, or its text when JSON cannot carry it (as
        :func:`netlab.logs.as_json` shows it).
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return str(value)
    return value


def _flatten(event: dict[str, Any]) -> None:
    """
    Format each field of ``event``'s message the way its format string says,
    into ``log_flattened``, for the supervisor to show: Twisted's own
    flattening keeps ``{seconds:.4f}`` as ``str(seconds)``.
    """
    from twisted.logger._flatten import KeyFlattener

    text = event.get("log_format")
    if not isinstance(text, str):
        return
    formatter = string.Formatter()
    keys = KeyFlattener()
    fields = dict(event.get("log_flattened") or {})
    try:
        for _, name, spec, conversion in formatter.parse(text):
            if name is None:
                continue
            # The key flatFormat looks up.
            key = keys.flatKey(name, spec, conversion or "s")
            call = name.endswith("()")
            value = formatter.get_field(name[:-2] if call else name, (), event)[0]
            if call:
                value = value()
            value = formatter.convert_field(value, conversion)
            fields[key] = formatter.format_field(value, spec or "")
    except Exception:
        return  # Twisted's flattening, or its "Unable to format event"
    event["log_flattened"] = fields


def _traceback(failure: Any) -> str:
    try:
        return str(failure.getTraceback())
    except Exception:
        return repr(failure)


def relay() -> ILogObserver:
    """
    The log observer factory of a worker (``twistd --logger
    netlab.workers.relay``): every event to the supervisor.
    """
    return _Relay(os.fdopen(_LOG_FD, "w", encoding="utf-8"))


@implementer(IReadDescriptor)
class _SupervisorPipe:
    """
    A worker's standard input, the read end of a pipe the supervisor holds:
    it closes when the supervisor is gone.
    """

    def __init__(self, fd: int, gone: Callable[[], None]) -> None:
        self._fd = fd
        self._gone = gone

    def fileno(self) -> int:
        return self._fd

    def logPrefix(self) -> str:
        return "supervisor"

    def doRead(self) -> Any:
        try:
            data = os.read(self._fd, 4096)
        except BlockingIOError:
            return None
        except OSError:
            data = b""
        return None if data else CONNECTION_DONE

    def connectionLost(self, reason: Failure) -> None:
        self._gone()


class _WorkerControl(Service):
    """
    In a worker: stops it once, on SIGTERM or when the supervisor is gone.
    (SIGINT is ignored from the start: the terminal's Ctrl-C is for the
    supervisor, and the reactor leaves an ignored SIGINT alone.)
    """

    _log = Logger()

    def __init__(self, index: int, reactor: Any) -> None:
        self.index = index
        self._reactor = reactor
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        os.set_blocking(0, False)
        self._reactor.addReader(_SupervisorPipe(0, self._supervisor_gone))
        self._reactor.callWhenRunning(self._handle_sigterm)
        self._reactor.addSystemEventTrigger("before", "shutdown", self._shutting_down)

    def _handle_sigterm(self) -> None:
        # Instead of the reactor's own handler, which would stop it twice if a
        # second SIGTERM came (one from the supervisor, one from a service
        # manager that signals every process).
        signal.signal(signal.SIGTERM, self._sigterm)

    def _sigterm(self, number: int, frame: Any) -> None:
        self._reactor.callFromThread(self._stop, "Received SIGTERM")

    def _supervisor_gone(self) -> None:
        self._stop("The supervisor is gone")

    def _shutting_down(self) -> None:
        self._stopping = True

    def _stop(self, why: str) -> None:
        if self._stopping:
            return
        self._stopping = True
        self._log.info("{why}, shutting down.", why=why)
        self._reactor.stop()
