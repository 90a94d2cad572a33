"""Sphinx configuration for netlab's documentation."""

import os

import netlab

project = "netlab"
author = "the netlab authors"
copyright = "netlab contributors"
version = release = netlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]

# Every reference must resolve (CI builds with -W): a typo in a role, or a
# name that moved, fails the build instead of rendering as plain text.
nitpicky = True

# Links out to Python's, Twisted's, treq's and autobahn's documentation. The
# inventories are vendored in _inventories/ (see its README) so that a build
# never needs the network: CI may run where the docs sites cannot be reached.
_INVENTORIES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_inventories")
intersphinx_mapping = {
    "python": (
        "https://docs.python.org/3.11/",
        os.path.join(_INVENTORIES, "python.inv"),
    ),
    "twisted": (
        "https://docs.twisted.org/en/stable/api/",
        os.path.join(_INVENTORIES, "twisted.inv"),
    ),
    "treq": (
        "https://treq.readthedocs.io/en/stable/",
        os.path.join(_INVENTORIES, "treq.inv"),
    ),
    "autobahn": (
        "https://autobahn.readthedocs.io/en/latest/",
        os.path.join(_INVENTORIES, "autobahn.inv"),
    ),
}
intersphinx_timeout = 5

# References Sphinx cannot resolve, each with its reason.
nitpick_ignore: list[tuple[str, str]] = []

# Document members in the order the source defines them, and only what netlab
# itself documents: an override such as Echo.connectionMade should not inherit
# the docstring of Twisted's Protocol.connectionMade.
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
autodoc_typehints = "none"

html_theme = "alabaster"
html_theme_options = {
    "description": "Twisted network services from the classic lessons",
    "page_width": "1100px",
}
# Wide literal blocks scroll inside the page (see _static/netlab.css).
html_static_path = ["_static"]
html_css_files = ["netlab.css"]
