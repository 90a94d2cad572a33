"""
The bare twisted.web baseline: a ``Resource`` whose ``GET /`` says
``Hello, world!`` in a ``Site`` that keeps no access log. No limits, no
extra headers, no other routes.

``python -m netlab.tools.bench.bare_web --port PORT``
"""

from __future__ import annotations

from typing import Any

from twisted.web import resource, server

from netlab.tools.bench._bare import serve

HELLO = b"Hello, world!"


class Hello(resource.Resource):
    """
    ``GET /``: ``Hello, world!`` as plain text.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return HELLO


class QuietSite(server.Site):
    """
    A ``Site`` that writes no access log line per request.
    """

    def log(self, request: Any) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    return serve(__doc__, lambda: QuietSite(Hello()), argv)


if __name__ == "__main__":
    raise SystemExit(main())
