"""
How much memory a client that sends but never reads costs an echo server.

Starts netlab's echo (``twistd netlab-echo``) and, as the baseline measured in
the same run, Twisted's stock ``twisted.protocols.wire.Echo``; sends each N MiB
(default 64) from a client that never reads, and prints each server's resident
memory before and after, and the ratio of the growths.

    python benchmarks/echo_backpressure.py [--mib 64]

Linux only (reads /proc). Loopback only.
"""

import argparse
import os
import re
import select
import socket
import subprocess
import sys
import time

BIN = os.path.dirname(sys.executable)
STOCK_ECHO = """
import sys
from twisted.internet import protocol, reactor
from twisted.protocols.wire import Echo
port = reactor.listenTCP(0, protocol.Factory.forProtocol(Echo), interface="127.0.0.1")
print("Factory starting on", port.getHost().port, flush=True)
reactor.run()
"""
SERVERS = {
    "netlab-echo": [
        os.path.join(BIN, "twistd"),
        "-n",
        "--pidfile=",
        "netlab-echo",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ],
    "twisted wire.Echo (baseline)": [sys.executable, "-c", STOCK_ECHO],
}


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as status:
        kib = int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))
    return kib / 1024


def start(args):
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        match = re.search(r"Factory starting on (\d+)", line)
        if match:
            return process, int(match.group(1))
    process.kill()
    raise SystemExit(f"server did not start: {args}")


def flood(port, total, stall_seconds=2.0):
    """Send up to ``total`` bytes without reading; stop when the server stops
    taking them for ``stall_seconds``. Return the bytes the server took."""
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setblocking(False)
        while sent < total:
            _, writable, _ = select.select([], [sock], [], stall_seconds)
            if not writable:
                break
            try:
                sent += sock.send(chunk[: total - sent])
            except BlockingIOError:
                continue
        time.sleep(1.0)  # let the server act on what it took
        return sent


def measure(name, args, total):
    process, port = start(args)
    try:
        time.sleep(0.5)
        before = rss_mib(process.pid)
        sent = flood(port, total)
        after = rss_mib(process.pid)
        return name, sent, before, after
    finally:
        process.terminate()
        process.wait(10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="MiB to send (default 64)")
    args = parser.parse_args()
    total = args.mib * 1024 * 1024
    rows = [measure(name, cmd, total) for name, cmd in SERVERS.items()]
    print(f"client sends up to {args.mib} MiB and never reads; RSS in MiB")
    header = ("server", "accepted MiB", "RSS before", "RSS after", "growth")
    print("{:32} {:>13} {:>11} {:>10} {:>8}".format(*header))
    for name, sent, before, after in rows:
        print(
            f"{name:32} {sent / 2**20:13.1f} {before:11.1f} {after:10.1f} "
            f"{after - before:8.1f}"
        )
    ours, base = rows[0], rows[1]
    growth_ours = max(ours[3] - ours[2], 0.1)
    growth_base = max(base[3] - base[2], 0.1)
    print(f"memory growth, netlab / baseline: {growth_ours / growth_base:.3f}")


if __name__ == "__main__":
    main()
