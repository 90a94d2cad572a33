"""
The chat example (``examples/chat``), built only on netlab's public API:
rooms, history, presence, refusals and the slow-consumer policy, over
loopback with real WebSocket clients and bearer tokens, and the way its
README runs it (``twistd netlab-http --resource chat:root``).

The browser test (two tabs talking) is in ``tests.test_browser``.
"""

from __future__ import annotations

import json
import os
import pathlib
import random
from string import ascii_letters

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import TestCase

from examples.chat import chat
from netlab import auth, http, websocket
from tests.redis import RedisServer
from tests.support import WAIT, bounded, until
from tests.test_twistd import LOOPBACK_ANY_PORT, TwistdCase

CHAT = pathlib.Path(chat.__file__).parent


class Chat:
    """
    The chat served on loopback by an HTTPSite with ``/ws`` protected.
    """

    def __init__(self, case: TestCase) -> None:
        self.case = case
        self.secret = pathlib.Path(case.mktemp())
        self.secret.write_bytes(os.urandom(32).hex().encode())
        checker = auth.JWTChecker(auth.secret_from_file(self.secret))
        self.site = http.HTTPSite(
            chat.make_root(), protection=auth.Protection(checker, ("/ws",))
        )

    async def start(self) -> Chat:
        port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            self.site
        )
        self.case.addCleanup(port.stopListening)
        self.case.addCleanup(lambda: bounded(self.site.drained()))
        self.port = port.getHost().port
        return self

    def token(self, name: str) -> str:
        return auth.mint(self.secret, name)

    async def client(self, name: str) -> Client:
        connection = await websocket.connect(
            f"ws://127.0.0.1:{self.port}/ws",
            headers={"Authorization": f"Bearer {self.token(name)}"},
            timeout=WAIT,
        )
        self.case.addCleanup(_close, connection)
        return Client(connection)


def _closed(connection: websocket.Connection) -> bool:
    return connection._protocol.closed_with is not None


def _close(connection: websocket.Connection) -> object:
    if not _closed(connection):
        return bounded(connection.close())
    return None


class Client:
    """
    A chat client: sends JSON, reads JSON.
    """

    def __init__(self, connection: websocket.Connection) -> None:
        self.connection = connection

    def send(self, **what: str) -> None:
        self.connection.send(json.dumps(what))

    async def next(self) -> dict:
        return json.loads(await bounded(self.connection.receive()))

    async def next_of(self, kind: str) -> dict:
        """
        :return: the next event of type ``kind``, skipping the others.
        """
        while True:
            event = await self.next()
            if event["type"] == kind:
                return event


class ChatTests(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.chat = await Chat(self).start()

    async def test_a_room(self) -> None:
        alice = await self.chat.client("alice")
        alice.send(join="lobby")
        joined = await alice.next()
        self.assertEqual(
            joined, {"type": "joined", "room": "lobby", "who": ["alice"], "history": []}
        )
        self.assertEqual((await alice.next())["event"], "join")  # herself

        bob = await self.chat.client("bob")
        bob.send(join="lobby")
        self.assertEqual((await bob.next())["who"], ["alice", "bob"])
        presence = await alice.next()
        self.assertEqual((presence["who"], presence["event"]), ("bob", "join"))

        alice.send(say="hi bob", room="lobby")
        for client in (alice, bob):
            said = await client.next_of("message")
            self.assertEqual(
                (said["room"], said["from"], said["text"]), ("lobby", "alice", "hi bob")
            )

        carol = await self.chat.client("carol")
        carol.send(join="elsewhere")
        await carol.next_of("joined")
        carol.send(say="anyone?", room="elsewhere")
        self.assertEqual((await carol.next_of("message"))["text"], "anyone?")
        # What carol said in another room never reached the lobby: bob's
        # next event is the lobby's.
        alice.send(say="still here", room="lobby")
        self.assertEqual((await bob.next_of("message"))["text"], "still here")

        bob.send(leave="lobby")
        left = await alice.next_of("presence")
        self.assertEqual((left["who"], left["event"]), ("bob", "leave"))

    async def test_history_is_the_last_messages(self) -> None:
        alice = await self.chat.client("alice")
        alice.send(join="lobby")
        await alice.next_of("joined")
        for n in range(chat.HISTORY + 5):
            alice.send(say=f"m{n}", room="lobby")
        for n in range(chat.HISTORY + 5):
            self.assertEqual((await alice.next_of("message"))["text"], f"m{n}")
        bob = await self.chat.client("bob")
        bob.send(join="lobby")
        joined = await bob.next_of("joined")
        self.assertEqual(
            [said["text"] for said in joined["history"]],
            [f"m{n}" for n in range(5, chat.HISTORY + 5)],
        )

    async def test_a_room_goes_with_its_last_member(self) -> None:
        alice = await self.chat.client("alice")
        alice.send(join="brief")
        await alice.next_of("joined")
        alice.send(say="hello", room="brief")
        await alice.next_of("message")
        alice.send(leave="brief")
        alice.send(join="brief")
        self.assertEqual((await alice.next_of("joined"))["history"], [])

    async def test_refusals(self) -> None:
        alice = await self.chat.client("alice")
        for asked, said in (
            ({"join": "Bad Name!"}, "a room name is"),
            ({"say": "hi", "room": "lobby"}, "join lobby first"),
            ({"leave": "lobby"}, "not in lobby"),
            ({"hello": "there"}, "expected"),
        ):
            alice.send(**asked)
            self.assertIn(said, (await alice.next_of("error"))["error"])
        alice.send(join="lobby")
        await alice.next_of("joined")
        alice.send(say="x" * (chat.MAX_TEXT + 1), room="lobby")
        self.assertIn("characters", (await alice.next_of("error"))["error"])
        for n in range(chat.MAX_JOINED - 1):
            alice.send(join=f"room{n}")
        alice.send(join="onetoomany")
        self.assertIn("at most", (await alice.next_of("error"))["error"])

    async def test_not_json_and_binary_close(self) -> None:
        for message, code in (("not json", 1007), (b"\x00binary", 1003)):
            client = await self.chat.client("alice")
            client.connection.send(message)
            closed, _ = await bounded(client.connection.closed())
            self.assertEqual(closed, code)

    async def test_a_token_is_needed(self) -> None:
        connecting = websocket.connect(f"ws://127.0.0.1:{self.chat.port}/ws")
        with self.assertRaises(websocket.HandshakeRefused) as refused:
            await bounded(connecting)
        self.assertIn("401", str(refused.exception))

    async def test_a_stalled_reader_is_closed_and_nobody_waits(self) -> None:
        """
        bob stops reading while alice talks: once his queue is full he is
        closed with 1013 (try again later), and alice goes on talking.
        """
        alice = await self.chat.client("alice")
        bob = await self.chat.client("bob")
        for client in (alice, bob):
            client.send(join="lobby")
            await client.next_of("joined")
        bob.connection._protocol.transport.pauseProducing()
        # Random letters: the client's permessage-deflate would shrink
        # one repeated text to nothing.
        letters = random.Random(13)
        # Far more than bob's queue, the server's socket buffers and his.
        for _ in range(400):
            for _ in range(10):
                text = "".join(letters.choices(ascii_letters, k=chat.MAX_TEXT))
                alice.send(say=text, room="lobby")
            for _ in range(10):
                await alice.next_of("message")  # alice keeps up
            if _closed_by_server(self.chat, "bob"):
                break
        self.assertTrue(_closed_by_server(self.chat, "bob"))
        bob.connection._protocol.transport.resumeProducing()
        code, _ = await bounded(bob.connection.closed())
        self.assertEqual(code, 1013)
        alice.send(say="after", room="lobby")
        while (await alice.next_of("message"))["text"] != "after":
            pass


def _closed_by_server(chat_: Chat, name: str) -> bool:
    """
    :return: whether the server has begun closing ``name``'s connection.
    """
    for connection in chat_.site.connections:
        handler = getattr(connection, "session", None)
        if getattr(handler, "name", None) == name:
            return connection.state != connection.STATE_OPEN
    return False


class RunAsDocumentedTests(TwistdCase):
    """
    What run.sh runs: ``twistd netlab-http --resource chat:root`` from the
    example's folder, with ``--protect /ws``.
    """

    async def test_twistd(self) -> None:
        secret = pathlib.Path(self.mktemp()).resolve()
        secret.write_bytes(os.urandom(32).hex().encode())
        self.outside = str(CHAT)  # run from the example's folder, as run.sh
        child, [port] = await self.start(
            "netlab-http",
            *("--resource", "chat:root", "--listen", LOOPBACK_ANY_PORT),
            *("--protect", "/ws", "--jwt-secret", str(secret)),
            factories=("HTTPSite",),
        )
        page = await http.fetch(f"http://127.0.0.1:{port}/", timeout=WAIT)
        self.assertEqual(page.code, 200)
        self.assertIn(b"/chat.js", page.body)
        connections = []
        for name in ("alice", "bob"):
            connection = await websocket.connect(
                f"ws://127.0.0.1:{port}/ws",
                headers={"Authorization": f"Bearer {auth.mint(secret, name)}"},
                timeout=WAIT,
            )
            connections.append(Client(connection))
            connections[-1].send(join="lobby")
            await connections[-1].next_of("joined")
        connections[1].send(say="from bob", room="lobby")
        said = await connections[0].next_of("message")
        self.assertEqual((said["from"], said["text"]), ("bob", "from bob"))
        await self.assert_stops_on_sigterm(child, port)
        # The command this test runs is run.sh's.
        script = (CHAT / "run.sh").read_text()
        self.assertIn("netlab-http --resource chat:root", script)
        self.assertIn("--protect /ws --jwt-secret", script)


class AcrossProcessesTests(TwistdCase):
    """
    Two chat processes on different ports sharing one real redis-server
    (``--broker``): a room's messages and presence reach its members on
    the other, and history is per process.
    """

    async def test_two_processes_one_room(self) -> None:
        redis = await RedisServer(self).start()
        peek = await redis.client()
        secret = pathlib.Path(self.mktemp()).resolve()
        secret.write_bytes(os.urandom(32).hex().encode())
        self.outside = str(CHAT)
        ports = []
        for _ in range(2):
            _, [port] = await self.start(
                "netlab-http",
                *("--resource", "chat:root", "--listen", LOOPBACK_ANY_PORT),
                *("--protect", "/ws", "--jwt-secret", str(secret)),
                *("--broker", redis.url),
                factories=("HTTPSite",),
            )
            ports.append(port)

        async def subscribed(count: int) -> bool:
            answer = await peek.execute_command(
                "PUBSUB", "NUMSUB", "netlab:0:chat:lobby"
            )
            return int(answer[1]) == count

        async def client(port: int, name: str) -> Client:
            connection = await websocket.connect(
                f"ws://127.0.0.1:{port}/ws",
                headers={"Authorization": f"Bearer {auth.mint(secret, name)}"},
                timeout=WAIT,
            )
            self.addCleanup(_close, connection)
            return Client(connection)

        # Connected as soon as each process says its broker is up.
        for port in ports:
            await until(lambda port=port: _broker_up(port))
        alice = await client(ports[0], "alice")
        alice.send(join="lobby")
        await alice.next_of("joined")
        await until(lambda: subscribed(1))
        bob = await client(ports[1], "bob")
        bob.send(join="lobby")
        joined = await bob.next_of("joined")
        # Who is here, in this process.
        self.assertEqual(joined["who"], ["bob"])
        self.assertEqual((await alice.next_of("presence"))["who"], "alice")
        presence = await alice.next_of("presence")
        self.assertEqual((presence["who"], presence["event"]), ("bob", "join"))

        alice.send(say="hi bob", room="lobby")
        bob.send(say="hi alice", room="lobby")
        for reader in (alice, bob):
            said = [await reader.next_of("message") for _ in range(2)]
            self.assertEqual(
                sorted((m["from"], m["text"]) for m in said),
                [("alice", "hi bob"), ("bob", "hi alice")],
            )
        # Each process keeps what was said while it had members in the room.
        carol = await client(ports[1], "carol")
        carol.send(join="lobby")
        history = (await carol.next_of("joined"))["history"]
        self.assertEqual(sorted(m["text"] for m in history), ["hi alice", "hi bob"])

        bob.send(leave="lobby")
        carol.send(leave="lobby")
        heard = await alice.next_of("presence")
        self.assertEqual((heard["who"], heard["event"]), ("carol", "join"))
        # Two connections: their leaves come in either order.
        left = [await alice.next_of("presence") for _ in range(2)]
        self.assertEqual(
            sorted((e["who"], e["event"]) for e in left),
            [("bob", "leave"), ("carol", "leave")],
        )
        # No member left there: that process unsubscribes.
        await until(lambda: subscribed(1))


async def _broker_up(port: int) -> bool:
    response = await http.fetch(f"http://127.0.0.1:{port}/healthz", timeout=WAIT)
    return json.loads(response.body).get("broker") == "up"
