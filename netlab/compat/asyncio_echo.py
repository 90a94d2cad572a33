"""
The echo server with ``asyncio`` streams.

``await writer.drain()`` is the back-pressure: while a client is not reading,
the handler waits instead of reading more. Reaching the end of the client's
stream (it shut down its writing side) ends the loop after everything was
echoed; then the server closes.

With ``--cert FILE --key FILE`` it speaks TLS: ``start_server(ssl=...)``
with a stdlib ``ssl`` context, and asyncio does the rest. The handshake must
end within --idle-timeout seconds; asyncio drops a client that fails it (or
does not speak TLS) without a word, before ``handle`` ever sees it.
"""

import asyncio
import logging

from netlab.compat._common import parse_args, run, until_stopped

log = logging.getLogger("asyncio_echo")


async def handle(reader, writer, idle_timeout):
    addr = writer.get_extra_info("peername")
    log.info("connection from %s", addr)
    try:
        while True:
            async with asyncio.timeout(idle_timeout):
                data = await reader.read(65536)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
    except TimeoutError:
        log.info("connection from %s idle, dropping it", addr)
        writer.transport.abort()
    except OSError as error:
        log.info("connection from %s failed: %s", addr, error)
    finally:
        writer.close()
        log.info("connection from %s closed", addr)


async def serve_forever(args):
    server = await asyncio.start_server(
        lambda reader, writer: handle(reader, writer, args.idle_timeout),
        args.host,
        args.port,
        backlog=128,
        ssl=args.ssl,
        ssl_handshake_timeout=args.idle_timeout if args.ssl else None,
    )
    host, port = server.sockets[0].getsockname()[:2]
    log.info("listening on %s port %d", host, port)
    async with server:
        await until_stopped()
    log.info("stopped")


def serve(args):
    asyncio.run(serve_forever(args))


def main(argv=None):
    return run(serve, parse_args(__doc__, 8007, argv))


if __name__ == "__main__":
    raise SystemExit(main())
