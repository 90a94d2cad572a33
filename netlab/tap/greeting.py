"""
``twistd netlab-greeting``: the TCP greeting service.
"""

from netlab.limits import TCP_LIMITS, limit_parameters
from netlab.services.greeting import DEFAULT_GREETING_LISTEN, GreetingFactory
from netlab.tap import ServiceOptions, makeService


class Options(ServiceOptions):
    """
    Options for ``twistd netlab-greeting``.
    """

    synopsis = "[options]"
    longdesc = (
        "Reads each client's first message, answers 'Hello from server!' and closes."
    )
    optParameters = limit_parameters(TCP_LIMITS)
    default_listen = DEFAULT_GREETING_LISTEN
    factory_class = GreetingFactory


__all__ = ["Options", "makeService"]
