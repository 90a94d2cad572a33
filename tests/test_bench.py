"""
``netlab bench``: tiny runs of each workload, read back from the table and
the JSON. Never a speed: only that the right things were measured, checked
and compared, on loopback, and that everything started was stopped.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netlab.tools.bench import build, implementations, runner, stats
from netlab.tools.bench.options import BenchOptions
from netlab.tools.bench.runner import format_value
from netlab.tools.bench.workloads import HTTP_BODY
from tests.support import (
    LISTENING,
    ProcessResult,
    bounded,
    missing,
    python,
    require,
    run,
    spawn,
)

#: One compiler cache for the whole module: built once, by the first test.
CACHE = tempfile.mkdtemp(prefix="netlab-bench-cache-")
atexit.register(shutil.rmtree, CACHE, True)

HAVE_CC = build.compiler() is not None
HAVE_WRK = shutil.which("wrk") is not None
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
#: Why a test skips without each (under CI, fails: .ci/run installs them).
NEEDS_CC = "needs a C compiler (apt-get install gcc)"
NEEDS_WRK = "needs wrk (apt-get install wrk)"
NEEDS_MATPLOTLIB = "needs matplotlib (pip install '.[plot]')"
HAVE_REDIS = shutil.which("redis-server") is not None
NEEDS_REDIS = "needs redis-server (apt-get install redis-server)"
PYTHON = shlex.quote(sys.executable)

#: Small and quick: one round of a fraction of a second, no warm-up.
QUICK = ["--rounds", "1", "--seconds", "0.2", "--warmup", "0", "--quiet"]


#: A room that gets it wrong: ``twice`` sends each message twice, ``swap``
#: sends them in pairs, the second first, ``drop`` drops the fifth message
#: (counting after the ``sync`` ones), ``stop`` passes on the first ten
#: and then none (``python liar.py MODE PORT``).
LIAR_ROOM = """\
import asyncio, sys
from websockets.asyncio.server import broadcast, serve

members, held, seen = set(), [], [0]

async def member(connection):
    members.add(connection)
    try:
        async for message in connection:
            others = members - {connection}
            if sys.argv[1] in ("drop", "stop"):
                if message != "sync":
                    seen[0] += 1
                    if seen[0] == 5 if sys.argv[1] == "drop" else seen[0] > 10:
                        continue
                broadcast(others, message)
            elif sys.argv[1] == "twice":
                broadcast(others, message)
                broadcast(others, message)
            elif held:
                broadcast(others, message)
                broadcast(others, held.pop())
            else:
                held.append(message)
    except Exception:
        pass
    finally:
        members.discard(connection)

async def main():
    async with serve(member, "127.0.0.1", int(sys.argv[2])):
        await asyncio.Future()

asyncio.run(main())
"""


def connects(port: int, count: int, seconds: float) -> int:
    """
    :return: how many of ``count`` connects to ``port`` complete within
        ``seconds`` (a connect the listen queue has no room for waits).
    """
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        pending, done = set(sockets), 0
        deadline = time.monotonic() + seconds
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], list(pending), [], 0.1)
            for sock in writable:
                pending.discard(sock)
                done += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return done
    finally:
        for sock in sockets:
            sock.close()


def accepting(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class FigureChecks:
    """
    Checks of a report's figures, for tests of real runs and of made-up
    ones alike.
    """

    def row(self, data: dict[str, Any], workload: str, name: str) -> dict[str, Any]:
        for impl in data["workloads"][workload]["implementations"]:
            if impl["name"] == name:
                return impl
        self.fail(f"no {name} in {workload}")

    def assert_ratios(self, table: str, data: dict[str, Any], workload: str) -> None:
        """
        Every figure and ratio of ``workload``, as the JSON and the table
        give them, is what its raw samples make: each median recomputed from
        the samples, the generator's ceiling from those medians, and each
        ratio from them; where there is no ratio, the note says why and the
        samples bear it out; a row not measured names what it lacks.
        """
        section = data["workloads"][workload]
        rows = {impl["name"]: impl for impl in section["implementations"]}
        printed = printed_table(table, workload)
        for name, impl in rows.items():
            if impl["status"] == "unavailable":
                self.assertRegex(impl["reason"], UNAVAILABLE, impl)
            if impl["status"] != "ok" or not impl["samples"]:
                self.assertIn(impl["reason"] or "not measured", printed[name][0])
        column = 0
        for metric in section["metrics"]:
            key = metric["key"]
            medians, failed = {}, set()
            for name, impl in rows.items():
                samples = impl["samples"].get(key, [])
                values = [s["value"] for s in samples if s["value"] is not None]
                if any(s["errors"] for s in samples):
                    failed.add(name)
                if values:
                    medians[name] = statistics.median(values)
                    self.assertEqual(impl["median"][key], medians[name], name)
                    shown = printed[name][column].split()[0]
                    self.assertEqual(shown, format_value(medians[name]), name)
            value_column, column = column, column + 1 + metric["compared"]
            if not metric["compared"]:
                continue
            # Memory, connection counts and latencies are never
            # generator-bound (nor figures no C server gives a ceiling).
            bounded = metric["bounded"]
            good = [m for n, m in medians.items() if n not in failed]
            top = max(good) if good and bounded else None
            self.assertEqual(metric["ceiling"]["value"], top, metric)
            bound = section["generator_bound_share"] * top if top else None
            base = medians.get(section["baseline"])
            for name, impl in rows.items():
                if key not in impl["samples"]:
                    self.assertNotIn(key, impl["ratio"], name)
                    continue
                ratio, note = impl["ratio"][key], impl["note"][key]
                mine = medians.get(name)
                if name in failed:
                    expected = (None, "failed")
                elif mine is None:
                    expected = (None, "n/a: no figure")
                elif bound and mine >= bound:
                    expected = (None, "n/a: generator-bound")
                elif base is None or section["baseline"] in failed:
                    expected = (None, "n/a: no baseline")
                elif bound and base >= bound:
                    expected = (None, "n/a: baseline generator-bound")
                elif name == section["baseline"]:
                    expected = (1.0, "baseline")
                elif base == 0:
                    expected = (None, "n/a: baseline is 0")
                else:
                    expected = (mine / base, "")
                self.assertEqual(note, expected[1], (name, ratio, note))
                if expected[0] is None:
                    self.assertIsNone(ratio, name)
                else:
                    self.assertAlmostEqual(ratio, expected[0], msg=name)
                # The table prints the same: two decimals, or the note.
                cell = printed[name][value_column + 1]
                self.assertEqual(cell, note if ratio is None else f"{ratio:.2f}")
        self.assert_scaling(table, section, rows)

    def assert_scaling(
        self, table: str, section: dict[str, Any], rows: dict[str, Any]
    ) -> None:
        """
        A workload's scaling (rows of several processes over the one-process
        row, first figure) is what their medians make, in the JSON and on
        its line of the table.
        """
        if not section["scaling"]:
            self.assertNotIn("  scaling: ", _section(table, section["summary"]))
            return
        ((key, scaling),) = section["scaling"].items()
        self.assertEqual(key, section["metrics"][0]["key"])
        over = rows.get(scaling["over"])
        base = over["median"].get(key) if over else None
        line = next(
            line
            for line in _section(table, section["summary"]).splitlines()
            if line.startswith("  scaling: ")
        )
        self.assertEqual(
            set(scaling["rows"]),
            {
                name
                for name, impl in rows.items()
                if len(impl["processes"]) > 1 and impl["samples"].get(key)
            },
        )
        for name, entry in scaling["rows"].items():
            mine = rows[name]["median"][key]
            if base is None:
                self.assertEqual(
                    (entry["ratio"], entry["note"]), (None, "n/a: no baseline")
                )
                self.assertIn(f"{name} n/a (n/a: no baseline)", line)
            else:
                self.assertAlmostEqual(entry["ratio"], mine / base, msg=name)
                self.assertIn(f"{name} {mine / base:.2f}", line)


class BenchRunTests(FigureChecks, TestCase):
    """
    Tiny real runs, one or two implementations each (plus the ceiling).
    """

    timeout = 120

    def setUp(self) -> None:
        previous = os.environ.get("XDG_CACHE_HOME")
        os.environ["XDG_CACHE_HOME"] = CACHE
        self.addCleanup(self._restore, previous)
        self.scratch = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.scratch, True)

    @staticmethod
    def _restore(previous: str | None) -> None:
        if previous is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = previous

    async def bench(self, *args: str, status: int = 0) -> tuple[str, dict[str, Any]]:
        """
        Run ``netlab bench ARGS --json FILE``.

        :return: the table printed, and the JSON written.
        """
        report = self.scratch / "bench.json"
        result = await run(
            python("-m", "netlab", "bench", *args, "--json", str(report))
        )
        self.assertEqual(result.status, status, result)
        self.assertNotIn(b"Traceback", result.err, result)
        for row in json.loads(report.read_text())["workloads"].values():
            for impl in row["implementations"]:
                for port in _ports(impl["command"]):
                    self.assertFalse(accepting(port), f"{impl['name']} left running")
                for process in impl["processes"]:
                    self.assert_gone(process)
        return result.out.decode(), json.loads(report.read_text())

    def assert_gone(self, process: dict[str, Any]) -> None:
        """
        A process the run started (as its report names it) is no more: its
        PID is free, or taken by another program, and its port is closed.
        """
        try:
            command = Path(f"/proc/{process['pid']}/cmdline").read_bytes()
        except OSError:
            command = b""
        self.assertNotEqual(
            command.split(b"\0")[:-1],
            [word.encode() for word in process["command"]],
            f"{process['name']} (PID {process['pid']}) left running",
        )
        self.assertFalse(accepting(process["port"]), f"{process['name']} left running")

    def assert_rows(self, table: str, *names: str) -> None:
        rows = {line.split()[0] for line in table.splitlines() if line.startswith("  ")}
        for name in names:
            self.assertIn(name, rows, table)

    def assert_clean_samples(
        self, data: dict[str, Any], workload: str, name: str, rounds: int
    ) -> dict[str, Any]:
        impl = self.row(data, workload, name)
        self.assertEqual(impl["status"], "ok", impl)
        metrics = data["workloads"][workload]["metrics"]
        for metric in metrics:
            samples = impl["samples"][metric["key"]]
            self.assertEqual(len(samples), rounds, samples)
            for sample in samples:
                self.assertEqual(sample["errors"], 0, sample)
                self.assertIsInstance(sample["value"], float)
            self.assertIsNotNone(impl["median"][metric["key"]])
        return impl

    async def test_tcp_echo(self) -> None:
        """
        tcp-echo: a figure with 1 connection and one with --connections, two
        rounds each, for the ceiling server and the baseline asked for.
        """
        table, data = await self.bench(
            *"tcp-echo --impl selectors_echo --baseline selectors_echo".split(),
            *"--connections 10 --rounds 2 --seconds 0.2 --warmup 0 --quiet".split(),
        )
        self.assertIn("selectors_echo (baseline)", table)
        for heading in ("1 conn", "10 conn", "ratio"):
            self.assertIn(heading, table)
        for line in ("machine:", "software:", "pinning:", "rounds:", "generator:"):
            self.assertIn(line, table)
        self.assertEqual(data["settings"]["rounds"], 2)
        self.assertIn("twisted", data["versions"])
        self.assertTrue(data["machine"]["cpu"])
        impl = self.assert_clean_samples(data, "tcp-echo", "selectors_echo", rounds=2)
        self.assertEqual(impl["samples"]["rt_10"][0]["connections"], 10)
        self.assertEqual(len(impl["samples"]["rt_1"]), 2)
        if HAVE_CC:
            self.assert_rows(table, "c-echo")
            self.assert_clean_samples(data, "tcp-echo", "c-echo", rounds=2)
            self.assertIn("generator ceiling", table)
        self.assert_ratios(table, data, "tcp-echo")

    async def test_tcp_bulk(self) -> None:
        """
        tcp-bulk: MB/s echoed; and ``--plot`` draws a PNG, or says in one line
        that matplotlib is missing.
        """
        chart = self.scratch / "bench.png"
        args = [*"tcp-bulk --impl bare-echo".split(), *QUICK, "--plot", str(chart)]
        if not HAVE_MATPLOTLIB:
            missing(NEEDS_MATPLOTLIB)
            result = await run(python("-m", "netlab.tools.bench", *args))
            self.assertEqual(result.status, 2, result)
            self.assertEqual(result.err.count(b"\n"), 1, result)
            self.assertIn(b"matplotlib", result.err)
            args = args[:-2]
        table, data = await self.bench(*args)
        self.assertIn("MB/s echoed", table)
        self.assertIn("bare-echo (baseline)", table)
        self.assert_clean_samples(data, "tcp-bulk", "bare-echo", rounds=1)
        if HAVE_CC:
            self.assert_rows(table, "c-echo")
        if chart.exists():
            self.assertEqual(chart.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        self.assert_ratios(table, data, "tcp-bulk")

    async def test_http(self) -> None:
        """
        http with the built-in generator: keep-alive GET / requests/s.
        """
        table, data = await self.bench(
            *"http --impl bare-web --no-wrk --connections 5".split(), *QUICK
        )
        self.assertIn("req/s, 5 conn", table)
        self.assertIn("bare-web (baseline)", table)
        self.assertNotIn("wrk", data["workloads"]["http"]["metrics"][0]["generator"])
        self.assert_clean_samples(data, "http", "bare-web", rounds=1)
        self.assert_ratios(table, data, "http")

    async def test_http_wrk(self) -> None:
        """
        http with wrk, when it is installed: the table says so.
        """
        require(HAVE_WRK, NEEDS_WRK)
        require(HAVE_CC, NEEDS_CC)
        table, data = await self.bench(
            *"http --impl c-http --baseline c-http --connections 5".split(),
            *"--rounds 1 --seconds 1 --warmup 0 --quiet".split(),
        )
        self.assertIn("generator: wrk", table)
        self.assertEqual(data["workloads"]["http"]["metrics"][0]["generator"], "wrk")
        self.assert_clean_samples(data, "http", "c-http", rounds=1)

    async def test_ws(self) -> None:
        """
        ws: WebSocket echo messages/s after a real handshake.
        """
        table, data = await self.bench(
            *"ws --impl bare-ws --connections 5".split(), *QUICK
        )
        self.assertIn("msg/s, 5 conn", table)
        self.assertIn("bare-ws (baseline)", table)
        self.assert_clean_samples(data, "ws", "bare-ws", rounds=1)
        self.assert_ratios(table, data, "ws")

    def assert_user_rows(
        self, data: dict[str, Any], workload: str, name: str, option: str
    ) -> None:
        """
        ``name`` (netlab serving the user's app through ``option``) was
        measured cleanly, or, while the plugin has no such option, is listed
        as unavailable for that reason.
        """
        if implementations.BUILTIN[name].unavailable() is None:
            self.assert_clean_samples(data, workload, name, rounds=1)
        else:
            row = self.row(data, workload, name)
            self.assertEqual(row["status"], "unavailable", row)
            self.assertIn(option, row["reason"])

    async def test_http_user(self) -> None:
        """
        http-user with the built-in generator: the user's resource answers
        ``GET /hello?name=bench`` under netlab, a bare Site and twistd web,
        each answer checked.
        """
        table, data = await self.bench(
            *"http-user --no-wrk --connections 5".split(), *QUICK
        )
        section = data["workloads"]["http-user"]
        self.assertEqual(section["baseline"], "bare-web-user")
        self.assertEqual(section["ceiling_server"], "c-http-user")
        metric = section["metrics"][0]
        self.assertEqual(
            (metric["path"], metric["expect"]), ("/hello?name=bench", "Hello, bench!")
        )
        self.assertNotIn("wrk", metric["generator"])
        self.assertIn("req/s, 5 conn", table)
        self.assertIn("bare-web-user (baseline)", table)
        self.assert_rows(table, "twistd-web-user", "netlab-http-user")
        names = [impl["name"] for impl in section["implementations"]]
        self.assertEqual(
            sorted(names),
            ["bare-web-user", "c-http-user", "netlab-http-user", "twistd-web-user"],
        )
        self.assert_clean_samples(data, "http-user", "bare-web-user", rounds=1)
        self.assert_clean_samples(data, "http-user", "twistd-web-user", rounds=1)
        self.assert_user_rows(data, "http-user", "netlab-http-user", "--resource")
        if HAVE_CC:
            self.assert_clean_samples(data, "http-user", "c-http-user", rounds=1)
        self.assert_ratios(table, data, "http-user")

    async def test_http_user_wrk(self) -> None:
        """
        http-user with wrk, when it is installed: wrk asks for the user's
        path and checks its body.
        """
        require(HAVE_WRK, NEEDS_WRK)
        table, data = await self.bench(
            *"http-user --impl bare-web-user --connections 5".split(),
            *"--rounds 1 --seconds 1 --warmup 0 --quiet".split(),
        )
        self.assertIn("generator: wrk", table)
        metric = data["workloads"]["http-user"]["metrics"][0]
        self.assertEqual(metric["generator"], "wrk")
        self.assert_clean_samples(data, "http-user", "bare-web-user", rounds=1)

    async def test_http_user_wrong_body(self) -> None:
        """
        Each HTTP generator (C, Python, and wrk when installed) fails a
        server that answers ``200`` with another body than the user's, in
        the same run where the user's resource passes.
        """
        liar = f"liar={PYTHON} -m netlab.tools.bench.bare_web --port {{port}}"
        builtin = "C loadgen" if HAVE_CC else "Python pyloadgen"
        generators = [
            (["--no-wrk"], builtin),
            (["--no-wrk", "--generator", "python"], "Python pyloadgen"),
        ]
        if HAVE_WRK:
            generators.append(([], "wrk"))
        for generator, name in generators:
            table, data = await self.bench(
                *"http-user --impl liar --connections 3".split(),
                *generator,
                *QUICK,
                *("--vs", liar),
                status=1,
            )
            metric = data["workloads"]["http-user"]["metrics"][0]
            self.assertEqual(metric["generator"], name)
            self.assert_clean_samples(data, "http-user", "bare-web-user", rounds=1)
            row = self.row(data, "http-user", "liar")
            self.assertTrue(row["failed"]["req_s"], (generator, row))
            self.assertEqual(row["note"]["req_s"], "failed")
            sample = row["samples"]["req_s"][0]
            self.assertGreater(sample["errors"], 0, (generator, sample))
            # The wrong body, in the generator's words.
            self.assertIn("Hello, world!", sample["error"], (generator, sample))
            self.assertIn("FAILED", table)

    async def test_ws_user(self) -> None:
        """
        ws-user: the user's handler under twistd netlab-ws --handler, each
        reply checked, against bare autobahn.
        """
        table, data = await self.bench(*"ws-user --connections 5".split(), *QUICK)
        section = data["workloads"]["ws-user"]
        self.assertEqual(section["baseline"], "bare-ws")
        self.assertEqual(section["ceiling_server"], "c-ws")
        self.assertIn("msg/s, 5 conn", table)
        self.assertIn("bare-ws (baseline)", table)
        names = [impl["name"] for impl in section["implementations"]]
        self.assertEqual(sorted(names), ["bare-ws", "c-ws", "netlab-ws-user"])
        self.assert_clean_samples(data, "ws-user", "bare-ws", rounds=1)
        self.assert_user_rows(data, "ws-user", "netlab-ws-user", "--handler")
        command = " ".join(self.row(data, "ws-user", "netlab-ws-user")["command"])
        if command:
            self.assertIn("--handler netlab.tools.bench.userapp:handler", command)
            self.assertNotIn("--logger", command)
        if HAVE_CC:
            self.assert_clean_samples(data, "ws-user", "c-ws", rounds=1)
        self.assert_ratios(table, data, "ws-user")

    async def test_ws_broadcast(self) -> None:
        """
        ws-broadcast: deliveries per second and p99 latency for the netlab
        room and the websockets peer, every message checked at every
        subscriber; the room is a user's pub/sub room, served by one
        process pinned to the server CPU, with no broker.
        """
        table, data = await self.bench(
            *"ws-broadcast --subscribers 20 --impl netlab-ws-room".split(), *QUICK
        )
        section = data["workloads"]["ws-broadcast"]
        self.assertEqual(section["baseline"], "ws-room-websockets")
        self.assertIn("delivered/s, 20 subs", table)
        self.assertIn(
            f"generator: {'C' if HAVE_CC else 'Python'} fanout for ws-broadcast", table
        )
        for name in ("ws-room-websockets", "netlab-ws-room"):
            row = self.assert_clean_samples(data, "ws-broadcast", name, rounds=1)
            sample = row["samples"]["delivered"][0]
            self.assertEqual(sample["connections"], 20)
            self.assertGreater(sample["ops"], 0)
            self.assertGreater(row["median"]["p99_ms"], 0)
        room = self.row(data, "ws-broadcast", "netlab-ws-room")
        command = room["command"]
        self.assertIn("netlab.tools.bench.room:Room", command)
        self.assertNotIn("--broker", command)
        self.assertEqual(command[command.index("--max-per-ip") + 1], "37")
        self.assertEqual([p["command"] for p in room["processes"]], [command])
        self.assert_ratios(table, data, "ws-broadcast")

    async def test_ws_broadcast_over_redis(self) -> None:
        """
        The rows over a broker run, each with a redis-server the run started
        and stopped: ``--workers 2`` on one port, and two instances on two
        ports with the subscribers spread over both; every message reaches
        every subscriber, once, in order, and each row has a figure and a
        ratio to the websockets peer.
        """
        require(HAVE_REDIS, NEEDS_REDIS)
        names = ("netlab-ws-room-workers2", "netlab-ws-room-2x")
        table, data = await self.bench(
            *f"ws-broadcast --subscribers 50 --impl {','.join(names)}".split(),
            *("--rounds", "1", "--seconds", "1", "--warmup", "0", "--quiet"),
        )
        for name in names:
            row = self.assert_clean_samples(data, "ws-broadcast", name, rounds=1)
            self.assertGreater(row["samples"]["delivered"][0]["ops"], 0)
            self.assertIsInstance(row["ratio"]["delivered"], float)
            redis, *servers = row["processes"]
            self.assertEqual(
                redis["command"][:3], ["redis-server", "--port", str(redis["port"])]
            )
            for server in servers:
                broker = server["command"][server["command"].index("--broker") + 1]
                self.assertEqual(broker, f"redis://127.0.0.1:{redis['port']}/0")
            self.assertEqual(len(servers), 2 if name.endswith("-2x") else 1)
        workers = self.row(data, "ws-broadcast", names[0])["command"]
        self.assertEqual(workers[workers.index("--workers") + 1], "2")
        self.assertIn(
            "netlab-ws-room-2x and netlab-ws-room-workers2 run several processes "
            "(netlab's and a redis-server) on CPUs 0 and 1",
            table,
        )
        spread = self.row(data, "ws-broadcast", names[1])
        first, second = spread["processes"][1:]
        self.assertNotEqual(first["port"], second["port"])
        # The publisher is on the first; the subscribers half on each.
        for sample in spread["samples"]["delivered"]:
            self.assertEqual(
                sample["extra"]["subscribers"],
                {str(first["port"]): 25, str(second["port"]): 25},
            )
        self.assert_ratios(table, data, "ws-broadcast")

    async def test_ws_broadcast_c(self) -> None:
        """
        The C fan-out generator (``--generator c``) measures the one-process
        room and a room over Redis: figures, its window, and the CPU shares
        of itself and of the servers.
        """
        require(HAVE_CC, NEEDS_CC)
        require(HAVE_REDIS, NEEDS_REDIS)
        names = ("netlab-ws-room", "netlab-ws-room-2x")
        table, data = await self.bench(
            *f"ws-broadcast --subscribers 50 --impl {','.join(names)}".split(),
            *("--rounds", "1", "--seconds", "1", "--warmup", "0", "--quiet"),
            *("--generator", "c"),
        )
        self.assertIn(
            "generator: C fanout for ws-broadcast (epoll, one process, 64 "
            "messages in flight, no busy-polling)",
            table,
        )
        for name in names:
            row = self.assert_clean_samples(data, "ws-broadcast", name, rounds=1)
            (sample,) = row["samples"]["delivered"]
            self.assertEqual(sample["generator"], "C fanout")
            self.assertEqual(sample["connections"], 50)
            # 50 subscribers each get every message: a multiple of 50 but
            # for the messages in flight at the counted span's two ends.
            self.assertGreater(sample["ops"], 50)
            self.assertGreater(sample["value"], 0)
            extra = sample["extra"]
            self.assertEqual(extra["window"], 64)
            self.assertGreater(extra["cpu"], 0)
            self.assertEqual(len(extra["watched"]), len(row["processes"]))
            self.assertGreater(sum(extra["watched"].values()), 0)
            self.assertEqual(sum(extra["subscribers"].values()), 50)
            self.assertGreater(row["median"]["p99_ms"], 0)
        spread = self.row(data, "ws-broadcast", names[1])
        first, second = spread["processes"][1:]
        self.assertEqual(
            spread["samples"]["delivered"][0]["extra"]["subscribers"],
            {str(first["port"]): 25, str(second["port"]): 25},
        )
        self.assertIn(
            "  scaling: delivered/s, 50 subs, median / netlab-ws-room's median, "
            "same run: netlab-ws-room-2x ",
            table,
        )
        self.assert_ratios(table, data, "ws-broadcast")

    async def test_ws_broadcast_c_checks(self) -> None:
        """
        The C fan-out generator FAILS a room that drops a message, or stops
        passing them on (a stall), each with its one-line reason.
        """
        require(HAVE_CC, NEEDS_CC)
        script = self.scratch / "liar.py"
        script.write_text(LIAR_ROOM)
        for mode, error in (
            ("drop", "message 5 arrived where 4 was due"),
            (
                "stop",
                "a message was not delivered to every subscriber within 5 s "
                "(message 10: 3 of 3 subscribers still miss it)",
            ),
        ):
            await self.assert_liar_failed(script, mode, "c", error)

    def test_ws_broadcast_broken_broker(self) -> None:
        """
        Two instances that do not share the room (started without
        ``--broker``, though the run starts a redis-server for them) are
        FAILED: the subscribers of the second never get a message; the
        redis-server and both instances are stopped all the same.
        """
        require(HAVE_REDIS, NEEDS_REDIS)
        alone = dataclasses.replace(
            implementations.BUILTIN["netlab-ws-room-2x"],
            name="alone-2x",
            family="external",
            argv=implementations._twistd(
                "netlab-ws", None, ("--handler", implementations.ROOM_HANDLER)
            ),
        )
        settings = runner.Settings(
            ["ws-broadcast"],
            implementations=["alone-2x"],
            externals=[alone],
            rounds=1,
            seconds=0.2,
            warmup=0,
            subscribers=20,
            quiet=True,
        )
        run = runner.Run(settings)
        self.assertEqual(run.run(), 1)
        (result,) = run.results
        (row,) = (row for row in result.rows if row.name == "alone-2x")
        (sample,) = row.samples["delivered"]
        self.assertIsNone(sample.value)
        self.assertEqual(
            sample.error,
            "the room's first message was not delivered to every subscriber "
            "within 5 s (10 of 20 got one)",
        )
        self.assertTrue(result.failed)
        names = [server.name for server in row.started]
        self.assertEqual(names, ["alone-2x-redis", "alone-2x", "alone-2x-2"])
        for server in row.started:
            self.assertIsNotNone(server.process.poll(), server.name)
            self.assertFalse(Path(f"/proc/{server.pid}").exists(), server.name)

    async def test_ws_broadcast_checks_delivery(self) -> None:
        """
        A server that does not pass the publisher's messages on to the room
        (an echo server) is FAILED: the subscribers never got them.
        """
        echo = f"echo={PYTHON} -m netlab.tools.bench.bare_ws --port {{port}}"
        table, data = await self.bench(
            *"ws-broadcast --subscribers 5 --impl echo".split(),
            *QUICK,
            *("--vs", echo),
            status=1,
        )
        row = self.row(data, "ws-broadcast", "echo")
        self.assertEqual(row["note"]["delivered"], "failed")
        self.assertIn(
            "not delivered to every subscriber", row["samples"]["delivered"][0]["error"]
        )
        self.assertIn("FAILED", table)
        self.assert_clean_samples(data, "ws-broadcast", "ws-room-websockets", rounds=1)

    async def test_ws_broadcast_checks_each_message(self) -> None:
        """
        A room that sends each message twice, or swaps them in pairs, is
        FAILED by either generator: every subscriber must get each message
        once, in order.
        """
        script = self.scratch / "liar.py"
        script.write_text(LIAR_ROOM)
        # Both generators: the Python one is what runs without gcc.
        for generator in ("c", "python") if HAVE_CC else ("python",):
            for mode, error in (
                ("twice", "message 0 arrived where 1 was due"),
                ("swap", "message 1 arrived where 0 was due"),
            ):
                await self.assert_liar_failed(script, mode, generator, error)

    async def assert_liar_failed(
        self, script: Path, mode: str, generator: str, error: str
    ) -> None:
        """
        Measure the room ``LIAR_ROOM`` (in ``script``) makes in ``mode``
        with ``generator``: the run exits 1, the row is FAILED with
        ``error``.
        """
        liar = f"{mode}={PYTHON} {script} {mode} {{port}}"
        table, data = await self.bench(
            *f"ws-broadcast --subscribers 3 --impl {mode}".split(),
            *QUICK,
            *("--vs", liar, "--generator", generator),
            status=1,
        )
        row = self.row(data, "ws-broadcast", mode)
        self.assertEqual(row["note"]["delivered"], "failed")
        (sample,) = row["samples"]["delivered"]
        self.assertEqual(sample["error"], error, generator)
        self.assertEqual(sample["generator"], f"{generator.capitalize()} fanout")
        self.assertIn("FAILED", table)

    async def test_bare_baselines_backlog(self) -> None:
        """
        The bare baselines listen with netlab's backlog, not Twisted's 50:
        with the server stopped (SIGSTOP), the kernel still completes 100
        connects (no more than backlog + 1 can wait to be accepted).
        """
        for module in ("bare_echo", "bare_web", "bare_ws"):
            child = spawn(
                python("-m", f"netlab.tools.bench.{module}", "--port", "0"),
                watch=LISTENING,
            )
            seen = await bounded(child.protocol.seen)
            child.signal("STOP")
            try:
                done = await deferToThread(connects, int(seen.group(1)), 100, 5.0)
            finally:
                child.process.signalProcess(signal.SIGCONT)
                child.signal("TERM")
                await child.ended()
            self.assertEqual(done, 100, module)

    async def test_idle(self) -> None:
        """
        idle: the connections held at each level, and memory per connection.
        """
        table, data = await self.bench(
            *"idle --impl asyncio_echo --baseline asyncio_echo".split(),
            *"--idle-levels 20,50 --rounds 1 --quiet".split(),
        )
        for heading in ("held/20", "KiB/conn at 20", "held/50"):
            self.assertIn(heading, table)
        impl = self.row(data, "idle", "asyncio_echo")
        self.assertEqual(impl["role"], "baseline")
        self.assertEqual(impl["median"]["held_20"], 20)
        self.assertEqual(impl["median"]["held_50"], 50)
        self.assertEqual(impl["ratio"]["kib_50"], 1.0)
        self.assertNotIn("held_50", impl["ratio"])
        self.assertIn("pss", impl["samples"]["kib_50"][0]["extra"]["after"])

    async def test_ws_idle(self) -> None:
        """
        ws-idle: WebSocket connections held after their handshake, with the
        C generator (when there is a compiler) and with the Python one.
        """
        for generator in ("auto", "python"):
            table, data = await self.bench(
                *"ws-idle --impl netlab-ws,ws_server --baseline ws_server".split(),
                *"--idle-levels 10,20 --rounds 1 --quiet --generator".split(),
                generator,
            )
            for heading in ("held/10", "KiB/conn at 20", "held/20"):
                self.assertIn(heading, table)
            for name in ("netlab-ws", "ws_server"):
                row = self.row(data, "ws-idle", name)
                self.assertEqual(
                    (row["median"]["held_10"], row["median"]["held_20"]),
                    (10, 20),
                    (generator, name),
                )
                # A memory figure (at 20 connections, mostly noise).
                self.assertIsInstance(row["median"]["kib_20"], float, (generator, name))
            baseline = self.row(data, "ws-idle", "ws_server")
            self.assertEqual(baseline["ratio"]["kib_20"], 1.0)

    async def test_external_and_failed(self) -> None:
        """
        ``--vs NAME=CMD`` measures any command, as the baseline too; one that
        answers wrong is marked FAILED, and the exit status says so.
        """
        mine = f"mine={PYTHON} -m netlab.compat.selectors_echo --port {{port}}"
        liar = f"liar={PYTHON} -m netlab.compat.socket_server --port {{port}}"
        table, data = await self.bench(
            *"tcp-echo --connections 2 --impl mine,liar --baseline mine".split(),
            *QUICK,
            *("--vs", mine, "--vs", liar),
            status=1,
        )
        self.assert_rows(table, "mine", "liar")
        mine_row = self.assert_clean_samples(data, "tcp-echo", "mine", rounds=1)
        self.assertEqual(mine_row["role"], "baseline")
        self.assertEqual(mine_row["family"], "external")
        liar_row = self.row(data, "tcp-echo", "liar")
        self.assertTrue(liar_row["failed"]["rt_1"])
        self.assertIsNone(liar_row["ratio"]["rt_1"])
        self.assertEqual(liar_row["note"]["rt_1"], "failed")
        self.assertIn("FAILED", table)
        self.assertIn("the server closed the connection", table)

    async def test_python_generator(self) -> None:
        """
        ``--generator python``: the same run, marked in the table.
        """
        table, data = await self.bench(
            *"tcp-echo --impl selectors_echo --baseline selectors_echo".split(),
            *"--generator python --connections 3".split(),
            *QUICK,
        )
        self.assertIn("Python pyloadgen", table)
        self.assertIn("GENERATOR-BOUND LIKELY", table)
        self.assertEqual(data["generator"]["kind"], "python")
        self.assert_clean_samples(data, "tcp-echo", "selectors_echo", rounds=1)

    async def test_interrupted(self) -> None:
        """
        Ctrl-C stops every server it started and exits with 130, after
        printing (and writing) what it had.
        """
        report = self.scratch / "bench.json"
        child = spawn(
            python(
                *"-m netlab.tools.bench tcp-echo --impl selectors_echo".split(),
                *"--rounds 5 --seconds 1 --warmup 0 --json".split(),
                str(report),
            ),
            watch=rb"round 1/5",
        )
        await bounded(child.protocol.seen)
        child.signal("INT")
        result: ProcessResult = await child.ended()
        self.assertEqual(result.status, 130, result)
        self.assertIn(b"INTERRUPTED", result.out)
        self.assertNotIn(b"Traceback", result.err)
        data = json.loads(report.read_text())
        self.assertTrue(data["interrupted"])
        ports = [
            port
            for impl in data["workloads"]["tcp-echo"]["implementations"]
            for port in _ports(impl["command"])
        ]
        self.assertTrue(ports)
        for port in ports:
            self.assertFalse(accepting(port))


class BenchCommandTests(TestCase):
    """
    ``netlab bench`` as a command: its help and its usage errors.
    """

    timeout = 60

    async def test_help(self) -> None:
        result = await run(python("-m", "netlab", "bench", "--help"))
        self.assertEqual(result.status, 0, result)
        for word in (
            b"tcp-echo",
            b"tcp-bulk",
            b"http",
            b"ws",
            b"idle",
            b"ws-idle",
            b"--vs",
            b"--cpu",
            b"--baseline",
            b"--rounds",
            b"--seconds",
            b"--json",
            b"--plot",
            b"netlab-echo-asyncio",
            b"bare-web",
            b"selectors_echo",
            b"c-echo",
        ):
            self.assertIn(word, result.out)

    async def test_help_user_workloads(self) -> None:
        """
        ``--help`` names the user workloads and their implementations.
        """
        result = await run(python("-m", "netlab", "bench", "--help"))
        self.assertEqual(result.status, 0, result)
        for word in (
            b"http-user",
            b"ws-user",
            b"netlab-http-user",
            b"netlab-ws-user",
            b"bare-web-user",
            b"twistd-web-user",
            b"c-http-user",
        ):
            self.assertIn(word, result.out)

    async def test_list(self) -> None:
        result = await run(python("-m", "netlab", "bench", "--list"))
        self.assertEqual(result.status, 0, result)
        for name in implementations.BUILTIN:
            self.assertIn(name.encode(), result.out)

    async def test_bad_option_one_line(self) -> None:
        """
        A mistake is one line on standard error and exit status 2, through
        ``netlab bench`` and ``python -m netlab.tools.bench`` alike.
        """
        for command in (["-m", "netlab", "bench"], ["-m", "netlab.tools.bench"]):
            result = await run(python(*command, "tcp-echo", "--rounds", "0"))
            self.assertEqual(result.status, 2, result)
            self.assertEqual(result.out, b"", result)
            self.assertEqual(result.err.count(b"\n"), 1, result)
            self.assertTrue(result.err.startswith(b"netlab bench: --rounds"), result)

    def test_bad_options(self) -> None:
        """
        Each mistake is a one-line usage error.
        """
        mistakes = [
            (["tcp-echo", "--rounds", "0"], "--rounds"),
            (["tcp-echo", "--seconds", "soon"], "--seconds"),
            (["tcp-echo", "--warmup", "-1"], "--warmup"),
            (["nonsense"], "unknown workload"),
            ([], "a workload is required"),
            (["tcp-echo", "--impl", "nginx"], "unknown implementation"),
            (["tcp-echo", "--vs", "x=echo no port"], "{port}"),
            (["tcp-echo", "--vs", "bare-echo=x {port}"], "built-in"),
            (["tcp-echo", "--cpu", "0"], "--cpu"),
            (["tcp-echo", "--cpu", "0,4096"], "--cpu"),
            (["http", "--baseline", "bare-echo"], "--baseline"),
            (["idle", "--idle-levels", "10,5"], "--idle-levels"),
            (["tcp-echo", "--generator", "rust"], "--generator"),
            (["tcp-echo", "--json", "/no/such/dir/x.json"], "--json"),
            (["tcp-echo", "--frobnicate"], "frobnicate"),
        ]
        for args, word in mistakes:
            with self.assertRaises(usage.UsageError, msg=args) as caught:
                BenchOptions().parseOptions(args)
            message = str(caught.exception)
            self.assertIn(word, message, args)
            self.assertNotIn("\n", message, args)

    def test_impl_families(self) -> None:
        """
        ``--impl`` takes a family for all of its implementations.
        """
        options = BenchOptions()
        options.parseOptions(
            ["http", "--impl", "netlab,compat,mine", "--vs", "mine=x {port}"]
        )
        chosen = options["impl"]
        for name in ("netlab-http", "netlab-ws-asyncio", "http_server", "mine"):
            self.assertIn(name, chosen)
        self.assertNotIn("bare-web", chosen)
        options = BenchOptions()
        options.parseOptions(["http", "--impl", "external", "--vs", "mine=x {port}"])
        self.assertEqual(options["impl"], ["mine"])

    def test_options_after_workloads(self) -> None:
        options = BenchOptions()
        options.parseOptions(["tcp-echo", "--rounds", "2", "http", "-s", "0.5"])
        self.assertEqual(options["workloads"], ["tcp-echo", "http"])
        self.assertEqual((options["rounds"], options["seconds"]), (2, 0.5))
        options = BenchOptions()
        options.parseOptions(["all", "--impl", "a-b", "--vs", "a-b=x {port}"])
        self.assertEqual(len(options["workloads"]), 9)
        self.assertEqual(options["impl"], ["a-b"])


class UserWorkloadTests(SynchronousTestCase):
    """
    The http-user and ws-user workloads: who takes part, what each runs,
    and the user's application itself.
    """

    def names(self, workload: str) -> list[str]:
        from netlab.tools.bench.runner import Settings, choose_rows
        from netlab.tools.bench.workloads import WORKLOADS

        rows, _ = choose_rows(WORKLOADS[workload], Settings([workload]))
        return [row.name for row in rows]

    def test_rows(self) -> None:
        """
        Each user workload has its own servers; the ws baselines serve both
        ws and ws-user, and the user servers no other workload, except
        netlab-http-user, which takes part in http too: ``GET /`` by the
        user's resource, a route netlab's fast path does not answer.
        """
        self.assertEqual(
            self.names("http-user"),
            ["c-http-user", "bare-web-user", "netlab-http-user", "twistd-web-user"],
        )
        self.assertEqual(self.names("ws-user"), ["c-ws", "bare-ws", "netlab-ws-user"])
        for workload in ("http", "ws", "tcp-echo"):
            names = self.names(workload)
            for user in ("netlab-ws-user", "bare-web-user", "twistd-web-user"):
                self.assertNotIn(user, names, workload)
        self.assertIn("bare-ws", self.names("ws"))
        self.assertEqual(
            self.names("http"),
            [
                "c-http",
                "bare-web",
                "netlab-http",
                "netlab-http-asyncio",
                "netlab-http-user",
                "http_server",
            ],
        )

    def test_commands(self) -> None:
        """
        The netlab servers run as shipped (no --logger); twistd web with its
        own defaults; the summaries say which log each keeps.
        """
        context = implementations.Context()
        for name, impl in implementations.BUILTIN.items():
            if impl.family == "netlab":
                self.assertNotIn("--logger", impl.argv(8000, context), name)
                self.assertIn("as shipped", impl.summary, name)
                self.assertIn("no --logger", impl.summary, name)
        argv = implementations.BUILTIN["netlab-http-user"].argv(8000, context)
        self.assertEqual(
            argv[-5:],
            [
                "netlab-http",
                "--resource",
                "netlab.tools.bench.userapp:root",
                "--listen",
                "tcp:8000:interface=127.0.0.1",
            ],
        )
        argv = implementations.BUILTIN["netlab-ws-user"].argv(8000, context)
        self.assertIn("netlab.tools.bench.userapp:handler", argv)
        argv = implementations.BUILTIN["twistd-web-user"].argv(8000, context)
        self.assertEqual(
            argv[-5:],
            [
                "web",
                "--class",
                "netlab.tools.bench.userapp.Root",
                "--listen",
                "tcp:8000:interface=127.0.0.1",
            ],
        )
        self.assertNotIn("--logger", argv)
        for name in ("netlab-http", "netlab-http-user", "twistd-web-user"):
            self.assertIn("access log on", implementations.BUILTIN[name].summary)
        for name in ("bare-web", "bare-web-user"):
            self.assertIn("no access log", implementations.BUILTIN[name].summary)

    def test_missing_plugin_option(self) -> None:
        """
        An implementation that needs a plugin option the plugin lacks is
        unavailable, saying which; with the option there, it is available.
        """
        impl = implementations.Implementation(
            "x",
            implementations.WS_USER,
            "netlab",
            "x",
            implementations.BUILTIN["netlab-ws-user"].argv,
            option=("netlab.tap.ws", "no-such-option"),
        )
        why = impl.unavailable()
        self.assertIsNotNone(why)
        self.assertIn("--no-such-option", why)
        self.assertIsNone(implementations.BUILTIN["netlab-ws-user"].unavailable())
        broken = implementations._plugin_option("netlab.tap.no_such_plugin", "x")
        self.assertIn("cannot be imported", broken)

    def test_broker_rows(self) -> None:
        """
        The rows over a broker take the URL of the redis-server the run
        starts, and are unavailable, naming the package, without one; their
        processes share both CPUs, where a one-process row has the server
        CPU to itself.
        """
        room = implementations.BUILTIN["netlab-ws-room"]
        self.assertIsNone(room.unavailable())
        self.assertFalse(room.processes)
        run = runner.Run(runner.Settings(["ws-broadcast"], server_cpu=0, load_cpu=1))
        self.assertIsNone(run.cpus(room))
        for name in ("netlab-ws-room-workers2", "netlab-ws-room-2x"):
            impl = implementations.BUILTIN[name]
            self.assertTrue(impl.broker)
            self.assertTrue(impl.processes)
            self.assertEqual(run.cpus(impl), {0, 1})
            self.assertIn("redis-server", impl.needs)
            argv = impl.argv(8000, implementations.Context(broker="redis://x:1"))
            self.assertIn("redis://x:1", argv)
            if HAVE_REDIS:
                self.assertIsNone(impl.unavailable())
        self.patch(os, "environ", dict(os.environ, PATH="/nonexistent"))
        for name in ("netlab-ws-room-workers2", "netlab-ws-room-2x"):
            self.assertEqual(
                implementations.BUILTIN[name].unavailable(),
                "redis-server not found (apt-get install redis-server)",
            )
        self.assertEqual(implementations.BUILTIN["netlab-ws-room-2x"].instances, 2)

    def test_user_resource(self) -> None:
        """
        The user's resource: ``/hello?name=NAME`` says hello to NAME.
        """
        from treq.testing import StubTreq

        from netlab.tools.bench import userapp

        for root in (userapp.root, userapp.Root()):
            client = StubTreq(root)
            response = self.successResultOf(
                client.get("http://example.com/hello?name=bench")
            )
            self.assertEqual(response.code, 200)
            body = self.successResultOf(response.text())
            self.assertEqual(body, "Hello, bench!")
            # The http workload's request, by the user's resource.
            response = self.successResultOf(client.get("http://example.com/"))
            self.assertEqual(response.code, 200)
            self.assertEqual(self.successResultOf(response.text()), HTTP_BODY)
            response = self.successResultOf(client.get("http://example.com/nothing"))
            self.assertEqual(response.code, 404)

    def test_lua_string(self) -> None:
        """
        wrk's expected body is a Lua literal of its UTF-8 bytes.
        """
        from netlab.tools.bench.generators import lua_string

        self.assertEqual(lua_string("Hello, bench!"), '"Hello, bench!"')
        self.assertEqual(lua_string('a"b\\c'), '"a\\034b\\092c"')
        self.assertEqual(lua_string("é\n"), '"\\195\\169\\010"')


class ToolsTests(SynchronousTestCase):
    """
    What the bench's tests measure against: without a C compiler they take
    their branch without the C servers and generator (and skip the wrk
    tests), without matplotlib the chart's; CI has all three.
    """

    def test_c_compiler(self) -> None:
        require(HAVE_CC, NEEDS_CC)

    def test_wrk(self) -> None:
        require(HAVE_WRK, NEEDS_WRK)

    def test_matplotlib(self) -> None:
        require(HAVE_MATPLOTLIB, NEEDS_MATPLOTLIB)


class StatsTests(SynchronousTestCase):
    """
    Ceilings and ratios, without running anything.
    """

    def summaries(self, **medians: float | None) -> dict[str, stats.Summary]:
        return {name: stats.Summary([value], False) for name, value in medians.items()}

    def test_ceiling_is_best_median(self) -> None:
        summaries = self.summaries(c=100.0, a=50.0, b=90.0)
        self.assertEqual(stats.ceiling(summaries), (100.0, "c"))

    def test_ratio(self) -> None:
        summaries = self.summaries(c=1000.0, base=100.0, fast=150.0)
        top, _ = stats.ceiling(summaries)
        self.assertEqual(stats.ratio("fast", summaries, "base", top, True), (1.5, ""))
        self.assertEqual(
            stats.ratio("base", summaries, "base", top, True),
            (1.0, "baseline"),
        )
        self.assertEqual(
            stats.ratio("c", summaries, "base", top, True),
            (None, "n/a: generator-bound"),
        )

    def test_generator_bound(self) -> None:
        """
        Within 20% of the generator's ceiling, there is no ratio.
        """
        summaries = self.summaries(c=100.0, base=50.0, near=85.0)
        top, _ = stats.ceiling(summaries)
        self.assertEqual(
            stats.ratio("near", summaries, "base", top, True),
            (None, "n/a: generator-bound"),
        )
        # Memory is never generator-bound.
        self.assertEqual(
            stats.ratio("near", summaries, "base", top, False),
            (1.7, ""),
        )

    def test_failed(self) -> None:
        summaries = self.summaries(base=50.0)
        summaries["bad"] = stats.Summary([60.0, None], True)
        self.assertEqual(
            stats.ratio("bad", summaries, "base", None, True), (None, "failed")
        )
        self.assertEqual(stats.ceiling(summaries), (50.0, "base"))


def finished_run(
    *workloads: str, failed: str = "", values: tuple[float, ...] = (100.0, 50.0, 40.0)
) -> Any:
    """
    :return: a run of ``workloads`` as the runner leaves it, without running
        anything: a C generator and wrk, and made-up figures (``values``)
        for the first rows that can run (the ceiling server, the baseline,
        ...; ``failed``: wrong replies); the rows after them are listed, not
        measured.
    """
    from netlab.tools.bench.generators import Generators, Sample
    from netlab.tools.bench.runner import Result, Run, Settings, choose_rows
    from netlab.tools.bench.workloads import WORKLOADS

    bench = Run(Settings(list(workloads)))
    bench.generators = Generators("c", ["loadgen"], "wrk", 1, 1024)
    for name in workloads:
        workload = WORKLOADS[name]
        metrics = workload.metrics(100, (1000,))
        rows, baseline = choose_rows(workload, bench.settings)
        live = [row for row in rows if row.status == "ok"]
        for row, value in zip(live, values, strict=False):
            errors = int(row.name == failed)
            row.samples = {m.key: [Sample(value, errors)] for m in metrics}
        result = Result(workload, metrics, rows, baseline)
        result.generator = {m.key: bench.generators.name(m) for m in metrics}
        bench.results.append(result)
    return bench


class ReportTests(FigureChecks, SynchronousTestCase):
    """
    What the report says of a finished run, without running one.
    """

    def test_header_names_each_workloads_generator(self) -> None:
        """
        The header names the generator each workload really used: wrk for
        http (when installed), the C generator for the others.
        """
        from netlab.tools.bench import report

        bench = finished_run("tcp-echo", "http", "ws")
        env = report.environment(bench)
        env["generator"]["spin"] = True
        (line,) = [
            line for line in report.header(bench, env) if line.startswith("generator:")
        ]
        self.assertEqual(
            line,
            "generator: C loadgen for tcp-echo, ws (busy-polling, as the C servers "
            "do while they have clients); wrk for http",
        )

    def test_plot_has_a_legend(self) -> None:
        """
        Each panel of the chart says what its colours and lines mean.
        """
        require(HAVE_MATPLOTLIB, NEEDS_MATPLOTLIB)
        import matplotlib.pyplot as plt

        from netlab.tools.bench import report

        bench = finished_run("tcp-echo", failed="bare-echo")
        drawn = report.figure(bench)
        self.addCleanup(plt.close, drawn)
        for axis in drawn.axes:
            labels = [text.get_text() for text in axis.get_legend().get_texts()]
            self.assertIn("C server (the generator's ceiling)", labels)
            self.assertIn("FAILED: wrong replies", labels)
            self.assertIn("min-max of the rounds", labels)
            self.assertIn("generator-bound above", labels)
        path = Path(tempfile.mkdtemp()) / "chart.png"
        self.addCleanup(shutil.rmtree, path.parent)
        report.plot(str(path), bench)
        self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")

    def test_plot_says_what_each_runs(self) -> None:
        """
        Each bar's label names its implementation, its transport and its
        fast path.
        """
        require(HAVE_MATPLOTLIB, NEEDS_MATPLOTLIB)
        import matplotlib.pyplot as plt

        from netlab.tools.bench import report

        bench = finished_run("http", values=(100.0, 50.0, 40.0, 30.0))
        drawn = report.figure(bench)
        self.addCleanup(plt.close, drawn)
        (axis,) = drawn.axes
        labels = [tick.get_text() for tick in axis.get_xticklabels()]
        self.assertEqual(
            labels[:4],
            [
                "c-http\nC epoll\nno fast path",
                "bare-web\nstock Twisted\nno fast path",
                "netlab-http\nnetlab flushing\nfast path: fixed answers",
                "netlab-http-asyncio\nnetlab flushing\nfast path: fixed answers",
            ],
        )

    def made_up(self, *workloads: str, failed: str = "") -> tuple[str, Any]:
        """
        :return: the table and the JSON of a made-up run of ``workloads``
            with three rounds of each figure (median and mean apart).
        """
        from netlab.tools.bench import report
        from netlab.tools.bench.generators import Sample

        values = (100.0, 50.0, 45.0, 35.0, 30.0, 20.0)
        bench = finished_run(*workloads, failed=failed, values=values)
        for result in bench.results:
            for row in result.rows:
                for samples in row.samples.values():
                    (first,) = samples
                    samples += [
                        Sample(first.value * 3, first.errors),
                        Sample(first.value * 0.9, 0),
                    ]
        env = report.environment(bench)
        data = json.loads(json.dumps(report.as_json(bench, env)))
        return report.text(bench, env), data

    def test_figures_from_the_samples(self) -> None:
        """
        Each median, ceiling and ratio, in the table and the JSON, is what
        the samples make (checked by recomputing them): a ratio to the
        baseline's median, n/a near the generator's ceiling, failed for
        wrong replies.
        """
        table, data = self.made_up("tcp-echo", "http", "ws", failed="netlab-ws")
        for workload in ("tcp-echo", "http", "ws"):
            self.assert_ratios(table, data, workload)
        # Against figures worked out by hand.
        http = {
            row["name"]: row for row in data["workloads"]["http"]["implementations"]
        }
        self.assertEqual(http["c-http"]["note"]["req_s"], "n/a: generator-bound")
        self.assertEqual(http["bare-web"]["ratio"]["req_s"], 1.0)
        self.assertEqual(http["netlab-http"]["ratio"]["req_s"], 0.9)
        self.assertEqual(http["netlab-http-asyncio"]["ratio"]["req_s"], 0.7)
        self.assertEqual(printed_table(table, "http")["netlab-http"][1], "0.90")
        ws = {row["name"]: row for row in data["workloads"]["ws"]["implementations"]}
        self.assertEqual(ws["netlab-ws"]["note"]["msg_s"], "failed")

    def test_table_says_what_each_runs(self) -> None:
        """
        Under each workload's figures, a line per implementation says what
        it runs: transport, logger, access log (HTTP) and fast path; the
        JSON says the same; the ratio's line says netlab's rows are not
        stock Twisted.
        """
        table, data = self.made_up("tcp-echo", "http")
        for workload in ("tcp-echo", "http"):
            section = section_of(table, workload)
            (head,) = [
                line
                for line in section.splitlines()
                if line.startswith("  what each runs")
            ]
            self.assertEqual(
                head.split(),
                ["what", "each", "runs", "transport", "logger"]
                + (["access", "log"] if workload == "http" else [])
                + ["fast", "path"],
            )
            self.assertIn("not stock Twisted's", section)
            for row in data["workloads"][workload]["implementations"]:
                runs = row["runs"]
                (line,) = [
                    line
                    for line in section.splitlines()[section.splitlines().index(head) :]
                    if line.split()[:1] == [row["name"]]
                ]
                words = [runs["transport"], runs["logger"], runs["fast_path"]]
                words += [runs["access_log"]] if workload == "http" else []
                for word in words:
                    self.assertIn(word, line, row["name"])
        http = {
            row["name"]: row["runs"]
            for row in data["workloads"]["http"]["implementations"]
        }
        self.assertEqual(http["bare-web"]["transport"], "stock Twisted, epoll reactor")
        self.assertEqual(
            (http["bare-web"]["logger"], http["bare-web"]["access_log"]),
            ("none", "off"),
        )
        self.assertEqual(
            http["netlab-http"]["transport"], "netlab flushing, epoll reactor"
        )
        self.assertEqual(http["netlab-http"]["access_log"], "on")
        self.assertIn("fixed answers", http["netlab-http"]["fast_path"])
        self.assertTrue(http["netlab-http-user"]["fast_path"].startswith("none"))
        self.assertIn("asyncio", http["netlab-http-asyncio"]["transport"])

    def test_fast_path_claims(self) -> None:
        """
        What the tables say of netlab's fast paths is what the code does:
        the service answers the http workload's ``GET /`` from the request
        head, the user's resource under ``--resource`` does not, and the
        WebSocket protocol has its frame fast path.
        """
        from netlab import http, websocket
        from netlab.services import hello
        from netlab.tools.bench import userapp
        from netlab.tools.bench.workloads import HTTP_PATH

        self.assertIsInstance(hello.Root().fixed_route(HTTP_PATH.encode()), http.Fixed)
        self.assertIsNone(http.UserRoot(userapp.root).fixed_route(HTTP_PATH.encode()))
        self.assertTrue(hasattr(websocket.WebSocketProtocol, "_choose_fast_paths"))
        runs = {name: impl.runs for name, impl in implementations.BUILTIN.items()}
        self.assertIn("GET /", runs["netlab-http"].fast_path)
        self.assertIn("user's resource", runs["netlab-http-user"].fast_path)

    def test_install_hint_matches_readme(self) -> None:
        """
        ``--plot``'s install hint is the one README gives.
        """
        readme = (Path(__file__).parent.parent / "README.md").read_text()
        (hint,) = set(re.findall(r"`(pip install '[^`]*\[plot\]')`", readme))
        self.assertIn(hint, BenchOptions().getUsage(width=200))


class ExternalTests(SynchronousTestCase):
    """
    ``--vs NAME=CMD``.
    """

    def test_command(self) -> None:
        impl = implementations.external("mine=./server --port {port} -v")
        self.assertEqual(impl.name, "mine")
        argv = impl.argv(1234, implementations.Context())
        self.assertEqual(argv, ["/bin/sh", "-c", "exec ./server --port 1234 -v"])

    def test_mistakes(self) -> None:
        for spec in (
            "no-equals",
            "=cmd {port}",
            "x=",
            "x=server",
            "bare-echo=server {port}",
            "bad name=server {port}",
            "x=server {port} {other}",
        ):
            with self.assertRaises(ValueError, msg=spec):
                implementations.external(spec)


#: What a row that cannot run here must name: the tool or option it lacks.
UNAVAILABLE = (
    r"no C compiler \(gcc\)|module \S+ not found|has no --\S+ option"
    r"|redis-server not found"
)


def section_of(table: str, workload: str) -> str:
    """
    :return: the part of ``table`` about ``workload``: its title and the
        indented lines after it.
    """
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(workload + ": "))
    end = start + 1
    while end < len(lines) and (not lines[end] or lines[end].startswith("  ")):
        end += 1
    return "\n".join(lines[start:end])


def _section(table: str, summary: str) -> str:
    """
    :return: the part of ``table`` from the workload whose summary is
        ``summary`` to the next workload's title.
    """
    start = table.index(summary)
    end = table.find("\n\n", table.index("  implementation", start))
    return table[start : end if end >= 0 else len(table)]


def printed_table(table: str, workload: str) -> dict[str, list[str]]:
    """
    :return: the cells of each row of ``workload``'s figures as the table
        printed them (after its name): each figure then its ratio, or, for a
        row not measured, why.
    """
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(workload + ": "))
    head = next(
        i for i in range(start, len(lines)) if lines[i].startswith("  implementation")
    )
    rows = {}
    for line in lines[head + 2 :]:
        if not line.strip():
            break
        name, *cells = re.split(r"\s{2,}", line.strip())
        rows[name.removesuffix(" (baseline)")] = cells
    return rows


def _ports(command: list[str]) -> list[int]:
    """
    :return: the ports a server's command line listens on.
    """
    ports = []
    words = " ".join(command).replace(":", " ").replace("=", " ").split()
    for before, word in zip(words, words[1:], strict=False):
        if before in ("--port", "tcp") and word.isdigit():
            ports.append(int(word))
    return ports
