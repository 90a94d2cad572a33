"""
The bare twisted.web baseline for a user's resource: the resource tree of
:mod:`netlab.tools.bench.userapp` (``GET /hello?name=bench`` answers
``Hello, bench!``) in a ``Site`` that keeps no access log. No limits, no
extra headers.

``python -m netlab.tools.bench.bare_web_user --port PORT``
"""

from __future__ import annotations

from netlab.tools.bench._bare import serve
from netlab.tools.bench.bare_web import QuietSite
from netlab.tools.bench.userapp import Root


def main(argv: list[str] | None = None) -> int:
    return serve(__doc__, lambda: QuietSite(Root()), argv)


if __name__ == "__main__":
    raise SystemExit(main())
