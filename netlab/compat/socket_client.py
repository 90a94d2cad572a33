"""
The client with blocking sockets: send a message, print the reply.

Works with both servers: it sends ``Hello from client!`` (or its argument),
shuts down its writing side to say it is done, and prints all the server
sends until it closes. A second thread sends while the first reads, so a
long message to an echo server cannot deadlock with both sides blocked in
``send`` (the lesson's client only ever sends a few bytes).

``--cacert FILE`` speaks TLS and trusts only the CAs in FILE; ``--tls``
speaks TLS and trusts the system's CAs. Either way the server's certificate
and its name (``--host``) are checked. TLS has no half-close, so over TLS
the client sends, reads until the server closes, and closes first itself
once the whole message came back (an echo server has then answered all).
An OpenSSL connection must not be used by two threads at once: over TLS one
thread sends and reads, waiting in ``selectors`` for what OpenSSL wants.
"""

import selectors
import socket
import ssl
import sys
import threading

from netlab.compat._common import close_tls, parse_args

MAX_REPLY = 64 * 1024 * 1024


def exchange(host, port, message, timeout=10.0, context=None):
    """Send ``message``, then return every byte the server sends until it
    closes; over TLS (an ``ssl.SSLContext`` as ``context``) until it closes
    or has echoed the whole message."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        if context is not None:
            with context.wrap_socket(sock, server_hostname=host) as tls:
                return exchange_tls(tls, message, timeout)

        def send():
            try:
                sock.sendall(message)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the reading side sees the same failure and reports it

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        reply = bytearray()
        while chunk := sock.recv(65536):
            reply += chunk
            if len(reply) > MAX_REPLY:
                raise OSError(f"reply larger than {MAX_REPLY} bytes")
        sender.join(timeout)
        return bytes(reply)


def exchange_tls(sock, message, timeout):
    """``exchange`` over a TLS socket whose handshake is done: sends and
    reads on one thread, each wait at most ``timeout`` seconds."""
    sock.setblocking(False)
    unsent = memoryview(message)
    reply = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ)
        while True:
            wants_write = False
            try:
                if unsent:
                    # After SSLWantWriteError, OpenSSL wants the same bytes again.
                    unsent = unsent[sock.send(unsent[:65536]) :]
            except ssl.SSLWantWriteError:
                wants_write = True
            except ssl.SSLWantReadError:
                pass
            try:
                while chunk := sock.recv(65536):
                    reply += chunk
                    if len(reply) > MAX_REPLY:
                        raise OSError(f"reply larger than {MAX_REPLY} bytes")
                return bytes(reply)  # the server closed
            except ssl.SSLWantWriteError:
                wants_write = True
            except ssl.SSLWantReadError:
                pass
            if not unsent and reply == message:
                close_tls(sock)  # echoed whole: the end, said in TLS
                return bytes(reply)
            events = selectors.EVENT_READ
            if unsent or wants_write:
                events |= selectors.EVENT_WRITE
            selector.modify(sock, events)
            if not selector.select(timeout):
                raise TimeoutError("timed out")


def main(argv=None):
    args = parse_args(__doc__, 8008, argv, client=True)
    if args.message == "-":
        message = sys.stdin.buffer.read()
    else:
        message = args.message.encode()
    try:
        reply = exchange(args.host, args.port, message, args.timeout, args.ssl)
    except OSError as error:  # ssl.SSLError too: a refused certificate, say
        sys.exit(f"socket_client: {args.host}:{args.port}: {error}")
    if args.message != "-" and not reply.endswith(b"\n"):
        reply += b"\n"
    sys.stdout.buffer.write(reply)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
