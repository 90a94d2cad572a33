"""
Running the load generators: the C one (``c/loadgen.c``), its Python
stand-in (:mod:`netlab.tools.bench.pyloadgen`), for HTTP ``wrk``, and for
ws-broadcast the C fan-out generator (``c/fanout.c``) or its Python
stand-in (:mod:`netlab.tools.bench.fanout`).

Each run is pinned to the load CPU and bounded in time; its result is a
:class:`Sample`. A generator that fails, hangs or prints nothing usable
gives a sample with an error, never an exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from netlab.tools.bench import build
from netlab.tools.bench.processes import LOOPBACK, preexec
from netlab.tools.bench.workloads import (
    BROADCAST_WINDOW,
    C_BROADCAST_WINDOW,
    HTTP_BODY,
    Metric,
)

#: The Lua script that makes wrk check every response's status and body
#: (``EXPECT``, defined before it: see :func:`lua_string`).
WRK_SCRIPT = """\
bad = 0
first = ""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  if status ~= 200 or body ~= EXPECT then
    bad = bad + 1
    if first == "" then first = status .. " " .. string.sub(body or "", 1, 40) end
  end
end
function done(summary, latency, requests)
  local total, err = 0, ""
  for _, t in ipairs(threads) do
    total = total + t:get("bad")
    if err == "" then err = t:get("first") end
  end
  local e = summary.errors
  io.write(string.format(
    "NETLAB requests=%d duration_us=%d bad=%d connect=%d read=%d write=%d "
    .. "status=%d timeout=%d first=%s\\n",
    summary.requests, summary.duration, total, e.connect, e.read, e.write,
    e.status, e.timeout, err))
end
"""

HELLO = HTTP_BODY


def lua_string(text: str) -> str:
    """
    :return: ``text`` as a Lua string literal (its UTF-8 bytes; any but
        printable ASCII written as decimal escapes, which every Lua reads).
    """
    out = []
    for byte in text.encode("utf-8"):
        char = chr(byte)
        if 32 <= byte < 127 and char not in '\\"':
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    return '"' + "".join(out) + '"'


@dataclass
class Sample:
    """
    One measurement: a figure and how it was obtained.

    :ivar value: the figure, in the metric's unit (None when there is none).
    :ivar errors: wrong replies, lost connections, failures to connect.
    :ivar error: the first error, in words.
    """

    value: float | None
    errors: int = 0
    error: str = ""
    generator: str = ""
    seconds: float = 0.0
    ops: int = 0
    bytes: int = 0
    connections: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Generators:
    """
    Which generators this run uses, and where they run.

    :ivar kind: ``c`` or ``python``.
    :ivar loadgen: the command line of the load generator, before its mode.
    :ivar wrk: wrk's path, when HTTP is measured with it.
    :ivar cpu: the load CPU.
    :ivar spin: the C generator busy-polls once set up.
    :ivar fanout: the command line of the ws-broadcast generator, and the
        window it is given.
    """

    kind: str
    loadgen: list[str]
    wrk: str | None
    cpu: int
    nofile: int
    spin: bool = True
    fanout: tuple[list[str], int] = (
        [sys.executable, "-m", "netlab.tools.bench.fanout"],
        BROADCAST_WINDOW,
    )
    #: wrk's Lua scripts, by the body they expect.
    _scripts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def choose(
        cls, preference: str, use_wrk: bool, cpu: int, nofile: int, spin: bool
    ) -> tuple[Generators, str | None]:
        """
        :param preference: ``auto``, ``c`` or ``python``.
        :return: the generators, and why the C one is not used if so.
        :raise build.BuildError: for ``c`` when it cannot be built.
        """
        why = None
        loadgen: list[str] | None = None
        fanout: list[str] | None = None
        if preference in ("auto", "c"):
            try:
                loadgen = [str(build.program("loadgen"))]
                fanout = [str(build.program("fanout"))]
            except build.BuildError as error:
                if preference == "c":
                    raise
                why = str(error)
        if loadgen is None:
            loadgen = [sys.executable, "-m", "netlab.tools.bench.pyloadgen"]
        wrk = shutil.which("wrk") if use_wrk else None
        kind = "c" if loadgen[0] != sys.executable else "python"
        generators = cls(kind, loadgen, wrk, cpu, nofile, spin)
        if fanout is not None:
            generators.fanout = (fanout, C_BROADCAST_WINDOW)
        return generators, why

    def name(self, metric: Metric) -> str:
        """
        :return: which generator measures ``metric``.
        """
        if metric.mode == "http" and self.wrk:
            return "wrk"
        if metric.mode == "ws-broadcast":
            python = self.fanout[0][0] == sys.executable
            return "Python fanout" if python else "C fanout"
        return "C loadgen" if self.kind == "c" else "Python pyloadgen"

    def _options(self, metric: Metric, port: int, connections: int) -> list[str]:
        options = ["--host", LOOPBACK, "--port", str(port)]
        options += ["--connections", str(connections)]
        if metric.mode in ("http", "ws"):
            options += ["--path", metric.path]
        if metric.mode == "http":
            options += ["--expect", metric.expect]
        if self.kind == "c" and self.spin:
            options += ["--spin", "1"]
        return options

    def run(
        self,
        metric: Metric,
        port: int,
        connections: int,
        seconds: float,
        warmup: float,
        others: Sequence[int] = (),
        watch: Sequence[int] = (),
    ) -> Sample:
        """
        Measure ``metric`` against the server on ``port``: set up every
        connection, ``warmup`` seconds not counted, ``seconds`` counted.

        :param others: the ports of more instances serving the same
            ws-broadcast room (its subscribers are spread over all of them).
        :param watch: process groups whose CPU share ws-broadcast reports
            (the servers'), as ``extra["watched"]``.
        """
        if metric.mode == "http" and self.wrk:
            return self._wrk(metric, port, connections, seconds, warmup)
        setup = 10.0 + connections / 200
        if metric.mode == "ws-broadcast":
            command, window = self.fanout
            argv = [*command, "--host", LOOPBACK]
            for each in (port, *others):
                argv += ["--port", str(each)]
            argv += ["--subscribers", str(connections)]
            argv += ["--window", str(window)]
            for pgid in watch:
                argv += ["--watch", str(pgid)]
        else:
            argv = [*self.loadgen, metric.mode]
            argv += self._options(metric, port, connections)
        argv += ["--seconds", f"{seconds:g}", "--warmup", f"{warmup:g}"]
        argv += ["--setup-timeout", f"{setup:g}"]
        name = self.name(metric)
        try:
            result = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=setup + warmup + seconds + 30,
                preexec_fn=preexec(self.cpu, self.nofile, die_with_parent=True),
            )
        except subprocess.TimeoutExpired:
            return Sample(None, 1, "the load generator did not finish in time", name)
        report = _last_json(result.stdout)
        if report is None:
            why = result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
            return Sample(None, 1, f"load generator: {why[-1][:200]}", name)
        measured = float(report.get("seconds") or 0)
        ops, count = int(report.get("ops", 0)), int(report.get("bytes", 0))
        value: float | None = None
        if metric.key == "p99_ms":
            value = report.get("p99_ms")
        elif measured > 0:
            value = count / measured / 1e6 if metric.mode == "bulk" else ops / measured
        return Sample(
            value,
            int(report.get("errors", 0)),
            str(report.get("error", "")),
            name,
            measured,
            ops,
            count,
            connections,
            extra={
                k: report[k]
                for k in ("subscribers", "cpu", "watched", "window")
                if k in report
            },
        )

    def _wrk_script(self, expect: str) -> str:
        """
        :return: the path of wrk's Lua script that checks for ``expect``.
        """
        if expect not in self._scripts:
            fd, path = tempfile.mkstemp(prefix="netlab-bench-", suffix=".lua")
            with os.fdopen(fd, "w") as out:
                out.write(f"EXPECT = {lua_string(expect)}\n" + WRK_SCRIPT)
            self._scripts[expect] = path
        return self._scripts[expect]

    def _wrk(
        self,
        metric: Metric,
        port: int,
        connections: int,
        seconds: float,
        warmup: float,
    ) -> Sample:
        # wrk counts whole seconds, and has no warm-up of its own.
        measured = max(1, round(seconds + 0.49))
        runs = [(max(1, round(warmup + 0.49)), False)] if warmup > 0 else []
        runs.append((measured, True))
        sample = Sample(None, generator="wrk", connections=connections)
        for duration, counted in runs:
            argv = [
                str(self.wrk),
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                "-s",
                self._wrk_script(metric.expect),
                f"http://{LOOPBACK}:{port}{metric.path}",
            ]
            try:
                result = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=duration + 30,
                    preexec_fn=preexec(self.cpu, self.nofile, die_with_parent=True),
                )
            except subprocess.TimeoutExpired:
                return Sample(None, 1, "wrk did not finish in time", "wrk")
            match = re.search(r"^NETLAB (.*)$", result.stdout, re.MULTILINE)
            if match is None:
                why = (result.stderr or result.stdout).strip().splitlines()
                return Sample(None, 1, f"wrk: {why[-1] if why else '?'}", "wrk")
            counts, _, first = match.group(1).partition(" first=")
            fields = dict(part.split("=", 1) for part in counts.split())
            kinds = ("bad", "connect", "read", "write", "timeout")
            errors = sum(int(fields[key]) for key in kinds)
            sample.errors += errors
            if errors and not sample.error:
                sample.error = (
                    f"wrong response: {first}" if first else "socket errors (wrk)"
                )
            if counted:
                sample.ops = int(fields["requests"])
                sample.seconds = int(fields["duration_us"]) / 1e6
                sample.value = sample.ops / sample.seconds if sample.seconds else None
        return sample

    def idle(
        self,
        port: int,
        levels: list[int],
        keep_going: Callable[[dict[str, Any]], bool],
        mode: str = "idle",
    ) -> list[dict[str, Any]]:
        """
        Open idle connections up to each of ``levels`` in turn, calling
        ``keep_going(report)`` at each (with ``level``, ``held``, ``errors``,
        ``error``); stop early when it returns False.

        :param mode: ``idle`` (TCP) or ``ws-idle`` (WebSocket).
        :return: every level's report.
        """
        argv = [*self.loadgen, mode, "--host", LOOPBACK, "--port", str(port)]
        argv += ["--levels", ",".join(map(str, levels))]
        setup = 10.0 + max(levels) / 200
        argv += ["--setup-timeout", f"{setup:g}"]
        reports: list[dict[str, Any]] = []
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec(
                self.cpu, max(self.nofile, max(levels) + 64), die_with_parent=True
            ),
        )
        finished = False
        try:
            for _ in levels:
                line = _read_line(process, setup + 30)
                report = _last_json(line or "")
                if report is None:
                    err = process.stderr.read() if process.poll() is not None else ""
                    why = err.strip().splitlines() or ["no report"]
                    reports.append(
                        {
                            "level": None,
                            "held": 0,
                            "errors": 1,
                            "error": f"load generator: {why[-1][:200]}",
                        }
                    )
                    break
                reports.append(report)
                if not keep_going(report):
                    break
                process.stdin.write("\n")
                process.stdin.flush()
            finished = True
        finally:
            with contextlib.suppress(OSError):
                process.stdin.close()
            if not finished:  # interrupted, or it stopped answering
                process.kill()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return reports

    def close(self) -> None:
        for path in self._scripts.values():
            with contextlib.suppress(OSError):
                os.unlink(path)
        self._scripts.clear()


def _read_line(process: subprocess.Popen[str], timeout: float) -> str | None:
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    os.set_blocking(fd, True)
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            return process.stdout.readline()
        if process.poll() is not None:
            return process.stdout.readline()
    return None


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            data = json.loads(line)
            if isinstance(data, dict):
                return data
    return None


def wrk_version(path: str | None) -> str | None:
    """
    :return: what ``wrk -v`` says of itself, in a few words.
    """
    if path is None:
        return None
    try:
        result = subprocess.run(
            [path, "-v"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    words = (result.stdout + result.stderr).split()
    return " ".join(words[:2]) if words else "wrk"
