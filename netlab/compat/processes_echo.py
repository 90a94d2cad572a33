"""
The echo server with a process per client (``os.fork``).

The parent only accepts. Each client gets a child process, a copy of the
parent made by ``fork``, which runs ``threads_echo``'s ``echo`` (the same
blocking loop: it cannot tell a thread from a process) and exits. A
process costs more than a thread, but shares nothing: a crash or a leak
while serving one client touches no other.

Children bring two chores. A child that has exited stays a *zombie* (an
entry holding its exit status) until the parent collects it with
``waitpid``: the parent reaps every ended child before each ``accept``, and
wakes at least once a second to do so. And there are at most --max-clients
children at once: at the cap the parent waits for one to end before it
accepts again, and new clients wait in the kernel's listen backlog.

On SIGINT or SIGTERM the parent sends SIGTERM to every child, reaps them
all and exits. A child leaves stopping to its parent: it takes the default
action of either signal, which ends it at once (the kernel closes its
socket), with no Python cleanup and no traceback.

With ``--cert FILE --key FILE`` it speaks TLS (stdlib ``ssl``): each child
wraps its client's socket and does the handshake, which must end within
--idle-timeout seconds, and ends the echo with TLS's close alert.
"""

import logging
import os
import signal
import socket

from netlab.compat._common import parse_args, run
from netlab.compat.threads_echo import echo

MAX_CLIENTS = 40  # child processes at once (socketserver's default too)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
log = logging.getLogger("processes_echo")


def serve(args):
    children = set()  # process ids, until reaped
    with socket.create_server((args.host, args.port), backlog=128) as server:
        server.settimeout(1.0)  # wake to reap even when no client comes
        host, port = server.getsockname()[:2]
        log.info("listening on %s port %d", host, port)
        try:
            while True:
                reap(children, wait=len(children) >= args.max_clients)
                try:
                    conn, addr = server.accept()
                except TimeoutError:
                    continue
                with conn:  # the parent's copy; the child has its own
                    start_child(server, conn, addr, args, children)
        finally:
            # A second Ctrl-C must not cut this short and leave children.
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            for pid in children:
                os.kill(pid, signal.SIGTERM)
            while children:
                reap(children, wait=True)


def start_child(server, conn, addr, args, children):
    # Stop signals wait until the child has its own handlers and the parent
    # has noted the child: a signal in between could leave a child no one
    # stops, or make a child run the parent's cleanup (and kill its siblings).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            child(server, conn, addr, args)  # never returns
        children.add(pid)
    except OSError as error:  # too many processes, say: drop this client
        log.info("connection from %s: cannot fork: %s", addr, error)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def child(server, conn, addr, args):
    """A child's whole life: serve one client, then exit."""
    status = 0
    try:
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        server.close()  # the parent's to accept on; the port stays the parent's
        if args.ssl is not None:
            conn = args.ssl.wrap_socket(
                conn, server_side=True, do_handshake_on_connect=False
            )
        echo(conn, addr, args.idle_timeout, log)
    except Exception:
        log.exception("connection from %s: child failed", addr)
        status = 1
    finally:
        # os._exit, not sys.exit or a return: the child must never go back
        # into the copy of the parent's loop (nor run its cleanup).
        os._exit(status)


def reap(children, wait=False):
    """Collect every child that has ended; with ``wait``, wait for one first."""
    flags = 0 if wait else os.WNOHANG
    while children:
        pid, _ = os.waitpid(-1, flags)
        if pid == 0:
            return  # the others are still running
        children.discard(pid)
        flags = os.WNOHANG


def main(argv=None):
    return run(serve, parse_args(__doc__, 8007, argv, max_clients=MAX_CLIENTS))


if __name__ == "__main__":
    raise SystemExit(main())
