"""
The ``ws-broadcast`` workload's room, on netlab: every message a member
sends goes to every other member, through :func:`netlab.websocket.broadcast`
(encoded once; a member that does not read gets its handler's overflow
policy, not the power to hold up the others)::

    twistd -n netlab-ws --handler netlab.tools.bench.room:Room

One room per process: the members are a class attribute.
"""

from __future__ import annotations

from typing import ClassVar

from netlab.websocket import Handler, broadcast


class Room(Handler):
    """
    A member of the one room: its messages go to every other member.
    """

    #: The members, in the order they joined (a dict as an ordered set).
    members: ClassVar[dict[Room, None]] = {}

    def on_open(self) -> None:
        self.members[self] = None

    def on_message(self, message: str | bytes) -> None:
        broadcast((member for member in self.members if member is not self), message)

    def on_close(self, code: int | None, reason: str | None) -> None:
        self.members.pop(self, None)
