"""
twistd with no ``--logger``: netlab's plugins log through
:class:`netlab.logs.TextLines`, where twistd's own observer would have
written, with twistd's ``--logfile``, rotation and ``--syslog`` kept
(:func:`netlab.logs.use_under_twistd`).

The process tests run real ``twistd`` processes through a small wrapper that
reports, on standard error, the observers twistd hands to
``globalLogBeginner.beginLoggingTo``: which observer writes the log is then
seen, not guessed from timings.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
from typing import Any

from twisted.internet import reactor, task
from twisted.logger import FileLogObserver, LogLevel, textFileLogObserver
from twisted.python.logfile import LogFile
from twisted.scripts._twistd_unix import UnixAppLogger
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab import http, logs
from netlab.tap import echo
from tests.support import WAIT, bounded, connect, python, run, spawn
from tests.test_workers import _same_reactor

LOOPBACK_ANY_PORT = "tcp:0:interface=127.0.0.1"

# twistd, reporting each observer it begins logging to (and, for a legacy
# one, what it wraps) on standard error before it starts.
_SPY = """
import sys
from twisted.logger import globalLogBeginner
begin = globalLogBeginner.beginLoggingTo
def name(thing):
    return type(thing).__module__ + "." + type(thing).__qualname__
def spy(observers, *args, **kwargs):
    for observer in observers:
        inner = getattr(observer, "legacyObserver", None)
        inner = getattr(inner, "__self__", inner)
        wrapped = "" if inner is None else " " + name(inner)
        sys.stderr.write("observer: " + name(observer) + wrapped + "\\n")
    sys.stderr.flush()
    return begin(observers, *args, **kwargs)
globalLogBeginner.beginLoggingTo = spy
from twisted.scripts.twistd import run
run()
"""

TEXT_LINES = b"observer: netlab.logs.TextLines\n"
TWISTDS_OWN = b"observer: twisted.logger._file.FileLogObserver\n"
# A line of twistd's text log.
LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[[^\]\n]+\] .*")


def spied_twistd(*args: str) -> list[str]:
    """
    :return: the command line of ``twistd ARGS`` that reports its observers.
    """
    return python("-c", _SPY, *args)


def shape(text: str) -> list[str]:
    """
    :return: the lines of a log with what changes from run to run (times,
        ports, addresses, process ids) masked.
    """
    text = re.sub(r"0x[0-9a-f]+", "0x?", text)
    return re.sub(r"\d+", "?", text).splitlines()


async def until(check: Any, what: str) -> Any:
    """
    :return: ``check()``'s first true value, polled for ``WAIT`` seconds.
    """
    for _ in range(int(WAIT / 0.05)):
        found = check()
        if found:
            return found
        await task.deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"never happened: {what}")


def read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        return ""


class OptionsTests(SynchronousTestCase):
    """
    What twistd's own options end up holding once a netlab plugin's
    options have been parsed as its sub-command.
    """

    def setUp(self) -> None:
        self.patch(logs, "_twistd_options", None)

    def parse(self, *args: str) -> ServerOptions:
        options = ServerOptions()
        options.parseOptions(list(args))
        return options

    def test_no_logger_is_netlabs(self) -> None:
        for plugin in ("netlab", "netlab-echo", "netlab-greeting"):
            self.assertIs(self.parse("-n", plugin)["logger"], logs.default, plugin)
        for plugin in ("netlab-http", "netlab-ws"):
            self.assertIs(self.parse(plugin)["logger"], logs.default, plugin)
        self.assertIs(
            self.parse("-n", "--logfile", "-", "netlab-echo")["logger"],
            logs.default,
        )

    def test_a_logger_given_wins(self) -> None:
        for name in ("netlab.logs.json", "netlab.logs.twistd", "netlab.logs.text"):
            options = self.parse("--logger", name, "-n", "netlab-echo")
            self.assertEqual(options["logger"].__name__, name.rpartition(".")[2])

    def test_syslog_is_twistds(self) -> None:
        self.assertIsNone(self.parse("--syslog", "netlab-echo")["logger"])
        self.assertIsNone(self.parse("-n", "--syslog", "netlab-http")["logger"])

    def test_daemon_to_stdout_is_twistds_refusal(self) -> None:
        """
        ``--logfile -`` without ``-n``: twistd's own observer is left to
        refuse it, as it does ("Daemons cannot log to stdout").
        """
        self.assertIsNone(self.parse("--logfile", "-", "netlab-echo")["logger"])

    def test_recorded(self) -> None:
        self.parse("-n", "--logfile", "some.log", "netlab-echo")
        self.assertEqual(
            logs._twistd_options,
            {"logfile": "some.log", "nodaemon": True, "syslog": 0, "prefix": "twisted"},
        )

    def test_without_twistd(self) -> None:
        """
        A plugin's options parsed on their own (not as twistd's
        sub-command) change nothing.
        """
        echo.Options().parseOptions([])
        self.assertIsNone(logs._twistd_options)


class FactoryTests(TestCase):
    """
    :func:`netlab.logs.default` writes where twistd's own observer would,
    and a rotating file rotates where twistd's would.
    """

    def setUp(self) -> None:
        self.patch(logs, "_twistd_options", None)
        handler = signal.getsignal(signal.SIGUSR1)
        self.addCleanup(signal.signal, signal.SIGUSR1, handler)
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        self.folder = os.path.abspath(self.mktemp())
        os.makedirs(self.folder)

    def twistds_file(self, **options: Any) -> Any:
        """
        :return: the file twistd's own observer writes to, given ``options``.
        """
        observer = UnixAppLogger(options)._getLogObserver()
        self.assertIsInstance(observer, FileLogObserver)
        return observer._outFile

    def netlabs_file(self, **options: Any) -> Any:
        logs._twistd_options = options
        observer = logs.default()
        self.assertIsInstance(observer, logs.TextLines)
        return observer._out

    def test_standard_output(self) -> None:
        for options in (
            {"nodaemon": True, "logfile": None},
            {"nodaemon": True, "logfile": "-"},
        ):
            self.assertIs(self.netlabs_file(**options), sys.stdout)
            self.assertIs(self.twistds_file(**options), sys.stdout)
        logs._twistd_options = None
        self.assertIs(logs.default()._out, sys.stdout)  # type: ignore[attr-defined]

    def test_log_file(self) -> None:
        """
        ``--logfile PATH``, or ``twistd.log`` for a daemon: the same
        rotating file as twistd's, and SIGUSR1 rotates it.
        """
        path = os.path.join(self.folder, "some.log")
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.folder)
        for options in (
            {"nodaemon": True, "logfile": path},
            {"nodaemon": False, "logfile": path},
            {"nodaemon": False, "logfile": None},
        ):
            theirs = self.twistds_file(**options)
            self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            theirs.close()
            os.remove(theirs.path)
            ours = self.netlabs_file(**options)
            self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)
            signal.signal(signal.SIGUSR1, signal.SIG_DFL)
            self.assertIsInstance(ours, LogFile)
            for name in ("path", "rotateLength", "maxRotatedFiles", "defaultMode"):
                self.assertEqual(getattr(ours, name), getattr(theirs, name), name)
            self.assertEqual(ours.rotateLength, 1_000_000)
            ours.close()
            os.remove(ours.path)
        self.assertEqual(ours.path, os.path.join(self.folder, "twistd.log"))

    def test_daemon_cannot_log_to_stdout(self) -> None:
        logs._twistd_options = {"nodaemon": False, "logfile": "-"}
        for factory in (logs.default, logs.twistd):
            with self.assertRaises(SystemExit) as caught:
                factory()
            self.assertEqual(
                str(caught.exception), "Daemons cannot log to stdout, exiting!"
            )

    def test_twistds_own_observer(self) -> None:
        self.assertIsInstance(logs.twistd(), FileLogObserver)
        logs._twistd_options = {"syslog": True, "prefix": "netlab-test"}
        for factory in (logs.twistd, logs.default):
            observer = factory()
            self.assertEqual(
                type(observer.legacyObserver.__self__).__module__,  # type: ignore[attr-defined]
                "twisted.python.syslog",
            )

    async def test_sigusr1_rotates(self) -> None:
        """
        SIGUSR1 rotates the file once the reactor gets to it, after writing
        the lines held until then.
        """
        path = os.path.join(self.folder, "signalled.log")
        logs._twistd_options = {"nodaemon": True, "logfile": path}
        observer = logs.default()
        event = {"log_format": "{what}", "log_level": LogLevel.info}
        observer({**event, "what": "before"})
        await task.deferLater(reactor, 0, lambda: None)
        observer({**event, "what": "held"})
        # (Without a handler, the signal would end this process.)
        self.assertNotEqual(signal.getsignal(signal.SIGUSR1), signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGUSR1)
        await until(lambda: os.path.exists(path + ".1"), "rotation")
        observer({**event, "what": "after"})
        observer.flush()  # type: ignore[attr-defined]
        self.assertEqual(read(path + ".1"), "- [-#info] before\n- [-#info] held\n")
        self.assertEqual(read(path), "- [-#info] after\n")

    async def test_rotates_where_twistds_would(self) -> None:
        """
        A turn's lines go out in one write, yet a file that rotates by size
        is cut where twistd's observer, writing line by line, cuts it.
        """
        paths = [os.path.join(self.folder, name) for name in ("ours", "theirs")]
        ours, theirs = (LogFile.fromFullPath(p, rotateLength=1000) for p in paths)
        netlabs = logs.TextLines(ours)
        twistds = textFileLogObserver(theirs)
        events = [
            {
                "log_format": "{what}",
                "what": "é" * (i % 7) + f"line {i} " + "x" * (i % 50),
                "log_level": LogLevel.info,
                "log_time": 1_700_000_000.0 + i / 10,
            }
            for i in range(400)
        ]
        for start in range(0, len(events), 150):
            await task.deferLater(reactor, 0, lambda: None)
            written = (read(paths[0]), ours.listLogs())
            for event in events[start : start + 150]:
                netlabs(event)
                twistds(event)
            # Within the turn, nothing written yet: the lines are held.
            self.assertEqual((read(paths[0]), ours.listLogs()), written)
        netlabs.flush()
        self.assertGreater(len(theirs.listLogs()), 10)
        self.assertEqual(ours.listLogs(), theirs.listLogs())
        for suffix in ["", *(f".{n}" for n in theirs.listLogs())]:
            self.assertEqual(read(paths[0] + suffix), read(paths[1] + suffix), suffix)


class ProcessTests(TestCase):
    """
    Real twistd processes, started outside the checkout.
    """

    timeout = 120

    def setUp(self) -> None:
        # Outside the checkout, as in tests.test_twistd.
        self.outside = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.outside, ignore_errors=True)

    def stop(self, child: Any) -> Any:
        if child.protocol.ended.called:
            return None
        try:
            child.signal("KILL")
        except Exception:
            pass
        return child.ended()

    async def serve(
        self, *args: str, log: str | None = None, plugin: tuple[str, ...] = ()
    ) -> tuple[Any, int]:
        """
        Start ``twistd --pidfile= ARGS netlab-http PLUGIN`` on a free port;
        read the port from its output or from ``log``.

        :return: the child process and the port.
        """
        pattern = rb"HTTPSite starting on (\d+)"
        child = spawn(
            spied_twistd(
                "--pidfile=",
                *_same_reactor(),
                *args,
                "netlab-http",
                *("--listen", LOOPBACK_ANY_PORT, *plugin),
            ),
            watch=None if log else pattern,
            cwd=self.outside,
        )
        self.addCleanup(self.stop, child)
        if log is None:
            match = await bounded(child.protocol.seen)
        else:
            match = await until(
                lambda: re.search(pattern, read(log).encode()), "listening"
            )
        return child, int(match.group(1))

    async def get(self, port: int, path: str = "/") -> str:
        """
        GET ``path`` on a new connection; :return: the start of its access
        log line's text.
        """
        response = await http.fetch(f"http://127.0.0.1:{port}{path}", timeout=WAIT)
        self.assertEqual(response.code, 200)
        return f"] GET {path} 200 {len(response.body)} bytes "

    async def session(self, *args: str) -> tuple[bytes, str]:
        """
        Run ``twistd -n ARGS netlab-http``, GET / once, stop it with
        SIGTERM.

        :return: what it wrote to standard error, and its log.
        """
        child, port = await self.serve("-n", *args)
        line = await self.get(port)
        text = line[2:].encode()  # as text lines and JSON show it
        await until(lambda: text in child.protocol.out, "the access log")
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertNotIn(b"Traceback", result.out + result.err)
        return result.err, result.out.decode()

    async def test_netlabs_lines_as_twistd_writes_them(self) -> None:
        """
        With no ``--logger``, the log is written by netlab's TextLines,
        and is line for line what twistd's own observer writes (brought
        back with ``--logger netlab.logs.twistd``), "Server Shut Down." last.
        """
        err, ours = await self.session()
        self.assertEqual(err, TEXT_LINES)
        twistds_err, theirs = await self.session("--logger", "netlab.logs.twistd")
        self.assertEqual(twistds_err, TWISTDS_OWN)
        for log in (ours, theirs):
            for line in log.splitlines():
                self.assertRegex(line, LINE)
            self.assertRegex(
                log, r"\n\S+ \[netlab\.http\.HTTPSite#info\] GET / 200 13 bytes "
            )
            self.assertTrue(log.endswith("] Server Shut Down.\n"), log[-300:])
        self.assertEqual(shape(ours), shape(theirs))

    async def test_a_logger_given_wins(self) -> None:
        err, log = await self.session("--logger", "netlab.logs.json")
        self.assertEqual(err, b"observer: netlab.logs.JSONLines\n")
        self.assertTrue(log.startswith("{"), log[:300])
        self.assertTrue(log.endswith('"text": "Server Shut Down."}\n'), log[-300:])

    async def test_logfile_and_sigusr1(self) -> None:
        """
        ``--logfile PATH``: the lines go there, not to standard output, and
        SIGUSR1 rotates the file to PATH.1, as twistd's own observer does.
        """
        path = os.path.join(self.outside, "served.log")
        child, port = await self.serve("-n", "--logfile", path, log=path)
        first = await self.get(port)
        await until(lambda: first in read(path), "the first access line")
        os.kill(child.process.pid, signal.SIGUSR1)
        await until(lambda: os.path.exists(path + ".1"), "rotation")
        second = await self.get(port, "/healthz")
        await until(lambda: second in read(path), "the second access line")
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertEqual(result.out, b"")
        self.assertEqual(result.err, TEXT_LINES)
        before, after = read(path + ".1"), read(path)
        self.assertIn("] HTTPSite starting on", before)
        self.assertEqual(before.count(first), 1, before)
        self.assertEqual(after.count(second), 1, after)
        self.assertNotIn(first, after)
        self.assertNotIn(second, before)
        self.assertNotIn("starting on", after)
        self.assertTrue(after.endswith("] Server Shut Down.\n"), after[-300:])
        for line in (before + after).splitlines():
            self.assertRegex(line, LINE)

    async def test_daemon_logs_to_twistd_log(self) -> None:
        """
        Daemonized with no ``--logfile``: netlab's lines in ``twistd.log``.
        """
        path = os.path.join(self.outside, "twistd.log")
        pidfile = os.path.join(self.outside, "twistd.pid")
        result = await run(
            spied_twistd(
                f"--pidfile={pidfile}",
                "netlab-http",
                "--listen",
                LOOPBACK_ANY_PORT,
            ),
            cwd=self.outside,
        )
        self.assertEqual((result.status, result.err), (0, TEXT_LINES), result)
        pid = int(await until(lambda: read(pidfile).strip(), "the pid file"))
        self.addCleanup(self.kill, pid)
        match = await until(
            lambda: re.search(r"HTTPSite starting on (\d+)", read(path)), "listening"
        )
        line = await self.get(int(match.group(1)))
        await until(lambda: line in read(path), "the access line")
        os.kill(pid, signal.SIGTERM)
        await until(lambda: read(path).endswith("] Server Shut Down.\n"), "the end")
        for text in read(path).splitlines():
            self.assertRegex(text, LINE)

    def kill(self, pid: int) -> None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def test_daemon_cannot_log_to_stdout(self) -> None:
        result = await run(
            spied_twistd("--logfile", "-", "--pidfile=", "netlab-http"),
            cwd=self.outside,
        )
        self.assertEqual(result.status, 1, result)
        self.assertIn(b"Daemons cannot log to stdout, exiting!", result.err)
        self.assertNotIn(b"observer: netlab", result.err)

    async def test_syslog_is_twistds(self) -> None:
        """
        ``--syslog``: twistd's own syslog observer, nothing on standard
        output.
        """
        child = spawn(
            spied_twistd(
                "-n",
                "--pidfile=",
                *_same_reactor(),
                "--syslog",
                "--prefix",
                "netlab-test",
                "netlab-http",
                "--listen",
                LOOPBACK_ANY_PORT,
            ),
            watch=rb"observer: .*\n",
            cwd=self.outside,
        )
        self.addCleanup(self.stop, child)
        match = await bounded(child.protocol.seen)
        self.assertEqual(
            match.group(0),
            b"observer: twisted.logger._legacy.LegacyLogObserverWrapper "
            b"twisted.python.syslog.SyslogObserver\n",
        )
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertEqual(result.out, b"")

    async def test_workers(self) -> None:
        """
        ``--workers 2``: the supervisor logs with netlab's observer, each
        worker relays to it, and each line is written once.
        """
        child, port = await self.serve("-n", plugin=("--workers", "2"))
        worker = rb"\[worker (\d), pid (\d+): [^\]]+\] "
        for index in (1, 2):
            listening = re.compile(
                rb"\[worker %d, pid \d+: [^\]]+\] HTTPSite starting on %d"
                % (index, port)
            )
            await until(
                lambda listening=listening: listening.search(child.protocol.out),
                f"worker {index} listening",
            )
        line = await self.get(port)
        await until(lambda: line.encode() in child.protocol.out, "the access line")
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertEqual(result.err, TEXT_LINES)
        out = result.out.decode()
        self.assertEqual(out.count(line), 1, out)
        self.assertRegex(out, worker.decode() + re.escape(line[2:]))
        self.assertTrue(out.endswith("] Server Shut Down.\n"), out[-300:])
        self.assertEqual(
            len(re.findall(worker + rb"Server Shut Down\.", result.out)), 2
        )
        lines = out.splitlines()
        for text in lines:
            self.assertRegex(text, LINE)
        starts = [text for text in lines if "starting up" in text]
        self.assertEqual(len(starts), 3, starts)

    async def test_users_app(self) -> None:
        """
        A user's own protocol served by ``twistd -n netlab-tcp --factory``
        gets the same log as netlab's own services.
        """
        with open(os.path.join(self.outside, "shouting.py"), "w") as module:
            module.write(
                "from twisted.internet.protocol import Protocol\n"
                "class Shout(Protocol):\n"
                "    def dataReceived(self, data):\n"
                "        self.transport.write(data.upper())\n"
            )
        child = spawn(
            spied_twistd(
                *("-n", "--pidfile=", *_same_reactor(), "netlab-tcp"),
                *("--factory", "shouting:Shout", "--listen", LOOPBACK_ANY_PORT),
            ),
            watch=rb"\] (\S+) starting on (\d+)",
            cwd=self.outside,
        )
        self.addCleanup(self.stop, child)
        match = await bounded(child.protocol.seen)
        peer = await connect("127.0.0.1", int(match.group(2)))
        self.assertEqual(await peer.reply_to(b"hey"), b"HEY")
        child.signal("TERM")
        result = await child.ended()
        self.assertEqual(result.signal, signal.SIGTERM, result)
        self.assertEqual(result.err, TEXT_LINES)
        out = result.out.decode()
        for line in out.splitlines():
            self.assertRegex(line, LINE)
        self.assertRegex(out, r"\] \S+ connection from 127\.0\.0\.1:\d+ closed")
        self.assertTrue(out.endswith("] Server Shut Down.\n"), out[-300:])
