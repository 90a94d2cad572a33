"""
``twistd netlab-ws``: the WebSocket echo service, standalone (at path ``/``).
"""

from netlab.limits import WS_LIMITS, limit_parameters
from netlab.tap import AuthOptions, OriginOptions, ServiceOptions, makeService
from netlab.websocket import DEFAULT_WS_LISTEN, EchoFactory


class Options(AuthOptions, OriginOptions, ServiceOptions):
    """
    Options for ``twistd netlab-ws``.
    """

    synopsis = "[options]"
    longdesc = (
        "Answers each WebSocket text message m with 'Echo: m', and each binary "
        "message with the same bytes."
    )
    optParameters = limit_parameters(WS_LIMITS)
    default_listen = DEFAULT_WS_LISTEN
    factory_class = EchoFactory


__all__ = ["Options", "makeService"]
