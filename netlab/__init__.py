"""
netlab: the classic lessons of Python network programming as Twisted services.

Each service is a Twisted protocol and factory you can embed in your own
application, a twistd plugin, and has plain-Python twins in :mod:`netlab.compat`
that pass the same conformance suite.
"""

__version__ = "0.1.0"
