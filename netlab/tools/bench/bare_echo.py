"""
The bare Twisted echo baseline: a ``Protocol`` whose ``dataReceived``
writes what it got, on the default reactor. No limits, no idle timeout, no
back-pressure, no logging: what netlab's echo costs beyond this is netlab's.

``python -m netlab.tools.bench.bare_echo --port PORT``
"""

from __future__ import annotations

from twisted.internet import protocol

from netlab.tools.bench._bare import serve


class Echo(protocol.Protocol):
    """
    Writes back every byte received.
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def main(argv: list[str] | None = None) -> int:
    return serve(__doc__, lambda: protocol.Factory.forProtocol(Echo), argv)


if __name__ == "__main__":
    raise SystemExit(main())
