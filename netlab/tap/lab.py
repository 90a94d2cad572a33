"""
``twistd netlab``: every netlab service in one process, each on its own port.

Each service has one option that moves it (``--echo ENDPOINT``, repeatable) or
turns it off (``--echo off``).
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from netlab import workers
from netlab.limits import HTTP_LIMITS, LimitOptions, limit_parameters
from netlab.tap import (
    AuthOptions,
    BrokerOptions,
    DebugOptions,
    OriginOptions,
    ServiceOptions,
    check_endpoint,
    echo,
    greeting,
    http,
    listening_service,
    make_factory,
    ws,
)

#: Each service the lab runs, by the options of its own plugin.
SERVICES: dict[str, type[ServiceOptions]] = {
    "echo": echo.Options,
    "greeting": greeting.Options,
    "http": http.Options,
    "ws": ws.Options,
}

OFF = "off"


class Options(
    BrokerOptions,
    AuthOptions,
    OriginOptions,
    workers.WorkerOptions,
    DebugOptions,
    LimitOptions,
):
    """
    Options for ``twistd netlab``.
    """

    synopsis = "[options]"
    longdesc = "Runs every netlab service in one process, on loopback by default."
    optParameters = limit_parameters(HTTP_LIMITS)

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = {name: [] for name in SERVICES}
        for name, service in SERVICES.items():
            self.docs[name] = (
                f"Where the {name} service listens (endpoint string, repeatable), "
                f"or off. [default: {service.default_listen}]"
            )

    def _place(self, name: str, description: str) -> None:
        if description != OFF:
            description = check_endpoint(description)
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

    def opt_ws(self, description: str) -> None:
        """
        Where the WebSocket service listens (endpoint string, repeatable), or off.
        """
        self._place("ws", description)

    def postOptions(self) -> None:
        super().postOptions()
        for name, service in SERVICES.items():
            places = self["listen"][name]
            if OFF in places and len(places) > 1:
                raise usage.UsageError(f"--{name} {OFF} cannot be combined with others")
            if places == [OFF]:
                self["listen"][name] = []
            elif not places:
                self["listen"][name] = [service.default_listen]
        if not any(self["listen"].values()):
            raise usage.UsageError("every service is off: nothing to run")
        self.check_workers([d for places in self["listen"].values() for d in places])


def makeService(options: Options) -> IService:
    """
    :return: one service holding every netlab service that is not off (in
        each worker, with ``--workers``: see :mod:`netlab.workers`).
    """

    def build(reactor: Any) -> MultiService:
        lab = options.root()
        options.metrics(lab)
        tap = options.wiretap(lab)
        options.broker(lab, reactor)
        for name, plugin in SERVICES.items():
            places = options["listen"][name]
            if places:
                factory = make_factory(options, plugin)
                service = listening_service(places, factory, tap, reactor)
                service.setName(name)
                service.setServiceParent(lab)
        return lab

    return workers.serve(options, build)
