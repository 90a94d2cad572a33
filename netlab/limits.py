"""
The limits and timeouts every netlab service shares.

They live here, once, so that each service and each twistd plugin offers the
same names with the same documented defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.python import usage


@dataclass(frozen=True)
class Limits:
    """
    Bounds a netlab server puts on each connection.

    :ivar idle_timeout: seconds a connection may stay silent (nothing
        received) before the server drops it.
    """

    idle_timeout: float = 60.0

    def __post_init__(self) -> None:
        if not self.idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {self.idle_timeout}")


#: What a server uses when given no :class:`Limits`.
DEFAULT_LIMITS = Limits()


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError(f"must be a positive number of seconds, not {value}")
    return number


_positive_float.coerceDoc = "Must be a positive number."  # type: ignore[attr-defined]


class LimitOptions(usage.Options):
    """
    The command-line face of :class:`Limits`, mixed into every netlab plugin.
    """

    optParameters = [
        [
            "idle-timeout",
            None,
            DEFAULT_LIMITS.idle_timeout,
            "Seconds a connection may stay silent before it is dropped.",
            _positive_float,
        ],
    ]

    def limits(self) -> Limits:
        """
        :return: the :class:`Limits` these options describe.
        """
        return Limits(idle_timeout=self["idle-timeout"])
