"""
``twistd netlab-echo``: the TCP echo service.
"""

from netlab.limits import TCP_LIMITS, LimitOptions, limit_parameters
from netlab.tap import ServiceOptions, make_service_maker
from netlab.tcp import DEFAULT_ECHO_LISTEN, EchoFactory


class Options(ServiceOptions):
    """
    Options for ``twistd netlab-echo``.
    """

    synopsis = "[options]"
    longdesc = "Echoes back every byte each client sends, until it closes."
    optParameters = limit_parameters(TCP_LIMITS)
    default_listen = DEFAULT_ECHO_LISTEN


def make_factory(options: LimitOptions) -> EchoFactory:
    """
    :return: the echo factory these options describe.
    """
    return EchoFactory(limits=options.limits())


makeService = make_service_maker(make_factory)
