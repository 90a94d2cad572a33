"""
``twistd netlab-http``: the HTTP service.
"""

from netlab.http import DEFAULT_HTTP_LISTEN, HTTPSite
from netlab.limits import HTTP_LIMITS, limit_parameters
from netlab.tap import AuthOptions, OriginOptions, ServiceOptions, makeService


class Options(AuthOptions, OriginOptions, ServiceOptions):
    """
    Options for ``twistd netlab-http``.
    """

    synopsis = "[options]"
    longdesc = (
        "Serves 'Hello, world!' at /, a JSON reflection of the request at /echo, "
        "a health check at /healthz and the WebSocket echo at /ws."
    )
    optParameters = limit_parameters(HTTP_LIMITS)
    default_listen = DEFAULT_HTTP_LISTEN
    factory_class = HTTPSite


__all__ = ["Options", "makeService"]
