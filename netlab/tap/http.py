"""
``twistd netlab-http``: the HTTP service.
"""

from netlab.http import DEFAULT_HTTP_LISTEN, HTTPSite
from netlab.limits import HTTP_LIMITS, LimitOptions, limit_parameters
from netlab.tap import ServiceOptions, make_service_maker


class Options(ServiceOptions):
    """
    Options for ``twistd netlab-http``.
    """

    synopsis = "[options]"
    longdesc = (
        "Serves 'Hello, world!' at /, a JSON reflection of the request at /echo "
        "and a health check at /healthz."
    )
    optParameters = limit_parameters(HTTP_LIMITS)
    default_listen = DEFAULT_HTTP_LISTEN


def make_factory(options: LimitOptions) -> HTTPSite:
    """
    :return: the HTTP site these options describe.
    """
    return HTTPSite(limits=options.limits())


makeService = make_service_maker(make_factory)
