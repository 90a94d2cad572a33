"""
A multi-room chat, built only on netlab's public API: a WebSocket handler
(:class:`netlab.websocket.Handler`) for the rooms and a small page, served
by ``twistd netlab-http --resource chat:root`` with bearer-token login
(``--protect /ws``) and every netlab limit.

Each client sends JSON text messages:

- ``{"join": "ROOM"}``: enter a room; the answer is ``{"type": "joined",
  "room", "who", "history"}`` (the room's members and its last
  :data:`HISTORY` messages), and the room hears ``{"type": "presence",
  "room", "who", "event": "join"}``;
- ``{"leave": "ROOM"}``: leave it (the room hears ``"event": "leave"``);
- ``{"say": "TEXT", "room": "ROOM"}``: every member of the room, the sender
  included, gets ``{"type": "message", "room", "from", "text", "time"}``.

A mistake gets ``{"type": "error", "error": "..."}``; a binary message or one
that is not JSON closes the connection with 1003 or 1007. Who you are is the
``sub`` of your token.

Rooms publish through :mod:`netlab.pubsub`: served with ``--broker
redis://HOST:PORT/DB``, every chat process sharing that Redis delivers a
room's messages and presence to the room's members wherever they are
connected (``BROKER=redis://127.0.0.1:6379/0 bash run.sh`` in two terminals,
with different ``PORT``). History and the ``who`` list are per process: a
process keeps what was said in a room while it had members there, and lists
the members connected to it.

Everything is bounded: a room keeps :data:`HISTORY` messages, a message is at
most :data:`MAX_TEXT` characters, a client joins at most
:data:`MAX_JOINED` rooms, there are at most :data:`MAX_ROOMS` rooms, and each
client's outgoing queue holds at most :attr:`ChatClient.max_queue` bytes: a
client that stops reading while its rooms talk is closed with 1013 (try
again later) once it is full, and nobody else waits for it.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import deque
from typing import Any

from twisted.web.resource import Resource
from twisted.web.server import Request
from twisted.web.static import Data

from netlab import pubsub
from netlab.websocket import Handler, WebSocketMount

#: Messages each room remembers for those who join it.
HISTORY = 20
#: The longest message, in characters.
MAX_TEXT = 2000
#: The most rooms one client may be in at once.
MAX_JOINED = 10
#: The most rooms there may be at once.
MAX_ROOMS = 1000
#: What a room's name may be.
ROOM_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")

_guests = itertools.count(1)


class Room:
    """
    A room's members here and the last :data:`HISTORY` things said in it
    while it had members here, from any process.
    """

    def __init__(self, name: str, hub: pubsub.Hub) -> None:
        self.name = name
        self.hub = hub
        #: The room's channel on the hub.
        self.channel = f"chat:{name}"
        self.members: set[ChatClient] = set()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self._recording = hub.subscribe(self.channel, self._record)

    def _record(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            return  # not from a chat: some other client of the broker
        if isinstance(event, dict) and event.get("type") == "message":
            self.history.append(event)

    def tell(self, event: dict[str, Any]) -> None:
        """
        Send ``event`` to every member, here and in every process sharing
        the broker: encoded once, and no member's slow reading holds up the
        others (each gets it through its own queue: see
        :mod:`netlab.pubsub`).
        """
        self.hub.publish(self.channel, json.dumps(event))

    def close(self) -> None:
        """
        The last member here has left: stop listening.
        """
        self._recording.cancel()


class Rooms:
    """
    Every room of one chat service; a room goes when its last member leaves.

    :param hub: where rooms publish; by default the process-wide hub, which
        ``--broker`` bridges to other processes.
    """

    def __init__(self, hub: pubsub.Hub | None = None) -> None:
        self.rooms: dict[str, Room] = {}
        self._hub = hub

    @property
    def hub(self) -> pubsub.Hub:
        """
        The hub the rooms publish through.
        """
        return self._hub or pubsub.hub

    def join(self, client: ChatClient, name: str) -> str | None:
        """
        Put ``client`` in room ``name``.

        :return: why not, or ``None`` when it joined.
        """
        if not ROOM_NAME.fullmatch(name):
            return "a room name is 1-32 of a-z, 0-9, _ and -, starting alphanumeric"
        if name in client.joined:
            return f"already in {name}"
        if len(client.joined) >= MAX_JOINED:
            return f"at most {MAX_JOINED} rooms at once"
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= MAX_ROOMS:
                return "too many rooms: try an existing one"
            room = self.rooms[name] = Room(name, self.hub)
        room.members.add(client)
        client.joined[name] = client.subscribe(room.channel, room.hub)
        client.send(
            json.dumps(
                {
                    "type": "joined",
                    "room": name,
                    "who": sorted(member.name for member in room.members),
                    "history": list(room.history),
                }
            )
        )
        room.tell(_presence(name, client, "join"))
        return None

    def leave(self, client: ChatClient, name: str) -> str | None:
        """
        Take ``client`` out of room ``name``.

        :return: why not, or ``None`` when it left.
        """
        room = self.rooms.get(name)
        if room is None or client not in room.members:
            return f"not in {name}"
        room.members.discard(client)
        client.joined.pop(name).cancel()
        # Members in other processes hear it even when none is left here.
        room.tell(_presence(name, client, "leave"))
        if not room.members:
            room.close()
            del self.rooms[name]
        return None

    def say(self, client: ChatClient, name: str, text: str) -> str | None:
        """
        Say ``text`` in room ``name``, to everyone in it.

        :return: why not, or ``None`` when it was said.
        """
        room = self.rooms.get(name)
        if room is None or client not in room.members:
            return f"join {name} first"
        if not text or len(text) > MAX_TEXT:
            return f"a message is 1 to {MAX_TEXT} characters"
        room.tell(
            {
                "type": "message",
                "room": name,
                "from": client.name,
                "text": text,
                "time": round(time.time(), 3),
            }
        )
        return None


_USAGE = 'expected {"join": ROOM}, {"leave": ROOM} or {"say": TEXT, "room": ROOM}'


def _presence(room: str, client: ChatClient, event: str) -> dict[str, Any]:
    return {"type": "presence", "room": room, "who": client.name, "event": event}


class ChatClient(Handler):
    """
    One connected client: its name and the rooms it is in.
    """

    #: The chat this client talks in (see :func:`make_root`).
    rooms: Rooms
    # A stalled reader may fall this far behind its rooms, then it goes.
    max_queue = 256 * 1024
    overflow = "close"
    overflow_code = 1013

    def on_open(self) -> None:
        self.name = self.subject or f"guest-{next(_guests)}"
        #: The rooms this client is in, and its subscription to each.
        self.joined: dict[str, pubsub.Subscription] = {}

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.close(1003, "text (JSON) messages only")
            return
        try:
            asked = json.loads(message)
        except ValueError:
            self.close(1007, "not JSON")
            return
        if not isinstance(asked, dict):
            self.fail("expected a JSON object")
        elif isinstance(asked.get("join"), str):
            self.fail(self.rooms.join(self, asked["join"]))
        elif isinstance(asked.get("leave"), str):
            self.fail(self.rooms.leave(self, asked["leave"]))
        elif isinstance(asked.get("say"), str) and isinstance(asked.get("room"), str):
            self.fail(self.rooms.say(self, asked["room"], asked["say"]))
        else:
            self.fail(_USAGE)

    def fail(self, why: str | None) -> None:
        """
        Tell the client why it was refused, if it was.
        """
        if why is not None:
            self.send(json.dumps({"type": "error", "error": why}))

    def on_close(self, code: int | None, reason: str | None) -> None:
        for name in list(getattr(self, "joined", ())):
            self.rooms.leave(self, name)


_POLICY = b"default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'"


class Document(Data):
    """
    A fixed document, with headers that keep a browser from guessing or
    running anything but the page's own script.
    """

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"Content-Security-Policy", _POLICY)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cache-Control", b"no-cache")
        return super().render_GET(request)


def _read(name: str) -> bytes:
    from pathlib import Path

    return (Path(__file__).parent / name).read_bytes()


def make_root(hub: pubsub.Hub | None = None) -> Resource:
    """
    :param hub: where the rooms publish (by default the process-wide hub).
    :return: the chat's site: the page at ``/``, its script at
        ``/chat.js`` and the WebSocket at ``/ws``, with rooms of its own.
    """
    handler = type("ChatClient", (ChatClient,), {"rooms": Rooms(hub)})
    root = Resource()
    root.putChild(b"", Document(_read("index.html"), "text/html; charset=utf-8"))
    root.putChild(
        b"chat.js", Document(_read("chat.js"), "text/javascript; charset=utf-8")
    )
    root.putChild(b"ws", WebSocketMount(handler))
    return root


#: What ``twistd netlab-http --resource chat:root`` serves.
root = make_root()
