"""
Reference twins of netlab's services, written the way the classic lesson
teaches them: blocking ``socket``, ``selectors`` and ``asyncio``.

Each module runs as ``python -m netlab.compat.<module> --host 127.0.0.1 --port N``
and passes the same conformance suite as the Twisted service it mirrors. This
package imports nothing from Twisted or the rest of netlab.
"""
