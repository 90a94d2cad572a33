"""
A wiretap: what each connection's protocol saw, both directions, written as a
pcapng file that Wireshark and ``tshark`` open.

No root, no packet sniffer: the tap sits between the transport and the
protocol, so under TLS it records the plaintext. Each connection becomes a
TCP stream of synthesized IPv4/IPv6 packets with the real addresses and
ports, consistent sequence numbers, SYN at open, FIN at each side's close and
RST at an abort, so "Follow TCP stream" and the HTTP and WebSocket
dissectors work on it.

Put it around any factory::

    tap = Wiretap("/tmp/capture.pcapng")
    endpoint.listen(tap.wrap(factory))
    ...
    await tap.close()

Writing happens in a thread, in batches, so the reactor never waits on the
disk; a write error or the size cap turns the tap off with one log event and
leaves the file readable.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import queue
import random
import struct
import threading
import time
from collections.abc import Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IProtocolFactory,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure

from netlab.wrapping import HalfCloseableWrapper, Wrapper, wrapper_for

#: The largest TCP payload the tap puts in one packet.
SEGMENT_SIZE = 16384
#: How long the tap gathers packets before handing them to its writer thread.
FLUSH_INTERVAL = 0.05
#: How much may wait for the writer thread before the tap gives up.
MAX_BACKLOG = 32 * 1024 * 1024

_LINKTYPE_RAW = 101  # packets start with their IPv4 or IPv6 header
_SYN, _FIN, _RST, _PSH, _ACK = 0x02, 0x01, 0x04, 0x08, 0x10
_STOP = object()


def _block(kind: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def _file_header() -> bytes:
    section = _block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    interface = _block(1, struct.pack("<HHI", _LINKTYPE_RAW, 0, 0))
    return section + interface


def _packet_block(packet: bytes, when: float) -> bytes:
    micros = int(when * 1_000_000)
    header = struct.pack(
        "<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(packet), len(packet)
    )
    return _block(6, header + packet)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _endpoint(address: IAddress) -> tuple[Any, int]:
    host = getattr(address, "host", "127.0.0.1")
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:  # a UNIX socket, say: no address to show
        ip = ipaddress.ip_address("127.0.0.1")
    return ip, getattr(address, "port", 0)


def _ip_packet(
    source: tuple[Any, int],
    destination: tuple[Any, int],
    seq: int,
    ack: int,
    flags: int,
    payload: bytes,
) -> bytes:
    (src, sport), (dst, dport) = source, destination
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0)
    if src.version == 4:
        pseudo = (
            src.packed + dst.packed + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
        )
    else:
        pseudo = (
            src.packed + dst.packed + struct.pack("!I3xB", len(tcp) + len(payload), 6)
        )
    checksum = _checksum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", checksum) + tcp[18:]
    segment = tcp + payload
    if src.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            20 + len(segment),
            0,
            0x4000,
            64,
            6,
            0,
            src.packed,
            dst.packed,
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
    else:
        header = struct.pack(
            "!IHBB16s16s", 6 << 28, len(segment), 6, 64, src.packed, dst.packed
        )
    return header + segment


class _Stream:
    """
    One connection as TCP packets: sequence numbers and who has closed.
    """

    def __init__(
        self, tap: Wiretap, initiator: tuple[Any, int], responder: tuple[Any, int]
    ) -> None:
        self._tap = tap
        self.ends = {"initiator": initiator, "responder": responder}
        self._next = {side: random.getrandbits(32) for side in self.ends}
        self.closed: set[str] = set()

    @staticmethod
    def _other(side: str) -> str:
        return "responder" if side == "initiator" else "initiator"

    def _send(self, side: str, flags: int, payload: bytes = b"") -> None:
        other = self._other(side)
        ack = self._next[other] if flags & _ACK else 0
        packet = _ip_packet(
            self.ends[side],
            self.ends[other],
            self._next[side],
            ack,
            flags,
            payload,
        )
        self._next[side] = (self._next[side] + len(payload)) & 0xFFFFFFFF
        if flags & (_SYN | _FIN):
            self._next[side] = (self._next[side] + 1) & 0xFFFFFFFF
        self._tap.record(packet)

    def open(self) -> None:
        self._send("initiator", _SYN)
        self._send("responder", _SYN | _ACK)
        self._send("initiator", _ACK)

    def data(self, side: str, data: bytes) -> None:
        if side in self.closed:
            return
        for start in range(0, len(data), SEGMENT_SIZE):
            self._send(side, _PSH | _ACK, data[start : start + SEGMENT_SIZE])

    def fin(self, side: str) -> None:
        if side in self.closed:
            return
        self.closed.add(side)
        self._send(side, _FIN | _ACK)
        self._send(self._other(side), _ACK)

    def reset(self, side: str) -> None:
        if len(self.closed) == 2:
            return
        self.closed.update(self.ends)
        self._send(side, _RST | _ACK)


class _Tapped(Wrapper):
    """
    Sits between a transport and its protocol, recording what passes.
    """

    local = "responder"
    remote = "initiator"
    _aborted = False

    def makeConnection(self, transport: Any) -> None:
        host, peer = _endpoint(transport.getHost()), _endpoint(transport.getPeer())
        ends = {self.local: host, self.remote: peer}
        self.stream = _Stream(self.factory.tap, ends["initiator"], ends["responder"])
        self.stream.open()
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.stream.data(self.remote, data)
        super().dataReceived(data)

    def write(self, data: bytes) -> None:
        self.stream.data(self.local, data)
        super().write(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        data = list(data)
        self.stream.data(self.local, b"".join(data))
        super().writeSequence(data)

    def loseWriteConnection(self) -> None:
        self.stream.fin(self.local)
        self.transport.loseWriteConnection()

    def abortConnection(self) -> None:
        self._aborted = True
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ConnectionDone):
            self.stream.fin(self.remote)
            self.stream.fin(self.local)
        else:
            self.stream.reset(self.local if self._aborted else self.remote)
        super().connectionLost(reason)


class _TappedHalfCloseable(_Tapped, HalfCloseableWrapper):
    def readConnectionLost(self) -> None:
        self.stream.fin(self.remote)
        super().readConnectionLost()


class _TappedClient(_Tapped):
    local, remote = "initiator", "responder"


class _TappedHalfCloseableClient(_TappedHalfCloseable):
    local, remote = "initiator", "responder"


class WiretapFactory(WrappingFactory):
    """
    Wraps a factory so that ``tap`` records every connection it makes.

    :param client: whether the connections are made by this side (the SYN
        is then ours).
    """

    def __init__(
        self, wrappedFactory: IProtocolFactory, tap: Wiretap, client: bool = False
    ) -> None:
        super().__init__(wrappedFactory)
        self.tap = tap
        self.client = client

    def buildProtocol(self, addr: IAddress) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        if self.client:
            kind = wrapper_for(wrapped, _TappedClient, _TappedHalfCloseableClient)
        else:
            kind = wrapper_for(wrapped, _Tapped, _TappedHalfCloseable)
        return kind(self, wrapped)

    def __getattr__(self, name: str) -> Any:
        # Code that reaches the factory through a protocol's transport
        # (connection counts, limits) finds the wrapped factory's.
        return getattr(self.wrappedFactory, name)


class Wiretap:
    """
    A pcapng file being written.

    :param path: the file; created (mode 0600: it holds plaintext) or
        truncated.
    :param max_bytes: stop recording once the file would grow past this.
    """

    _log = Logger()

    def __init__(
        self, path: str, max_bytes: int | None = None, reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.max_bytes = max_bytes
        self._reactor = reactor
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file = os.fdopen(fd, "wb")
        header = _file_header()
        self._file.write(header)
        self.size = len(header)
        self.recording = True
        #: Whether a problem (the size cap, a write error) stopped the tap.
        self.stopped = False
        self._pending: list[bytes] = []
        self._flush_call: Any = None
        self._backlog = 0
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._done = False
        self._waiting: list[defer.Deferred[None]] = []
        # Started with the first batch, not here: twistd may fork between
        # making the service and running it, and a thread does not survive.
        self._thread: threading.Thread | None = None

    def wrap(self, factory: IProtocolFactory, client: bool = False) -> WiretapFactory:
        """
        :return: ``factory``, wrapped so that its connections are recorded.
        """
        return WiretapFactory(factory, self, client)

    def record(self, packet: bytes) -> None:
        """
        Queue one IP packet, stamped now.
        """
        if not self.recording:
            return
        block = _packet_block(packet, time.time())
        if self.max_bytes is not None and self.size + len(block) > self.max_bytes:
            self._stop("reached its size cap of {limit} bytes", limit=self.max_bytes)
            return
        with self._lock:
            if self._backlog + len(block) > MAX_BACKLOG:
                self._stop("fell behind the disk by {limit} bytes", limit=MAX_BACKLOG)
                return
            self._backlog += len(block)
        self.size += len(block)
        self._pending.append(block)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(FLUSH_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._pending:
            self._writer()
            self._queue.put(b"".join(self._pending))
            self._pending = []

    def _writer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name=f"wiretap {self.path}", daemon=True
            )
            self._thread.start()

    def _stop(self, why: str, **fields: Any) -> None:
        self.recording = False
        if not self.stopped:
            self.stopped = True
            self._log.warn("wiretap {path} stopped: " + why, path=self.path, **fields)

    def _write_loop(self) -> None:
        failed = False
        while (chunk := self._queue.get()) is not _STOP:
            if failed:
                continue
            try:
                self._file.write(chunk)
                self._file.flush()
            except OSError as error:
                failed = True
                self._reactor.callFromThread(
                    self._stop, "cannot write: {error}", error=error.strerror
                )
            with self._lock:
                self._backlog -= len(chunk)
        try:
            self._file.close()
        except OSError:
            pass
        self._reactor.callFromThread(self._finished)

    def _finished(self) -> None:
        self._done = True
        waiting, self._waiting = self._waiting, []
        for waiter in waiting:
            waiter.callback(None)

    def discard(self) -> None:
        """
        Close the file and remove it: for a service that never started, so
        that no empty capture is left behind. Only before anything was
        recorded.
        """
        self.recording = False
        self._done = True
        self._file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def close(self) -> defer.Deferred[None]:
        """
        Stop recording, write what is queued, and close the file.

        :return: a Deferred that fires once the file is complete.
        """
        if self._flush_call is not None:
            self._flush_call.cancel()
        self._flush()
        if self._done:
            return defer.succeed(None)
        if not self._waiting:
            self.recording = False
            self._writer()
            self._queue.put(_STOP)
        waiter: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(waiter)
        return waiter
