"""
The docs link out to the projects netlab builds on: each intersphinx
inventory is vendored (a build never needs the network), and every
reference to Twisted's, treq's or autobahn's API names an object its
inventory has, so it renders as a link and not as plain text.
"""

from __future__ import annotations

import pathlib
import re
import runpy
import zlib

from twisted.trial.unittest import SynchronousTestCase

TOP = pathlib.Path(__file__).parent.parent
DOCS = TOP / "docs"

#: A cross-reference role naming an object of a project netlab links to.
_REFERENCE = re.compile(
    r":(?:class|meth|func|mod|data|attr|exc|obj):`~?((autobahn|twisted|treq)\.[\w.]+)`"
)


def inventory(path: pathlib.Path) -> dict[str, str]:
    """
    Read a Sphinx ``objects.inv`` (version 2: four header lines, then
    zlib-compressed lines ``name domain:role priority uri display``).

    :return: each Python object's name, with the page and anchor it is at.
    """
    data = path.read_bytes()
    header = data.split(b"\n", 4)
    if header[0] != b"# Sphinx inventory version 2":
        raise ValueError(f"{path}: not a version 2 inventory")
    objects = {}
    for line in zlib.decompress(header[4]).decode("utf-8").splitlines():
        match = re.match(r"(.+?)\s+(py:\w+)\s+(-?\d+)\s+(\S+)", line)
        if match:
            name, uri = match.group(1), match.group(4)
            objects[name] = uri.replace("$", name) if uri.endswith("$") else uri
    return objects


def references() -> list[tuple[str, str, str]]:
    """
    :return: ``(file, project, name)`` for each reference to another
        project's API, in the docs' pages and in netlab's docstrings.
    """
    found = []
    sources = [*DOCS.glob("*.rst"), *(TOP / "netlab").rglob("*.py")]
    for source in sources:
        for match in _REFERENCE.finditer(source.read_text()):
            found.append((source.name, match.group(2), match.group(1)))
    return found


class IntersphinxTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.mapping = runpy.run_path(str(DOCS / "conf.py"))["intersphinx_mapping"]

    def test_vendored(self) -> None:
        """
        Python, Twisted, treq and autobahn are each linked to, from an
        inventory in ``docs/_inventories`` that reads.
        """
        self.assertEqual(set(self.mapping), {"python", "twisted", "treq", "autobahn"})
        for name, (site, path) in self.mapping.items():
            self.assertTrue(site.startswith("https://"), site)
            self.assertEqual(pathlib.Path(path).parent, DOCS / "_inventories")
            self.assertGreater(len(inventory(pathlib.Path(path))), 50, name)

    def test_references_resolve(self) -> None:
        """
        Every reference to Twisted's, treq's or autobahn's API names an
        object of that project's inventory.
        """
        objects = {
            name: inventory(pathlib.Path(path))
            for name, (site, path) in self.mapping.items()
        }
        found = references()
        self.assertIn("autobahn", {project for _, project, _ in found})
        for source, project, name in found:
            self.assertIn(name, objects[project], f"{source}: {name}")

    def test_autobahn_pages(self) -> None:
        """
        autobahn's names are at the pages its site's sphinx-autoapi build
        puts them on.
        """
        site, path = self.mapping["autobahn"]
        objects = inventory(pathlib.Path(path))
        name = "autobahn.twisted.websocket.WebSocketServerProtocol"
        self.assertEqual(site, "https://autobahn.readthedocs.io/en/latest/")
        self.assertEqual(
            objects[name], f"autoapi/autobahn/twisted/websocket/index.html#{name}"
        )
