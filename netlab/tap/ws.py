"""
``twistd netlab-ws``: a WebSocket service, standalone (at any path): the
echo, or the user's handler given by ``--handler package.module:name``.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from netlab.limits import WS_LIMITS, limit_parameters
from netlab.services import wsecho
from netlab.tap import (
    AuthOptions,
    BrokerOptions,
    OriginOptions,
    ServiceOptions,
    import_object,
    makeService,
)
from netlab.websocket import DEFAULT_WS_LISTEN, WebSocketFactory, check_handler


class Options(BrokerOptions, AuthOptions, OriginOptions, ServiceOptions):
    """
    Options for ``twistd netlab-ws``.
    """

    synopsis = "[options]"
    longdesc = (
        "Serves a WebSocket handler (--handler package.module:name: an async "
        "function taking a connection, or a netlab.websocket.Handler subclass) "
        "with netlab's limits, origin checks, tokens, drain and metrics. "
        "Without --handler, answers each text message m with 'Echo: m', and "
        "each binary message with the same bytes."
    )
    optParameters = limit_parameters(WS_LIMITS)
    default_listen = DEFAULT_WS_LISTEN

    def __init__(self) -> None:
        super().__init__()
        self["handler"] = None
        self.docs["handler"] = (
            "Serve this handler (package.module:name): an async function "
            "taking a connection, or a netlab.websocket.Handler subclass. "
            "[default: the echo]"
        )

    def opt_handler(self, path: str) -> None:
        """
        Serve this WebSocket handler (package.module:name).
        """
        found = import_object(path, "--handler")
        try:
            check_handler(found)
        except TypeError as error:
            raise usage.UsageError(f"--handler {path}: {error}") from None
        self["handler"] = found

    @classmethod
    def make_factory(cls, options: usage.Options, **arguments: Any) -> Any:
        """
        :return: a :class:`~netlab.websocket.WebSocketFactory` serving the
            ``--handler``, or the echo without one.
        """
        handler = options.get("handler")
        if handler is None:
            return wsecho.EchoFactory(**arguments)
        return WebSocketFactory(handler, **arguments)


__all__ = ["Options", "makeService"]
