"""
``--workers N``: a supervising ``twistd`` and its worker processes on shared
ports (:mod:`netlab.workers`).

The process tests run real ``twistd`` processes on loopback and tell the
workers apart by their relayed log lines (``[worker 1, pid 4242: ...]``).
"""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import re
import select
import signal
import socket
import tempfile
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.error import (
    ConnectionDone,
    ConnectionRefusedError,
    ProcessTerminated,
)
from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import (
    Logger,
    LogLevel,
    capturedLogs,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogPublisher,
)
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from netlab import certs, http, workers
from netlab.services import echo, hello
from netlab.tap import echo as echo_tap
from netlab.tap import http as http_tap
from netlab.tap import lab, listening_service
from netlab.tls import ClientTLS
from netlab.transport import FlushingPort, FlushingServer
from tests.support import WAIT, abort, bounded, connect
from tests.test_twistd import twistd

LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"


# -- Options ---------------------------------------------------------------


class OptionsTests(SynchronousTestCase):
    def test_default_is_one(self) -> None:
        for options in (echo_tap.Options(), http_tap.Options(), lab.Options()):
            options.parseOptions([])
            self.assertEqual(options["workers"], 1)
            self.assertIn("--workers", options.getUsage())

    def test_count(self) -> None:
        for value in ("1", "2", str(workers.MAX_WORKERS)):
            options = echo_tap.Options()
            options.parseOptions(["--workers", value])
            self.assertEqual(options["workers"], int(value))

    def test_bad_count_is_one_line(self) -> None:
        for bad in ("0", "-1", "65", "two", "1.5", ""):
            for options in (echo_tap.Options(), lab.Options()):
                error = self.assertRaises(
                    usage.UsageError, options.parseOptions, ["--workers", bad]
                )
                self.assertEqual(
                    str(error),
                    f"--workers must be a whole number from 1 to 64, not {bad!r}",
                )

    def test_unshareable(self) -> None:
        """
        What each process would need its own of is refused with workers,
        and allowed without.
        """
        cases = [
            ["--metrics", LOOPBACK_ANY_PORT],
            ["--wiretap", os.path.join(self.mktemp() + "-tap.pcapng")],
            ["--listen", "unix:" + self.mktemp()],
        ]
        for arguments in cases:
            echo_tap.Options().parseOptions(arguments)
            error = self.assertRaises(
                usage.UsageError,
                echo_tap.Options().parseOptions,
                [*arguments, "--workers", "2"],
            )
            self.assertNotIn("\n", str(error))
        error = self.assertRaises(
            usage.UsageError,
            lab.Options().parseOptions,
            ["--workers", "2", "--ws", "unix:" + self.mktemp()],
        )
        self.assertIn("--workers shares tcp:, tcp6: and ssl: endpoints", str(error))

    def test_arguments_are_kept(self) -> None:
        options = echo_tap.Options()
        arguments = ["--listen", LOOPBACK_ANY_PORT, "--workers", "3"]
        options.parseOptions(arguments)
        self.assertEqual(options.arguments, arguments)

    def test_one_worker_is_one_process(self) -> None:
        """
        Without ``--workers``, the service is what it always was: its
        endpoints listen with the global reactor (made to flush replies, see
        netlab.transport), and no supervisor.
        """
        options = echo_tap.Options()
        options.parseOptions(["--listen", LOOPBACK_ANY_PORT])
        service = echo_tap.makeService(options)
        self.assertFalse(
            [s for s in _walk(service) if isinstance(s, workers.Supervisor)]
        )
        [endpoint_service] = [s for s in _walk(service) if hasattr(s, "endpoint")]
        self.assertIs(endpoint_service.endpoint._reactor._reactor, reactor)

    def test_supervisor_is_added(self) -> None:
        options = lab.Options()
        options.parseOptions(
            ["--workers", "3", "--echo", LOOPBACK_ANY_PORT, "--greeting", "off"]
        )
        service = lab.makeService(options)
        [supervisor] = [s for s in _walk(service) if isinstance(s, workers.Supervisor)]
        self.assertEqual(supervisor.count, 3)
        self.assertEqual(supervisor.plugin, "netlab")
        command = supervisor.command()
        self.assertEqual(command[-len(options.arguments) :], options.arguments)
        self.assertIn("--logger=netlab.workers.relay", command)


def _walk(service: Any) -> list[Any]:
    found = [service]
    for child in getattr(service, "services", []):
        found.extend(_walk(child))
    return found


# -- The supervisor, on a fake reactor --------------------------------------


class _FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)


class _ProcessReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[dict[str, Any]] = []

    #: How many spawns fail (with EMFILE) before they work again.
    failing = 0

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kw: Any) -> Any:
        if self.failing:
            self.failing -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        process = _FakeProcess(1000 + len(self.spawned))
        self.spawned.append(dict(kw, protocol=protocol, process=process, args=args))
        return process


class SupervisorTests(SynchronousTestCase):
    def supervise(self, sockets: list[Any] = ()) -> tuple[Any, _ProcessReactor]:
        fake = _ProcessReactor()
        supervisor = workers.Supervisor(
            2, list(sockets), "netlab-echo", ["--workers", "2"], 10.0, fake
        )
        supervisor.startService()
        self.assertEqual(fake.spawned, [])
        fake.run()
        self.assertEqual(len(fake.spawned), 2)
        return supervisor, fake

    def test_workers_get_the_sockets(self) -> None:
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        shared = workers._Shared(listening, 0, "127.0.0.1")
        supervisor, fake = self.supervise([shared])
        for index, spawned in enumerate(fake.spawned, 1):
            descriptors = spawned["childFDs"]
            self.assertEqual(descriptors[4], listening.fileno())
            self.assertEqual(descriptors[0], "w")  # closes when the supervisor dies
            told = json.loads(spawned["env"]["NETLAB_WORKER"])
            self.assertEqual(told["index"], index)
            self.assertEqual(
                told["sockets"],
                [{"fd": 4, "family": 2, "port": 0, "interface": "127.0.0.1"}],
            )
            self.assertEqual(spawned["args"][-3:], ["netlab-echo", "--workers", "2"])

    def test_back_off(self) -> None:
        """
        A worker that keeps dying is started again later and later, up to
        the most; one that ran a while, soon.
        """
        supervisor, fake = self.supervise()
        delays = []
        with capturedLogs() as events:
            for _ in range(9):
                supervisor.ended(
                    supervisor.workers[1], Failure(ProcessTerminated(exitCode=3))
                )
                self.assertNotIn(1, supervisor.workers)
                [call] = fake.getDelayedCalls()
                delays.append(call.getTime() - fake.seconds())
                fake.advance(delays[-1])
                self.assertIn(1, supervisor.workers)
        self.assertEqual(delays, [0.5, 1, 2, 4, 8, 16, 30, 30, 30])
        self.assertEqual(len(fake.spawned), 2 + 9)
        [death, *_] = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(
            (death["worker"], death["worker_pid"], death["exit_status"]), (1, 1000, 3)
        )
        self.assertEqual(death["delay"], 0.5)
        self.assertEqual(
            formatEvent(death),
            "worker 1 (pid 1000) exited with status 3 after 0.0s; "
            "starting it again in 0.5s",
        )
        fake.advance(workers.STABLE_SECONDS)
        supervisor.ended(
            supervisor.workers[1],
            Failure(ProcessTerminated(exitCode=None, signal=signal.SIGKILL)),
        )
        [call] = fake.getDelayedCalls()
        self.assertEqual(call.getTime() - fake.seconds(), 0.5)
        self.assertEqual(supervisor.workers.keys(), {2})

    def test_spawn_failure(self) -> None:
        """
        A worker that cannot be started is tried again, with the same
        back-off as one that died.
        """
        fake = _ProcessReactor()
        fake.failing = 2
        supervisor = workers.Supervisor(1, [], "netlab-echo", [], 10.0, fake)
        supervisor.startService()
        fake.run()
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(supervisor.workers, {})
        fake.advance(0.5)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        fake.advance(1.0)
        self.assertEqual(list(supervisor.workers), [1])
        self.assertEqual(len(fake.spawned), 1)

    def test_stop(self) -> None:
        """
        Stopping: SIGTERM to each worker, no restart, SIGKILL to a worker
        still there after its drain time and the grace, and done once every
        worker has ended.
        """
        supervisor, fake = self.supervise()
        first, second = (spawned["process"] for spawned in fake.spawned)
        supervisor.ended(supervisor.workers[2], Failure(ProcessTerminated(exitCode=1)))
        stopped = supervisor.stopService()
        self.assertEqual(fake.getDelayedCalls()[0].getTime(), 10.0 + 5.0)
        self.assertEqual((first.signals, second.signals), (["TERM"], []))
        self.assertNoResult(stopped)
        fake.advance(10.0 + 5.0)
        self.assertEqual(first.signals, ["TERM", "KILL"])
        self.assertNoResult(stopped)
        supervisor.ended(
            supervisor.workers[1],
            Failure(ProcessTerminated(exitCode=None, signal=signal.SIGKILL)),
        )
        self.successResultOf(stopped)
        self.assertEqual(fake.getDelayedCalls(), [])
        self.assertEqual(len(fake.spawned), 2)


# -- Relayed log events -----------------------------------------------------


class _Worker:
    pid = 4242


class RelayTests(SynchronousTestCase):
    """
    A worker's events, written as JSON lines and read back by the
    supervisor's side of the pipe.
    """

    def relayed(self, emit: Any) -> list[dict[str, Any]]:
        written = io.StringIO()
        relay = workers._Relay(written)
        log = Logger(observer=relay, namespace="netlab.test")
        emit(log)
        received: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(received.append)
        self.addCleanup(globalLogPublisher.removeObserver, received.append)
        side = workers._WorkerProtocol(None, 7)  # type: ignore[arg-type]
        side.worker = _Worker()  # type: ignore[assignment]
        data = written.getvalue().encode()
        # In two pieces, split inside a line.
        side.childDataReceived(3, data[:10])
        side.childDataReceived(3, data[10:])
        return received

    def test_text_and_fields(self) -> None:
        [event] = self.relayed(
            lambda log: log.info(
                "{method} took {duration:.4f}s ({size!r})",
                method="GET",
                duration=0.123456789,
                size=13,
            )
        )
        self.assertEqual(formatEvent(event), "GET took 0.1235s (13)")
        self.assertEqual((event["worker"], event["worker_pid"]), (7, 4242))
        self.assertEqual(event["method"], "GET")
        self.assertIn(
            "[worker 7, pid 4242: netlab.test#info] GET took 0.1235s",
            formatEventAsClassicLogText(event),
        )

    def test_failure_keeps_its_traceback(self) -> None:
        def fail(log: Logger) -> None:
            try:
                raise ZeroDivisionError("division by zero")
            except ZeroDivisionError:
                log.failure("it broke")

        [event] = self.relayed(fail)
        traceback = event["log_failure"].getTraceback()
        self.assertIn("ZeroDivisionError: division by zero", traceback)
        self.assertIn("in fail", traceback)
        self.assertEqual(len(self.flushLoggedErrors(workers.WorkerError)), 1)

    def test_stderr_lines(self) -> None:
        received: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(received.append)
        self.addCleanup(globalLogPublisher.removeObserver, received.append)
        side = workers._WorkerProtocol(None, 2)  # type: ignore[arg-type]
        side.worker = _Worker()  # type: ignore[assignment]
        side.childDataReceived(2, b"oops\npartial")
        self.assertEqual([e["line"] for e in received], ["oops"])
        side.supervisor = _Ended()  # type: ignore[assignment]
        side.processEnded(Failure(ConnectionDone()))
        self.assertEqual([e["line"] for e in received], ["oops", "partial"])
        self.assertEqual(received[0]["log_system"], "worker 2, pid 4242: stderr")


class _Ended:
    def ended(self, worker: Any, reason: Any) -> None:
        pass


# -- Shared and adopted sockets, in process ----------------------------------


class AdoptionTests(TestCase):
    """
    What the supervisor opens, a worker adopts: in this process, with this
    reactor, through the same endpoint strings.
    """

    timeout = 60

    async def test_tls_endpoint_is_wrapped_in_the_worker(self) -> None:
        paths = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        description = (
            f"ssl:0:interface=127.0.0.1:privateKey={paths.server_key}"
            f":certKey={paths.server}:clientCA={paths.ca}"
        )
        sharing = workers._SharingReactor(reactor, 1)
        supervisor = listening_service([description], echo.EchoFactory(), None, sharing)
        supervisor.privilegedStartService()
        self.addCleanup(supervisor.stopService)
        [shared] = sharing.sockets
        port = shared.socket.getsockname()[1]

        spec = shared.spec(os.dup(shared.socket.fileno()))
        adopting = workers._AdoptingReactor(reactor, [spec])
        factory = echo.EchoFactory()
        worker = listening_service([description], factory, None, adopting)
        worker.privilegedStartService()
        worker.startService()
        self.addCleanup(worker.stopService)

        client = ClientTLS(
            cacert=str(paths.ca), cert=str(paths.client), key=str(paths.client_key)
        )
        reply = await echo.echo(
            f"tls:localhost:{port}", b"x" * 50_000, tls=client, timeout=WAIT
        )
        self.assertEqual(reply, b"x" * 50_000)
        # The adopted port flushes replies and broadcasts (netlab.transport).
        [listening] = [s for s in _walk(worker) if hasattr(s, "endpoint")]
        adopted = await listening._waitingForPort
        self.assertIsInstance(adopted, FlushingPort)
        self.assertIs(adopted.transport, FlushingServer)
        with self.assertRaises(Exception) as caught:
            await echo.echo(
                f"tls:localhost:{port}",
                b"no certificate",
                tls=ClientTLS(cacert=str(paths.ca)),
                timeout=WAIT,
            )
        self.assertNotIsInstance(caught.exception, defer.TimeoutError)
        await bounded(factory.drained())

    def test_mismatch_is_refused(self) -> None:
        adopting = workers._AdoptingReactor(
            reactor,
            [
                {
                    "fd": os.open(os.devnull, os.O_RDONLY),
                    "family": 2,
                    "port": 0,
                    "interface": "127.0.0.2",
                }
            ],
        )
        self.assertRaises(
            RuntimeError, adopting.listenTCP, 0, echo.EchoFactory(), 50, "127.0.0.1"
        )
        self.assertRaises(
            RuntimeError, adopting.listenTCP, 0, echo.EchoFactory(), 50, "127.0.0.1"
        )


# -- Real processes ---------------------------------------------------------


class Server(ProcessProtocol):
    """
    A ``twistd`` the test started: its output, and Deferreds for what it
    will print and for its end.
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.err = bytearray()
        self._waiting: list[tuple[re.Pattern[bytes], int, defer.Deferred[Any]]] = []
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data
        self._look()

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self.output += data
        self._look()

    def _look(self) -> None:
        for entry in list(self._waiting):
            pattern, start, waiter = entry
            match = pattern.search(bytes(self.output), start)
            if match:
                self._waiting.remove(entry)
                waiter.callback(match)

    def wait_for(self, pattern: bytes, start: int = 0) -> defer.Deferred[Any]:
        """
        :return: a Deferred of the first match of ``pattern`` in the output
            from offset ``start`` on, now or once printed.
        """
        compiled = re.compile(pattern)
        match = compiled.search(bytes(self.output), start)
        if match:
            return defer.succeed(match)
        waiter: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append((compiled, start, waiter))
        return bounded(waiter)

    def processEnded(self, reason: Failure) -> None:
        for _, _, waiter in self._waiting:
            waiter.errback(AssertionError(f"twistd ended: {bytes(self.output)!r}"))
        self._waiting = []
        self.ended.callback(reason.value)


@implementer(IReadDescriptor)
class _Readable:
    def __init__(self, fd: int, done: defer.Deferred[None]) -> None:
        self.fd = fd
        self.done = done

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "pidfd"

    def doRead(self) -> None:
        reactor.removeReader(self)
        self.done.callback(None)

    def connectionLost(self, reason: Any) -> None:
        pass


class Tracked:
    """
    A process that is not the test's child (a worker): a way to wait for its
    end, to check it, and to kill it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        if hasattr(os, "pidfd_open"):
            self.fd = os.pidfd_open(pid)

    def is_gone(self) -> bool:
        if self.fd is not None:
            return bool(select.select([self.fd], [], [], 0)[0])
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        return False

    def gone(self) -> defer.Deferred[None]:
        """
        :return: a Deferred that fires once the process has ended.
        """
        done: defer.Deferred[None] = defer.Deferred()
        if self.is_gone():
            done.callback(None)
        elif self.fd is not None:
            reader = _Readable(self.fd, done)
            reactor.addReader(reader)
            done.addBoth(lambda result: (reactor.removeReader(reader), result)[1])
        else:
            poll = task.LoopingCall(lambda: self.is_gone() and poll.stop())
            poll.start(0.05).addCallback(lambda _: done.callback(None))
        return bounded(done)

    def signal(self, number: int) -> None:
        if not self.is_gone():
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, number)
            else:
                os.kill(self.pid, number)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _same_reactor() -> list[str]:
    """
    :return: the twistd option that runs the reactor these tests run on
        (``trial --reactor=asyncio``: twistd and its workers on asyncio too).
    """
    name = workers._reactor_name(reactor)
    return [f"--reactor={name}"] if name else []


def _worker_line(worker_pid: bytes, rest: bytes) -> bytes:
    return rb"\[worker (\d+), pid %s: [^\]]*\] " % worker_pid + rest


class WorkerProcessTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.outside = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, self.outside)

    async def start(
        self, *args: str, factories: tuple[str, ...], count: int = 2
    ) -> tuple[Any, Server, dict[str, int], dict[int, Tracked]]:
        """
        Start ``twistd -n ARGS --workers COUNT``; return the process, its
        output, the port of each factory and each worker, once every worker
        listens.
        """
        server = Server()
        command = twistd(
            "-n", "--pidfile=", *_same_reactor(), *args, "--workers", str(count)
        )
        process = reactor.spawnProcess(
            server, command[0], command, env=dict(os.environ), path=self.outside
        )
        self.addCleanup(self.stop_all, process, server)
        self.tracked: dict[int, Tracked] = {}
        ports = {}
        for name in factories:
            match = await server.wait_for(
                rb"\] (%s) starting on (\d+), shared by %d workers"
                % (re.escape(name.encode()), count)
            )
            ports[name] = int(match.group(2))
        for index in range(1, count + 1):
            match = await server.wait_for(rb"worker %d started \(pid (\d+)\)" % index)
            self.track(index, int(match.group(1)))
        await self.ready(server, factories, ports)
        return process, server, ports, dict(self.tracked)

    def track(self, index: int, pid: int) -> Tracked:
        tracked = self.tracked[pid] = Tracked(pid)
        return tracked

    async def ready(
        self, server: Server, factories: tuple[str, ...], ports: dict[str, int]
    ) -> None:
        """
        Wait until every tracked worker listens on every port.
        """
        for pid in self.tracked:
            for name in factories:
                await server.wait_for(
                    _worker_line(
                        str(pid).encode(),
                        rb"%s starting on %d" % (re.escape(name.encode()), ports[name]),
                    )
                )

    async def stop_all(self, process: Any, server: Server) -> None:
        if not server.ended.called:
            process.signalProcess("KILL")
            await bounded(server.ended)
        for tracked in self.tracked.values():
            tracked.kill()
            await tracked.gone()
            tracked.close()

    async def served_by(self, server: Server, port: int, request: bytes) -> int:
        """
        Send ``request`` on a new connection, read the answer until the
        server closes; :return: the pid of the worker that logged it.
        """
        peer = await connect("127.0.0.1", port)
        local = peer.transport.getHost().port
        answer = await peer.reply_to(request)
        self.assertTrue(answer, "no answer")
        match = await server.wait_for(
            _worker_line(rb"(\d+)", rb"[^\n]*127\.0\.0\.1:%d\b" % local)
        )
        return int(match.group(2))

    async def answered_by_each(
        self, server: Server, port: int, request: bytes
    ) -> set[int]:
        """
        Connect to ``port`` until each worker has answered at least once.
        The kernel decides which worker accepts; if, after 20 tries, some
        worker has not (a single CPU, a busy machine), the others are paused
        (SIGSTOP) for one more connection, which only it can then accept.

        :return: the pids that answered.
        """
        answered: set[int] = set()
        for _ in range(20):
            answered.add(await self.served_by(server, port, request))
            if answered >= set(self.tracked):
                return answered
        for missing in set(self.tracked) - answered:
            others = [t for pid, t in self.tracked.items() if pid != missing]
            for other in others:
                other.signal(signal.SIGSTOP)
            try:
                answered.add(await self.served_by(server, port, request))
            finally:
                for other in others:
                    other.signal(signal.SIGCONT)
        return answered

    async def assert_stops(
        self, process: Any, server: Server, port: int, http: bool = False
    ) -> None:
        """
        SIGTERM: each worker drains (an open echo connection, or an idle
        kept-alive HTTP one, is closed cleanly rather than aborted), the
        supervisor exits after them the way twistd does on a signal, with
        every worker gone, and the port closed.
        """
        held = await connect("127.0.0.1", port)
        if http:
            held.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            await bounded(held.received_at_least(len(b"\r\n\r\nHello, world!")))
        else:
            held.transport.write(b"x" * 200_000)
            await bounded(held.received_at_least(200_000))
        process.signalProcess("TERM")
        await bounded(held.closed)
        self.assertTrue(held.reason.check(ConnectionDone), held.reason)
        ended = await bounded(server.ended)
        self.assertEqual(ended.signal, signal.SIGTERM, bytes(server.output))
        output = bytes(server.output)
        self.assertNotIn(b"Traceback", output)
        self.assertNotIn(b"Unhandled", output)
        self.assertTrue(output.rstrip().endswith(b"Server Shut Down."), output[-500:])
        for pid, tracked in self.tracked.items():
            self.assertTrue(tracked.is_gone(), f"worker {pid} outlived twistd")
            line = _worker_line(str(pid).encode(), rb"Server Shut Down\.")
            self.assertRegex(output, line)
            self.assertRegex(
                output, rb"worker \d \(pid %d\) exited with status 0" % pid
            )
        with socket.socket() as probe:
            self.assertNotEqual(probe.connect_ex(("127.0.0.1", port)), 0)

    async def test_lab_shares_its_ports(self) -> None:
        """
        ``twistd netlab --workers 2``: echo and HTTP each answered by both
        workers, on one port each.
        """
        process, server, ports, tracked = await self.start(
            "netlab",
            *("--echo", LOOPBACK_ANY_PORT, "--http", LOOPBACK_ANY_PORT),
            *("--greeting", "off", "--ws", "off"),
            factories=("EchoFactory", "HTTPSite"),
        )
        echoed = await self.answered_by_each(server, ports["EchoFactory"], b"ping")
        request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        fetched = await self.answered_by_each(server, ports["HTTPSite"], request)
        self.assertEqual(echoed, set(tracked))
        self.assertEqual(fetched, set(tracked))
        # The workers run the supervisor's reactor (and this test's).
        classes = re.findall(rb"reactor class: ([\w.]+?)\.\s", bytes(server.output))
        self.assertEqual(len(classes), 3)
        self.assertEqual(
            set(classes),
            {
                type(reactor).__module__.encode()
                + b"."
                + type(reactor).__name__.encode()
            },
        )
        response = await http.fetch(
            f"http://127.0.0.1:{ports['HTTPSite']}/", timeout=WAIT
        )
        self.assertEqual((response.code, response.body), (200, hello.HELLO))
        await self.assert_stops(process, server, ports["EchoFactory"])

    async def test_dead_worker_is_started_again(self) -> None:
        """
        A worker killed with SIGKILL is logged, started again, and answers on
        the same port; the other one served meanwhile.
        """
        process, server, ports, tracked = await self.start(
            "netlab-http", "--listen", LOOPBACK_ANY_PORT, factories=("HTTPSite",)
        )
        port = ports["HTTPSite"]
        victim, survivor = sorted(tracked)
        mark = len(server.output)
        tracked[victim].kill()
        await tracked[victim].gone()
        died = await server.wait_for(
            rb"worker (\d) \(pid %d\) was killed by signal 9 \(SIGKILL\) after "
            rb"[\d.]+s; starting it again in 0\.5s" % victim,
            mark,
        )
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        self.assertEqual(await self.served_by(server, port, request), survivor)
        match = await server.wait_for(
            rb"worker %s started \(pid (\d+)\)" % died.group(1), died.end()
        )
        replacement = int(match.group(1))
        self.assertNotIn(replacement, tracked)
        self.track(int(died.group(1)), replacement)
        del self.tracked[victim]
        await self.ready(server, ("HTTPSite",), ports)
        answered = await self.answered_by_each(server, port, request)
        self.assertEqual(answered, {survivor, replacement})
        await self.assert_stops(process, server, port, http=True)

    async def test_workers_end_with_a_killed_supervisor(self) -> None:
        """
        SIGKILL to the supervisor: its workers see their pipe close, stop,
        and the port closes with them.
        """
        process, server, ports, tracked = await self.start(
            "netlab-echo", "--listen", LOOPBACK_ANY_PORT, factories=("EchoFactory",)
        )
        process.signalProcess("KILL")
        await bounded(server.ended)
        for worker in tracked.values():
            await worker.gone()
        with self.assertRaises(ConnectionRefusedError):
            await connect("127.0.0.1", ports["EchoFactory"])

    async def test_tls(self) -> None:
        """
        An ``ssl:`` endpoint shared by workers: each serves netlab's TLS,
        client certificates and handshake deadline included.
        """
        paths = certs.make_certificates(pathlib.Path(self.mktemp()).resolve())
        process, server, ports, tracked = await self.start(
            "netlab-echo",
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={paths.server_key}"
            # Each real client's handshake, in a loaded worker, must finish
            # within it too: 3 s is many times what one needs.
            f":certKey={paths.server}:clientCA={paths.ca}:handshakeTimeout=3",
            factories=("EchoFactory (TLS)",),
        )
        port = ports["EchoFactory (TLS)"]
        client = ClientTLS(
            cacert=str(paths.ca), cert=str(paths.client), key=str(paths.client_key)
        )
        for _ in range(4):
            reply = await echo.echo(
                f"tls:localhost:{port}", b"x" * 100_000, tls=client, timeout=WAIT
            )
            self.assertEqual(reply, b"x" * 100_000)
        await server.wait_for(
            _worker_line(rb"\d+", rb"echo connection from [^\n]*: TLS, client CN=")
        )
        with self.assertRaises(Exception) as caught:
            await echo.echo(
                f"tls:localhost:{port}",
                b"no certificate",
                tls=ClientTLS(cacert=str(paths.ca)),
                timeout=WAIT,
            )
        self.assertNotIsInstance(caught.exception, defer.TimeoutError)
        silent = await connect("127.0.0.1", port)
        await bounded(silent.closed, 30)
        await server.wait_for(
            _worker_line(rb"\d+", rb"TLS handshake from [^\n]* not done in 3\.0s")
        )
        await abort(silent)
        process.signalProcess("TERM")
        ended = await bounded(server.ended)
        self.assertEqual(ended.signal, signal.SIGTERM)
        self.assertNotIn(b"Traceback", bytes(server.output))
        for worker in tracked.values():
            self.assertTrue(worker.is_gone())

    async def test_bad_value_is_one_line(self) -> None:
        for plugin in ("netlab-echo", "netlab"):
            server = Server()
            reactor.spawnProcess(
                server,
                twistd()[0],
                twistd("-n", "--pidfile=", plugin, "--workers", "0"),
                env=dict(os.environ),
                path=self.outside,
            )
            ended = await bounded(server.ended)
            self.assertEqual(ended.exitCode, 1, bytes(server.output))
            output = bytes(server.output)
            self.assertNotIn(b"Traceback", output)
            self.assertEqual(
                output.strip().splitlines()[-1].split(b": ", 1)[1],
                b"--workers must be a whole number from 1 to 64, not '0'",
            )
