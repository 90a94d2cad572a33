"""
A bounded soak test: a mix of clients against a real ``twistd -n netlab``.

Run it from a shell (Linux: it reads the server's ``/proc`` entries)::

    python -m netlab.tools.soak                  # 60 seconds, 16 clients at once
    python -m netlab.tools.soak --seconds 20 --concurrency 8 --reactor asyncio

It makes certificates in a temporary folder, starts ``twistd -n netlab`` as a
child process with every service on an ephemeral loopback port, in plain TCP
and over TLS, and reads the ports from its log. A short warm-up runs the mix
once at full concurrency; then the server's open file descriptors and resident
memory (RSS) are measured as the baseline. The mix runs for ``--seconds``:
echo and greeting with random message sizes (up to 4 MiB), HTTP requests on new
and on kept-alive connections, WebSocket echo sessions, each also over TLS, and
hostile clients (garbage, oversized heads and bodies, half a request, TLS
garbage, invalid WebSocket frames, oversized and compressed WebSocket
messages, resets). Every normal reply is checked byte for byte; every hostile
client must get the protocol error it deserves, or a close.

Once the clients have left, the server's descriptors must come back to the
baseline exactly, and its RSS must not have grown by more than
:data:`RSS_GROWTH_RATIO` of the baseline (or :data:`RSS_GROWTH_FLOOR`, whichever
is larger). The server's log must hold no error, critical event or traceback,
and twistd must stop cleanly on ``SIGTERM``. The report goes to standard
output; the exit status is 0 only when every check passed (1 otherwise, 2 for a
usage mistake).

See :doc:`/reliability` for what each check means and why the thresholds are
what they are.
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextvars
import functools
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

#: Seconds the mix runs unless told otherwise.
DEFAULT_SECONDS = 60.0
#: Clients at work at once unless told otherwise.
DEFAULT_CONCURRENCY = 16
#: Seconds any one client operation may take before it counts as an error.
OPERATION_TIMEOUT = 30.0
#: Seconds twistd has to start listening, and then to stop on SIGTERM.
PROCESS_TIMEOUT = 30.0
#: Seconds the server has, once the clients are gone, to close their sockets.
SETTLE_TIMEOUT = 15.0
#: Descriptors the server may hold above its baseline once the clients left.
#: Every descriptor a netlab server holds is stdio, the reactor's own, a
#: listening socket or a connection: nothing is opened lazily (the log goes
#: to standard output), so any difference is a leaked connection.
FD_TOLERANCE = 0
#: RSS growth allowed over the baseline, as a fraction of the baseline ...
RSS_GROWTH_RATIO = 0.25
#: ... or in bytes, whichever is larger. See :doc:`/reliability`.
RSS_GROWTH_FLOOR = 24 * 1024 * 1024
#: The server's HTTP head timeout (default 10 s): short, so that a slow
#: client's 408 comes soon.
HEAD_TIMEOUT = 3.0
#: The server's WebSocket handshake timeout (default 10 s): autobahn holds a
#: connection it failed (an oversized message) for the closing handshake.
HANDSHAKE_TIMEOUT = 5.0

#: Server log events at error level that the soak knows of and tolerates
#: (counted and shown, not failed), each a regular expression with the
#: reason. Remove an entry once the service no longer logs it.
KNOWN_SERVER_ERRORS: dict[str, str] = {}

#: Misbehaviours of the services that the soak knows of: each is recognised
#: by its exact symptom, counted and shown, and fails the run only with
#: ``--strict``. Remove an entry once the service is fixed.
KNOWN_ISSUES: dict[str, str] = {}

LOOPBACK = "127.0.0.1"
MIB = 1024 * 1024

# The services, in the order twistd starts them (and logs their ports).
_PLACES = (
    ("echo", "EchoFactory"),
    ("echo-tls", "EchoFactory (TLS)"),
    ("greeting", "GreetingFactory"),
    ("greeting-tls", "GreetingFactory (TLS)"),
    ("http", "HTTPSite"),
    ("http-tls", "HTTPSite (TLS)"),
    ("ws", "EchoFactory"),
    ("ws-tls", "EchoFactory (TLS)"),
)
_STARTING = re.compile(r"\] (\w+(?: \(TLS\))?) starting on (\d+)")
_PROBLEM = re.compile(
    r"#(?:error|critical)\]|Traceback \(most recent|Unhandled [Ee]rror"
)
# Each log event starts with a timestamp; its further lines do not.
_EVENT = re.compile(r"\d{4}-\d\d-\d\dT")
_WARNING = re.compile(r"\[([\w.]+)#warn\] (.*)")
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Unexpected(Exception):
    """
    A server answered, but not what it should have.
    """


class KnownIssue(Exception):
    """
    A server misbehaved in a way listed in :data:`KNOWN_ISSUES`.
    """


# What the running client operation is (TLS or not, which variant), for its
# error messages: each operation runs in its own copy of the context.
_NOTES: contextvars.ContextVar[list[str]] = contextvars.ContextVar("notes")


def note(text: str) -> None:
    """
    Say what the running client operation is doing, for its error message.
    """
    _NOTES.get().append(text)


def _write(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# Measuring the server.


def rss_bytes(pid: int) -> int:
    """
    :return: the resident set size of process ``pid``, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}  # fmt: skip


@dataclass
class Descriptors:
    """
    A snapshot of a process's open file descriptors.

    :ivar targets: each descriptor and what it is (``7 -> socket:[1234]``).
    :ivar connections: those that are TCP connections (any state but
        ``LISTEN``), with their ports and state.
    """

    targets: dict[str, str]
    connections: dict[str, str]

    @property
    def count(self) -> int:
        return len(self.targets)


def descriptors(pid: int) -> Descriptors:
    """
    :return: process ``pid``'s descriptors, from ``/proc``.
    """
    targets = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            targets[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            pass
    sockets = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as rows:
                for row in list(rows)[1:]:
                    fields = row.split()
                    local, remote = (
                        int(address.rsplit(":", 1)[1], 16)
                        for address in (fields[1], fields[2])
                    )
                    state = _TCP_STATES.get(fields[3], fields[3])
                    sockets[fields[9]] = (state, f"{local} <-> {remote} {state}")
        except OSError:
            pass
    try:
        # Unix sockets (asyncio's self-pipe) are the process's own.
        with open(f"/proc/{pid}/net/unix") as rows:
            local = {row.split()[6] for row in list(rows)[1:] if len(row.split()) > 6}
    except OSError:
        local = set()
    connections = {}
    for fd, target in targets.items():
        inode = re.fullmatch(r"socket:\[(\d+)\]", target)
        if inode is None or inode.group(1) in local:
            continue
        # A reset connection leaves the TCP table before its descriptor closes.
        state, description = sockets.get(inode.group(1), ("?", "closed by the peer"))
        if state != "LISTEN":
            connections[fd] = description
    return Descriptors(targets, connections)


def _mib(size: float) -> str:
    return f"{size / MIB:.1f} MiB"


# The server process.


class _Twistd:
    """
    ``twistd -n netlab`` as a child: its ports, and what its log says.
    """

    def __init__(self, keep: Any = None) -> None:
        from twisted.internet import defer, protocol

        outer = self
        #: A binary file that gets the whole log, or None.
        self.keep = keep
        self.ports: dict[str, int] = {}
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()
        self.lines = 0
        self.problems: list[str] = []
        self.problem_lines = 0
        self.problem_events = 0
        self.known: collections.Counter[str] = collections.Counter()
        self.warnings: collections.Counter[str] = collections.Counter()
        self.tail: collections.deque[str] = collections.deque(maxlen=20)
        self.process: Any = None
        self._labels: list[tuple[str, int]] = []
        self._pending = b""
        self._in_problem = False

        class Child(protocol.ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                outer._feed(data)

            errReceived = outReceived

            def processEnded(self, reason: Any) -> None:
                outer._feed(b"\n")
                if not outer.ready.called:
                    outer.ready.errback(
                        RuntimeError(
                            "twistd exited before it listened:\n"
                            + "\n".join(outer.tail)
                        )
                    )
                outer.ended.callback(reason.value)

        self.protocol = Child()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return not self.ended.called

    def _feed(self, data: bytes) -> None:
        if self.keep is not None:
            self.keep.write(data)
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            if line:
                self._line(line.decode("utf-8", "replace"))

    def _line(self, line: str) -> None:
        self.lines += 1
        self.tail.append(line[:300])
        if not self.ready.called:
            starting = _STARTING.search(line)
            if starting:
                self._labels.append((starting.group(1), int(starting.group(2))))
                if len(self._labels) == len(_PLACES):
                    self._place()
        if not _EVENT.match(line):
            # A continuation (a traceback's lines): part of the last event.
            if self._in_problem or _PROBLEM.search(line):
                self._problem(line)
            return
        self._in_problem = False
        if _PROBLEM.search(line):
            known = next((k for k in KNOWN_SERVER_ERRORS if re.search(k, line)), None)
            if known is not None:
                self.known[known] += 1
            else:
                self._in_problem = True
                self.problem_events += 1
                self._problem(line)
            return
        warning = _WARNING.search(line)
        if warning:
            # Numbers (ports, sizes) vary; the kind of warning does not.
            text = re.sub(r"\d+", "N", warning.group(2))[:90]
            self.warnings[f"{warning.group(1)}: {text}"] += 1

    def _problem(self, line: str) -> None:
        self.problem_lines += 1
        if len(self.problems) < 40:
            self.problems.append(line[:300])

    def _place(self) -> None:
        expected = [label for _, label in _PLACES]
        found = [label for label, _ in self._labels]
        if found != expected:
            self.ready.errback(
                RuntimeError(f"twistd started {found}, expected {expected}")
            )
            return
        self.ports = {
            name: port
            for (name, _), (_, port) in zip(_PLACES, self._labels, strict=True)
        }
        self.ready.callback(None)

    def start(self, reactor: Any, args: list[str], cwd: str) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = reactor.spawnProcess(
            self.protocol, args[0], args, env=env, path=cwd
        )

    def signal(self, name: str) -> None:
        if self.running:
            try:
                self.process.signalProcess(name)
            except Exception:  # exited in between
                pass


def twistd_command() -> list[str]:
    """
    :return: how to run the ``twistd`` installed beside this Python.
    """
    script = pathlib.Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


# Runs the rest of its command line, killed (SIGKILL) if the soak itself dies
# (Linux's PR_SET_PDEATHSIG), so that no twistd outlives its soak.
_ORPHAN_GUARD = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)\n"
    "if os.getppid() == 1: sys.exit(1)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def _escaped(path: pathlib.Path) -> str:
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


# A raw client, for what the real clients refuse to do.


def _raw_protocol() -> Any:
    from twisted.internet import defer, protocol

    class Raw(protocol.Protocol):
        """
        Keeps what arrives; tells when enough has, and when the connection closed.
        """

        def __init__(self) -> None:
            self.received = bytearray()
            self.reason: Any = None
            self.closed: defer.Deferred[None] = defer.Deferred()
            self._waiting: list[tuple[Callable[[bytes], bool], Any]] = []
            self._closing: list[defer.Deferred[None]] = []

        def dataReceived(self, data: bytes) -> None:
            self.received += data
            for entry in list(self._waiting):
                if entry[0](bytes(self.received)):
                    self._waiting.remove(entry)
                    entry[1].callback(bytes(self.received))

        def connectionLost(self, reason: Any = protocol.connectionDone) -> None:
            self.reason = reason
            waiting, self._waiting = self._waiting, []
            for _, d in waiting:
                d.errback(Unexpected(f"closed early: {reason.getErrorMessage()}"))
            self.closed.callback(None)
            closing, self._closing = self._closing, []
            for d in closing:
                d.callback(None)

        def until(self, ready: Callable[[bytes], bool]) -> Any:
            if ready(bytes(self.received)):
                return defer.succeed(bytes(self.received))
            if self.closed.called:
                return defer.fail(Unexpected("closed early"))
            d: defer.Deferred[bytes] = defer.Deferred()
            self._waiting.append((ready, d))
            return d

        def until_closed(self) -> Any:
            if self.closed.called:
                return defer.succeed(None)
            d: defer.Deferred[None] = defer.Deferred()
            self._closing.append(d)
            return d

        def reset(self) -> None:
            """
            Close with a TCP reset (``SO_LINGER`` 0), as a crashed client does.
            """
            if self.closed.called or self.transport is None:
                return
            lower = self.transport
            while lower is not None:
                try:
                    handle = lower.getHandle()
                except AttributeError:  # no socket (any more)
                    handle = None
                if isinstance(handle, socket.socket):
                    try:
                        handle.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    except OSError:
                        pass
                    break
                lower = getattr(lower, "transport", None)
            self.transport.abortConnection()

    return Raw()


# WebSocket frames, by hand.


def ws_frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    """
    :return: one final WebSocket frame, masked as a client's must be (or not).
    """
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([mask_bit | size])
    elif size < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    key = os.urandom(4)
    repeated = (key * (size // 4 + 1))[:size]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        size, "big"
    )
    return head + key + body


def ws_frames(data: bytes) -> list[tuple[int, bytes]]:
    """
    :return: the whole (unmasked, server-sent) frames at the start of ``data``.
    """
    frames = []
    while len(data) >= 2:
        opcode, size = data[0] & 0x0F, data[1] & 0x7F
        start = 2
        if size == 126:
            if len(data) < 4:
                break
            size, start = struct.unpack("!H", data[2:4])[0], 4
        elif size == 127:
            if len(data) < 10:
                break
            size, start = struct.unpack("!Q", data[2:10])[0], 10
        if len(data) < start + size:
            break
        frames.append((opcode, data[start : start + size]))
        data = data[start + size :]
    return frames


def _head_end(data: bytes) -> int:
    end = data.find(b"\r\n\r\n")
    return -1 if end < 0 else end + 4


# The mix.


@dataclass
class Tally:
    """
    What the clients did and what went wrong, by kind of client.
    """

    ok: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    exchanges: collections.Counter[str] = field(default_factory=collections.Counter)
    keepalive_ports: set[tuple[str, int]] = field(default_factory=set)
    slowest: collections.Counter[str] = field(default_factory=collections.Counter)
    known: collections.Counter[str] = field(default_factory=collections.Counter)
    known_by_kind: collections.Counter[str] = field(default_factory=collections.Counter)

    def error(self, kind: str, what: str) -> None:
        self.errors[kind] += 1
        examples = self.examples.setdefault(kind, [])
        if len(examples) < 3 and what not in examples:
            examples.append(what)


#: Each kind of client: its name, its weight in the mix, and the
#: :class:`Mix` method (with arguments) that runs one.
CATALOGUE: tuple[tuple[str, float, str, tuple[Any, ...]], ...] = (
    ("echo", 10, "echo", (False,)),
    ("echo-tls", 5, "echo", (True,)),
    ("greeting", 6, "greet", (False,)),
    ("greeting-tls", 3, "greet", (True,)),
    ("http", 8, "http_new", (False,)),
    ("http-tls", 4, "http_new", (True,)),
    ("http-keepalive", 8, "http_keepalive", (False,)),
    ("http-keepalive-tls", 4, "http_keepalive", (True,)),
    ("ws", 6, "ws_session", ("ws", False)),
    ("ws-tls", 3, "ws_session", ("ws", True)),
    ("ws-mounted", 3, "ws_session", ("http", False)),
    ("ws-mounted-tls", 2, "ws_session", ("http", True)),
    ("hostile-http-garbage", 1.5, "http_garbage", ()),
    ("hostile-http-long-uri", 1, "http_long_uri", ()),
    ("hostile-http-big-header", 1, "http_big_header", ()),
    ("hostile-http-many-headers", 1, "http_many_headers", ()),
    ("hostile-http-body-too-large", 1, "http_body_too_large", ()),
    ("hostile-http-slow-head", 0.3, "http_slow_head", ()),
    ("hostile-half-request-reset", 1.5, "half_request_reset", ()),
    ("hostile-tls-garbage", 1.5, "tls_garbage", ()),
    ("hostile-connect-reset", 2, "connect_reset", ()),
    ("hostile-echo-reset", 1, "echo_reset", ()),
    ("hostile-ws-no-upgrade", 0.5, "ws_no_upgrade", ()),
    ("hostile-ws-bad-frame", 1.5, "ws_bad_frame", ()),
    ("hostile-ws-reset", 1.5, "ws_reset", ()),
    ("hostile-ws-too-large", 0.4, "ws_too_large", ()),
)


class Mix:
    """
    The clients, each an ``async`` operation that raises :class:`Unexpected`
    (or fails) when the server does not do what it should.
    """

    def __init__(
        self,
        reactor: Any,
        ports: dict[str, int],
        cacert: str,
        concurrency: int,
        rng: random.Random,
        tally: Tally,
        only: list[str] | None = None,
    ) -> None:
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool

        from netlab.tls import ClientTLS

        self.reactor = reactor
        self.ports = ports
        self.rng = rng
        self.tally = tally
        self.tls = ClientTLS(cacert=cacert)
        # Kept-alive HTTP connections, shared by every client; closed at the end.
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = concurrency
        # Well under the server's idle timeout: the pool, not the server,
        # closes an idle connection, so no request races the server's close.
        self.pool.cachedConnectionTimeout = 20
        self.keepalive = HTTPClient(
            Agent(reactor, contextFactory=self.tls.policy(), pool=self.pool)
        )
        self.blob = rng.randbytes(4 * MIB + 1024)
        # Text: the same size, in ASCII (valid UTF-8 wherever it is cut).
        alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 .,"
        self.text = bytes(alphabet[byte % len(alphabet)] for byte in self.blob)
        self.kinds: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        self.weights: list[float] = []
        for name, weight, method, arguments in CATALOGUE:
            operation = functools.partial(getattr(self, method), *arguments)
            if only and not any(name == k or name.startswith(k + "-") for k in only):
                continue
            self.kinds.append((name, operation))
            self.weights.append(weight)

    # Helpers.

    def pick(self) -> tuple[str, Callable[[], Awaitable[None]]]:
        return self.rng.choices(self.kinds, self.weights)[0]

    def size(self, largest: int = 4 * MIB) -> int:
        """
        :return: a message size: mostly small, some of tens of KiB, a few of MiBs.
        """
        roll = self.rng.random()
        if roll < 0.45:
            size = self.rng.randint(0, 512)
        elif roll < 0.85:
            size = self.rng.randint(513, 64 * 1024)
        elif roll < 0.97:
            size = self.rng.randint(64 * 1024, MIB)
        else:
            size = self.rng.randint(MIB, 4 * MIB)
        return min(size, largest)

    def payload(self, size: int, text: bool = False) -> bytes:
        source = self.text if text else self.blob
        start = self.rng.randint(0, len(source) - size)
        return source[start : start + size]

    def host(self, tls: bool) -> str:
        # Over TLS, the certificate covers both: check a name and an address.
        if tls and self.rng.random() < 0.3:
            return "localhost"
        return LOOPBACK

    def port(self, service: str, tls: bool) -> int:
        return self.ports[f"{service}-tls" if tls else service]

    async def raw(self, service: str, tls: bool) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        from netlab.tls import client_endpoint

        port = self.port(service, tls)
        if tls:
            endpoint = client_endpoint(self.reactor, self.host(True), port, self.tls)
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, LOOPBACK, port, timeout=10)
        return await connectProtocol(endpoint, _raw_protocol())

    def sleep(self, seconds: float) -> Any:
        from twisted.internet import task

        return task.deferLater(self.reactor, seconds, lambda: None)

    # Normal clients.

    async def echo(self, tls: bool) -> None:
        size = self.size()
        if tls:
            size = max(size, 1)
        await self.echoed(self.payload(size), tls)
        self.tally.exchanges["bytes echoed"] += size

    async def echoed(self, message: bytes, tls: bool) -> None:
        """
        Echo ``message``, over TLS or not, and check that all of it came back.
        """
        from netlab.services.echo import echo

        endpoint = (
            f"tls:{self.host(True)}:{self.ports['echo-tls']}"
            if tls
            else (f"tcp:{LOOPBACK}:{self.ports['echo']}")
        )
        reply = await echo(
            endpoint,
            message,
            reactor=self.reactor,
            timeout=OPERATION_TIMEOUT,
            tls=self.tls if tls else None,
        )
        if reply != message:
            raise Unexpected(_difference("echo", message, reply))

    async def greet(self, tls: bool) -> None:
        from netlab.services.greeting import GREETING, greet

        # Mostly what a greeting is (up to 1 KiB), sometimes far more.
        roll = self.rng.random()
        size = (
            self.rng.randint(1, 1024)
            if roll < 0.9
            else self.rng.randint(1025, 256 * 1024)
        )
        message = self.payload(size)
        endpoint = (
            f"tls:{self.host(True)}:{self.ports['greeting-tls']}"
            if tls
            else (f"tcp:{LOOPBACK}:{self.ports['greeting']}")
        )
        note(f"{'TLS' if tls else 'TCP'}, {size} bytes")
        reply = await greet(
            endpoint,
            message,
            reactor=self.reactor,
            timeout=OPERATION_TIMEOUT,
            tls=self.tls if tls else None,
        )
        if reply != GREETING:
            raise Unexpected(f"greeting: {reply[:80]!r}")

    def _request(self) -> tuple[str, str, bytes | None, Callable[[Any, bytes], None]]:
        """
        :return: a method, a path, a body and what checks the response.
        """
        from netlab.services.hello import HELLO

        roll = self.rng.random()
        if roll < 0.3:
            return "GET", "/", None, _expect(200, HELLO, b"text/plain")
        if roll < 0.4:
            return "GET", "/healthz", None, _expect_json(200, {"status": "ok"})
        if roll < 0.5:
            path = f"/nowhere-{self.rng.randint(0, 10**6)}"
            return "GET", path, None, _expect(404, b"Not found\n", b"text/plain")
        if roll < 0.55:
            return (
                "DELETE",
                "/",
                None,
                _expect(405, b"Method not allowed\n", b"text/plain"),
            )
        text = self.rng.random() < 0.5
        body = self.payload(self.size(largest=MIB), text=text)
        value = str(self.rng.randint(0, 10**9))
        method = "POST" if self.rng.random() < 0.8 else "GET"
        if method == "GET":
            body = b""
        return (
            method,
            f"/echo?n={value}",
            body or None,
            _expect_reflection(method, value, body),
        )

    async def http_new(self, tls: bool) -> None:
        from netlab import http

        method, path, body, check = self._request()
        scheme = "https" if tls else "http"
        url = f"{scheme}://{self.host(tls)}:{self.port('http', tls)}{path}"
        response = await http.fetch(
            url,
            method=method,
            data=body,
            reactor=self.reactor,
            timeout=OPERATION_TIMEOUT,
            tls=self.tls if tls else None,
        )
        check(response.code, response.headers, response.body)
        self.tally.exchanges["http requests"] += 1

    async def http_keepalive(self, tls: bool) -> None:
        scheme = "https" if tls else "http"
        # The same host name each time, so that the pool's key matches.
        base = f"{scheme}://{LOOPBACK}:{self.port('http', tls)}"
        for _ in range(self.rng.randint(1, 6)):
            method, path, body, check = self._request()

            # The client's own deadline (the operation's) covers each request.
            response = await self.keepalive.request(method, base + path, data=body)
            content = await response.content()
            code, headers = response.code, response.headers
            check(code, headers, content)
            self.tally.exchanges["http requests"] += 1
            self.tally.exchanges["kept-alive requests"] += 1
            if path.startswith("/echo"):
                port = json.loads(content)["client"]["port"]
                self.tally.exchanges["kept-alive reflections"] += 1
                self.tally.keepalive_ports.add((scheme, port))

    async def ws_connect(self, service: str, tls: bool) -> Any:
        """
        :return: a WebSocket to ``service`` (``"ws"``, or ``"http"`` for
            its ``/ws``), over TLS or not.
        """
        from netlab import websocket

        scheme = "wss" if tls else "ws"
        path = "/ws" if service == "http" else "/"
        url = f"{scheme}://{self.host(tls)}:{self.port(service, tls)}{path}"
        return await websocket.connect(
            url,
            reactor=self.reactor,
            timeout=OPERATION_TIMEOUT,
            tls=self.tls if tls else None,
        )

    async def ws_session(self, service: str, tls: bool) -> None:
        from twisted.internet import defer

        connection = await self.ws_connect(service, tls)
        try:
            messages: list[str | bytes] = []
            for _ in range(self.rng.randint(1, 8)):
                size = self.size(largest=512 * 1024)
                if self.rng.random() < 0.5:
                    messages.append(self.payload(size, text=True).decode("ascii"))
                else:
                    messages.append(self.payload(size))
            pipelined = self.rng.random() < 0.5
            if pipelined:
                for message in messages:
                    connection.send(message)
            for message in messages:
                if not pipelined:
                    connection.send(message)
                reply = await connection.receive()
                expected = "Echo: " + message if isinstance(message, str) else message
                if reply != expected:
                    raise Unexpected(_difference("websocket", expected, reply))
                self.tally.exchanges["websocket messages"] += 1
            code, reason = await connection.close()
            if code != 1000:
                raise Unexpected(f"websocket closed with {code} ({reason}), not 1000")
        finally:
            protocol = connection._protocol
            if protocol.closed_with is None and protocol.transport is not None:
                protocol.transport.abortConnection()
                await defer.Deferred.fromCoroutine(_quietly(connection.closed()))

    # Hostile clients.

    async def _refused(self, request: bytes, status: int, tls: bool) -> None:
        """
        Send ``request`` to the HTTP service: the answer must be ``status``,
        then a close.
        """
        raw = await self.raw("http", tls)
        try:
            raw.transport.write(request)
            await raw.until_closed()
            head = bytes(raw.received[:200])
            if not head.startswith(b"HTTP/1.1 %d " % status):
                raise Unexpected(f"expected {status}, got {head[:80]!r}")
        finally:
            raw.reset()

    def _tls(self) -> bool:
        tls = self.rng.random() < 0.3
        note("TLS" if tls else "TCP")
        return tls

    async def http_garbage(self) -> None:
        # No whitespace: the request line can never have three parts.
        garbage = bytes(
            self.rng.choice(range(0x21, 0x100))
            for _ in range(self.rng.randint(1, 2000))
        )
        await self._refused(garbage + b"\r\n\r\n", 400, self._tls())

    async def http_long_uri(self) -> None:
        path = b"/" + b"a" * self.rng.randint(8200, 20000)
        await self._refused(
            b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, self._tls()
        )

    async def http_big_header(self) -> None:
        value = b"v" * self.rng.randint(8200, 20000)
        await self._refused(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + value + b"\r\n\r\n",
            431,
            self._tls(),
        )

    async def http_many_headers(self) -> None:
        headers = b"".join(
            b"X-%d: y\r\n" % n for n in range(self.rng.randint(101, 400))
        )
        await self._refused(
            b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", 431, self._tls()
        )

    async def http_body_too_large(self) -> None:
        if self.rng.random() < 0.5:
            # Refused on its Content-Length, before any body is read.
            request = (
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                % self.rng.randint(MIB + 1, 100 * MIB)
            )
        else:
            # Chunked: refused once the body read so far is too large.
            chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"z" * 64 * 1024)
            request = (
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                + chunk * 18
            )
        await self._refused(request, 413, self._tls())

    async def http_slow_head(self) -> None:
        # Half a head, then nothing: 408 once the head timeout has passed.
        tls = self._tls()
        raw = await self.raw("http", tls)
        try:
            raw.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            started = self.reactor.seconds()
            await raw.until_closed()
            waited = self.reactor.seconds() - started
            head = bytes(raw.received[:100])
            if not head.startswith(b"HTTP/1.1 408 "):
                raise Unexpected(f"expected 408, got {head[:80]!r}")
            if waited < HEAD_TIMEOUT - 0.5:
                raise Unexpected(f"408 after {waited:.1f}s, before the head timeout")
        finally:
            raw.reset()

    async def half_request_reset(self) -> None:
        # Part of a request (never its end), then a reset.
        service = self.rng.choice(["http", "ws"])
        tls = self._tls()
        request = (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
            + b"b" * 400
            if service == "http"
            else b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        )
        raw = await self.raw(service, tls)
        try:
            raw.transport.write(request[: self.rng.randint(1, len(request) - 1)])
            await self.sleep(self.rng.random() * 0.2)
            if raw.received:
                raise Unexpected(
                    f"answered half a request: {bytes(raw.received[:80])!r}"
                )
        finally:
            raw.reset()

    async def tls_garbage(self) -> None:
        # Plain bytes to a TLS port: the server must close (an alert at most).
        service = self.rng.choice(["echo", "greeting", "http", "ws"])
        roll = self.rng.random()
        if roll < 0.4:
            data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        elif roll < 0.7:
            # A handshake record whose content is garbage.
            data = b"\x16\x03\x01\x02\x00" + self.rng.randbytes(512)
        else:
            data = self.rng.choice([b"\x00", b"\xff", b"X"]) + self.rng.randbytes(
                self.rng.randint(8, 4096)
            )
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

        endpoint = TCP4ClientEndpoint(
            self.reactor, LOOPBACK, self.ports[f"{service}-tls"], timeout=10
        )
        raw = await connectProtocol(endpoint, _raw_protocol())
        try:
            raw.transport.write(data)
            await raw.until_closed()
            if raw.received and raw.received[:1] != b"\x15":
                raise Unexpected(f"TLS port answered {bytes(raw.received[:40])!r}")
        finally:
            raw.reset()

    async def connect_reset(self) -> None:
        # Connect (over TLS: maybe mid-handshake), perhaps say a little, reset.
        service = self.rng.choice(["echo", "greeting", "http", "ws"])
        tls = self._tls()
        raw = await self.raw(service, tls)
        try:
            if self.rng.random() < 0.5:
                raw.transport.write(b"GET / HT"[: self.rng.randint(1, 8)])
            await self.sleep(self.rng.random() * 0.05)
        finally:
            raw.reset()

    async def echo_reset(self) -> None:
        # A large echo, read in part, then a reset.
        tls = self._tls()
        message = self.payload(self.rng.randint(MIB, 4 * MIB))
        raw = await self.raw("echo", tls)
        try:
            raw.transport.write(message)
            part = self.rng.randint(1, 256 * 1024)
            received = await raw.until(lambda data: len(data) >= part)
            if not message.startswith(received):
                raise Unexpected(
                    _difference("echo", message[: len(received)], received)
                )
        finally:
            raw.reset()

    async def _ws_open(self, service: str, tls: bool) -> Any:
        """
        :return: a raw connection on which the WebSocket opening handshake
            succeeded (checked to the letter of RFC 6455).
        """
        raw = await self.raw(service, tls)
        key = base64.b64encode(self.rng.randbytes(16))
        path = b"/ws" if service == "http" else b"/"
        raw.transport.write(
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (path, key)
        )
        try:
            data = await raw.until(lambda data: _head_end(data) > 0)
        except BaseException:
            raw.reset()
            raise
        head = data[: _head_end(data)]
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101 ") or (
            b"sec-websocket-accept: " + accept.lower() not in head.lower()
        ):
            raw.reset()
            raise Unexpected(f"bad opening handshake answer: {head[:120]!r}")
        del raw.received[: len(head)]
        return raw

    async def ws_no_upgrade(self) -> None:
        raw = await self.raw("ws", self._tls())
        try:
            raw.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await raw.until_closed()
            head = bytes(raw.received[:100])
            if not head.startswith(b"HTTP/1.1 426 "):
                raise Unexpected(f"expected 426, got {head[:80]!r}")
        finally:
            raw.reset()

    async def ws_bad_frame(self) -> None:
        # Each breaks RFC 6455 and must get a close frame with the right code.
        cases = [
            (ws_frame(0x1, b"unmasked", masked=False), 1002),
            (ws_frame(0x3, b"reserved opcode"), 1002),
            (ws_frame(0x1, b"bad \xff\xfe utf-8"), 1007),
            (ws_frame(0x9, b"p" * 126), 1002),
        ]
        frame, code = self.rng.choice(cases)
        service = self.rng.choice(["ws", "http"])
        raw = await self._ws_open(service, self._tls())
        try:
            raw.transport.write(frame)
            data = await raw.until(lambda data: bool(ws_frames(data)))
            opcode, payload = ws_frames(data)[0]
            got = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            if opcode != 0x8 or got != code:
                raise Unexpected(
                    f"expected close {code}, got opcode {opcode:#x} code {got}"
                )
            # Answer the close, as a well-behaved peer would, and wait for TCP's.
            raw.transport.write(ws_frame(0x8, payload[:2]))
            await raw.until_closed()
        finally:
            raw.reset()

    async def ws_reset(self) -> None:
        # An open WebSocket that vanishes, perhaps before its echo arrives.
        service = self.rng.choice(["ws", "http"])
        raw = await self._ws_open(service, self._tls())
        try:
            message = self.payload(self.rng.randint(0, 4000), text=True)
            raw.transport.write(ws_frame(0x1, message))
            if self.rng.random() < 0.5:
                data = await raw.until(lambda data: bool(ws_frames(data)))
                frame = ws_frames(data)[0]
                if frame != (0x1, b"Echo: " + message):
                    raise Unexpected(f"websocket echo: got {frame[1][:60]!r}")
        finally:
            raw.reset()

    async def ws_too_large(self) -> None:
        # A message over the limit; compressible, it is small on the wire.
        from twisted.internet import defer

        service = self.rng.choice(["ws", "http"])
        tls = self.rng.random() < 0.3
        connection = await self.ws_connect(service, tls)
        try:
            size = MIB + self.rng.randint(1, 1024)
            compressible = self.rng.random() < 0.5
            port = connection._protocol.transport.getHost().port
            kind = "zeros" if compressible else "random bytes"
            note(f"{service} {'TLS' if tls else 'plain'} from port {port}, {kind}")
            connection.send(b"\0" * size if compressible else self.payload(size))
            try:
                code, reason = await connection.closed().addTimeout(
                    HANDSHAKE_TIMEOUT + 5, self.reactor
                )
            except defer.TimeoutError:
                raise Unexpected("oversized message: no close") from None
            if code != 1009:
                raise Unexpected(f"oversized message: closed with {code} ({reason})")
        finally:
            protocol = connection._protocol
            if protocol.closed_with is None and protocol.transport is not None:
                protocol.transport.abortConnection()
                await defer.Deferred.fromCoroutine(_quietly(connection.closed()))


def _described(problem: object, notes: list[str]) -> str:
    context = f" [{', '.join(notes)}]" if notes else ""
    return f"{problem}{context}"[:400]


async def _quietly(waiting: Awaitable[Any]) -> None:
    try:
        await waiting
    except Exception:
        pass


def _difference(what: str, expected: bytes | str, got: bytes | str) -> str:
    if len(expected) != len(got):
        return f"{what}: sent {len(expected)}, got {len(got)} back"
    first = next(
        i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b
    )
    return f"{what}: {len(got)} back, different from position {first}"


def _content_type(headers: Any) -> bytes:
    values = headers.getRawHeaders(b"content-type") or [b""]
    value = values[0]
    return value.encode("latin-1") if isinstance(value, str) else value


def _expect(status: int, body: bytes, content_type: bytes) -> Callable[..., None]:
    def check(code: int, headers: Any, content: bytes) -> None:
        if code != status or content != body:
            raise Unexpected(f"expected {status} {body!r}, got {code} {content[:80]!r}")
        if not _content_type(headers).startswith(content_type):
            raise Unexpected(f"content type {_content_type(headers)!r}")

    return check


def _expect_json(status: int, value: Any) -> Callable[..., None]:
    def check(code: int, headers: Any, content: bytes) -> None:
        if code != status or json.loads(content) != value:
            raise Unexpected(
                f"expected {status} {value!r}, got {code} {content[:80]!r}"
            )

    return check


def _expect_reflection(method: str, value: str, body: bytes) -> Callable[..., None]:
    def check(code: int, headers: Any, content: bytes) -> None:
        if code != 200:
            raise Unexpected(f"/echo: {code} {content[:80]!r}")
        reflected = json.loads(content)
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        wanted = {
            "method": method,
            "path": "/echo",
            "query": {"n": [value]},
            "body": text,
            "body_encoding": encoding,
        }
        got = {key: reflected.get(key) for key in wanted}
        if got != wanted:
            wrong = [key for key in wanted if got[key] != wanted[key]]
            raise Unexpected(f"/echo reflected a different {', '.join(wrong)}")
        if reflected["client"]["host"] != LOOPBACK:
            raise Unexpected(f"/echo: client {reflected['client']!r}")

    return check


# Running it all.


@dataclass
class Figures:
    """
    What the server's resources were, in descriptors and bytes.
    """

    fds_start: int = 0
    fds_baseline: int = 0
    fds_peak: int = 0
    fds_after: int = 0
    rss_baseline: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    warmup: float = 0.0
    soak: float = 0.0
    total: float = 0.0

    @property
    def rss_allowed(self) -> float:
        return max(self.rss_baseline * RSS_GROWTH_RATIO, RSS_GROWTH_FLOOR)


class _Run:
    def __init__(self, reactor: Any, options: argparse.Namespace) -> None:
        self.reactor = reactor
        self.options = options
        self.tally = Tally()
        self.figures = Figures()
        self.failures: list[str] = []
        self.stopped_cleanly: str = "not stopped"
        self.extra_fds: list[str] = []

    async def mix(self, mix: Mix, seconds: float, twistd: _Twistd) -> None:
        """
        Run ``options.concurrency`` clients for ``seconds``, then let each finish.
        """
        from twisted.internet import defer, task

        from netlab.deadline import with_deadline

        deadline = self.reactor.seconds() + seconds

        async def client() -> None:
            while self.reactor.seconds() < deadline and twistd.running:
                kind, operation = mix.pick()
                began = self.reactor.seconds()
                notes: list[str] = []
                token = _NOTES.set(notes)
                try:
                    running = defer.Deferred.fromCoroutine(operation())
                finally:
                    _NOTES.reset(token)
                try:
                    await with_deadline(running, OPERATION_TIMEOUT, self.reactor)
                except KnownIssue as issue:
                    self.tally.known[str(issue)] += 1
                    self.tally.known_by_kind[kind] += 1
                except Unexpected as problem:
                    self.tally.error(kind, _described(problem, notes))
                except Exception as problem:
                    what = f"{type(problem).__name__}: {problem}"
                    self.tally.error(kind, _described(what, notes))
                else:
                    self.tally.ok[kind] += 1
                took = self.reactor.seconds() - began
                self.tally.slowest[kind] = max(self.tally.slowest[kind], took)

        def sample() -> None:
            if twistd.running:
                fds = len(os.listdir(f"/proc/{twistd.pid}/fd"))
                self.figures.fds_peak = max(self.figures.fds_peak, fds)
                self.figures.rss_peak = max(
                    self.figures.rss_peak, rss_bytes(twistd.pid)
                )

        sampler = task.LoopingCall(sample)
        sampler.clock = self.reactor
        sampler.start(0.5)
        try:
            await defer.gatherResults(
                [
                    defer.Deferred.fromCoroutine(client())
                    for _ in range(self.options.concurrency)
                ]
            )
        finally:
            sampler.stop()

    async def burst(self, mix: Mix) -> None:
        """
        Each client echoes the largest message of the mix, half over TLS.
        """
        from twisted.internet import defer

        from netlab.deadline import with_deadline

        async def one(index: int) -> None:
            tls = index % 2 == 1
            message = mix.payload(4 * MIB)
            try:
                await mix.echoed(message, tls)
            except Exception as problem:
                self.tally.error("burst", f"{type(problem).__name__}: {problem}")
            else:
                self.tally.ok["burst"] += 1

        await with_deadline(
            defer.gatherResults(
                [
                    defer.Deferred.fromCoroutine(one(index))
                    for index in range(self.options.concurrency)
                ]
            ),
            OPERATION_TIMEOUT * 2,
            self.reactor,
        )

    async def settle(self, twistd: _Twistd) -> Descriptors:
        """
        Wait (bounded) until the server holds no TCP connection any more.

        :return: its descriptors then.
        """
        from twisted.internet import task

        give_up = self.reactor.seconds() + SETTLE_TIMEOUT
        while True:
            now = descriptors(twistd.pid)
            if not now.connections or self.reactor.seconds() > give_up:
                return now
            await task.deferLater(self.reactor, 0.2, lambda: None)

    async def __call__(self) -> int:
        from twisted.internet import defer

        from netlab import certs

        options = self.options
        began = time.monotonic()
        directory = pathlib.Path(tempfile.mkdtemp(prefix="netlab-soak-"))
        keep = open(options.server_log, "wb") if options.server_log else None  # noqa: SIM115
        twistd = _Twistd(keep)

        def kill() -> None:
            twistd.signal("KILL")

        # Ctrl-C (or anything that stops the reactor) still ends the child.
        trigger = self.reactor.addSystemEventTrigger("before", "shutdown", kill)
        try:
            paths = certs.make_certificates(directory / "certs")
            tls = (
                f"ssl:0:interface={LOOPBACK}:privateKey={_escaped(paths.server_key)}"
                f":certKey={_escaped(paths.server)}"
            )
            plain = f"tcp:0:interface={LOOPBACK}"
            args = [sys.executable, "-c", _ORPHAN_GUARD, *twistd_command()]
            args += ["-n", "--pidfile="]
            if options.reactor:
                args += ["-r", options.reactor]
            args += ["netlab", "--head-timeout", str(HEAD_TIMEOUT)]
            args += ["--handshake-timeout", str(HANDSHAKE_TIMEOUT)]
            for service in ("echo", "greeting", "http", "ws"):
                args += [f"--{service}", plain, f"--{service}", tls]
            twistd.start(self.reactor, args, str(directory))
            await twistd.ready.addTimeout(PROCESS_TIMEOUT, self.reactor)
            self.figures.fds_start = descriptors(twistd.pid).count

            rng = random.Random(options.seed)
            mix = Mix(
                self.reactor,
                twistd.ports,
                str(paths.ca),
                options.concurrency,
                rng,
                self.tally,
                options.only,
            )

            # Warm up: every lazy import, TLS context and allocator arena the
            # mix needs is made now, not counted as growth later.
            started = time.monotonic()
            await self.mix(mix, options.warmup, twistd)
            # The largest exchanges of the mix, all at once, so that the
            # allocator reaches its high-water mark before the baseline.
            await self.burst(mix)
            await mix.pool.closeCachedConnections()
            baseline = await self.settle(twistd)
            self.figures.fds_baseline = baseline.count
            self.figures.rss_baseline = rss_bytes(twistd.pid)
            self.figures.warmup = time.monotonic() - started
            warmup_errors = sum(self.tally.errors.values())
            if baseline.connections:
                self.failures.append(
                    f"{len(baseline.connections)} connections still open "
                    f"{SETTLE_TIMEOUT:g}s after the warm-up"
                )
                self.extra_fds = sorted(baseline.connections.values())

            started = time.monotonic()
            self.figures.fds_peak = self.figures.fds_baseline
            self.figures.rss_peak = self.figures.rss_baseline
            await self.mix(mix, options.seconds, twistd)
            await mix.pool.closeCachedConnections()
            self.figures.soak = time.monotonic() - started
            if not twistd.running:
                self.failures.append("twistd exited during the soak")
            else:
                after = await self.settle(twistd)
                self.figures.fds_after = after.count
                self.figures.rss_after = rss_bytes(twistd.pid)
                if after.count > baseline.count + FD_TOLERANCE:
                    self.extra_fds += [
                        f"{fd} -> {target} {after.connections.get(fd, '')}".strip()
                        for fd, target in sorted(after.targets.items())
                        if baseline.targets.get(fd) != target
                    ]
            self.check(warmup_errors)

            # Stop it as an operator would, and see that it goes quietly.
            problems_before = twistd.problem_events
            twistd.signal("TERM")
            try:
                ended = await defer.Deferred.fromCoroutine(
                    _wait(twistd.ended)
                ).addTimeout(PROCESS_TIMEOUT, self.reactor)
            except defer.TimeoutError:
                self.failures.append(
                    f"twistd did not stop within {PROCESS_TIMEOUT:g}s of SIGTERM"
                )
            else:
                self.stopped_cleanly = self.check_stop(ended, twistd, problems_before)
            if twistd.problem_events:
                self.failures.append(
                    f"the server logged {twistd.problem_events} errors or tracebacks"
                )
            if options.strict and twistd.known:
                self.failures.append(
                    f"the server logged {sum(twistd.known.values())} known errors "
                    "(--strict)"
                )
        finally:
            if twistd.process is not None and twistd.running:
                twistd.signal("KILL")
                try:
                    await defer.Deferred.fromCoroutine(_wait(twistd.ended)).addTimeout(
                        5, self.reactor
                    )
                except Exception:
                    pass
            self.reactor.removeSystemEventTrigger(trigger)
            if keep is not None:
                keep.close()
            shutil.rmtree(directory, ignore_errors=True)
        self.figures.total = time.monotonic() - began
        self.report(twistd)
        return 1 if self.failures else 0

    def check_stop(self, ended: Any, twistd: _Twistd, problems_before: int) -> str:
        """
        :return: how twistd ended, once told to stop; what is wrong with that
            goes into the failures.
        """
        how = f"exit status {ended.exitCode}, signal {ended.signal}"
        wrong = []
        # twistd ends the way every process ends on SIGTERM: by that signal.
        if ended.signal != signal.SIGTERM and ended.exitCode != 0:
            wrong.append(f"twistd ended badly on SIGTERM ({how})")
        if "Server Shut Down." not in "\n".join(twistd.tail):
            wrong.append("twistd did not log 'Server Shut Down.'")
        if twistd.problem_events > problems_before:
            wrong.append("twistd logged an error or a traceback while stopping")
        self.failures.extend(wrong)
        return f"stopped on SIGTERM ({how}){': clean' if not wrong else ''}"

    def check(self, warmup_errors: int) -> None:
        figures = self.figures
        errors = sum(self.tally.errors.values())
        if errors:
            self.failures.append(
                f"{errors} client errors ({warmup_errors} during the warm-up)"
            )
        if not self.tally.ok:
            self.failures.append("no client operation succeeded")
        if figures.fds_after > figures.fds_baseline + FD_TOLERANCE:
            self.failures.append(
                f"descriptors leaked: {figures.fds_after} after, "
                f"{figures.fds_baseline} at the baseline"
            )
        growth = figures.rss_after - figures.rss_baseline
        if growth > figures.rss_allowed:
            self.failures.append(
                f"RSS grew by {_mib(growth)}, more than {_mib(figures.rss_allowed)}"
            )
        if self.options.strict and self.tally.known:
            self.failures.append(
                f"{sum(self.tally.known.values())} known issues (--strict)"
            )
        requests = self.tally.exchanges["kept-alive reflections"]
        if requests >= 10 and len(self.tally.keepalive_ports) >= requests:
            self.failures.append("kept-alive requests never shared a connection")

    def report(self, twistd: _Twistd) -> None:
        from twisted.internet import reactor

        tally, figures, options = self.tally, self.figures, self.options
        _write(
            f"netlab soak: {options.seconds:g}s after a {options.warmup:g}s "
            f"warm-up, concurrency {options.concurrency}, seed {options.seed}, "
            f"reactor {type(reactor).__name__} "
            f"(twistd: {options.reactor or 'default'})"
        )
        _write(f"{'client':<28} {'ok':>7} {'errors':>7} {'known':>6} {'slowest':>8}")
        for kind in sorted(
            set(tally.ok) | set(tally.errors) | set(tally.known_by_kind)
        ):
            _write(
                f"{kind:<28} {tally.ok[kind]:>7} {tally.errors[kind]:>7} "
                f"{tally.known_by_kind[kind]:>6} {tally.slowest[kind]:>7.2f}s"
            )
        total_ok, total_errors = sum(tally.ok.values()), sum(tally.errors.values())
        total_known = sum(tally.known.values())
        _write(f"{'total':<28} {total_ok:>7} {total_errors:>7} {total_known:>6}")
        _write(f"errors: {total_errors}")
        for kind, examples in sorted(tally.examples.items()):
            for example in examples:
                _write(f"  {kind}: {example}")
        _write(f"known issues: {total_known}")
        for issue, count in sorted(tally.known.items()):
            _write(f"  {count} x {issue}: {KNOWN_ISSUES[issue]}")
        reflections = tally.exchanges["kept-alive reflections"]
        _write(
            f"exchanges: {tally.exchanges['http requests']} HTTP requests "
            f"({tally.exchanges['kept-alive requests']} kept alive; "
            f"{reflections} reflected over {len(tally.keepalive_ports)} connections), "
            f"{tally.exchanges['websocket messages']} WebSocket messages, "
            f"{_mib(tally.exchanges['bytes echoed'])} echoed"
        )
        _write(
            f"file descriptors: start {figures.fds_start}, "
            f"baseline {figures.fds_baseline}, "
            f"peak {figures.fds_peak}, after {figures.fds_after} "
            f"(allowed: baseline + {FD_TOLERANCE})"
        )
        growth = figures.rss_after - figures.rss_baseline
        percent = 100 * growth / figures.rss_baseline if figures.rss_baseline else 0.0
        _write(
            f"RSS: baseline {_mib(figures.rss_baseline)}, "
            f"peak {_mib(figures.rss_peak)}, "
            f"after {_mib(figures.rss_after)}, growth {growth / MIB:+.1f} MiB "
            f"({percent:+.1f} %; allowed: {_mib(figures.rss_allowed)})"
        )
        warnings = sum(twistd.warnings.values())
        known = sum(twistd.known.values())
        _write(
            f"server log: {twistd.lines} lines, {twistd.problem_events} errors or "
            f"tracebacks, {known} known errors, {warnings} warnings"
        )
        for pattern, count in twistd.known.items():
            _write(f"  {count} x known: {KNOWN_SERVER_ERRORS[pattern]}")
        for text, count in twistd.warnings.most_common(6):
            _write(f"  {count} x warning: {text}")
        for line in twistd.problems:
            _write(f"  | {line}")
        for line in self.extra_fds:
            _write(f"  extra descriptor: {line}")
        _write(f"twistd: {self.stopped_cleanly}")
        _write(
            f"duration: warm-up {figures.warmup:.1f}s, soak {figures.soak:.1f}s, "
            f"total {figures.total:.1f}s"
        )
        for failure in self.failures:
            _write(f"FAILED: {failure}")
        _write("result: " + ("FAIL" if self.failures else "PASS"))


async def _wait(d: Any) -> Any:
    return await d


def _client_log_observer(tally: Tally) -> Any:
    """
    :return: a log observer that counts this process's own errors (an
        unhandled error in a Deferred, say) as client errors.
    """
    from twisted.logger import LogLevel, formatEvent

    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level in (LogLevel.error, LogLevel.critical):
            failure = event.get("log_failure")
            text = formatEvent(event)
            if failure is not None:
                text += f": {failure.getErrorMessage()}"
            tally.error("client-log", text[:300])

    return observe


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m netlab.tools.soak",
        description="Soak-test twistd netlab on loopback with a mix of clients.",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=DEFAULT_SECONDS,
        help=f"how long the mix runs (default {DEFAULT_SECONDS:g})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        help=f"clients at work at once (default {DEFAULT_CONCURRENCY})",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of the mix before the baseline (default: 15 %% of --seconds, "
        "2 to 5)",
    )
    parser.add_argument(
        "--reactor",
        default=None,
        help="the reactor for twistd and for the clients (asyncio, epoll, poll, "
        "select; default: Twisted's default)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="seed for the mix (default: random)"
    )
    parser.add_argument(
        "--server-log",
        metavar="PATH",
        default=None,
        help="write twistd's whole log to this file (it is only scanned otherwise)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail on the known issues (KNOWN_ISSUES, KNOWN_SERVER_ERRORS) too",
    )
    parser.add_argument(
        "--only",
        type=lambda text: [kind.strip() for kind in text.split(",") if kind.strip()],
        default=None,
        metavar="KINDS",
        help="run only these kinds of client (comma-separated; a prefix such as "
        "'hostile' or 'ws' takes every kind it starts), to reproduce a failure",
    )
    options = parser.parse_args(argv)
    if options.only is not None:
        known = {name for name, *_ in CATALOGUE}
        unknown = [
            kind
            for kind in options.only
            if not any(n == kind or n.startswith(kind + "-") for n in known)
        ]
        if unknown or not options.only:
            parser.error(
                f"unknown kinds {', '.join(unknown)}: "
                f"choose from {', '.join(sorted(known))}"
            )
    if not options.seconds > 0 or not options.concurrency > 0:
        parser.error("--seconds and --concurrency must be positive")
    if options.warmup is None:
        options.warmup = min(5.0, max(2.0, options.seconds * 0.15))
    if options.seed is None:
        options.seed = random.randrange(10**6)
    if not os.path.isdir("/proc/self/fd"):
        parser.error("the soak reads the server's /proc entries: Linux only")
    return options


def main(argv: list[str] | None = None) -> None:
    """
    Run the soak; exit 0 when every check passed.
    """
    options = parse(argv)
    if options.reactor:
        from twisted.application.reactors import NoSuchReactor, installReactor

        try:
            installReactor(options.reactor)
        except NoSuchReactor:
            sys.stderr.write(f"no reactor called {options.reactor!r}\n")
            raise SystemExit(2) from None
    from twisted.internet import task
    from twisted.logger import globalLogBeginner

    async def run(reactor: Any) -> None:
        soak = _Run(reactor, options)
        globalLogBeginner.beginLoggingTo(
            [_client_log_observer(soak.tally)], redirectStandardIO=False
        )
        code = await soak()
        raise SystemExit(code)

    task.react(run)


if __name__ == "__main__":
    main()
