"""
``twistd netlab-tcp --factory pkg.mod:factory``: your own TCP protocol,
served with netlab's limits, TLS, drain, metrics, wiretap and workers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage

from netlab.limits import TCP_LIMITS, limit_parameters
from netlab.tap import ServiceOptions, import_object, makeService
from netlab.tcp import TCPFactory

#: Where ``twistd netlab-tcp`` listens unless told otherwise.
DEFAULT_TCP_LISTEN = "tcp:8000:interface=127.0.0.1"


def protocol_factory(found: Any, option: str, path: str) -> Any:
    """
    :return: what :class:`~netlab.tcp.TCPFactory` serves, from what
        ``--factory`` named: a protocol factory, a ``Factory`` subclass
        (made with no arguments, as ``twistd web --class`` makes its
        resource) or a ``Protocol`` subclass.
    :raise ~twisted.python.usage.UsageError: for anything else, in one line.
    """
    if IProtocolFactory.providedBy(found):
        return found
    if isinstance(found, type) and issubclass(found, Factory):
        try:
            return found()
        except Exception as error:
            raise usage.UsageError(
                f"{option} {path}: {found.__name__}() failed: "
                f"{type(error).__name__}: {error}"
            ) from None
    if isinstance(found, type) and issubclass(found, Protocol):
        return found
    raise usage.UsageError(
        f"{option} {path}: expected a protocol factory or a Protocol class, "
        f"got {type(found).__name__}"
    )


class Options(ServiceOptions):
    """
    Options for ``twistd netlab-tcp``.
    """

    synopsis = "--factory PACKAGE.MODULE:NAME [options]"
    longdesc = (
        "Serves your own Twisted protocol: a protocol factory, a Factory "
        "subclass or a Protocol subclass, named by --factory."
    )
    optParameters = [
        *limit_parameters(TCP_LIMITS),
        ["service-name", None, "tcp", "Names the service in logs and metrics."],
    ]
    default_listen = DEFAULT_TCP_LISTEN

    def opt_factory(self, path: str) -> None:
        """
        The protocol factory (or Factory or Protocol class) to serve, as
        package.module:name.
        """
        self["factory"] = protocol_factory(
            import_object(path, "--factory"), "--factory", path
        )

    def postOptions(self) -> None:
        if self.get("factory") is None:
            raise usage.UsageError(
                "--factory PACKAGE.MODULE:NAME is required: the protocol to serve"
            )
        super().postOptions()

    @classmethod
    def make_factory(cls, options: usage.Options, **arguments: Any) -> TCPFactory:
        return TCPFactory(
            options["factory"],
            service_name=options["service-name"],
            **arguments,
        )


__all__ = ["Options", "makeService"]
