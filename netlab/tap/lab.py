"""
``twistd netlab``: every netlab service in one process, each on its own port.

Each service has one option that moves it (``--echo ENDPOINT``, repeatable) or
turns it off (``--echo off``).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import IService, MultiService
from twisted.internet.interfaces import IProtocolFactory
from twisted.python import usage

from netlab.limits import HTTP_LIMITS, LimitOptions, limit_parameters
from netlab.tap import check_endpoint, echo, greeting, http, listening_service

#: Each service the lab runs: its default endpoint and how to build its factory.
SERVICES: dict[str, tuple[str, Callable[[LimitOptions], IProtocolFactory]]] = {
    "echo": (echo.Options.default_listen, echo.make_factory),
    "greeting": (greeting.Options.default_listen, greeting.make_factory),
    "http": (http.Options.default_listen, http.make_factory),
}

OFF = "off"


class Options(LimitOptions):
    """
    Options for ``twistd netlab``.
    """

    synopsis = "[options]"
    longdesc = "Runs every netlab service in one process, on loopback by default."
    optParameters = limit_parameters(HTTP_LIMITS)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = {name: [] for name in SERVICES}
        for name, (default, _) in SERVICES.items():
            self.docs[name] = (
                f"Where the {name} service listens (endpoint string, repeatable), "
                f"or off. [default: {default}]"
            )

    def _place(self, name: str, description: str) -> None:
        if description != OFF:
            check_endpoint(description)
        self["listen"][name].append(description)

    def opt_echo(self, description: str) -> None:
        """
        Where the echo service listens (endpoint string, repeatable), or off.
        """
        self._place("echo", description)

    def opt_greeting(self, description: str) -> None:
        """
        Where the greeting service listens (endpoint string, repeatable), or off.
        """
        self._place("greeting", description)

    def opt_http(self, description: str) -> None:
        """
        Where the HTTP service listens (endpoint string, repeatable), or off.
        """
        self._place("http", description)

    def postOptions(self) -> None:
        for name, (default, _) in SERVICES.items():
            places = self["listen"][name]
            if OFF in places and len(places) > 1:
                raise usage.UsageError(f"--{name} {OFF} cannot be combined with others")
            if places == [OFF]:
                self["listen"][name] = []
            elif not places:
                self["listen"][name] = [default]
        if not any(self["listen"].values()):
            raise usage.UsageError("every service is off: nothing to run")


def makeService(options: Options) -> IService:
    """
    :return: one service holding every netlab service that is not off.
    """
    lab = MultiService()
    for name, (_, make_factory) in SERVICES.items():
        places = options["listen"][name]
        if places:
            service = listening_service(places, make_factory(options))
            service.setName(name)
            service.setServiceParent(lab)
    return lab
