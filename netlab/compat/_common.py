"""
What every twin's ``main`` shares: the command line, TLS, logging and a clean
stop.
"""

import argparse
import asyncio
import contextlib
import logging
import os
import selectors
import signal
import ssl
import sys
import time

#: TLS 1.2 suites with forward secrecy (ECDHE) and authenticated encryption
#: (GCM, ChaCha20-Poly1305), as netlab's Twisted services allow; every TLS
#: 1.3 suite already is both.
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class Parser(argparse.ArgumentParser):
    """``argparse``, with a usage error said in one line (exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def parse_args(
    description, port, argv=None, client=False, timeouts=(), max_clients=None
):
    """Parse a server's ``--host --port --idle-timeout --cert --key`` (and
    any other ``timeouts``: (name, default, help) each; with
    ``max_clients``, ``--max-clients`` and its default), or a client's
    ``--host --port --timeout --cacert --tls [MESSAGE]``.

    The TLS options become ``args.ssl``: an ``ssl.SSLContext``, or ``None``
    for plain TCP.
    """
    parser = Parser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=port, help="default: %(default)s")
    if client:
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="default: %(default)s"
        )
        add_client_tls(parser, switch=True)
        parser.add_argument(
            "message",
            nargs="?",
            default="Hello from client!",
            help="what to send ('-' reads standard input; default: %(default)s)",
        )
    else:
        parser.add_argument(
            "--idle-timeout",
            type=float,
            default=60.0,
            help="seconds of silence before a client is dropped (default: %(default)s)",
        )
        for name, default, text in timeouts:
            parser.add_argument(
                f"--{name}",
                type=float,
                default=default,
                help=f"{text} (default: %(default)s)",
            )
        if max_clients is not None:
            parser.add_argument(
                "--max-clients",
                type=positive_int,
                default=max_clients,
                help="clients served at once; the next wait in the listen backlog"
                " (default: %(default)s)",
            )
        add_server_tls(parser)
    args = parser.parse_args(argv)
    args.ssl = client_tls(parser, args) if client else server_tls(parser, args)
    return args


def positive_int(text):
    """``argparse`` type: a whole number above zero."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return number


def add_server_tls(parser):
    parser.add_argument(
        "--cert",
        metavar="FILE",
        help="serve TLS with this PEM certificate (then its chain); needs --key",
    )
    parser.add_argument(
        "--key", metavar="FILE", help="the certificate's PEM private key"
    )


def server_tls(parser, args):
    """
    :return: the server's ``ssl.SSLContext`` for ``--cert`` and ``--key``,
        or ``None`` when neither is given. A missing partner is a usage
        error; a file that cannot be used, one line and exit status 1.
    """
    if (args.cert is None) != (args.key is None):
        parser.error("--cert and --key go together: give both or neither")
    if args.cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    # Client-initiated renegotiation only makes the server work harder.
    context.options |= ssl.OP_NO_RENEGOTIATION
    readable(parser, args.cert, "certificate")
    readable(parser, args.key, "private key")

    def encrypted():
        # Without this, OpenSSL would ask for a passphrase on the terminal.
        raise ValueError("the private key is encrypted; the twins need it plain")

    try:
        context.load_cert_chain(args.cert, args.key, password=encrypted)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            why = "the key is not the certificate's"
        else:
            why = f"not a PEM certificate and its key ({error.reason or error})"
        parser.exit(1, f"{parser.prog}: {args.cert}, {args.key}: {why}\n")
    except ValueError as error:
        parser.exit(1, f"{parser.prog}: {args.key}: {error}\n")
    return context


def add_client_tls(parser, switch=False):
    """``--cacert`` (and, with ``switch``, ``--tls``) for a client."""
    parser.add_argument(
        "--cacert",
        metavar="FILE",
        help="trust only the CA certificates in this PEM file"
        + (" (and speak TLS)" if switch else ""),
    )
    if switch:
        parser.add_argument(
            "--tls",
            action="store_true",
            help="speak TLS, trusting the system's CAs",
        )


def client_tls(parser, args):
    """
    :return: an ``ssl.SSLContext`` that verifies the server and its name,
        trusting ``--cacert`` or the system's CAs; ``None`` when the client
        was not asked for TLS (no ``--cacert``, no ``--tls``).
    """
    if not (args.cacert or getattr(args, "tls", False)):
        return None
    if args.cacert:
        readable(parser, args.cacert, "CA certificate file")
    try:
        context = ssl.create_default_context(cafile=args.cacert)
    except ssl.SSLError as error:
        parser.exit(1, f"{parser.prog}: {args.cacert}: {error.reason or error}\n")
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def readable(parser, path, what):
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        parser.exit(1, f"{parser.prog}: cannot read {what} {path}: {error.strerror}\n")


def tls_handshake(sock, seconds):
    """
    Finish a server-side TLS handshake (``sock`` wrapped with
    ``do_handshake_on_connect=False``) within ``seconds``, however slowly
    the client sends; raise ``TimeoutError`` past it, ``ssl.SSLError`` if
    the client does not speak TLS or refuses ours.

    A socket timeout would bound each read, not the whole handshake; so the
    socket waits in ``select`` for the time left, and OpenSSL says what it
    waits for.
    """
    deadline = time.monotonic() + seconds
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ)
            while True:
                try:
                    sock.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    selector.modify(sock, selectors.EVENT_READ)
                except ssl.SSLWantWriteError:
                    selector.modify(sock, selectors.EVENT_WRITE)
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    raise TimeoutError("TLS handshake timed out")
    finally:
        sock.settimeout(timeout)


def close_tls(sock):
    """Send TLS's close alert (``close_notify``), without waiting for the
    peer's: the end of the data, which TLS cannot say by half-closing."""
    sock.setblocking(False)
    with contextlib.suppress(OSError, ValueError):
        sock.unwrap()


async def until_stopped():
    """Wait (in asyncio) for SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()


def run(serve, args):
    """
    Run ``serve(args)`` until SIGINT or SIGTERM, then return 0.

    Both signals become ``KeyboardInterrupt`` so that ``with`` blocks close
    the sockets on the way out.
    """
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        serve(args)
    except KeyboardInterrupt:
        logging.getLogger(__name__).info("stopped")
    except OSError as error:
        sys.exit(f"{os.path.basename(sys.argv[0])}: {error}")
    return 0
