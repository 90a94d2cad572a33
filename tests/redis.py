"""
A real ``redis-server`` for tests: started on a free loopback port with no
persistence, ready once it says so, stopped by its process id; and a small
txredisapi client to look at it with.

Tests that need it skip, with the reason, where ``redis-server`` or
txredisapi is not installed (CI installs both).
"""

from __future__ import annotations

import shutil
import socket
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.trial.unittest import TestCase

from tests.support import WAIT, Child, bounded, require, spawn

READY = rb"Ready to accept connections"


def missing() -> str | None:
    """
    :return: why the Redis tests cannot run here, or ``None``.
    """
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (Debian: apt-get install redis-server)"
    try:
        import txredisapi  # noqa: F401
    except ImportError:
        return "txredisapi is not installed (pip install netlab[test])"
    return None


def free_port() -> int:
    """
    :return: a loopback port nothing listens on (yet).
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """
    One ``redis-server`` on 127.0.0.1, stopped in the test's cleanup.
    """

    def __init__(self, case: TestCase, port: int | None = None) -> None:
        why = missing()
        require(why is None, why or "")
        self.case = case
        self.port = free_port() if port is None else port
        self.child: Child | None = None
        case.addCleanup(self.stop)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self, *more: str) -> RedisServer:
        """
        Start it with ``more`` arguments (again, on the same port and with
        the same arguments, after :meth:`stop`), and wait until it accepts
        connections.
        """
        self.more = more or getattr(self, "more", ())
        args = [
            shutil.which("redis-server") or "redis-server",
            *("--port", str(self.port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            *self.more,
        ]
        self.child = spawn(args, watch=READY)
        await bounded(self.child.protocol.seen)
        return self

    async def stop(self) -> None:
        """
        Stop it by its process id (SIGTERM, then SIGKILL), and wait until
        it has ended.
        """
        child, self.child = self.child, None
        if child is None or child.protocol.ended.called:
            return
        try:
            child.signal("TERM")
        except ProcessExitedAlready:
            return
        try:
            await bounded(defer.Deferred.fromCoroutine(child.ended()), WAIT / 2)
        except Exception:
            try:
                child.signal("KILL")
            except ProcessExitedAlready:
                return
            await child.ended()

    async def client(self) -> Any:
        """
        :return: a txredisapi connection to it, closed in cleanup.
        """
        import txredisapi

        connection = await bounded(
            txredisapi.Connection(
                "127.0.0.1", self.port, reconnect=False, replyTimeout=WAIT
            )
        )
        self.case.addCleanup(lambda: bounded(connection.disconnect()))
        return connection
