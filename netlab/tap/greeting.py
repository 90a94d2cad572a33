"""
``twistd netlab-greeting``: the TCP greeting service.
"""

from netlab.limits import TCP_LIMITS, LimitOptions, limit_parameters
from netlab.tap import ServiceOptions, make_service_maker
from netlab.tcp import DEFAULT_GREETING_LISTEN, GreetingFactory


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


def make_factory(options: LimitOptions) -> GreetingFactory:
    """
    :return: the greeting factory these options describe.
    """
    return GreetingFactory(limits=options.limits())


makeService = make_service_maker(make_factory)
