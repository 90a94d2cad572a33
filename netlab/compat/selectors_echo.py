"""
The echo server with ``selectors``: many clients at once on one thread.

The lesson's version calls ``send`` once and hopes; this one keeps what the
socket did not take in a per-client buffer, writes it when the socket is
writable, and stops reading from a client whose buffer is full (so a client
that never reads cannot grow the server's memory). A client that shuts down
its writing side still gets everything echoed before the server closes.
"""

import logging
import selectors
import socket
import time

from netlab.compat._common import parse_args, run

HIGH_WATER = 64 * 1024  # stop reading from a client with this much unsent
log = logging.getLogger("selectors_echo")


class Client:
    def __init__(self, sock, addr):
        self.sock = sock
        self.addr = addr
        self.outgoing = bytearray()
        self.eof = False
        self.last_active = time.monotonic()


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
                        accept(server, sel, clients)
                    else:
                        service(key.data, mask, sel, clients)
                drop_idle(clients, sel, args.idle_timeout)
        finally:
            for client in list(clients.values()):
                close(client, sel, clients)


def accept(server, sel, clients):
    try:
        sock, addr = server.accept()
    except BlockingIOError:
        return
    sock.setblocking(False)
    client = Client(sock, addr)
    # Registered before it is listed: close() relies on that.
    sel.register(sock, selectors.EVENT_READ, client)
    clients[sock] = client
    log.info("connection from %s", addr)


def service(client, mask, sel, clients):
    try:
        if mask & selectors.EVENT_READ:
            data = client.sock.recv(65536)
            if data:
                client.outgoing += data
                client.last_active = time.monotonic()
            else:
                client.eof = True
        if client.outgoing:
            sent = client.sock.send(client.outgoing)
            del client.outgoing[:sent]
    except (BlockingIOError, InterruptedError):
        pass  # not ready after all: the selector will say when
    except OSError as error:
        log.info("connection from %s failed: %s", client.addr, error)
        return close(client, sel, clients)
    if client.eof and not client.outgoing:
        return close(client, sel, clients)
    events = selectors.EVENT_WRITE if client.outgoing else 0
    if not client.eof and len(client.outgoing) < HIGH_WATER:
        events |= selectors.EVENT_READ
    sel.modify(client.sock, events, client)


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
    client.sock.close()
    log.info("connection from %s closed", client.addr)


def main(argv=None):
    return run(serve, parse_args(__doc__, 8007, argv))


if __name__ == "__main__":
    raise SystemExit(main())
