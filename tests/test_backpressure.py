"""
Back-pressure end to end: a client that stops reading cannot make a netlab
server buffer without bound, and loses nothing once it reads again.
"""

from __future__ import annotations

import os

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from netlab import http, websocket
from netlab.services import hello, wsecho
from netlab.testing import serve
from tests.support import WAIT, bounded

# Random, so that permessage-deflate cannot shrink it.
MESSAGE = os.urandom(65536)
COUNT = 300  # about 19 MiB of echoes, more than the kernel buffers hold


class WebSocketBackPressureTests(TestCase):
    timeout = 120

    async def slow_reader(self, factory, path: str, tracker) -> None:
        served = await serve(self, factory)
        url = served.url(path, scheme="ws")
        connection = await websocket.connect(url, timeout=WAIT)
        client_transport = connection._protocol.transport
        client_transport.pauseProducing()  # the client stops reading
        for _ in range(COUNT):
            connection.send(MESSAGE)
        [server] = tracker.connections
        for _ in range(int(WAIT / 0.05)):
            if server.reading_paused:
                break
            await task.deferLater(reactor, 0.05)
        self.assertTrue(server.reading_paused, "the server never stopped reading")

        client_transport.resumeProducing()
        for index in range(COUNT):
            reply = await bounded(connection.receive())
            self.assertEqual(reply, MESSAGE, index)
        self.assertFalse(server.reading_paused)
        await bounded(connection.close())

    async def test_standalone(self) -> None:
        factory = wsecho.EchoFactory()
        await self.slow_reader(factory, "/", factory)

    async def test_mounted(self) -> None:
        site = http.HTTPSite(hello.Root())
        await self.slow_reader(site, "/ws", site)
