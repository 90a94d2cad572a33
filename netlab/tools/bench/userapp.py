"""
A user's own small services, written as a user would write them: what the
``http-user`` and ``ws-user`` workloads of ``netlab bench`` serve.

The HTTP part is a plain twisted.web resource tree, written against
twisted.web alone: ``GET /hello?name=bench`` answers ``Hello, bench!``, and
``GET /`` ``Hello, world!`` (what the ``http`` workload asks every server, so
netlab serving it through the user's resource stands beside netlab's own
service answering it from the request head).
Serve it with either of::

    twistd -n netlab-http --resource netlab.tools.bench.userapp:root
    twistd -n web --class netlab.tools.bench.userapp.Root

The WebSocket part is a :class:`netlab.websocket.Handler` that answers each
text message ``m`` with ``Echo: m`` (and a binary one with its bytes)::

    twistd -n netlab-ws --handler netlab.tools.bench.userapp:handler
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request

from netlab.websocket import Handler


class Hello(Resource):
    """
    ``GET /hello?name=NAME``: ``Hello, NAME!`` as plain text (``NAME`` is
    ``world`` without the parameter).
    """

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        names = request.args.get(b"name") or [b"world"]
        name = names[0].decode("utf-8", "replace")
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return f"Hello, {name}!".encode()


class Root(Resource):
    """
    The application's root: ``/hello``, and ``/`` (``Hello, world!``).
    Made with no arguments, as ``twistd web --class`` needs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"hello", Hello())
        self.putChild(b"", Hello())


#: The resource tree ``--resource netlab.tools.bench.userapp:root`` serves.
root = Root()


class Answer(Handler):
    """
    Answers each text message ``m`` with ``Echo: m``, and each binary
    message with the same bytes; counts what it answered on its connection.
    """

    def on_open(self) -> None:
        self.answered = 0

    def on_message(self, message: str | bytes) -> None:
        if isinstance(message, str):
            self.send(f"Echo: {message}")
        else:
            self.send(message)
        self.answered += 1


#: The handler ``--handler netlab.tools.bench.userapp:handler`` serves (the
#: class: one instance per connection).
handler = Answer
