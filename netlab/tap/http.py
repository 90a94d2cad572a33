"""
``twistd netlab-http``: the HTTP service, or your own resource tree
(``--resource``) or WSGI application (``--wsgi``) with netlab's guarantees.
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage
from twisted.web.resource import IResource

from netlab.http import DEFAULT_HTTP_LISTEN, HTTPSite, UserRoot, WSGIApp
from netlab.limits import HTTP_LIMITS, limit_parameters
from netlab.services import hello
from netlab.tap import (
    AuthOptions,
    BrokerOptions,
    OriginOptions,
    ServiceOptions,
    import_object,
    makeService,
)

#: Threads a ``--wsgi`` application gets unless told otherwise.
DEFAULT_WSGI_THREADS = 10


def load_resource(path: str) -> IResource:
    """
    :return: the resource ``--resource path`` names: a resource itself, or
        a class or zero-argument callable that returns one (as
        ``twistd web --class`` takes it).
    :raise ~twisted.python.usage.UsageError: with one line when it names anything else.
    """
    found = import_object(path, "--resource")
    if not IResource.providedBy(found) and callable(found):
        try:
            found = found()
        except Exception as error:
            raise usage.UsageError(
                f"--resource {path}: calling it failed: {type(error).__name__}: {error}"
            ) from None
    if not IResource.providedBy(found):
        raise usage.UsageError(
            f"--resource {path}: expected a twisted.web resource, "
            f"got {type(found).__name__}"
        )
    return found


class Options(BrokerOptions, AuthOptions, OriginOptions, ServiceOptions):
    """
    Options for ``twistd netlab-http``.
    """

    synopsis = "[options]"
    longdesc = (
        "Serves 'Hello, world!' at /, a JSON reflection of the request at /echo, "
        "a health check at /healthz and the WebSocket echo at /ws; or, with "
        "--resource or --wsgi, your own application (and /healthz, unless it "
        "has its own or --no-healthz is given)."
    )
    optParameters = [
        *limit_parameters(HTTP_LIMITS),
        [
            "resource",
            None,
            None,
            "Serve this twisted.web resource (package.module:name): a resource, "
            "or a class or zero-argument callable that returns one.",
        ],
        [
            "wsgi",
            None,
            None,
            "Serve this WSGI application (package.module:name).",
        ],
        [
            "wsgi-threads",
            None,
            DEFAULT_WSGI_THREADS,
            "The most requests the WSGI application handles at once.",
            int,
        ],
    ]
    optFlags = [
        [
            "no-healthz",
            None,
            "Pass /healthz to your --resource or --wsgi application instead of "
            "answering it.",
        ],
    ]
    default_listen = DEFAULT_HTTP_LISTEN

    def postOptions(self) -> None:
        super().postOptions()
        if self["resource"] and self["wsgi"]:
            raise usage.UsageError("give --resource or --wsgi, not both")
        if self["wsgi-threads"] < 1:
            raise usage.UsageError("--wsgi-threads must be at least 1")
        if self["resource"]:
            self["user_resource"] = load_resource(self["resource"])
        if self["wsgi"]:
            app = import_object(self["wsgi"], "--wsgi")
            if not callable(app):
                raise usage.UsageError(
                    f"--wsgi {self['wsgi']}: expected a WSGI application "
                    f"(a callable), got {type(app).__name__}"
                )
            self["wsgi_app"] = app

    @classmethod
    def make_factory(cls, options: usage.Options, **arguments: Any) -> Any:
        """
        :return: an :class:`~netlab.http.HTTPSite` serving the user's
            resource or WSGI application under :class:`~netlab.http.UserRoot`,
            or netlab's own routes.
        """
        health = not options.get("no-healthz", False)
        resource = options.get("user_resource")
        if resource is not None:
            return HTTPSite(UserRoot(resource, health), **arguments)
        app = options.get("wsgi_app")
        if app is not None:
            wsgi = WSGIApp(app, threads=options["wsgi-threads"])
            site = HTTPSite(UserRoot(wsgi.resource, health), **arguments)
            # The plugin's service drains the site as twistd stops; the pool
            # stops once that is done.
            wsgi.run_with(site, drain=False)
            return site
        return hello.site(**arguments)


__all__ = ["Options", "makeService", "load_resource"]
