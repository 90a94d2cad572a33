"""
The client with blocking sockets: send a message, print the reply.

Works with both servers: it sends ``Hello from client!`` (or its argument),
shuts down its writing side to say it is done, and prints all the server
sends until it closes. A second thread sends while the first reads, so a
long message to an echo server cannot deadlock with both sides blocked in
``send`` (the lesson's client only ever sends a few bytes).
"""

import socket
import sys
import threading

from netlab.compat._common import parse_args

MAX_REPLY = 64 * 1024 * 1024


def exchange(host, port, message, timeout=10.0):
    """Send ``message``, then return every byte the server sends until it closes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:

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


def main(argv=None):
    args = parse_args(__doc__, 8008, argv, client=True)
    if args.message == "-":
        message = sys.stdin.buffer.read()
    else:
        message = args.message.encode()
    try:
        reply = exchange(args.host, args.port, message, args.timeout)
    except OSError as error:
        sys.exit(f"socket_client: {args.host}:{args.port}: {error}")
    if args.message != "-" and not reply.endswith(b"\n"):
        reply += b"\n"
    sys.stdout.buffer.write(reply)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
