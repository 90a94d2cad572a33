"""
The load generator of the ``ws-broadcast`` workload: ``--subscribers``
WebSocket connections in one room, and one publisher.

First the publisher sends ``sync`` messages (one every
:data:`SYNC_INTERVAL` seconds) until every subscriber has received one: in
a room shared through a broker, a subscriber's process may join the room's
channel a moment after the subscriber connects, and no message of the run
must be published before. Then it sends text messages ``SEQ NANOSECONDS``
(its monotonic clock, which the subscribers share: one process) with at
most ``--window`` of them not yet received by every subscriber; the server
sends each to every member of the room (the publisher reads and drops its
own copies, if it gets them). Each subscriber checks that it receives every
message exactly once, in order; a message that some subscriber has not
received within ``--deliver-timeout`` seconds (the first ``sync`` too) ends
the run with an error.

After ``--warmup`` seconds, for ``--seconds``: every delivery counts (one
message received by one subscriber), and its latency (received minus
published). The result is one JSON line: ``ops`` (deliveries), ``seconds``,
``p50_ms``, ``p99_ms``, ``published``, ``subscribers`` (how many on each
port), ``cpu`` (the generator's CPU time over the counted seconds: near 1,
it is the bottleneck), ``watched`` (the same for the process group of each
``--watch PGID``: the servers), ``errors`` and the first ``error``.

It is Python (asyncio, one process): against a fast server it measures
itself as much as the server, as the table says.

``python -m netlab.tools.bench.fanout --port PORT [--port PORT2 ...] [options]``
(with several ports, the subscribers are spread over them and the publisher
uses the first: instances sharing one room through a broker).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import statistics
import sys
import time

from netlab.tools.bench.processes import group_cpu

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Connections opening at once.
OPENING = 64
READ_SIZE = 65536
#: The most latencies kept (a bounded list; past it, deliveries still count).
MAX_LATENCIES = 2_000_000
#: A frame the server sends larger than this is an error (the messages are
#: a few dozen bytes).
MAX_FRAME = 65536
#: Seconds between two ``sync`` messages, while some subscriber has none.
SYNC_INTERVAL = 0.1
SYNC = b"sync"


class Failed(Exception):
    """What the server did that it should not have."""


def frame(opcode: int, payload: bytes) -> bytes:
    """
    :return: a masked client frame (payloads under 126 bytes).
    """
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def open_websocket(
    host: str, port: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """
    :return: a connection that made the opening handshake (its answer
        checked).
    """
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    writer.write(
        f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key.decode()}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 ") or accept not in head:
        writer.close()
        raise Failed(f"handshake: {head.splitlines()[0][:80]!r}")
    return reader, writer


class Run:
    """
    One measurement: the room's subscribers, its publisher, the counts.
    """

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.counting = False
        self.deliveries = 0
        self.latencies: list[int] = []
        #: How many subscribers have each message still in flight.
        self.missing: dict[int, int] = {}
        self.window = asyncio.Semaphore(args.window)
        #: How many subscribers have received a ``sync`` message.
        self.joined = 0
        self.all_joined = asyncio.Event()
        self.errors = 0
        self.error = ""

    def fail(self, why: str) -> None:
        self.errors += 1
        if not self.error:
            self.error = why

    def delivered(self, seq: int, published: int) -> None:
        now = time.monotonic_ns()
        left = self.missing.get(seq)
        if left is None:
            raise Failed(f"message {seq} was never published, or came twice")
        if left == 1:
            del self.missing[seq]
            self.window.release()
        else:
            self.missing[seq] = left - 1
        if self.counting:
            self.deliveries += 1
            if len(self.latencies) < MAX_LATENCIES:
                self.latencies.append(now - published)

    async def subscribe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """
        Read the room's messages until cancelled: each in order, each once.
        """
        buffer = b""
        # Every subscriber is in the room before the first message.
        expect = 0
        synced = False
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                raise Failed("the server closed a subscriber's connection")
            buffer += data
            start = 0
            while len(buffer) - start >= 2:
                first, second = buffer[start], buffer[start + 1]
                size, at = second & 0x7F, start + 2
                if second & 0x80:
                    raise Failed("a masked frame from the server")
                if size == 126:
                    if len(buffer) - at < 2:
                        break
                    size, at = int.from_bytes(buffer[at : at + 2], "big"), at + 2
                elif size == 127:
                    raise Failed("a frame of more than 64 KiB")
                if size > MAX_FRAME:
                    raise Failed("a frame of more than 64 KiB")
                if len(buffer) - at < size:
                    break
                payload = buffer[at : at + size]
                start = at + size
                opcode = first & 0x0F
                if opcode == 0x9:  # ping: answer it
                    writer.write(frame(0xA, payload))
                    continue
                if opcode == 0xA:
                    continue
                if opcode != 0x1 or not first & 0x80:
                    raise Failed(f"an unexpected frame (opcode {opcode})")
                if payload == SYNC:
                    # Not counted, and harmless again: a broker may hand
                    # one back late.
                    if not synced:
                        synced = True
                        self.joined += 1
                        if self.joined == self.args.subscribers:
                            self.all_joined.set()
                    continue
                try:
                    seq_text, stamp = payload.split()
                    seq, published = int(seq_text), int(stamp)
                except ValueError:
                    raise Failed(f"an unexpected message: {payload[:40]!r}") from None
                if seq != expect:
                    raise Failed(f"message {seq} arrived where {expect} was due")
                expect = seq + 1
                self.delivered(seq, published)
            buffer = buffer[start:]

    async def sync(self, writer: asyncio.StreamWriter) -> None:
        """
        Publish ``sync`` until every subscriber has received one.
        """
        deadline = time.monotonic() + self.args.deliver_timeout
        while not self.all_joined.is_set():
            if time.monotonic() >= deadline:
                raise Failed(
                    f"the room's first message was not delivered to every "
                    f"subscriber within {self.args.deliver_timeout:g} s "
                    f"({self.joined} of {self.args.subscribers} got one)"
                )
            writer.write(frame(0x1, SYNC))
            await writer.drain()
            try:
                await asyncio.wait_for(self.all_joined.wait(), SYNC_INTERVAL)
            except TimeoutError:
                pass

    @staticmethod
    async def drain(reader: asyncio.StreamReader) -> None:
        """
        Read and drop what the publisher gets (its own messages, from a
        room that sends them to every member), until the connection ends.
        """
        while await reader.read(READ_SIZE):
            pass

    async def publish(self, writer: asyncio.StreamWriter, stop: float) -> int:
        """
        Publish until the monotonic clock reaches ``stop``.

        :return: how many messages were published.
        """
        seq = 0
        subscribers = self.args.subscribers
        while time.monotonic() < stop:
            try:
                await asyncio.wait_for(self.window.acquire(), self.args.deliver_timeout)
            except TimeoutError:
                raise Failed(
                    f"a message was not delivered to every subscriber within "
                    f"{self.args.deliver_timeout:g} s"
                ) from None
            self.missing[seq] = subscribers
            message = b"%d %d" % (seq, time.monotonic_ns())
            writer.write(frame(0x1, message))
            await writer.drain()
            seq += 1
        return seq

    async def run(self) -> dict[str, object]:
        args = self.args
        opening = asyncio.Semaphore(OPENING)
        ports = args.port

        async def one(index: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            async with opening:
                return await open_websocket(args.host, spread[index])

        connections = []
        tasks: list[asyncio.Task[None]] = []
        report: dict[str, object] = {"ops": 0, "seconds": 0.0, "published": 0}
        # How many subscribers each port serves.
        spread = [ports[i % len(ports)] for i in range(args.subscribers)]
        report["subscribers"] = {str(p): spread.count(p) for p in dict.fromkeys(ports)}
        try:
            connections = await asyncio.wait_for(
                asyncio.gather(*(one(i) for i in range(args.subscribers))),
                args.setup_timeout,
            )
            publisher = await asyncio.wait_for(
                open_websocket(args.host, ports[0]), args.setup_timeout
            )
            connections.append(publisher)
            tasks = [
                asyncio.ensure_future(self.subscribe(reader, writer))
                for reader, writer in connections[:-1]
            ]
            subscribers = list(tasks)
            syncing = asyncio.ensure_future(self.sync(publisher[1]))
            # Cancelled at the end, whatever happens (not waited for: it
            # ends only when the server closes the connection).
            tasks += [syncing, asyncio.ensure_future(self.drain(publisher[0]))]
            # Until every subscriber is in, or one of them fails.
            done, _ = await asyncio.wait(
                {syncing, *subscribers}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            started = time.monotonic()
            begin = started + args.warmup
            end = begin + args.seconds
            publishing = asyncio.ensure_future(self.publish(publisher[1], end))

            async def count() -> float:
                await asyncio.sleep(max(0.0, begin - time.monotonic()))
                self.counting, counted_from = True, time.monotonic()
                cpu_from = time.process_time()
                watched = [group_cpu(pgid) for pgid in args.watch]
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                self.counting = False
                counted = time.monotonic() - counted_from
                report["cpu"] = round((time.process_time() - cpu_from) / counted, 3)
                report["watched"] = {
                    str(pgid): round((group_cpu(pgid) - used) / counted, 3)
                    for pgid, used in zip(args.watch, watched, strict=True)
                }
                return counted

            counting = asyncio.ensure_future(count())
            # Until the publisher and the count are done; a subscriber's
            # task ends only by failing.
            waiting = {publishing, counting, *subscribers}
            while not (publishing.done() and counting.done()):
                done, waiting = await asyncio.wait(
                    waiting, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
            report["published"] = await publishing
            report["seconds"] = await counting
            report["ops"] = self.deliveries
        except Failed as failure:
            self.fail(str(failure))
        except (OSError, asyncio.IncompleteReadError) as error:
            self.fail(f"connection: {error}")
        except TimeoutError:
            self.fail(f"set-up took more than {args.setup_timeout:g} s")
        finally:
            for task in tasks:
                task.cancel()
            for _, writer in connections:
                # A close frame (1000), then the connection: no waiting for
                # the server's own.
                if not writer.is_closing():
                    writer.write(frame(0x8, (1000).to_bytes(2, "big")))
                writer.close()
        if self.latencies:
            ordered = sorted(self.latencies)
            report["p50_ms"] = statistics.median(ordered) / 1e6
            report["p99_ms"] = (
                ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] / 1e6
            )
        report["errors"], report["error"] = self.errors, self.error
        return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.25)
    parser.add_argument("--setup-timeout", type=float, default=15.0)
    parser.add_argument("--deliver-timeout", type=float, default=5.0)
    parser.add_argument("--watch", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    if args.subscribers < 1 or args.window < 1:
        parser.error("--subscribers and --window must be at least 1")
    report = asyncio.run(Run(args).run())
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
