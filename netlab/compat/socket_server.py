"""
The greeting server with blocking sockets, one client at a time.

Reads the client's first message (up to 1,024 bytes), answers
``Hello from server!`` and closes, as the lesson's first server does. Unlike
the lesson's, it survives clients that misbehave: each has a timeout, and an
error on one connection is logged, not fatal.

With ``--cert FILE --key FILE`` it speaks TLS (stdlib ``ssl``): the
handshake, too, must end within --idle-timeout seconds, and the answer ends
with TLS's close alert, since TLS has no half-close.
"""

import logging
import socket

from netlab.compat._common import close_tls, parse_args, run, tls_handshake

GREETING = b"Hello from server!"
log = logging.getLogger("socket_server")


def serve(args):
    with socket.create_server((args.host, args.port), backlog=128) as server:
        host, port = server.getsockname()[:2]
        log.info("listening on %s port %d", host, port)
        while True:
            conn, addr = server.accept()
            with conn:
                greet(conn, addr, args.idle_timeout, args.ssl)


def greet(conn, addr, timeout, context=None):
    conn.settimeout(timeout)
    try:
        if context is not None:
            # The handshake happens here, bounded, not in accept().
            conn = context.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
            tls_handshake(conn, timeout)
        data = conn.recv(1024)
        log.info("greeting from %s: %r", addr, data)
        conn.sendall(GREETING)
        if context is not None:
            close_tls(conn)
    except OSError as error:  # ssl.SSLError too: one line, never a traceback
        log.info("client %s: %s", addr, error)
    finally:
        conn.close()


def main(argv=None):
    return run(serve, parse_args(__doc__, 8008, argv))


if __name__ == "__main__":
    raise SystemExit(main())
