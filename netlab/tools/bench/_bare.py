"""
What the bare baseline servers share: their command line and their start.

The baselines are the least code that does the job with the same library,
so that a netlab service's figure can be read against what its library
costs by itself. They listen with netlab's listen backlog
(:data:`netlab.tap.DEFAULT_BACKLOG`, not Twisted's 50), as the C servers do:
a burst of connects then finds the same queue everywhere.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def serve(description: str, factory: Callable[[], Any], argv: list[str] | None) -> int:
    """
    Parse ``--host --port --reactor``, listen with ``factory()`` (with
    netlab's backlog) and run the reactor until SIGTERM or SIGINT.

    :return: the exit status.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--reactor", choices=["default", "asyncio"], default="default")
    args = parser.parse_args(argv)
    if args.reactor == "asyncio":
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
    from twisted.internet import reactor

    # After the reactor's choice: nothing may install one before it.
    from netlab.tap import DEFAULT_BACKLOG

    port = reactor.listenTCP(
        args.port, factory(), backlog=DEFAULT_BACKLOG, interface=args.host
    )
    sys.stdout.write(f"listening on {args.host} port {port.getHost().port}\n")
    sys.stdout.flush()
    reactor.run()
    return 0
