"""
The implementations a run can measure: what each is, how to start it on a
port, and whether it can run here.

Names (``netlab bench --list`` shows them with what they serve):

- ``c-echo``, ``c-http``, ``c-ws``: the C servers (``c/cserver.c``), the
  fastest there are: they give each generator its ceiling.
- ``netlab-echo``, ``netlab-http``, ``netlab-ws``: the netlab service under
  ``twistd`` on the default reactor, as shipped: no ``--logger``, so the
  log is the text log netlab's plugins give twistd (``netlab.logs.default``)
  and netlab-http writes its access log; ``...-asyncio`` the same on
  ``--reactor=asyncio``.
- ``netlab-http-user``, ``netlab-ws-user``: the user's application of
  :mod:`netlab.tools.bench.userapp` under ``twistd netlab-http --resource`` and
  ``twistd netlab-ws --handler``, as shipped (unavailable while the plugin
  has no such option); netlab-http-user takes part in ``http`` too (``GET /``
  by the user's resource, where netlab-http answers from the request head).
- ``bare-echo``, ``bare-web``, ``bare-ws``: the bare baselines (a Twisted echo
  ``Protocol``, a twisted.web ``Resource`` with no access log, an autobahn
  echo with default settings), from :mod:`netlab.tools.bench.bare_echo` and its
  siblings; ``bare-web-user`` the user's resource in the same ``Site``.
- ``twistd-web-user``: the user's resource under ``twistd web --class``,
  with twistd web's defaults (twistd's own log observer, access log on).
- ``c-http-user``: the C HTTP server answering the user's body, the
  ceiling of http-user (``c-ws`` is that of ws-user).
- ``netlab-ws-room``: the ws-broadcast room (:mod:`netlab.tools.bench.room`)
  under ``twistd netlab-ws --handler``; ``netlab-ws-room-workers2`` and
  ``netlab-ws-room-2x`` the same room over a Redis broker (``--workers 2``,
  and two instances; the run starts a ``redis-server`` for each);
  ``ws-room-websockets`` the room on a plain
  ``websockets`` server (:mod:`netlab.tools.bench.ws_room`), its baseline.
- ``socket_server``, ``selectors_echo``, ``asyncio_echo``, ``threads_echo``,
  ``processes_echo``, ``http_server``, ``ws_server``: the
  :mod:`netlab.compat` twins.
- whatever ``--vs NAME=CMD`` names: an external command.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

#: What a workload needs of a server.
ECHO, HTTP, WS, GREETING, ANY = "echo", "http", "ws", "greeting", "any"
#: A user's application (:mod:`netlab.tools.bench.userapp`): its HTTP resource,
#: its WebSocket handler.
HTTP_USER, WS_USER = "http-user", "ws-user"
#: A room that sends each member's messages to every other member (the
#: ws-broadcast workload).
WS_BROADCAST = "ws-broadcast"
#: The user's application, as the plugins' options and twistd web name it.
USER_RESOURCE = "netlab.tools.bench.userapp:root"
USER_RESOURCE_CLASS = "netlab.tools.bench.userapp.Root"
USER_HANDLER = "netlab.tools.bench.userapp:handler"
#: The ws-broadcast room on netlab (:mod:`netlab.tools.bench.room`).
ROOM_HANDLER = "netlab.tools.bench.room:Room"
#: What the C HTTP server answers for http-user (workloads.USER_BODY).
USER_BODY = "Hello, bench!"

#: Options that let the idle workload hold 10,000 connections for minutes.
NETLAB_IDLE_OPTIONS = [
    "--idle-timeout",
    "86400",
    "--max-connections",
    "1000000",
    "--max-per-ip",
    "1000000",
]
TWIN_IDLE_OPTIONS = ["--idle-timeout", "86400"]
#: A thread- or process-per-client twin may serve this many clients more
#: than the workload opens (its own probe, a connection closing).
CLIENTS_SPARE = 16


@dataclass(frozen=True)
class Context:
    """
    What a command line may depend on.

    :ivar idle: for the idle workload (its limits raised, see above).
    :ivar connections: the most connections the workload opens at once
        (a twin with ``--max-clients`` is given that many).
    :ivar programs: the compiled C programs by name (``cserver``).
    :ivar spin: the C servers busy-poll while they have clients.
    :ivar members: the connections a ws-broadcast room holds (0: not that
        workload): netlab's limits are raised to let them in.
    :ivar broker: the URL of the broker the run started for this server
        (``redis://127.0.0.1:PORT``), for implementations that need one.
    """

    idle: bool = False
    connections: int = 100
    programs: dict[str, str] = field(default_factory=dict)
    spin: bool = True
    members: int = 0
    broker: str = ""


@dataclass(frozen=True)
class Runs:
    """
    What an implementation runs besides its service's own code: the parts
    a ratio to the baseline compares too. netlab's plugins replace parts of
    Twisted (the TCP transport, the log observer, the common case of the
    HTTP and WebSocket parsers), so ``netlab-http`` at 1.75 times
    ``bare-web`` compares two stacks, not netlab's code on stock Twisted.

    :ivar transport: what carries the bytes, on which event loop.
    :ivar logger: what it logs, and how.
    :ivar access_log: ``on`` or ``off`` for an HTTP server, None for others.
    :ivar fast_path: what answers the workload's common case ahead of the
        library's own code, or ``none``.
    """

    transport: str
    logger: str
    access_log: str | None = None
    fast_path: str = "none"

    def as_json(self) -> dict[str, str | None]:
        """
        :return: each field by name.
        """
        return {
            "transport": self.transport,
            "logger": self.logger,
            "access_log": self.access_log,
            "fast_path": self.fast_path,
        }

    def short(self) -> str:
        """
        :return: the transport and the fast path in a few words (a chart's
            label): the first clause of each.
        """
        fast = self.fast_path.split(" (")[0].split(":")[0]
        path = "no fast path" if fast == "none" else f"fast path: {fast}"
        return f"{self.transport.split(',')[0].split(' (')[0]}\n{path}"


# What the Runs of the built-in implementations say: short, for a table
# (the docs' implementations table says each in full). netlab's plugins
# serve through netlab.transport's flushing listener
# (netlab.tap.listening_service).
FLUSHING = "netlab flushing, {reactor} reactor"
STOCK = "stock Twisted, epoll reactor"
NETLAB_LOG = "netlab.logs.default (text)"
NO_LOG = "none"
TWIN_LOG = "logging, stderr, per connection"
#: Each netlab plugin's fast path for its workload, as shipped.
FIXED_ANSWERS = "fixed answers (GET / and /healthz from the request head)"
HEAD_PARSER = "none: the user's resource renders (netlab's head parser)"
WS_FRAMES = "WebSocket frames (netlab.websocket)"
UNKNOWN = Runs("unknown (an external command)", "unknown", "unknown", "unknown")


@dataclass(frozen=True)
class Implementation:
    """
    One server the bench can start.

    :ivar name: how the command line calls it.
    :ivar kind: the service it offers (:data:`ECHO`, :data:`HTTP`, ...).
    :ivar family: ``ceiling``, ``netlab``, ``bare``, ``compat`` or ``external``.
    :ivar summary: a few words for tables and ``--help``.
    :ivar argv: the command line to listen on a loopback port.
    :ivar needs: a Python module it needs, or ``cserver`` for the C server.
    :ivar skip: why it is never measured, if so (it serves another purpose).
    :ivar also: the other kinds of workload it serves.
    :ivar option: a twistd plugin option it needs: the plugin's tap module
        and the option's name (it is unavailable while the option is not
        there).
    :ivar runs: what it runs besides its own code (tables say it).
    :ivar broker: it needs a Redis broker started for it (``needs`` holds
        ``redis-server``; its command line takes ``context.broker``).
    :ivar instances: how many copies of it serve one room, each on its own
        port, sharing the room through the broker.
    """

    name: str
    kind: str
    family: str
    summary: str
    argv: Callable[[int, Context], list[str]]
    needs: tuple[str, ...] = ()
    skip: str | None = None
    also: tuple[str, ...] = ()
    option: tuple[str, str] | None = None
    runs: Runs = UNKNOWN
    broker: bool = False
    instances: int = 1

    @property
    def processes(self) -> bool:
        """
        Whether it runs more than one process of its own (``--workers``,
        several instances, a broker): such a row's processes share both
        CPUs, not just the server CPU.
        """
        return self.broker or self.instances > 1

    @property
    def kinds(self) -> tuple[str, ...]:
        """
        :return: every kind of workload it serves.
        """
        return (self.kind, *self.also)

    def unavailable(self) -> str | None:
        """
        :return: why it cannot run here, or None when it can.
        """
        if self.option is not None:
            why = _plugin_option(*self.option)
            if why is not None:
                return why
        for need in self.needs:
            if need == "redis-server":
                if shutil.which("redis-server") is None:
                    return "redis-server not found (apt-get install redis-server)"
                continue
            if need == "cserver":
                from netlab.tools.bench import build

                if build.compiler() is None:
                    return "no C compiler (gcc) found"
                continue
            try:
                found = importlib.util.find_spec(need)
            except (ImportError, ValueError):
                found = None
            if found is None:
                return f"module {need} not found"
        return None


@functools.cache
def _plugin_option(module: str, option: str) -> str | None:
    """
    :return: why the plugin whose tap module is ``module`` cannot be given
        ``--option``, or None when it can.
    """
    try:
        options = importlib.import_module(module).Options()
    except Exception as error:
        return f"{module} cannot be imported: {type(error).__name__}: {error}"
    if f"{option}=" not in options.longOpt:
        return f"this netlab's {module} has no --{option} option yet"
    return None


#: How the bench starts twistd: in the foreground, with no pid file (several
#: run at once from one folder). Nothing about its log: each runs as shipped.
TWISTD = [
    sys.executable,
    "-c",
    "from twisted.scripts.twistd import run; run()",
    "-n",
    "--pidfile=",
]


def _twistd(
    plugin: str, reactor: str | None, options: tuple[str, ...] = ()
) -> Callable[[int, Context], list[str]]:
    def argv(port: int, context: Context) -> list[str]:
        # No --logger: netlab's plugins give twistd netlab.logs.default
        # (netlab's text log, on standard output under -n, kept in the
        # server's log file), as a user gets it.
        command = list(TWISTD)
        if reactor:
            command.append(f"--reactor={reactor}")
        command += [plugin, *options, "--listen", f"tcp:{port}:interface=127.0.0.1"]
        if context.idle:
            command += NETLAB_IDLE_OPTIONS
        if context.members:
            most = str(context.members + CLIENTS_SPARE)
            command += ["--max-per-ip", most, "--max-connections", most]
        # The broker the run started for it, where its options name one.
        return [part.replace("{broker}", context.broker) for part in command]

    return argv


def _twistd_web(port: int, context: Context) -> list[str]:
    # twistd web's own defaults: twistd's own log observer (standard output
    # under -n), an access-log line per request.
    return [
        *TWISTD,
        "web",
        "--class",
        USER_RESOURCE_CLASS,
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
    ]


def _module(
    module: str, limits: bool, clients: bool = False
) -> Callable[[int, Context], list[str]]:
    def argv(port: int, context: Context) -> list[str]:
        command = [sys.executable, "-m", module, "--host", "127.0.0.1"]
        command += ["--port", str(port)]
        if limits and context.idle:
            command += TWIN_IDLE_OPTIONS
        if clients:
            command += ["--max-clients", str(context.connections + CLIENTS_SPARE)]
        return command

    return argv


def _cserver(mode: str, *options: str) -> Callable[[int, Context], list[str]]:
    def argv(port: int, context: Context) -> list[str]:
        command = [context.programs["cserver"], mode, "--port", str(port), *options]
        return command + (["--spin", "1"] if context.spin else [])

    return argv


def _builtin() -> list[Implementation]:
    c_runs = Runs("C epoll, one thread", NO_LOG)
    c_http = Runs("C epoll, one thread", NO_LOG, "off")
    made = [
        Implementation(
            "c-echo",
            ECHO,
            "ceiling",
            "C epoll echo server, no log",
            _cserver("echo"),
            ("cserver",),
            runs=c_runs,
        ),
        Implementation(
            "c-http",
            HTTP,
            "ceiling",
            "C epoll HTTP/1.1 server, no log",
            _cserver("http"),
            ("cserver",),
            runs=c_http,
        ),
        Implementation(
            "c-ws",
            WS,
            "ceiling",
            "C epoll WebSocket echo server, no log",
            _cserver("ws"),
            ("cserver",),
            also=(WS_USER,),
            runs=c_runs,
        ),
        Implementation(
            "c-http-user",
            HTTP_USER,
            "ceiling",
            f"C epoll HTTP/1.1 server answering {USER_BODY}, no log",
            _cserver("http", "--body", USER_BODY),
            ("cserver",),
            runs=c_http,
        ),
    ]
    # What each netlab plugin logs, as shipped (no --logger).
    logs = {
        "netlab-echo": "no --logger: netlab.logs.default",
        "netlab-http": "no --logger: netlab.logs.default, access log on",
        "netlab-ws": "no --logger: netlab.logs.default",
    }
    # What each runs through, on each reactor.
    access = {"netlab-http": "on"}
    fast = {"netlab-http": FIXED_ANSWERS, "netlab-ws": WS_FRAMES}
    plugins = ((ECHO, "netlab-echo"), (HTTP, "netlab-http"), (WS, "netlab-ws"))
    for kind, plugin in plugins:
        for reactor in (None, "asyncio"):
            runs = Runs(
                FLUSHING.format(reactor=reactor or "epoll"),
                NETLAB_LOG,
                access.get(plugin),
                fast.get(plugin, "none"),
            )
            if reactor is None:
                name = plugin
                summary = (
                    f"twistd {plugin} as shipped (default reactor, {logs[plugin]})"
                )
            else:
                name = f"{plugin}-{reactor}"
                summary = (
                    f"twistd --reactor={reactor} {plugin} as shipped ({logs[plugin]})"
                )
            made.append(
                Implementation(
                    name,
                    kind,
                    "netlab",
                    summary,
                    _twistd(plugin, reactor),
                    ("twisted",),
                    runs=runs,
                )
            )
    made += [
        Implementation(
            "netlab-http-user",
            HTTP_USER,
            "netlab",
            f"twistd netlab-http --resource {USER_RESOURCE} as shipped "
            f"(default reactor, {logs['netlab-http']})",
            _twistd("netlab-http", None, ("--resource", USER_RESOURCE)),
            ("twisted",),
            # In http too: GET / by the user's resource, beside the service's
            # fixed answer to the same request.
            also=(HTTP,),
            option=("netlab.tap.http", "resource"),
            runs=Runs(FLUSHING.format(reactor="epoll"), NETLAB_LOG, "on", HEAD_PARSER),
        ),
        Implementation(
            "netlab-ws-user",
            WS_USER,
            "netlab",
            f"twistd netlab-ws --handler {USER_HANDLER} as shipped "
            f"(default reactor, {logs['netlab-ws']})",
            _twistd("netlab-ws", None, ("--handler", USER_HANDLER)),
            ("twisted", "autobahn"),
            option=("netlab.tap.ws", "handler"),
            runs=Runs(FLUSHING.format(reactor="epoll"), NETLAB_LOG, None, WS_FRAMES),
        ),
    ]
    # ws-broadcast: one room, its messages to every member.
    room = Runs(FLUSHING.format(reactor="epoll"), NETLAB_LOG, None, WS_FRAMES)
    made += [
        Implementation(
            "netlab-ws-room",
            WS_BROADCAST,
            "netlab",
            f"twistd netlab-ws --handler {ROOM_HANDLER} as shipped, one process "
            f"(default reactor, {logs['netlab-ws']})",
            _twistd("netlab-ws", None, ("--handler", ROOM_HANDLER)),
            ("twisted", "autobahn"),
            runs=room,
        ),
        Implementation(
            "netlab-ws-room-workers2",
            WS_BROADCAST,
            "netlab",
            f"twistd netlab-ws --workers 2 --broker redis://... --handler "
            f"{ROOM_HANDLER} as shipped ({logs['netlab-ws']}): two processes "
            "on one port, the room shared through Redis",
            _twistd(
                "netlab-ws",
                None,
                ("--workers", "2", "--broker", "{broker}", "--handler", ROOM_HANDLER),
            ),
            ("twisted", "autobahn", "redis-server"),
            option=("netlab.tap.ws", "broker"),
            runs=room,
            broker=True,
        ),
        Implementation(
            "netlab-ws-room-2x",
            WS_BROADCAST,
            "netlab",
            f"two twistd netlab-ws --broker redis://... --handler {ROOM_HANDLER} "
            f"as shipped ({logs['netlab-ws']}) on two ports, the subscribers "
            "spread over both, the room shared through Redis",
            _twistd(
                "netlab-ws", None, ("--broker", "{broker}", "--handler", ROOM_HANDLER)
            ),
            ("twisted", "autobahn", "redis-server"),
            option=("netlab.tap.ws", "broker"),
            runs=room,
            broker=True,
            instances=2,
        ),
        Implementation(
            "ws-room-websockets",
            WS_BROADCAST,
            "bare",
            "the same room on a plain websockets server (asyncio), "
            "websockets.broadcast",
            _module("netlab.tools.bench.ws_room", False),
            ("websockets",),
            runs=Runs(
                "websockets on asyncio, default event loop",
                "logging, warnings only",
                None,
                "none (websockets' own)",
            ),
        ),
    ]
    bare_web = Runs(STOCK, NO_LOG, "off", "none (twisted.web's parser)")
    made += [
        Implementation(
            "bare-echo",
            ECHO,
            "bare",
            "bare Twisted echo Protocol, no log",
            _module("netlab.tools.bench.bare_echo", False),
            ("twisted",),
            runs=Runs(STOCK, NO_LOG),
        ),
        Implementation(
            "bare-web",
            HTTP,
            "bare",
            "bare twisted.web Resource, no access log",
            _module("netlab.tools.bench.bare_web", False),
            ("twisted",),
            runs=bare_web,
        ),
        Implementation(
            "bare-ws",
            WS,
            "bare",
            "bare autobahn echo, default settings, no log",
            _module("netlab.tools.bench.bare_ws", False),
            ("autobahn",),
            also=(WS_USER,),
            runs=Runs(STOCK, NO_LOG, None, "none (autobahn's parser)"),
        ),
        Implementation(
            "bare-web-user",
            HTTP_USER,
            "bare",
            "the user's resource in a bare twisted.web Site, no access log",
            _module("netlab.tools.bench.bare_web_user", False),
            ("twisted",),
            runs=bare_web,
        ),
        Implementation(
            "twistd-web-user",
            HTTP_USER,
            "bare",
            f"twistd web --class {USER_RESOURCE_CLASS} (twistd web's defaults: "
            "twistd's own log observer, access log on)",
            _twistd_web,
            ("twisted",),
            runs=Runs(
                STOCK,
                "twistd's own text observer",
                "on",
                "none (twisted.web's parser)",
            ),
        ),
        Implementation(
            "socket_server",
            GREETING,
            "compat",
            "compat twin: blocking greeting server",
            _module("netlab.compat.socket_server", True),
            ("netlab.compat.socket_server",),
            skip="a greeting server (one client at a time, answers once and "
            "closes): it has no echo to measure",
            runs=Runs("blocking sockets, one client at a time", TWIN_LOG),
        ),
    ]
    for module, summary, clients, transport in (
        (
            "selectors_echo",
            "compat twin: selectors, one thread",
            False,
            "selectors, non-blocking sockets, one thread",
        ),
        (
            "asyncio_echo",
            "compat twin: asyncio streams",
            False,
            "asyncio streams, default event loop",
        ),
        (
            "threads_echo",
            "compat twin: a thread per client",
            True,
            "blocking sockets, a thread per client",
        ),
        (
            "processes_echo",
            "compat twin: a process per client (fork)",
            True,
            "blocking sockets, a process per client",
        ),
    ):
        # The twins log with the logging module, to standard error.
        summary += ", logs each connection"
        made.append(
            Implementation(
                module,
                ECHO,
                "compat",
                summary,
                _module(f"netlab.compat.{module}", True, clients),
                (f"netlab.compat.{module}",),
                runs=Runs(transport, TWIN_LOG),
            )
        )
    made += [
        Implementation(
            "http_server",
            HTTP,
            "compat",
            "compat twin: http.server, threads, an access-log line per request",
            _module("netlab.compat.http_server", True),
            ("netlab.compat.http_server",),
            runs=Runs(
                "http.server, blocking sockets, a thread per client",
                "logging, stderr, per request",
                "on",
                "none (http.server's parser)",
            ),
        ),
        Implementation(
            "ws_server",
            WS,
            "compat",
            "compat twin: websockets, logs each connection",
            _module("netlab.compat.ws_server", True),
            ("netlab.compat.ws_server", "websockets"),
            runs=Runs(
                "websockets on asyncio, default event loop",
                TWIN_LOG,
                None,
                "none (websockets' parser)",
            ),
        ),
    ]
    return made


#: Every built-in implementation, in the order tables list them.
BUILTIN: dict[str, Implementation] = {impl.name: impl for impl in _builtin()}

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*\Z")


def external(spec: str) -> Implementation:
    """
    :param spec: ``NAME=CMD`` from ``--vs``; CMD holds ``{port}``.
    :return: the implementation that runs CMD through ``/bin/sh``.
    :raise ValueError: with a one-line reason for a bad ``spec``.
    """
    name, equals, command = spec.partition("=")
    name, command = name.strip(), command.strip()
    if not equals or not name or not command:
        raise ValueError(f"--vs {spec!r}: expected NAME=CMD")
    if not NAME.match(name):
        raise ValueError(f"--vs {spec!r}: NAME may hold letters, digits and _.+-")
    if name in BUILTIN:
        raise ValueError(f"--vs {spec!r}: {name} is a built-in implementation")
    if "{port}" not in command:
        raise ValueError(f"--vs {spec!r}: CMD must contain {{port}}")
    try:
        command.format(port=0)
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(
            f"--vs {spec!r}: CMD has a placeholder other than {{port}} ({error}); "
            "write a literal brace as {{ or }}"
        ) from None

    def argv(port: int, context: Context) -> list[str]:
        return ["/bin/sh", "-c", "exec " + command.format(port=port)]

    try:
        program = shlex.split(command)[0]
    except (ValueError, IndexError):
        raise ValueError(f"--vs {spec!r}: CMD is not a shell command") from None
    return Implementation(name, ANY, "external", f"external: {program}", argv)
