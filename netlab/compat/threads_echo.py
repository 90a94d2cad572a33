"""
The echo server with a thread per client (``threading``).

Each client gets a thread running the plainest echo loop there is: a
blocking ``recv``, then ``sendall`` of what came, until the client's end of
stream (it shut down its writing side); then the server closes. Blocking is
the back-pressure: while a client does not read, ``sendall`` waits and the
thread reads nothing more, so a client holds at most one 64 KiB buffer. The
socket timeout (--idle-timeout) bounds each read and each send: a client
that is silent, or stopped reading, that long is dropped.

A thread is cheap, not free (a stack, a scheduler slot), and a flood of
clients must not make the server start them without end: at most
--max-clients threads run at once. At the cap the server stops accepting
until one ends, and new clients wait in the kernel's listen backlog.

On SIGINT or SIGTERM the server shuts down every client's socket, which
wakes its thread from ``recv`` or ``sendall``, and waits for the threads to
end (at most ``JOIN_SECONDS``).

With ``--cert FILE --key FILE`` it speaks TLS (stdlib ``ssl``): each thread
does its client's handshake, which must end within --idle-timeout seconds,
and ends the echo with TLS's close alert, since TLS has no half-close.
"""

import contextlib
import logging
import socket
import ssl
import threading
import time

from netlab.compat._common import close_tls, parse_args, run, tls_handshake

MAX_CLIENTS = 256  # threads at once (each a stack and a 64 KiB buffer)
JOIN_SECONDS = 5.0  # how long a stop waits for the threads
log = logging.getLogger("threads_echo")


def echo(conn, addr, idle_timeout, log=log):
    """Echo what ``conn`` sends until its end of stream, then close it.

    ``conn`` is a blocking socket, or a TLS socket whose handshake has not
    begun; ``log`` is the logger that tells. ``processes_echo`` runs this
    same function in a child process: blocking code does not care who runs
    it.
    """
    log.info("connection from %s", addr)
    conn.settimeout(idle_timeout)
    tls = isinstance(conn, ssl.SSLSocket)
    try:
        if tls:
            tls_handshake(conn, idle_timeout)
        while data := conn.recv(65536):
            conn.sendall(data)
        if tls:
            close_tls(conn)
    except TimeoutError:
        log.info("connection from %s idle, dropping it", addr)
    except OSError as error:  # ssl.SSLError too: a failed handshake, say
        log.info("connection from %s failed: %s", addr, error)
    finally:
        conn.close()
        log.info("connection from %s closed", addr)


def serve(args):
    # One slot per thread: at the cap, acquire() waits for a thread to end.
    slots = threading.BoundedSemaphore(args.max_clients)
    clients = {}  # each client's socket: its thread (to stop them)
    lock = threading.Lock()  # clients is shared by every thread

    def client(conn, addr):
        try:
            echo(conn, addr, args.idle_timeout)
        finally:
            with lock:
                del clients[conn]
            slots.release()

    with socket.create_server((args.host, args.port), backlog=128) as server:
        host, port = server.getsockname()[:2]
        log.info("listening on %s port %d", host, port)
        try:
            while True:
                slots.acquire()
                conn, addr = server.accept()
                if args.ssl is not None:
                    # Wrapped here but without the handshake (the thread
                    # does that), so that stop() knows the socket in use.
                    conn = args.ssl.wrap_socket(
                        conn, server_side=True, do_handshake_on_connect=False
                    )
                thread = threading.Thread(target=client, args=(conn, addr))
                # A daemon: should one fail to stop, the process still exits.
                thread.daemon = True
                with lock:
                    clients[conn] = thread
                thread.start()
        finally:
            stop(clients, lock)


def stop(clients, lock):
    """Wake every client's thread, and wait for them all to end.

    A thread cannot be killed from outside, only asked to end: shutting
    down its socket makes its blocked ``recv`` return (or ``sendall``
    fail), and it ends as it would at the client's end of stream.
    """
    with lock:
        for conn in clients:
            # socket.socket's shutdown, not SSLSocket's: that one would take
            # the TLS state away from the thread still using it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(conn, socket.SHUT_RDWR)
        threads = list(clients.values())
    deadline = time.monotonic() + JOIN_SECONDS
    for thread in threads:
        if thread.is_alive():  # a stop between listing and start(): never ran
            thread.join(max(0.0, deadline - time.monotonic()))


def main(argv=None):
    return run(serve, parse_args(__doc__, 8007, argv, max_clients=MAX_CLIENTS))


if __name__ == "__main__":
    raise SystemExit(main())
