"""Sphinx configuration for netlab's documentation."""

import netlab

project = "netlab"
author = "the netlab authors"
copyright = "netlab contributors"
version = release = netlab.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build"]
nitpicky = False

# Document members in the order the source defines them, and only what netlab
# itself documents: an override such as Echo.connectionMade should not inherit
# the docstring of Twisted's Protocol.connectionMade.
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
autodoc_typehints = "none"

html_theme = "alabaster"
html_theme_options = {
    "description": "Twisted network services from the classic lessons",
}
