"""
What every twin's ``main`` shares: the command line, logging and a clean stop.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys


def parse_args(description, port, argv=None, client=False, timeouts=()):
    """Parse a server's ``--host --port --idle-timeout`` (and any other
    ``timeouts``: (name, default, help) each), or a client's
    ``--host --port --timeout [MESSAGE]``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=port, help="default: %(default)s")
    if client:
        parser.add_argument(
            "--timeout", type=float, default=10.0, help="default: %(default)s"
        )
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
    return parser.parse_args(argv)


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
