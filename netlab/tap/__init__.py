"""
The twistd plugins' options and services (``twistd netlab-echo``, ...).

One module per plugin, each with an ``Options`` class and a ``makeService``
function, as in :mod:`twisted.web.tap`. What they share lives here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory
from twisted.python import usage

from netlab.limits import LimitOptions


def check_endpoint(description: str) -> str:
    """
    Check a server endpoint string without listening on it.

    :raise usage.UsageError: with a one-line reason when it cannot be used.
    """
    from twisted.internet import reactor

    try:
        serverFromString(reactor, description)
    except Exception as error:
        raise usage.UsageError(f"bad endpoint {description!r}: {error}") from None
    return description


def listening_service(
    descriptions: Iterable[str], factory: IProtocolFactory
) -> MultiService:
    """
    :return: a service that listens with ``factory`` on each endpoint string.
    """
    service = MultiService()
    for description in descriptions:
        strports.service(description, factory).setServiceParent(service)
    return service


class ServiceOptions(LimitOptions):
    """
    Options for a plugin that runs one service: a repeatable ``--listen``.

    Subclasses set :attr:`default_listen`.
    """

    default_listen: str = ""

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on ENDPOINT, a Twisted server endpoint string such as
        tcp:8007:interface=127.0.0.1 (repeatable; without it, the service
        listens on its documented loopback port).
        """
        self["listen"].append(check_endpoint(description))

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [self.default_listen]

    def getSynopsis(self) -> str:
        return f"{super().getSynopsis()}\n(default: --listen {self.default_listen})"


def make_service_maker(
    factory: Callable[[ServiceOptions], IProtocolFactory],
) -> Callable[[ServiceOptions], IService]:
    """
    :return: a ``makeService`` that listens with ``factory(options)`` on each
        ``--listen`` endpoint.
    """

    def makeService(options: ServiceOptions) -> IService:
        return listening_service(options["listen"], factory(options))

    return makeService
