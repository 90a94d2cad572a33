"""
The load generator in Python, for machines without a C compiler: the same
command line, modes, checks and output as ``c/loadgen.c``, on ``selectors``.

One Python process on one core cannot keep a Python server busy, so its
figures measure the generator as much as the server: tables made with it
say so.

``python -m netlab.tools.bench.pyloadgen MODE --port PORT [options]``
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import selectors
import socket
import sys
import time

MAX_PENDING = 64
PERIOD = 251
READ_SIZE = 262144
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The modes that hold connections instead of measuring a rate.
IDLE_MODES = ("idle", "ws-idle")


class Failed(Exception):
    """A reply that is not what was expected."""


class Conn:
    def __init__(self, gen: Generator, ident: int) -> None:
        self.gen = gen
        self.id = ident
        self.sock = socket.socket()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state = "connecting"
        self.established = False
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.seq = 0
        self.msg = b""
        self.sent = self.recvd = 0
        self.accept = b""
        self.events = selectors.EVENT_WRITE
        gen.sel.register(self.sock, self.events, self)

    def connect(self) -> None:
        err = self.sock.connect_ex((self.gen.args.host, self.gen.args.port))
        if err not in (0, errno.EINPROGRESS):
            raise Failed(f"connect: {os.strerror(err)}")

    def watch(self, write: bool) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if write else 0)
        if events != self.events:
            self.gen.sel.modify(self.sock, events, self)
            self.events = events

    def send(self, data: bytes) -> None:
        self.outbox += data
        self.flush()

    def flush(self) -> None:
        if self.outbox:
            try:
                sent = self.sock.send(self.outbox)
            except BlockingIOError:
                sent = 0
            del self.outbox[:sent]
        self.watch(bool(self.outbox))

    def message(self) -> bytes:
        size = self.gen.args.size
        head = b"%08x %016x " % (self.id, self.seq)
        pad = bytes(97 + (self.seq + i) % 26 for i in range(len(head), size))
        self.seq += 1
        self.msg = (head + pad)[:size]
        return self.msg

    def ws_frame(self, opcode: int, payload: bytes) -> bytes:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        if len(payload) < 126:
            head = bytes([0x80 | opcode, 0x80 | len(payload)])
        else:
            head = bytes([0x80 | opcode, 0x80 | 126]) + len(payload).to_bytes(2, "big")
        return head + mask + masked

    def request(self) -> None:
        mode = self.gen.args.mode
        if mode in ("echo", "idle"):
            self.send(self.message())
        elif mode == "http":
            args = self.gen.args
            head = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
            self.send(head.encode() + b"\r\n")
        elif mode in ("ws", "ws-idle"):
            self.send(self.ws_frame(1, self.message()))

    def start(self) -> None:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise Failed(f"connect: {os.strerror(err)}")
        self.state = "open"
        self.watch(False)
        mode = self.gen.args.mode
        if mode == "bulk":
            self.pump()
        elif mode in ("ws", "ws-idle"):
            key = base64.b64encode(os.urandom(16))
            self.accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            args = self.gen.args
            self.state = "handshake"
            self.send(
                f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key.decode()}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            )
        else:
            self.request()

    def complete(self) -> None:
        gen = self.gen
        if not self.established:
            self.established = True
            gen.established += 1
            gen.in_progress -= 1
            gen.held += 1
        elif gen.phase == "measure":
            gen.ops += 1
        if gen.args.mode not in IDLE_MODES:
            self.request()

    def pump(self) -> None:
        gen = self.gen
        window = gen.args.window * gen.args.size
        blocked = False
        while self.sent - self.recvd < window:
            n = min(gen.args.size, window - (self.sent - self.recvd))
            start = self.sent % PERIOD
            try:
                sent = self.sock.send(gen.pattern[start : start + n])
            except BlockingIOError:
                blocked = True
                break
            self.sent += sent
        self.watch(blocked)

    def readable(self) -> None:
        gen = self.gen
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        if not data:
            raise Failed(
                "the server closed an idle connection"
                if self.established and gen.args.mode in IDLE_MODES
                else "the server closed the connection"
            )
        mode = gen.args.mode
        if mode == "bulk":
            if self.recvd + len(data) > self.sent:
                raise Failed("more bytes echoed than sent")
            start = self.recvd % PERIOD
            if data != gen.pattern[start : start + len(data)]:
                raise Failed(f"echoed bytes differ from those sent at {self.recvd}")
            self.recvd += len(data)
            if gen.phase == "measure":
                gen.bytes += len(data)
            if not self.established:
                self.complete()
            self.pump()
            return
        self.inbox += data
        if mode in ("echo", "idle"):
            if self.established and mode == "idle":
                raise Failed("bytes from the server on an idle connection")
            if len(self.inbox) < len(self.msg):
                return
            if self.inbox != self.msg:
                raise Failed("reply differs from the message sent")
            self.inbox.clear()
            if gen.phase == "measure":
                gen.bytes += len(self.msg)
            self.complete()
        elif mode == "http":
            self.check_http()
        else:
            self.check_ws()

    def check_http(self) -> None:
        end = self.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(self.inbox) > 65536:
                raise Failed("response head longer than 64 KiB")
            return
        head = bytes(self.inbox[: end + 4])
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 200 "):
            raise Failed(f"status {lines[0][:60]}")
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if fields.get("connection", "").lower() == "close":
            raise Failed("the server closes keep-alive connections")
        if "content-length" not in fields:
            raise Failed(
                "chunked responses are not supported"
                if "transfer-encoding" in fields
                else "no Content-Length"
            )
        size = int(fields["content-length"])
        if len(self.inbox) < end + 4 + size:
            return
        if len(self.inbox) > end + 4 + size:
            raise Failed("more bytes than one response")
        body = bytes(self.inbox[end + 4 :])
        expect = self.gen.args.expect.encode()
        if expect and body != expect:
            raise Failed(f"body {body[:40]!r} is not {expect.decode()}")
        self.inbox.clear()
        self.complete()

    def check_ws(self) -> None:
        if self.state == "handshake":
            end = self.inbox.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.inbox[: end + 4]).decode("latin-1")
            del self.inbox[: end + 4]
            lines = head.split("\r\n")
            if not lines[0].startswith("HTTP/1.1 101"):
                raise Failed(f"handshake refused: {lines[0][:60]}")
            accept = ""
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "sec-websocket-accept":
                    accept = value.strip()
            if accept.encode() != self.accept:
                raise Failed("wrong Sec-WebSocket-Accept")
            self.state = "open"
            self.request()
        while len(self.inbox) >= 2:
            b0, b1 = self.inbox[0], self.inbox[1]
            if b1 & 0x80:
                raise Failed("a masked frame from the server")
            size, head = b1 & 0x7F, 2
            if size == 126:
                if len(self.inbox) < 4:
                    return
                size, head = int.from_bytes(self.inbox[2:4], "big"), 4
            elif size == 127:
                raise Failed("a frame of more than 64 KiB")
            if len(self.inbox) < head + size:
                return
            payload = bytes(self.inbox[head : head + size])
            del self.inbox[: head + size]
            opcode = b0 & 0x0F
            if opcode == 9:
                self.send(self.ws_frame(10, payload))
                continue
            if opcode == 10:
                continue
            if opcode == 8:
                code = int.from_bytes(payload[:2], "big") if size >= 2 else 1005
                raise Failed(f"the server closed the WebSocket ({code})")
            if opcode != 1 or not b0 & 0x80:
                raise Failed(f"unexpected frame (opcode {opcode}, fin {b0 >> 7})")
            if self.established and self.gen.args.mode == "ws-idle":
                raise Failed("a message from the server on an idle connection")
            if payload not in (self.msg, b"Echo: " + self.msg):
                raise Failed(f"reply {payload[:40]!r} is not an echo of the message")
            self.complete()


class Generator:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.phase = "setup"
        self.opened = self.established = self.dead = self.in_progress = 0
        self.held = self.ops = self.bytes = self.errors = 0
        self.error = ""
        self.pattern = b""
        if args.mode == "bulk":
            self.pattern = bytes(
                ((i % PERIOD) * 7 + 13) & 0xFF
                for i in range(PERIOD + max(args.size, READ_SIZE))
            )

    def fail(self, conn: Conn | None, why: str) -> None:
        self.errors += 1
        if not self.error:
            self.error = f"connection {conn.id}: {why}" if conn else why
        if conn is not None and conn.state != "dead":
            self.sel.unregister(conn.sock)
            conn.sock.close()
            if conn.established:
                self.held -= 1
            else:
                self.in_progress -= 1
            conn.state = "dead"
            self.dead += 1

    def open_more(self, upto: int) -> None:
        while self.opened < upto and self.in_progress < MAX_PENDING:
            self.opened += 1
            self.in_progress += 1
            try:
                conn = Conn(self, len(self.conns))
            except OSError as error:
                self.in_progress -= 1
                self.dead += 1
                self.fail(None, f"socket: {error.strerror}")
                continue
            self.conns.append(conn)
            try:
                conn.connect()
            except Failed as error:
                self.fail(conn, str(error))

    def poll(self, timeout: float) -> None:
        for key, mask in self.sel.select(timeout):
            conn = key.data
            try:
                if conn.state == "connecting":
                    conn.start()
                    continue
                if mask & selectors.EVENT_READ:
                    conn.readable()
                if conn.state != "dead" and mask & selectors.EVENT_WRITE:
                    conn.pump() if self.args.mode == "bulk" else conn.flush()
            except Failed as error:
                self.fail(conn, str(error))
            except OSError as error:
                self.fail(conn, error.strerror or str(error))

    def result(self, **extra: object) -> str:
        return json.dumps(
            {
                "mode": self.args.mode,
                "connections": self.args.connections,
                "established": self.established,
                "held": self.held,
                **extra,
                "ops": self.ops,
                "bytes": self.bytes,
                "errors": self.errors,
                "error": self.error,
            }
        )

    def run(self) -> None:
        args = self.args
        n = args.connections
        phase_end = time.monotonic() + args.setup_timeout
        started = measured = 0.0
        while True:
            now = time.monotonic()
            if self.phase == "setup":
                if self.opened == n and self.in_progress == 0:
                    self.phase, phase_end = "warmup", now + args.warmup
                elif now >= phase_end:
                    stuck = self.in_progress + n - self.opened
                    self.fail(
                        None,
                        f"{stuck} of {n} connections not established "
                        f"within {args.setup_timeout:g}s",
                    )
                    break
            if self.phase == "warmup" and now >= phase_end:
                self.phase, started, phase_end = "measure", now, now + args.seconds
            if self.phase == "measure" and now >= phase_end:
                measured = now - started
                break
            if self.opened == n and self.dead == n:
                break
            if self.phase == "setup":
                self.open_more(n)
            self.poll(min(0.1, max(0.0, phase_end - now)))
        if self.phase == "measure" and not measured:
            measured = time.monotonic() - started
        sys.stdout.write(self.result(seconds=round(measured, 6)) + "\n")
        sys.stdout.flush()

    def run_idle(self) -> None:
        for level in self.args.levels:
            deadline = time.monotonic() + self.args.setup_timeout
            while (self.opened < level or self.in_progress) and (
                time.monotonic() < deadline
            ):
                self.open_more(level)
                self.poll(0.05)
            stuck = self.in_progress + level - self.opened
            if stuck:
                for conn in self.conns:
                    if conn.state != "dead" and not conn.established:
                        self.fail(conn, "not established in time")
                self.errors += level - self.opened
                self.error = self.error or (
                    f"{stuck} of {level} connections not established within "
                    f"{self.args.setup_timeout:g}s"
                )
                # What was never opened is given up, not tried again later.
                self.dead += level - self.opened
                self.opened = level
            settle = time.monotonic() + 0.3
            while time.monotonic() < settle:
                self.poll(0.05)
            line = json.dumps(
                {
                    "mode": self.args.mode,
                    "level": level,
                    "opened": self.opened,
                    "held": self.held,
                    "errors": self.errors,
                    "error": self.error,
                }
            )
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            if not sys.stdin.readline():
                return


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "mode", choices=["echo", "bulk", "http", "ws", "idle", "ws-idle"]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.2)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--path", default="/")
    parser.add_argument("--expect", default="Hello, world!")
    parser.add_argument("--levels", default="1000")
    parser.add_argument("--setup-timeout", type=float, default=10.0)
    parser.add_argument("--spin", type=int, default=0, help="ignored")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = {"bulk": 65536, "ws": 32, "ws-idle": 32}.get(args.mode, 64)
    if args.mode == "idle":
        args.size = 1
    args.levels = [int(level) for level in args.levels.split(",")]
    if args.mode in IDLE_MODES:
        args.connections = max(args.levels)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from netlab.tools.bench.processes import raise_nofile

    raise_nofile(args.connections + 64)
    generator = Generator(args)
    if args.mode in IDLE_MODES:
        generator.run_idle()
    else:
        generator.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
