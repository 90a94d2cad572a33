"""
The layout is the architecture: the framework layer (``netlab/*.py``) knows
nothing of the demo services, the tools or the twins; the demo services
(``netlab/services/``) use only the framework's public names, as a user's
service would.
"""

from __future__ import annotations

import ast
import pathlib

from twisted.trial.unittest import SynchronousTestCase

NETLAB = pathlib.Path(__file__).parent.parent / "netlab"

#: The modules at netlab's top level that are not the framework layer: the
#: command line ties everything together, as the twistd plugins do.
_NOT_FRAMEWORK = {"cli.py", "__main__.py"}


def imports(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """
    :return: each module ``path`` imports anywhere (functions included),
        with the names it takes from it (empty for ``import module``).
    """
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module or "", [alias.name for alias in node.names]))
    return found


def framework() -> list[pathlib.Path]:
    return [p for p in NETLAB.glob("*.py") if p.name not in _NOT_FRAMEWORK]


class LayoutTests(SynchronousTestCase):
    def test_helpers_see_function_level_imports(self) -> None:
        # The soak tool imports inside functions: the walk must find those.
        found = dict(imports(NETLAB / "tools" / "soak.py"))
        self.assertIn("netlab.services.hello", found)
        self.assertGreater(len(framework()), 10)

    def test_framework_imports_no_service_tool_or_twin(self) -> None:
        for path in framework():
            for module, names in imports(path):
                for name in [module] + [f"{module}.{n}" for n in names]:
                    self.assertFalse(
                        name.startswith(
                            ("netlab.services", "netlab.tools", "netlab.compat")
                        ),
                        f"{path.name} imports {name}",
                    )
                    self.assertNotIn(
                        name,
                        ("netlab.tap", "netlab.cli"),
                        f"{path.name} imports {name}",
                    )

    def test_services_use_only_public_framework_names(self) -> None:
        layer = {f"netlab.{p.stem}" for p in framework()}
        services = list((NETLAB / "services").glob("*.py"))
        self.assertGreaterEqual(len(services), 6)
        for path in services:
            for module, names in imports(path):
                if not module.startswith("netlab"):
                    continue
                allowed = module in layer or module.startswith("netlab.services")
                self.assertTrue(allowed, f"{path.name} imports {module}")
                private = [n for n in names if n.startswith("_")]
                self.assertEqual(private, [], f"{path.name}: {module}")
