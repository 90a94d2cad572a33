"""
The WebSocket echo server with ``websockets``: a text message ``m`` is
answered with ``Echo: m``, a binary message with the same bytes.

Unlike the lesson's server, the handler takes the one ``connection`` argument
of the current asyncio API, and the server is held to netlab's limits: a
largest message (close 1009 above, after decompression too), handshake
timeouts and keepalive pings. Browser pages may connect only from their own
origin or an --allowed-origin ORIGIN (repeatable); --max-message BYTES sets
the largest message.

With ``--cert FILE --key FILE`` it serves ``wss://``: ``serve(ssl=...)``
with a stdlib ``ssl`` context. The TLS handshake, too, must end within
--handshake-timeout seconds; asyncio drops a client that fails it without a
word, before the WebSocket handshake begins.
"""

import argparse
import asyncio
import http
import logging
import sys
from urllib.parse import urlsplit

from netlab.compat._common import parse_args, run, until_stopped

try:
    from websockets.asyncio.server import serve as ws_serve
    from websockets.exceptions import ConnectionClosedError
except ImportError:  # the "compat" extra is not installed
    ws_serve = None

PREFIX = "Echo: "
MAX_MESSAGE = 1024 * 1024  # bytes, after decompression (close 1009 above)

log = logging.getLogger("ws_server")


async def echo(connection):
    peer = connection.remote_address
    log.info("connection from %s open", peer)
    try:
        async for message in connection:
            if isinstance(message, str):
                await connection.send(PREFIX + message)
            else:
                await connection.send(message)
    except ConnectionClosedError:
        pass  # a protocol error or a peer gone without a close frame: see below
    await connection.wait_closed()
    # The close frame received, else the one sent: after a protocol error the
    # library sends 1002, 1007 or 1009 and closes without waiting for an answer.
    frame = connection.protocol.close_rcvd or connection.protocol.close_sent
    code, reason = (frame.code, frame.reason) if frame else (1006, "no close frame")
    log.info("connection from %s closed: code %s (%s)", peer, code, reason)


def origin_checker(allowed_origins):
    """A ``process_request`` hook that answers 403 to a foreign browser page,
    and 400 to a handshake over HTTP/1.0 (RFC 6455 4.2.2; websockets says 505).

    ``origins=`` cannot say "same origin": that depends on each request's
    Host header. So: no Origin (not a browser), the page's own origin, or
    one of ``allowed_origins``.
    """
    allowed = {origin.lower().rstrip("/") for origin in allowed_origins}

    def check(connection, request):
        if getattr(request, "protocol", "HTTP/1.1") != "HTTP/1.1":
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST, "WebSocket needs HTTP/1.1\n"
            )
        origins = request.headers.get_all("Origin")
        if not origins:
            return None
        # Repeated header fields read as one, joined by commas, as in HTTP.
        origin = ", ".join(origins).lower().rstrip("/")
        host = ", ".join(request.headers.get_all("Host")).lower()
        if origin in allowed or same_origin(origin, host):
            return None
        log.info(
            "connection from %s refused: origin %s not allowed",
            connection.remote_address,
            origin,
        )
        return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")

    return check


def same_origin(origin, host):
    """Whether a page from ``origin`` came from ``host``, the server it talks to."""
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[::1", say: not an origin at all
        return False
    return parts.scheme in ("http", "https") and parts.netloc == host


async def serve_forever(args):
    # We log each connection ourselves; the library's INFO lines would repeat it.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    server = ws_serve(
        echo,
        args.host,
        args.port,
        process_request=origin_checker(args.allowed_origins),
        server_header=None,  # say nothing of the Python or library version
        max_size=args.max_message,
        open_timeout=args.handshake_timeout,
        close_timeout=args.handshake_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        # compression: the library's default permessage-deflate, which bounds
        # the inflated size by max_size, so a compression bomb gets 1009.
        backlog=128,
        ssl=args.ssl,
        ssl_handshake_timeout=args.handshake_timeout if args.ssl else None,
    )
    # --idle-timeout is accepted but not used: like netlab's Twisted service,
    # the server drops dead peers by the ping timeout, and a live peer may
    # stay silent as long as it answers pings.
    async with server:
        host, port = server.sockets[0].getsockname()[:2]
        log.info("listening on %s port %d", host, port)
        await until_stopped()
    # Leaving the block closed every connection with 1001 (going away).
    log.info("stopped")


def serve(args):
    asyncio.run(serve_forever(args))


def origin_option(value):
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        raise argparse.ArgumentTypeError(
            f"bad origin {value!r}: expected http://HOST[:PORT] or https://..."
        )
    return value


def main(argv=None):
    # _common's parser has no room for these two: parse them first.
    extra = argparse.ArgumentParser(add_help=False, usage=argparse.SUPPRESS)
    extra.add_argument("--max-message", type=int, default=MAX_MESSAGE)
    extra.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        type=origin_option,
        default=[],
    )
    known, rest = extra.parse_known_args(argv)
    timeouts = [
        ("handshake-timeout", 10.0, "seconds for an opening or closing handshake"),
        ("ping-interval", 30.0, "seconds between the server's pings"),
        ("ping-timeout", 10.0, "seconds a client has to answer a ping"),
    ]
    args = parse_args(__doc__, 8765, rest, timeouts=timeouts)
    args.max_message, args.allowed_origins = known.max_message, known.allowed_origins
    if ws_serve is None:
        sys.exit("ws_server: needs websockets: pip install 'netlab[compat]'")
    return run(serve, args)


if __name__ == "__main__":
    raise SystemExit(main())
