"""
The WebSocket client with ``websockets``: send each message, print each reply.

As in the lesson, ``connect`` does the work, here in its blocking form
(``websockets.sync.client``), as a context manager that closes the
connection normally (1000) at the end. Unlike the lesson's client, it waits
at most --timeout seconds to open and for each reply, and a failure is one
line on stderr (exit status 1) instead of a traceback.

A ``wss://`` URL is checked against the system's CAs, or with ``--cacert
FILE`` only against the CAs in FILE (a stdlib ``ssl`` context passed as
``ssl=``): the certificate and the URL's host name both.
"""

import sys

from netlab.compat._common import Parser, add_client_tls, client_tls

try:
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect
except ImportError:  # the "compat" extra is not installed
    connect = None

# The echo of a message as large as the server takes is a little larger than
# the library's default limit (1 MiB): accept replies up to this many bytes.
MAX_REPLY = 64 * 1024 * 1024


def exchange(url, messages, timeout=10.0, context=None):
    """Send each message (text for ``str``, binary for ``bytes``) to ``url``,
    wait for one reply to each, and return the replies. ``context``: the
    ``ssl.SSLContext`` that checks a ``wss://`` server (the system's CAs
    when not given)."""
    replies = []
    with connect(
        url,
        ssl=context,
        open_timeout=timeout,
        close_timeout=timeout,
        max_size=MAX_REPLY,
    ) as websocket:
        for message in messages:
            websocket.send(message)
            replies.append(websocket.recv(timeout=timeout))
    return replies


def main(argv=None):
    parser = Parser(description=__doc__)
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
    add_client_tls(parser)
    args = parser.parse_args(argv)
    if args.cacert and not args.url.lower().startswith("wss:"):
        parser.error("--cacert needs a wss:// URL")
    context = client_tls(parser, args)
    if connect is None:
        sys.exit("ws_client: needs websockets: pip install 'netlab[compat]'")
    try:
        replies = exchange(args.url, args.messages, args.timeout, context)
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
