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
  has no such option).
- ``bare-echo``, ``bare-web``, ``bare-ws``: the bare baselines (a Twisted echo
  ``Protocol``, a twisted.web ``Resource`` with no access log, an autobahn
  echo with default settings), from :mod:`netlab.tools.bench.bare_echo` and its
  siblings; ``bare-web-user`` the user's resource in the same ``Site``.
- ``twistd-web-user``: the user's resource under ``twistd web --class``,
  with twistd web's defaults (twistd's own log observer, access log on).
- ``c-http-user``: the C HTTP server answering the user's body, the
  ceiling of http-user (``c-ws`` is that of ws-user).
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
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

#: What a workload needs of a server.
ECHO, HTTP, WS, GREETING, ANY = "echo", "http", "ws", "greeting", "any"
#: A user's application (:mod:`netlab.tools.bench.userapp`): its HTTP resource,
#: its WebSocket handler.
HTTP_USER, WS_USER = "http-user", "ws-user"
#: The user's application, as the plugins' options and twistd web name it.
USER_RESOURCE = "netlab.tools.bench.userapp:root"
USER_RESOURCE_CLASS = "netlab.tools.bench.userapp.Root"
USER_HANDLER = "netlab.tools.bench.userapp:handler"
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
    """

    idle: bool = False
    connections: int = 100
    programs: dict[str, str] = field(default_factory=dict)
    spin: bool = True


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
        return command

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
    made = [
        Implementation(
            "c-echo",
            ECHO,
            "ceiling",
            "C epoll echo server, no log",
            _cserver("echo"),
            ("cserver",),
        ),
        Implementation(
            "c-http",
            HTTP,
            "ceiling",
            "C epoll HTTP/1.1 server, no log",
            _cserver("http"),
            ("cserver",),
        ),
        Implementation(
            "c-ws",
            WS,
            "ceiling",
            "C epoll WebSocket echo server, no log",
            _cserver("ws"),
            ("cserver",),
            also=(WS_USER,),
        ),
        Implementation(
            "c-http-user",
            HTTP_USER,
            "ceiling",
            f"C epoll HTTP/1.1 server answering {USER_BODY}, no log",
            _cserver("http", "--body", USER_BODY),
            ("cserver",),
        ),
    ]
    # What each netlab plugin logs, as shipped (no --logger).
    logs = {
        "netlab-echo": "no --logger: netlab.logs.default",
        "netlab-http": "no --logger: netlab.logs.default, access log on",
        "netlab-ws": "no --logger: netlab.logs.default",
    }
    plugins = ((ECHO, "netlab-echo"), (HTTP, "netlab-http"), (WS, "netlab-ws"))
    for kind, plugin in plugins:
        made.append(
            Implementation(
                plugin,
                kind,
                "netlab",
                f"twistd {plugin} as shipped (default reactor, {logs[plugin]})",
                _twistd(plugin, None),
                ("twisted",),
            )
        )
        made.append(
            Implementation(
                f"{plugin}-asyncio",
                kind,
                "netlab",
                f"twistd --reactor=asyncio {plugin} as shipped ({logs[plugin]})",
                _twistd(plugin, "asyncio"),
                ("twisted",),
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
            option=("netlab.tap.http", "resource"),
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
        ),
    ]
    made += [
        Implementation(
            "bare-echo",
            ECHO,
            "bare",
            "bare Twisted echo Protocol, no log",
            _module("netlab.tools.bench.bare_echo", False),
            ("twisted",),
        ),
        Implementation(
            "bare-web",
            HTTP,
            "bare",
            "bare twisted.web Resource, no access log",
            _module("netlab.tools.bench.bare_web", False),
            ("twisted",),
        ),
        Implementation(
            "bare-ws",
            WS,
            "bare",
            "bare autobahn echo, default settings, no log",
            _module("netlab.tools.bench.bare_ws", False),
            ("autobahn",),
            also=(WS_USER,),
        ),
        Implementation(
            "bare-web-user",
            HTTP_USER,
            "bare",
            "the user's resource in a bare twisted.web Site, no access log",
            _module("netlab.tools.bench.bare_web_user", False),
            ("twisted",),
        ),
        Implementation(
            "twistd-web-user",
            HTTP_USER,
            "bare",
            f"twistd web --class {USER_RESOURCE_CLASS} (twistd web's defaults: "
            "twistd's own log observer, access log on)",
            _twistd_web,
            ("twisted",),
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
        ),
    ]
    for module, summary, clients in (
        ("selectors_echo", "compat twin: selectors, one thread", False),
        ("asyncio_echo", "compat twin: asyncio streams", False),
        ("threads_echo", "compat twin: a thread per client", True),
        ("processes_echo", "compat twin: a process per client (fork)", True),
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
        ),
        Implementation(
            "ws_server",
            WS,
            "compat",
            "compat twin: websockets, logs each connection",
            _module("netlab.compat.ws_server", True),
            ("netlab.compat.ws_server", "websockets"),
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
