"""
netlab: the classic lessons of Python network programming as Twisted services.

The framework layer (:mod:`netlab.tcp`, :mod:`netlab.http`,
:mod:`netlab.websocket` and what they build on) serves your own protocol,
resource, WSGI application or WebSocket handler with netlab's limits, TLS,
tokens, drain, workers, metrics and logs. netlab's demo services
(:mod:`netlab.services`) are its first users; the tools (:mod:`netlab.tools`:
bench, soak) measure them; their plain-Python twins (:mod:`netlab.compat`)
pass the same conformance suite.
"""

__version__ = "0.1.0"
