"""
The ``ws-broadcast`` workload's peer: the same room on a plain
``websockets`` server (asyncio), as the library's documentation writes one:
every message a member sends goes to every member, the sender too (as in
netlab's room, :mod:`netlab.tools.bench.room`), through
``websockets.broadcast``. No log but warnings.

``python -m netlab.tools.bench.ws_room --port PORT``
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

#: The room's members (one room per process).
MEMBERS: set[ServerConnection] = set()


async def member(connection: ServerConnection) -> None:
    """
    A member of the room, for as long as its connection lasts.
    """
    MEMBERS.add(connection)
    try:
        async for message in connection:
            broadcast(MEMBERS, message)
    except ConnectionClosed:
        pass  # a member that left without a closing handshake: it left
    finally:
        MEMBERS.discard(connection)


async def serve_until_stopped(host: str, port: int) -> None:
    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    # The listen backlog of netlab's plugins and the bench's other servers.
    async with serve(member, host, port, backlog=4096) as server:
        bound = server.sockets[0].getsockname()
        sys.stdout.write(f"listening on {bound[0]} port {bound[1]}\n")
        sys.stdout.flush()
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve_until_stopped(args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
