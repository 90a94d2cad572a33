"""
A run: start the servers, warm them up, measure them in rounds that
alternate the implementations, and stop everything, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from netlab.tools.bench import build, stats
from netlab.tools.bench.generators import Generators, Sample
from netlab.tools.bench.implementations import (
    ANY,
    BUILTIN,
    ECHO,
    GREETING,
    WS_BROADCAST,
    Context,
    Implementation,
)
from netlab.tools.bench.processes import (
    LOOPBACK,
    Server,
    Servers,
    StartError,
    free_port,
    memory_available,
    raise_nofile,
)
from netlab.tools.bench.workloads import WORKLOADS, Metric, Workload

#: Below this share of the machine's memory available, the idle workload
#: opens no more connections (a forking server may take a process each).
MEMORY_GUARD = 0.25


@dataclass
class Settings:
    """
    What ``netlab bench`` was asked to do (see :mod:`netlab.tools.bench.options`).
    """

    workloads: list[str]
    implementations: list[str] | None = None
    externals: list[Implementation] = field(default_factory=list)
    baseline: str | None = None
    rounds: int = 3
    seconds: float = 3.0
    warmup: float = 1.0
    server_cpu: int = 0
    load_cpu: int = 1
    connections: int = 100
    subscribers: int = 1000
    levels: tuple[int, ...] = (1000, 5000, 10000)
    generator: str = "auto"
    wrk: bool = True
    spin: bool = True
    json: str | None = None
    plot: str | None = None
    quiet: bool = False
    startup_timeout: float = 30.0
    command: list[str] = field(default_factory=list)

    def inner_warmup(self) -> float:
        """
        :return: seconds each measurement runs, once set up, before counting.
        """
        return min(0.25, self.warmup)


@dataclass
class Row:
    """
    One implementation in one workload: its samples, or why it has none.

    :ivar role: ``ceiling``, ``baseline`` or empty.
    :ivar status: ``ok``, ``skipped``, ``unavailable``, ``did not start``,
        ``died``.
    """

    impl: Implementation
    role: str = ""
    status: str = "ok"
    reason: str = ""
    command: list[str] = field(default_factory=list)
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    warmup: dict[str, Sample] = field(default_factory=dict)
    server: Server | None = None
    #: The other instances serving the same room, on ports of their own.
    others: list[Server] = field(default_factory=list)
    #: The redis-server started for the row, if it needs a broker.
    broker: Server | None = None
    #: Every process started for the row, still running or not (the
    #: report names them: their PIDs, ports and commands).
    started: list[Server] = field(default_factory=list)

    @property
    def processes(self) -> list[Server]:
        """
        :return: every process started for the row: its broker first.
        """
        first = [] if self.broker is None else [self.broker]
        return first + ([] if self.server is None else [self.server]) + self.others

    @property
    def name(self) -> str:
        return self.impl.name

    @property
    def measured(self) -> bool:
        return self.status in ("ok", "died")


@dataclass
class Result:
    """
    A workload's rows, and the figures drawn from them.
    """

    workload: Workload
    metrics: list[Metric]
    rows: list[Row]
    baseline: str
    generator: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False

    def summaries(self, metric: Metric) -> dict[str, stats.Summary]:
        """
        :return: each measured row's :class:`~netlab.tools.bench.stats.Summary`.
        """
        made = {}
        for row in self.rows:
            if not row.measured or metric.key not in row.samples:
                continue
            samples = row.samples[metric.key]
            made[row.name] = stats.Summary(
                [s.value for s in samples], any(s.errors for s in samples)
            )
        return made

    def ceiling(self, metric: Metric) -> tuple[float | None, str | None]:
        """
        :return: the generator's ceiling for ``metric`` and whose figure it is.
        """
        if not metric.bounded:
            return None, None
        return stats.ceiling(self.summaries(metric))

    def ratio(self, row: Row, metric: Metric) -> tuple[float | None, str]:
        """
        :return: ``row``'s ratio to the baseline for ``metric``, and a note.
        """
        top, _ = self.ceiling(metric)
        summaries = self.summaries(metric)
        return stats.ratio(row.name, summaries, self.baseline, top, metric.bounded)

    def scaling(self) -> dict[str, tuple[float | None, str]]:
        """
        :return: for a workload with a ``scaling`` row, each measured row of
            several processes' ratio to that row in the first figure (and a
            note), as :meth:`ratio` gives it; else nothing.
        """
        base = self.workload.scaling
        if not base:
            return {}
        metric = self.metrics[0]
        top, _ = self.ceiling(metric)
        summaries = self.summaries(metric)
        return {
            row.name: stats.ratio(row.name, summaries, base, top, metric.bounded)
            for row in self.rows
            if row.impl.processes and row.name in summaries
        }

    @property
    def failed(self) -> bool:
        for row in self.rows:
            if row.status in ("did not start", "died"):
                return True
            for samples in row.samples.values():
                if any(s.errors for s in samples):
                    return True
        return False


class Progress:
    """
    What the run is doing, on standard error.
    """

    def __init__(self, quiet: bool, total: int = 0) -> None:
        self.quiet = quiet
        self.total = total
        self.done = 0

    def say(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"netlab bench: {text}\n")
            sys.stderr.flush()

    def step(self, text: str) -> None:
        self.done += 1
        width = len(str(self.total))
        self.say(f"[{self.done:>{width}}/{self.total}] {text}")


def choose_rows(workload: Workload, settings: Settings) -> tuple[list[Row], str]:
    """
    :return: the rows of ``workload`` (the ceiling server and the baseline
        always among them) and the baseline's name.
    """
    # A greeting server is listed for the echo workloads, to say why it is
    # not measured.
    kinds = {workload.kind, GREETING} if workload.kind == ECHO else {workload.kind}
    candidates = [impl for impl in BUILTIN.values() if kinds & set(impl.kinds)]
    candidates += settings.externals
    named = settings.implementations
    baseline = settings.baseline
    if baseline is None or not any(
        impl.name == baseline and (workload.kind in impl.kinds or impl.kind == ANY)
        for impl in candidates
    ):
        baseline = workload.baseline
    chosen = []
    for impl in candidates:
        wanted = named is None or impl.name in named
        if impl.name in (workload.ceiling, baseline) or wanted:
            chosen.append(impl)
    rows = []
    for impl in chosen:
        role = (
            "ceiling"
            if impl.name == workload.ceiling
            else "baseline"
            if impl.name == baseline
            else ""
        )
        row = Row(impl, role)
        if impl.skip:
            row.status, row.reason = "skipped", impl.skip
        elif why := impl.unavailable():
            row.status, row.reason = "unavailable", why
        rows.append(row)
    order = {"ceiling": 0, "baseline": 1, "": 2}
    rows.sort(key=lambda row: order[row.role])
    return rows, baseline


def rotated(rows: list[Row], turn: int) -> list[Row]:
    """
    :return: ``rows`` started at a different one each round, so no
        implementation is always measured first or right after another.
    """
    if not rows:
        return rows
    turn %= len(rows)
    return rows[turn:] + rows[:turn]


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """
    SIGTERM, like Ctrl-C, raises KeyboardInterrupt while the run lasts, so
    the servers are stopped either way.
    """

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Run:
    """
    One ``netlab bench`` run.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.results: list[Result] = []
        self.progress = Progress(settings.quiet)
        self.generators: Generators | None = None
        self.generator_note: str | None = None
        self.programs: dict[str, str] = {}
        self.build_error = ""
        self.interrupted = False
        self.started = time.time()
        self.load: dict[str, float] = {"before": os.getloadavg()[0]}

    def nofile(self) -> int:
        """
        :return: the descriptors each server and generator may hold.
        """
        idle = any(WORKLOADS[name].idle for name in self.settings.workloads)
        most = max(self.settings.levels) if idle else 0
        return max(most, self.settings.connections) + 1024

    def prepare(self) -> None:
        """
        Build the C programs (or choose the Python generator without gcc).
        """
        s = self.settings
        if build.compiler() is not None:
            self.progress.say("building the C load generator and servers (cached)")
        nofile = self.nofile()
        raise_nofile(nofile)
        self.generators, self.generator_note = Generators.choose(
            s.generator, s.wrk, s.load_cpu, nofile, s.spin
        )
        try:
            self.programs["cserver"] = str(build.program("cserver"))
        except build.BuildError as error:
            self.build_error = str(error)

    def measurements(self) -> int:
        """
        :return: how many measurements the run will make (for the progress).
        """
        s = self.settings
        total = 0
        for name in s.workloads:
            workload = WORKLOADS[name]
            rows, _ = choose_rows(workload, s)
            live = sum(1 for row in rows if row.status == "ok")
            if workload.idle:
                total += live * s.rounds * len(s.levels)
            else:
                metrics = len(workload.metrics(s.connections, s.levels, s.subscribers))
                total += live * metrics * (s.rounds + (1 if s.warmup > 0 else 0))
        return total

    def run(self) -> int:
        """
        Run every workload; print nothing but progress.

        :return: 0, 1 when a server failed or a reply was wrong, 130 when
            interrupted.
        """
        s = self.settings
        log_dir = Path(tempfile.mkdtemp(prefix="netlab-bench-"))
        self.servers = Servers(s.server_cpu, self.nofile(), log_dir)
        try:
            with interruptible():
                self.prepare()
                self.progress.total = self.measurements()
                for name in s.workloads:
                    self.workload(WORKLOADS[name])
        except KeyboardInterrupt:
            self.interrupted = True
            if self.results:
                self.results[-1].interrupted = True
            self.progress.say("interrupted: stopping every server")
        finally:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                self.servers.stop_all()
                if self.generators is not None:
                    self.generators.close()
            finally:
                signal.signal(signal.SIGINT, previous)
            self._clean(log_dir)
        if self.interrupted:
            return 130
        return 1 if any(result.failed for result in self.results) else 0

    def _clean(self, log_dir: Path) -> None:
        for entry in log_dir.iterdir():
            with contextlib.suppress(OSError):
                entry.unlink()
        with contextlib.suppress(OSError):
            log_dir.rmdir()

    def context(self, idle: bool, members: int = 0) -> Context:
        s = self.settings
        connections = max(s.levels) if idle else s.connections
        # Spinning over idle connections would only burn the server's CPU.
        return Context(idle, connections, self.programs, s.spin and not idle, members)

    def cpus(self, impl: Implementation) -> frozenset[int] | None:
        """
        :return: where ``impl``'s processes run: None for the server CPU
            alone; both CPUs for a row of several processes (workers,
            instances, their broker), which one CPU would hold to the figure
            of one process.
        """
        s = self.settings
        return frozenset((s.server_cpu, s.load_cpu)) if impl.processes else None

    def start(self, row: Row, idle: bool) -> Server | None:
        """
        Start ``row``'s server on a free port (not waiting for it): after
        its broker (waited for) and with its other instances, if any.
        """
        s, impl = self.settings, row.impl
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        cpus = self.cpus(impl)
        # A ws-broadcast room holds every subscriber and the publisher.
        members = s.subscribers + 1 if impl.kind == WS_BROADCAST else 0
        context = self.context(idle, members)
        try:
            if impl.broker:
                port = free_port()
                row.broker = self.servers.start(
                    f"{row.name}-redis", redis_argv(port), port, env, cpus
                )
                row.started.append(row.broker)
                row.broker.wait_ready(s.startup_timeout)
                context = replace(context, broker=f"redis://{LOOPBACK}:{port}/0")
            for index in range(impl.instances):
                port = free_port()
                argv = impl.argv(port, context)
                name = row.name if index == 0 else f"{row.name}-{index + 1}"
                server = self.servers.start(name, argv, port, env, cpus)
                row.started.append(server)
                if index == 0:
                    row.command, row.server = argv, server
                else:
                    row.others.append(server)
        except StartError as error:
            row.status, row.reason = "did not start", f"redis-server {error}"
            self.stop(row)
            return None
        except OSError as error:
            row.status, row.reason = "did not start", str(error)
            self.stop(row)
            return None
        return row.server

    def ready(self, row: Row) -> bool:
        """
        Wait for ``row``'s servers; if one does not come up, stop them all
        and say why.
        """
        assert row.server is not None
        try:
            for server in [row.server, *row.others]:
                server.wait_ready(self.settings.startup_timeout)
        except StartError as error:
            row.status, row.reason = "did not start", str(error)
            self.stop(row)
            return False
        return True

    def stop(self, row: Row) -> None:
        """
        Stop every process started for ``row``, its broker last.
        """
        for server in reversed(row.processes):
            self.servers.stop(server)
        row.server, row.others, row.broker = None, [], None

    def alive(self, row: Row) -> bool:
        """
        :return: whether ``row``'s processes all still run (if not, it is
            marked).
        """
        processes = row.processes
        gone = [p for p in processes if p.process.poll() is not None]
        if row.server is not None and not gone:
            return True
        if row.status == "ok":
            words = gone[0].last_words() if gone else ""
            which = "the server" if not gone or gone[0] is row.server else gone[0].name
            row.status = "died"
            row.reason = f"{which} exited during the run" + (
                f": {words}" if words else ""
            )
        return False

    def workload(self, workload: Workload) -> Result:
        s = self.settings
        rows, baseline = choose_rows(workload, s)
        for row in rows:
            if row.status == "ok" and "cserver" in row.impl.needs:
                if "cserver" not in self.programs:
                    row.status, row.reason = "unavailable", self.build_error
        metrics = workload.metrics(s.connections, s.levels, s.subscribers)
        result = Result(workload, metrics, rows, baseline)
        self.results.append(result)
        assert self.generators is not None
        for metric in metrics:
            result.generator[metric.key] = self.generators.name(metric)
        live = [row for row in rows if row.status == "ok"]
        for row in rows:
            if row.status != "ok":
                self.progress.say(
                    f"{workload.name}: {row.name}: {row.status}: {row.reason}"
                )
        if workload.idle:
            self.idle(result, live)
        else:
            self.throughput(result, live)
        return result

    def throughput(self, result: Result, live: list[Row]) -> None:
        s = self.settings
        name = result.workload.name
        where = f"on CPU {s.server_cpu}"
        if any(row.impl.processes for row in live):
            where += (
                f" (rows of several processes on CPUs {s.server_cpu} and {s.load_cpu})"
            )
        self.progress.say(f"{name}: starting {len(live)} servers {where}")
        for row in live:
            self.start(row, idle=False)
        started = [row for row in live if row.server is not None and self.ready(row)]
        # What will not be measured leaves the progress count.
        each = len(result.metrics) * (s.rounds + (1 if s.warmup > 0 else 0))
        self.progress.total -= (len(live) - len(started)) * each
        live = started
        try:
            if s.warmup > 0:
                for row in live:
                    for metric in result.metrics:
                        sample = self.measure(row, metric, s.warmup, 0.0)
                        row.warmup[metric.key] = sample
                        self.progress.step(
                            f"{name} warm-up: {row.name} {metric.label}: "
                            f"{describe(sample, metric)}"
                        )
            for turn in range(s.rounds):
                for row in rotated(live, turn):
                    for metric in result.metrics:
                        if not self.alive(row):
                            row.samples.setdefault(metric.key, []).append(
                                Sample(None, 1, row.reason)
                            )
                            self.progress.step(f"{name}: {row.name}: {row.reason}")
                            continue
                        sample = self.measure(row, metric, s.seconds, s.inner_warmup())
                        row.samples.setdefault(metric.key, []).append(sample)
                        self.progress.step(
                            f"{name} round {turn + 1}/{s.rounds}: {row.name} "
                            f"{metric.label}: {describe(sample, metric)}"
                        )
        finally:
            for row in live:
                self.stop(row)

    def measure(
        self, row: Row, metric: Metric, seconds: float, warmup: float
    ) -> Sample:
        assert self.generators is not None and row.server is not None
        port, others = row.server.port, [server.port for server in row.others]
        # What each of the row's processes used of a CPU while counted: what
        # limits the figure (1.0 is a whole core).
        watch = [server.pid for server in row.processes]
        sample = self.generators.run(
            metric, port, metric.connections, seconds, warmup, others, watch
        )
        watched = sample.extra.get("watched")
        if watched is not None:
            names = {str(server.pid): server.name for server in row.processes}
            sample.extra["watched"] = {names[k]: v for k, v in watched.items()}
        return sample

    def idle(self, result: Result, live: list[Row]) -> None:
        s = self.settings
        levels = list(s.levels)
        assert self.generators is not None
        for turn in range(s.rounds):
            for row in rotated(live, turn):
                if row.status != "ok":
                    continue
                self.idle_round(result, row, levels, turn)

    def idle_round(
        self, result: Result, row: Row, levels: list[int], turn: int
    ) -> None:
        s = self.settings
        name = result.workload.name
        assert self.generators is not None
        self.progress.say(f"{name} round {turn + 1}/{s.rounds}: starting {row.name}")
        server = self.start(row, idle=True)
        if server is None or not self.ready(row):
            # Not measured, in this round or the next ones.
            self.progress.total -= len(levels) * (s.rounds - turn)
            return
        reached: set[int] = set()
        try:
            time.sleep(0.3)
            before = server.memory()

            def keep_going(report: dict[str, Any]) -> bool:
                level = report.get("level")
                time.sleep(0.1)
                after = server.memory()
                held = int(report.get("held", 0))
                errors = int(report.get("errors", 0))
                error = str(report.get("error", ""))
                if level is None:
                    return False
                reached.add(level)
                if held < level and not errors:
                    errors, error = level - held, f"held {held} of {level}"
                per = (after["pss"] - before["pss"]) / held / 1024 if held else None
                extra = {"before": before, "after": after}
                extra["opened"] = report.get("opened")
                generator = self.generators.name(result.metrics[0])
                figures = ((f"held_{level}", float(held)), (f"kib_{level}", per))
                for key, value in figures:
                    row.samples.setdefault(key, []).append(
                        Sample(
                            value,
                            errors,
                            error,
                            generator,
                            connections=level,
                            extra=extra,
                        )
                    )
                alive = self.alive(row)
                self.progress.step(
                    f"{name} round {turn + 1}/{s.rounds}: {row.name}: held "
                    f"{held:,} of {level:,}, "
                    + (f"{per:.1f} KiB/conn" if per is not None else "no memory figure")
                    + (f" ({errors} errors: {error})" if errors else "")
                )
                if memory_available() < MEMORY_GUARD:
                    note = (
                        f"{row.name}: stopped after {level:,} connections: "
                        f"less than {MEMORY_GUARD:.0%} of memory left"
                    )
                    if note not in result.notes:
                        result.notes.append(note)
                    return False
                return alive

            reports = self.generators.idle(
                server.port, levels, keep_going, result.metrics[0].mode
            )
            for level in levels:
                if level in reached:
                    continue
                why = (
                    next((r["error"] for r in reports if r.get("level") is None), "")
                    or "not reached (stopped before this level)"
                )
                for key in (f"held_{level}", f"kib_{level}"):
                    row.samples.setdefault(key, []).append(
                        Sample(None, 0 if "stopped" in why else 1, why)
                    )
                self.progress.step(f"{name}: {row.name}: {level:,}: {why}")
        finally:
            self.servers.stop(server)
            row.server = None


def redis_argv(port: int) -> list[str]:
    """
    :return: a ``redis-server`` on the loopback ``port``, in the foreground,
        keeping nothing on disk.
    """
    return [
        "redis-server",
        "--port",
        str(port),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]


def describe(sample: Sample, metric: Metric) -> str:
    """
    :return: one sample, in words, for the progress lines.
    """
    if sample.value is None:
        return f"no figure ({sample.error})"
    text = f"{format_value(sample.value)} {metric.unit}"
    if sample.errors:
        text += f" — {sample.errors} errors: {sample.error}"
    return text


def format_value(value: float | None) -> str:
    """
    :return: ``value`` with thousands separators, or three significant
        digits below 100.
    """
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
