"""
Starting, pinning, watching and stopping the processes of a run.

Every server runs in a session (process group) of its own, pinned to the
server CPU, with its output in a log file; it is waited for (bounded) and
always stopped: SIGTERM to its whole group, then SIGKILL. Should the bench
itself die, the kernel sends each server SIGTERM (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1

#: Seconds a server gets to stop after SIGTERM before it is killed.
STOP_SECONDS = 5.0


def raise_nofile(wanted: int) -> None:
    """
    Let this process hold ``wanted`` file descriptors: the soft limit up to
    the hard one, and the hard one too where this process may (root).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def nofile_limit() -> int:
    """
    :return: this process's soft limit on file descriptors.
    """
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def preexec(
    cpu: int | frozenset[int], nofile: int, *, die_with_parent: bool
) -> Callable[[], None]:
    """
    :return: what a child runs before ``exec``: pin it to ``cpu`` (or a set
        of CPUs), raise its descriptor limit to ``nofile``, and ask for
        SIGTERM when the bench dies.
    """
    cpus = {cpu} if isinstance(cpu, int) else set(cpu)

    def setup() -> None:
        os.sched_setaffinity(0, cpus)
        raise_nofile(nofile)
        if die_with_parent:
            with contextlib.suppress(OSError, AttributeError):
                libc = ctypes.CDLL(None, use_errno=True)
                libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return setup


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_given: set[int] = set()


def free_port() -> int:
    """
    :return: a loopback TCP port nothing listens on, below the ephemeral
        range (so the load generator's own ports, thousands of them for the
        idle workload, never take it), and not given before in this run.
    """
    low, _ = _ephemeral_range()
    top = max(low, 12000)
    for _ in range(1000):
        port = random.randrange(10000, top)
        if port in _given:
            continue
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        _given.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def accepts(port: int) -> bool:
    """
    :return: whether something accepts TCP connections on the loopback ``port``.
    """
    with socket.socket() as probe:
        probe.settimeout(1.0)
        try:
            probe.connect((LOOPBACK, port))
        except OSError:
            return False
    return True


class StartError(Exception):
    """
    A server did not start; the message says why, in one line.
    """


@dataclass
class Server:
    """
    A running server process (and the group it leads).
    """

    name: str
    argv: Sequence[str]
    port: int
    log: Path
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def last_words(self) -> str:
        """
        :return: the last non-empty line of the server's output, if any.
        """
        with contextlib.suppress(OSError):
            lines = self.log.read_text(errors="replace").strip().splitlines()
            if lines:
                return lines[-1].strip()[:200]
        return ""

    def wait_ready(self, timeout: float) -> None:
        """
        Wait until the server accepts connections on its port.

        :raise StartError: if it exits first, or after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                words = self.last_words()
                raise StartError(
                    f"exited with status {self.process.returncode}"
                    + (f": {words}" if words else "")
                )
            if accepts(self.port):
                return
            time.sleep(0.05)
        raise StartError(f"not accepting connections after {timeout:g}s")

    def stop(self) -> None:
        """
        SIGTERM to the server's process group, then SIGKILL after
        :data:`STOP_SECONDS`; reaps the server.
        """
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                pass
        # Whatever the group still holds (a forking server's children).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_SECONDS)

    def memory(self) -> dict[str, int]:
        """
        :return: the server's memory: ``rss`` and ``pss`` in bytes, summed over
            every process of its group, and ``processes``, how many there are.
        """
        return group_memory(self.pid)


class Servers:
    """
    Every server started, so that all are stopped whatever happens.
    """

    def __init__(self, cpu: int, nofile: int, log_dir: Path) -> None:
        self.cpu = cpu
        self.nofile = nofile
        self.log_dir = log_dir
        self.running: list[Server] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: dict[str, str],
        cpus: frozenset[int] | None = None,
    ) -> Server:
        """
        Start ``argv`` pinned to the server CPU (or to ``cpus``), its output
        in a log file.
        """
        log = self.log_dir / f"{name}-{port}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,
                env=env,
                start_new_session=True,
                preexec_fn=preexec(
                    self.cpu if cpus is None else cpus,
                    self.nofile,
                    die_with_parent=True,
                ),
            )
        server = Server(name, argv, port, log, process)
        self.running.append(server)
        return server

    def stop(self, server: Server) -> None:
        server.stop()
        with contextlib.suppress(ValueError):
            self.running.remove(server)

    def stop_all(self) -> None:
        for server in list(self.running):
            self.stop(server)


def _group(pgid: int) -> Iterator[tuple[str, list[str]]]:
    """
    :return: the ``/proc`` folder of each process of the process group
        ``pgid``, with the fields of its ``stat`` after the command name
        (which may hold spaces).
    """
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid:
                yield entry.path, fields
        except (OSError, ValueError, IndexError):
            continue


def group_memory(pgid: int) -> dict[str, int]:
    """
    :return: ``rss`` and ``pss`` (bytes) summed over the processes of the
        process group ``pgid``, and ``processes``, how many there are.
    """
    rss = pss = count = 0
    for path, _ in _group(pgid):
        count += 1
        try:
            for line in Path(path, "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
            for line in Path(path, "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return {"rss": rss, "pss": pss, "processes": count}


def group_cpu(pgid: int) -> float:
    """
    :return: the CPU seconds (user and system) the processes of the process
        group ``pgid`` have used so far.
    """
    ticks = sum(int(fields[11]) + int(fields[12]) for _, fields in _group(pgid))
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_available() -> float:
    """
    :return: the share of the machine's memory still available (0 to 1).
    """
    info = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info[key] = int(value.split()[0])
    if not info.get("MemTotal"):
        return 1.0
    return info.get("MemAvailable", info["MemTotal"]) / info["MemTotal"]
