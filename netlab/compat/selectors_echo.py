"""
The echo server with ``selectors``: many clients at once on one thread.

The lesson's version calls ``send`` once and hopes; this one keeps what the
socket did not take in a per-client buffer, writes it when the socket is
writable, and stops reading from a client whose buffer is full (so a client
that never reads cannot grow the server's memory). A client that shuts down
its writing side still gets everything echoed before the server closes.

With ``--cert FILE --key FILE`` it speaks TLS (stdlib ``ssl``), still on one
thread: each socket is wrapped without a handshake, and the loop drives it.
OpenSSL may need to read when asked to write and the other way round
(``SSLWantReadError``, ``SSLWantWriteError``): the client then waits for
what OpenSSL wants. The handshake must end within --idle-timeout seconds,
and a client that fails it is logged and dropped.
"""

import contextlib
import logging
import selectors
import socket
import ssl
import time

from netlab.compat._common import close_tls, parse_args, run

HIGH_WATER = 64 * 1024  # stop reading from a client with this much unsent
log = logging.getLogger("selectors_echo")


class Client:
    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.outgoing = bytearray()
        self.eof = False
        self.last_active = time.monotonic()
        self.handshaking = isinstance(sock, ssl.SSLSocket)
        self.wants_write = False  # OpenSSL must write before it can go on


def serve(args):
    sel = selectors.DefaultSelector()
    clients = {}
    with socket.create_server((args.host, args.port), backlog=128) as server:
        server.setblocking(False)
        sel.register(server, selectors.EVENT_READ)
        host, port = server.getsockname()[:2]
        log.info("listening on %s port %d", host, port)
        try:
            while True:
                for key, mask in sel.select(timeout=1.0):
                    if key.fileobj is server:
                        accept(server, sel, clients, args.ssl)
                    else:
                        service(key.data, mask, sel, clients)
                drop_idle(clients, sel, args.idle_timeout)
        finally:
            for client in list(clients.values()):
                close(client, sel, clients)


def accept(server, sel, clients, context):
    try:
        sock, addr = server.accept()
    except BlockingIOError:
        return
    sock.setblocking(False)
    if context is not None:
        # No handshake here: it would block the loop. service() drives it.
        sock = context.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        )
    client = Client(sock, addr)
    # Registered before it is listed: close() relies on that.
    sel.register(sock, selectors.EVENT_READ, client)
    clients[sock] = client
    log.info("connection from %s", addr)


def service(client, mask, sel, clients):
    client.wants_write = False
    try:
        if client.handshaking:
            client.sock.do_handshake()
            client.handshaking = False
            log.info("connection from %s: %s", client.addr, client.sock.version())
        if not client.eof and len(client.outgoing) < HIGH_WATER:
            receive(client)
        if client.outgoing:
            sent = client.sock.send(client.outgoing)
            del client.outgoing[:sent]
    except ssl.SSLWantWriteError:
        client.wants_write = True
    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
        pass  # not ready after all: the selector will say when
    except OSError as error:  # ssl.SSLError too: a failed handshake, say
        log.info("connection from %s failed: %s", client.addr, error)
        return close(client, sel, clients)
    if client.eof and not client.outgoing:
        return close(client, sel, clients)
    events = 0
    if client.outgoing or client.wants_write:
        events |= selectors.EVENT_WRITE
    if client.handshaking or (not client.eof and len(client.outgoing) < HIGH_WATER):
        events |= selectors.EVENT_READ
    sel.modify(client.sock, events, client)


def receive(client):
    """Read what there is, if anything: a write event calls this too."""
    try:
        data = client.sock.recv(65536)
    except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
        return
    if not data:
        client.eof = True
        return
    client.outgoing += data
    client.last_active = time.monotonic()
    # OpenSSL decrypts a whole record at a time. What it holds decrypted
    # (pending) is no longer in the socket, so the selector would never
    # report it: take it now. (A record is at most 16 KiB: the buffer may
    # pass HIGH_WATER by that much, no more.)
    while isinstance(client.sock, ssl.SSLSocket) and client.sock.pending():
        client.outgoing += client.sock.recv(client.sock.pending())


def drop_idle(clients, sel, idle_timeout):
    now = time.monotonic()
    for client in list(clients.values()):
        if now - client.last_active > idle_timeout:
            log.info("connection from %s idle, dropping it", client.addr)
            close(client, sel, clients)


def close(client, sel, clients):
    # Forget the client first: a stop signal may interrupt this function
    # anywhere, and the cleanup on the way out must not close it twice.
    if clients.pop(client.sock, None) is None:
        return
    sel.unregister(client.sock)
    if isinstance(client.sock, ssl.SSLSocket) and not client.handshaking:
        close_tls(client.sock)
    with contextlib.suppress(OSError):
        client.sock.close()
    log.info("connection from %s closed", client.addr)


def main(argv=None):
    return run(serve, parse_args(__doc__, 8007, argv))


if __name__ == "__main__":
    raise SystemExit(main())
