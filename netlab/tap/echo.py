"""
``twistd netlab-echo``: the TCP echo service.
"""

from netlab.limits import TCP_LIMITS, limit_parameters
from netlab.services.echo import DEFAULT_ECHO_LISTEN, EchoFactory
from netlab.tap import ServiceOptions, makeService


class Options(ServiceOptions):
    """
    Options for ``twistd netlab-echo``.
    """

    synopsis = "[options]"
    longdesc = "Echoes back every byte each client sends, until it closes."
    optParameters = limit_parameters(TCP_LIMITS)
    default_listen = DEFAULT_ECHO_LISTEN
    factory_class = EchoFactory


__all__ = ["Options", "makeService"]
