"""
The greeting server with blocking sockets, one client at a time.

Reads the client's first message (up to 1,024 bytes), answers
``Hello from server!`` and closes, as the lesson's first server does. Unlike
the lesson's, it survives clients that misbehave: each has a timeout, and an
error on one connection is logged, not fatal.
"""

import logging
import socket

from netlab.compat._common import parse_args, run

GREETING = b"Hello from server!"
log = logging.getLogger("socket_server")


def serve(args):
    with socket.create_server((args.host, args.port), backlog=128) as server:
        host, port = server.getsockname()[:2]
        log.info("listening on %s port %d", host, port)
        while True:
            conn, addr = server.accept()
            with conn:
                greet(conn, addr, args.idle_timeout)


def greet(conn, addr, timeout):
    conn.settimeout(timeout)
    try:
        data = conn.recv(1024)
        log.info("greeting from %s: %r", addr, data)
        conn.sendall(GREETING)
    except OSError as error:
        log.info("client %s: %s", addr, error)


def main(argv=None):
    return run(serve, parse_args(__doc__, 8008, argv))


if __name__ == "__main__":
    raise SystemExit(main())
