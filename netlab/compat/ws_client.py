"""
The WebSocket client with ``websockets``: send each message, print each reply.

As in the lesson, ``connect`` does the work, here in its blocking form
(``websockets.sync.client``), as a context manager that closes the
connection normally (1000) at the end. Unlike the lesson's client, it waits
at most --timeout seconds to open and for each reply, and a failure is one
line on stderr (exit status 1) instead of a traceback.
"""

import argparse
import sys

try:
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect
except ImportError:  # the "compat" extra is not installed
    connect = None

# The echo of a message as large as the server takes is a little larger than
# the library's default limit (1 MiB): accept replies up to this many bytes.
MAX_REPLY = 64 * 1024 * 1024


def exchange(url, messages, timeout=10.0):
    """Send each message (text for ``str``, binary for ``bytes``) to ``url``,
    wait for one reply to each, and return the replies."""
    replies = []
    with connect(
        url, open_timeout=timeout, close_timeout=timeout, max_size=MAX_REPLY
    ) as websocket:
        for message in messages:
            websocket.send(message)
            replies.append(websocket.recv(timeout=timeout))
    return replies


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", help="where to connect, e.g. ws://127.0.0.1:8765/")
    parser.add_argument(
        "messages",
        metavar="MESSAGE",
        nargs="*",
        default=["Hello from client!"],
        help="text messages to send, in order (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="default: %(default)s"
    )
    args = parser.parse_args(argv)
    if connect is None:
        sys.exit("ws_client: needs websockets: pip install 'netlab[compat]'")
    try:
        replies = exchange(args.url, args.messages, args.timeout)
    except (OSError, WebSocketException, ValueError) as error:
        # OSError: refused or timed out (TimeoutError is one); WebSocketException:
        # a bad URL, a refused handshake, or a close before the reply;
        # ValueError: a few malformed URLs get past the library's own checks.
        sys.exit(f"ws_client: {args.url}: {str(error) or type(error).__name__}")
    for reply in replies:
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", "replace")
        print(reply)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
