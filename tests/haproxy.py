"""
A real HAProxy for tests: Debian's ``haproxy`` started on free loopback
ports with the configuration ``docs/deployment.rst`` shows, stopped by PID.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol

from tests.support import WAIT, Peer, bounded, require, spawn

#: The haproxy binary, if this machine has one.
HAPROXY = shutil.which("haproxy") or (
    "/usr/sbin/haproxy" if pathlib.Path("/usr/sbin/haproxy").exists() else None
)


def need_haproxy() -> str:
    """
    :return: the haproxy binary; without one, the test is skipped (failed
        under CI, which installs it: see :func:`tests.support.require`).
    """
    require(HAPROXY, "needs haproxy (apt-get install haproxy)")
    return HAPROXY


#: How often HAProxy checks each server (ms): a drained server is out of the
#: rotation within one interval.
CHECK_INTERVAL_MS = 500

# The configuration docs/deployment.rst shows (with its own ports and no
# stats socket), tested here. Why each setting is there is said there.
_GLOBAL = """\
global
    maxconn 4096
"""
_PROXIES = """\
defaults
    mode http
    option redispatch 1
    retries 3
    retry-on conn-failure empty-response 503
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout tunnel 1h

frontend web
    bind 127.0.0.1:{frontend}
    default_backend netlab

backend netlab
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""
# TLS at netlab: HAProxy passes the bytes through, after a PROXY header.
_TLS_PROXIES = """\
defaults
    mode tcp
    option redispatch 1
    retries 3
    timeout connect 2s
    timeout client 60s
    timeout server 60s

frontend tls
    bind 127.0.0.1:{frontend}
    default_backend netlab-tls

backend netlab-tls
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
{servers}
"""
_TLS_CHECK = " check-ssl verify required ca-file {ca} crt {crt}"
_SERVER = (
    "    server s{index} 127.0.0.1:{port} send-proxy-v2 "
    f"check check-send-proxy inter {CHECK_INTERVAL_MS} rise 1 fall 1"
)


def configuration(frontend: int, servers: list[int], stats: str | None = None) -> str:
    """
    :return: an HAProxy configuration: HTTP (and WebSocket) on
        ``127.0.0.1:frontend``, balanced over netlab instances listening on
        ``haproxy:tcp:PORT:interface=127.0.0.1`` for each of ``servers``.
    :param stats: a UNIX socket path for HAProxy's runtime API, if wanted.
    """
    lines = "\n".join(
        _SERVER.format(index=index, port=port) for index, port in enumerate(servers, 1)
    )
    stats_line = f"    stats socket {stats} mode 600 level admin\n" if stats else ""
    return (
        _GLOBAL + stats_line + "\n" + _PROXIES.format(frontend=frontend, servers=lines)
    )


def tls_configuration(
    frontend: int, servers: list[int], ca: str, crt: str, stats: str | None = None
) -> str:
    """
    :return: an HAProxy configuration passing TLS through to netlab
        instances listening on ``haproxy:ssl:PORT:...``; its health checks
        speak TLS, trust the certificates ``ca`` (a PEM file) signed, and
        show the client certificate and key in ``crt`` (one PEM file), for
        instances that ask for one (``clientCA=``).
    """
    check = _TLS_CHECK.format(ca=ca, crt=crt)
    lines = "\n".join(
        _SERVER.format(index=index, port=port).replace(" check ", f" check{check} ")
        for index, port in enumerate(servers, 1)
    )
    stats_line = f"    stats socket {stats} mode 600 level admin\n" if stats else ""
    return (
        _GLOBAL
        + stats_line
        + "\n"
        + _TLS_PROXIES.format(frontend=frontend, servers=lines)
    )


def free_port() -> int:
    """
    :return: a loopback port nothing listens on now (HAProxy binds it next;
        it cannot be told to take any free port and report it).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class HAProxy:
    """
    A running ``haproxy -db`` in front of ``servers``; :attr:`port` is its
    frontend. Started with :meth:`start`, stopped by PID in the test's
    cleanup.
    """

    def __init__(
        self,
        case: Any,
        servers: list[int],
        configure: Callable[..., str] = configuration,
        backend: str = "netlab",
    ) -> None:
        self.case = case
        self.servers = servers
        self.configure = configure
        self.backend = backend
        # Short and absolute: a UNIX socket's path is at most 107 bytes.
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="netlab-haproxy-"))
        case.addCleanup(shutil.rmtree, self.folder, ignore_errors=True)
        self.stats = str(self.folder / "admin.sock")
        self.port = free_port()
        self.child: Any = None

    async def start(self) -> HAProxy:
        """
        Start HAProxy and wait (bounded) until every server is up in it.
        """
        path = self.folder / "haproxy.cfg"
        path.write_text(self.configure(self.port, self.servers, stats=self.stats))
        haproxy = need_haproxy()
        check = await spawn([haproxy, "-c", "-f", str(path)]).ended()
        if check.status != 0:
            raise AssertionError(f"haproxy rejects its configuration: {check}")
        self.child = spawn([haproxy, "-db", "-f", str(path)])
        self.case.addCleanup(self.stop)
        await self.until(lambda states: all(s == "UP" for s in states.values()))
        return self

    async def stop(self) -> None:
        """
        Stop HAProxy by its PID (SIGTERM, then SIGKILL if it lingers).
        """
        child, self.child = self.child, None
        if child is None or child.protocol.ended.called:
            return
        child.signal("TERM")
        try:
            await bounded(child.protocol.ended, 10)
        except Exception:
            child.signal("KILL")
            await child.ended()

    async def states(self) -> dict[str, str]:
        """
        :return: each server's state as HAProxy sees it (``UP``, ``DOWN``,
            ...), from its runtime API's ``show stat``.
        """
        endpoint = UNIXClientEndpoint(reactor, self.stats, timeout=WAIT)
        peer = await bounded(connectProtocol(endpoint, Peer()))
        peer.transport.write(b"show stat\n")
        await bounded(peer.closed)
        states = {}
        for line in bytes(peer.received).decode().splitlines():
            fields = line.split(",")
            if (
                len(fields) > 17
                and fields[0] == self.backend
                and fields[1].startswith("s")
            ):
                states[fields[1]] = fields[17].split(" ")[0]
        return states

    async def until(self, condition: Any, seconds: float = WAIT) -> dict[str, str]:
        """
        Poll :meth:`states` until ``condition(states)`` holds (every
        tenth of a second, for at most ``seconds``).
        """
        states: dict[str, str] = {}
        for _ in range(int(seconds / 0.1)):
            if self.child is None or self.child.protocol.ended.called:
                raise AssertionError(f"haproxy ended: {self.child}")
            try:
                states = await self.states()
            except Exception:
                states = {}  # not listening on its socket yet
            if states and condition(states):
                return states
            await task.deferLater(reactor, 0.1)
        raise AssertionError(f"haproxy's servers stayed {states}")
