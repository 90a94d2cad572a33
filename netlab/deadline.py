"""
One deadline for a whole client exchange, whatever phase it is in.
"""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


def with_deadline(
    exchange: defer.Deferred[T], seconds: float, clock: IReactorTime
) -> defer.Deferred[T]:
    """
    Cancel ``exchange`` if it has not fired within ``seconds``.

    :return: ``exchange``, which then fails with
        :class:`~twisted.internet.defer.TimeoutError` whichever phase was
        cancelled: cancelling a connect attempt, for one, fails with
        ``ConnectingCancelledError`` rather than ``CancelledError``.
    """

    def timed_out(result: Any, timeout: float) -> Any:
        if isinstance(result, Failure):
            raise defer.TimeoutError(f"no complete answer within {timeout} seconds")
        return result

    return exchange.addTimeout(seconds, clock, onTimeoutCancel=timed_out)
