"""
What the tests share: servers to start, peers to drive them, processes to run.

Every wait is bounded: a test that would hang fails within ``WAIT`` seconds.
"""

from __future__ import annotations

import atexit
import functools
import os
import pathlib
import re
import resource
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest

from netlab import certs
from netlab.limits import Limits
from netlab.tls import ClientTLS

#: The checkout's root.
CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
#: What a copy of the checkout leaves out (``shutil.copytree``'s ``ignore``):
#: history, environments, build output, caches.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "_trial_temp*",
    "_build",
    "__pycache__",
    "dropin.cache",
)

#: Seconds any single wait in a test may take.
WAIT = 30.0
LOOPBACK = "127.0.0.1"


#: Set by ``.ci/run`` (not the CI runner's own ``CI``, which a runner may
#: or may not export): what a test needs, CI has installed.
CI_VARIABLE = "NETLAB_CI"


def in_ci() -> bool:
    """
    :return: whether the suite runs under ``.ci/run``.
    """
    return os.environ.get(CI_VARIABLE, "") not in ("", "0")


def missing(reason: str) -> None:
    """
    Something a test uses is missing: a failure under CI (``.ci/run``
    installs everything the suite needs), else nothing, so that the test can
    take its other branch.

    :param reason: what is missing and how to install it.
    """
    if in_ci():
        raise AssertionError(f"{reason}; {CI_VARIABLE} is set and CI must have it")


def require(condition: object, reason: str) -> None:
    """
    Skip the test unless ``condition`` holds; under CI, fail instead.

    A skip CI accepts is raised as a plain ``SkipTest`` and listed, with its
    reason, in ``.ci/expected-skips``.

    :param reason: what is missing and how to install it (``needs wrk
        (apt-get install wrk)``).
    """
    if not condition:
        skip_or_fail(reason)


def skip_or_fail(reason: str) -> NoReturn:
    """
    Skip the test (under CI, fail it): :func:`require` where the condition
    is an exception caught.
    """
    missing(reason)
    raise SkipTest(reason)


async def until(check: Any, seconds: float = WAIT, step: float = 0.05) -> Any:
    """
    Call ``check`` (which may return a Deferred or coroutine) until it
    returns something true, every ``step`` seconds for at most ``seconds``.

    :return: what it returned.
    :raise AssertionError: if it never did.
    """
    deadline = reactor.seconds() + seconds
    while True:
        result = check()
        if hasattr(result, "__await__") or isinstance(result, defer.Deferred):
            result = await result
        if result:
            return result
        if reactor.seconds() > deadline:
            raise AssertionError(f"{check} not true within {seconds} s")
        await task.deferLater(reactor, step, lambda: None)


def bounded(d: defer.Deferred[Any], seconds: float = WAIT) -> defer.Deferred[Any]:
    """
    :return: ``d``, failed with a TimeoutError if it has not fired in time.
    """
    return d.addTimeout(seconds, reactor)


def raise_fd_limit(wanted: int) -> None:
    """
    Let this process hold ``wanted`` file descriptors, if the hard limit allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


class Peer(protocol.Protocol):
    """
    The test's side of a connection: keeps what arrives, tells when it closes.
    """

    def __init__(self) -> None:
        self.received = bytearray()
        #: Fires with None once the connection is closed; ``reason`` says how.
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.reason: Failure | None = None
        self._waiting: list[tuple[int, defer.Deferred[bytes]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        ready = [(n, d) for n, d in self._waiting if len(self.received) >= n]
        for entry in ready:
            self._waiting.remove(entry)
            entry[1].callback(bytes(self.received))

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(reason)
        self.reason = reason
        self.closed.callback(None)

    def received_at_least(self, size: int) -> defer.Deferred[bytes]:
        """
        :return: a Deferred of all received so far, once that is ``size`` bytes.
        """
        if len(self.received) >= size:
            return defer.succeed(bytes(self.received))
        d: defer.Deferred[bytes] = defer.Deferred()
        self._waiting.append((size, d))
        return bounded(d)

    async def reply_to(self, message: bytes) -> bytes:
        """
        Send ``message``, shut down writing, and return all received until close.
        """
        self.transport.write(message)
        self.transport.loseWriteConnection()
        await bounded(self.closed)
        self.reason.trap(ConnectionDone)
        return bytes(self.received)


async def connect(host: str, port: int) -> Peer:
    """
    :return: a connected :class:`Peer`.
    """
    endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=WAIT)
    return await bounded(connectProtocol(endpoint, Peer()))


async def abort(peer: Peer) -> None:
    """
    Abort ``peer``'s connection if it is still open, and wait until it is closed.
    """
    if peer.transport.connected:
        peer.transport.abortConnection()
    await bounded(peer.closed)


async def until_intake_stops(server: Any) -> None:
    """
    Wait (bounded) until a TCP connection the server stopped reading from
    (``server``, a :class:`~netlab.tcp.TCPConnection`) takes in no more:
    its transport paused and its ``bytes_in`` still.
    """
    from twisted.internet import reactor, task

    previous = -1
    for _ in range(int(WAIT / 0.05)):
        await task.deferLater(reactor, 0.05)
        if server.bytes_in == previous and server.transport.producerPaused:
            return
        previous = server.bytes_in


def register(
    namespace: dict[str, Any],
    contract: type,
    servers: dict[str, Any],
    tests: dict[str, Callable[..., Any]],
    *,
    tls: bool = False,
) -> None:
    """
    Put in ``namespace`` one ``TestCase`` per server: the ``contract`` mixin
    with its ``server`` set, plus ``tests`` (name to method).

    With ``tls``, the classes have ``tls`` set to the test certificates
    (:func:`shared_certificates`): the contract starts its server with them,
    and its clients trust their CA.
    """
    from twisted.trial.unittest import TestCase

    for server_name, server in servers.items():
        name = f"{server_name}{contract.__name__}"
        attributes = dict(
            tests,
            server=server,
            tls=shared_certificates() if tls else None,
            __module__=namespace["__name__"],
        )
        namespace[name] = type(name, (contract, TestCase), attributes)


@functools.cache
def shared_certificates() -> certs.Certificates:
    """
    :return: a CA, and a server certificate (localhost, 127.0.0.1, ::1) it
        signed; made once per test run, removed at its end.
    """
    directory = pathlib.Path(tempfile.mkdtemp(prefix="netlab-test-certs-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return certs.make_certificates(directory / "certs")


def _escaped(path: pathlib.Path) -> str:
    # Endpoint strings separate fields with colons.
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


@dataclass
class Running:
    """
    A server the test started: where it is, and how to stop it.
    """

    host: str
    port: int
    stop: Callable[[], Awaitable[None]]
    #: The certificates the server shows, when it serves TLS.
    tls: certs.Certificates | None = None
    #: The factory serving, when it runs in this process.
    factory: Any = None

    @property
    def hostname(self) -> str:
        """
        The name a client connects to: over TLS, ``localhost``, one of the
        names in the certificate, so that clients check a DNS name too.
        """
        return "localhost" if self.tls else self.host

    @property
    def cacert(self) -> str | None:
        """
        The CA file a TLS client trusts, or None for plain TCP.
        """
        return str(self.tls.ca) if self.tls else None

    def client_tls(self) -> ClientTLS | None:
        """
        :return: netlab's client TLS settings trusting the server's CA.
        """
        return ClientTLS(cacert=self.cacert) if self.tls else None


class TwistedServer:
    """
    A netlab factory listening in this process, on the endpoint the plugins
    listen on (:func:`netlab.tap.plugin_endpoint`).

    :param make_factory: makes the factory, given ``limits=``.
    """

    def __init__(self, make_factory: Callable[..., Any]) -> None:
        self.make_factory = make_factory

    async def start(
        self, tls: certs.Certificates | None = None, **limits: float
    ) -> Running:
        """
        Listen on a free loopback port, held to ``limits`` (:class:`Limits`
        fields); with ``tls``, on ``netlab-ssl:`` with its server certificate.
        """
        factory = self.make_factory(limits=Limits(**limits))
        description = f"tcp:0:interface={LOOPBACK}"
        if tls is not None:
            description = (
                f"netlab-ssl:0:interface={LOOPBACK}"
                f":privateKey={_escaped(tls.server_key)}"
                f":certKey={_escaped(tls.server)}"
            )
        # As the plugins listen: their backlog and flushing transport.
        from netlab.tap import plugin_endpoint

        port = await plugin_endpoint(description).listen(factory)

        async def stop() -> None:
            await port.stopListening()
            for connection in list(factory.connections):
                connection.transport.abortConnection()
            await bounded(factory.drained())

        return Running(LOOPBACK, port.getHost().port, stop, tls, factory)


@dataclass
class ProcessResult:
    """
    How a child process ended and what it printed.
    """

    status: int | None
    signal: int | None
    out: bytes
    err: bytes

    def __repr__(self) -> str:
        return (
            f"<exit {self.status} signal {self.signal}: "
            f"out={self.out[-500:]!r} err={self.err[-2000:]!r}>"
        )


class _Child(protocol.ProcessProtocol):
    def __init__(self, stdin: bytes | None, watch: re.Pattern[bytes] | None) -> None:
        self.stdin = stdin
        self.watch = watch
        self.out = bytearray()
        self.err = bytearray()
        self.seen: defer.Deferred[re.Match[bytes]] = defer.Deferred()
        self.ended: defer.Deferred[ProcessResult] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data
        self._look()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._look()

    def _look(self) -> None:
        if self.watch is None or self.seen.called:
            return
        match = self.watch.search(bytes(self.out + self.err))
        if match:
            self.seen.callback(match)

    def processEnded(self, reason: Failure) -> None:
        result = ProcessResult(
            reason.value.exitCode,
            reason.value.signal,
            bytes(self.out),
            bytes(self.err),
        )
        if self.watch is not None and not self.seen.called:
            self.seen.errback(AssertionError(f"exited before it was ready: {result}"))
        self.ended.callback(result)


@dataclass
class Child:
    """
    A running child process.
    """

    process: Any
    protocol: _Child = field(repr=False)

    def signal(self, name: str) -> None:
        """
        Send the signal called ``name`` (``"TERM"``, ``"INT"``, ...).
        """
        self.process.signalProcess(name)

    async def ended(self) -> ProcessResult:
        return await bounded(self.protocol.ended)


def spawn(
    args: list[str],
    *,
    stdin: bytes | None = None,
    watch: bytes | None = None,
    cwd: str | None = None,
    without: tuple[str, ...] = (),
) -> Child:
    """
    Start ``args`` with this environment, less the variables named in
    ``without``; ``watch`` is a regex to wait for.
    """
    child = _Child(stdin, re.compile(watch) if watch else None)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name in without:
        env.pop(name, None)
    process = reactor.spawnProcess(child, args[0], args, env=env, path=cwd)
    return Child(process, child)


async def run(
    args: list[str],
    stdin: bytes = b"",
    cwd: str | None = None,
    without: tuple[str, ...] = (),
):
    """
    Run ``args`` to completion, feeding it ``stdin`` (with the environment
    of :func:`spawn`).

    :return: its :class:`ProcessResult`.
    """
    return await spawn(args, stdin=stdin, cwd=cwd, without=without).ended()


def python(*args: str) -> list[str]:
    """
    :return: the command line that runs this Python with ``args``.
    """
    return [sys.executable, *args]


LISTENING = rb"listening on \S+ port (\d+)"


class TwinServer:
    """
    A compat twin, run as ``python -m netlab.compat.<module>``.
    """

    def __init__(self, module: str) -> None:
        self.module = module

    async def start(
        self, tls: certs.Certificates | None = None, **limits: float
    ) -> Running:
        """
        Start the twin on a free loopback port; each of ``limits`` (a
        :class:`Limits` field) is passed as its option (``--idle-timeout``);
        with ``tls``, ``--cert`` and ``--key`` its server certificate.
        """
        options = []
        if tls is not None:
            options += ["--cert", str(tls.server), "--key", str(tls.server_key)]
        for name, value in limits.items():
            options += ["--" + name.replace("_", "-"), str(value)]
        child = spawn(
            python("-m", self.module, "--host", LOOPBACK, "--port", "0", *options),
            watch=LISTENING,
        )
        match = await bounded(child.protocol.seen)

        async def stop() -> None:
            child.signal("TERM")
            result = await child.ended()
            if result.status != 0 or b"Traceback" in result.err:
                raise AssertionError(f"{self.module} did not stop cleanly: {result}")

        return Running(LOOPBACK, int(match.group(1)), stop, tls)
