"""
The ``ws-broadcast`` workload's room, on netlab, as a user writes one with
:mod:`netlab.pubsub`: each member subscribes to the room's channel, and
every message a member sends is published to it, so it reaches every
member, the sender too (the generator's publisher reads and drops its own
copies)::

    twistd -n netlab-ws --handler netlab.tools.bench.room:Room

Without ``--broker`` the process-wide hub delivers in the process, each
message encoded once and written to each member's connection (its queue
and overflow policy apply: a member that does not read cannot hold up the
others); with ``--broker redis://...`` it also reaches the members of every
other process sharing that Redis (``--workers``, other instances).
"""

from __future__ import annotations

from netlab import pubsub
from netlab.websocket import Handler

#: The room's channel.
CHANNEL = "room"


class Room(Handler):
    """
    A member of the room: it gets every message published to it, and
    publishes every message it sends.
    """

    def on_open(self) -> None:
        self.subscribe(CHANNEL)

    def on_message(self, message: str | bytes) -> None:
        pubsub.publish(CHANNEL, message)
