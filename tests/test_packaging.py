"""
The wheel carries the twistd plugins, and only netlab's own files.

Guards the known traps: ``packages = find:`` drops ``twisted/plugins/`` from
the wheel; a ``twisted/plugins/__init__.py`` would overwrite Twisted's own on
install and delete it on uninstall.
"""

from __future__ import annotations

import pathlib
import shutil
import tempfile
import zipfile

from twisted.trial.unittest import TestCase

import twisted
from tests.support import CHECKOUT, NOT_SOURCE, python, run

# trial -j sets PYTHONPATH to its own sys.path, the checkout included: pip
# would find the checkout's netlab.egg-info and call netlab installed, and
# the scratch venv's Python would import the checkout.
_DEVELOPMENT = ("PYTHONPATH",)


class WheelTests(TestCase):
    timeout = 300

    async def test_wheel_installs_plugins(self) -> None:
        scratch = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, scratch)

        # Build from a copy, so the checkout gets no build/ or egg-info.
        source = scratch / "source"
        shutil.copytree(CHECKOUT, source, ignore=NOT_SOURCE)
        result = await run(
            without=_DEVELOPMENT,
            args=python(
                "-m",
                "pip",
                "wheel",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                str(scratch / "dist"),
                str(source),
            ),
        )
        self.assertEqual(result.status, 0, result)
        [wheel] = (scratch / "dist").glob("netlab-*.whl")

        names = set(zipfile.ZipFile(wheel).namelist())
        for expected in (
            "twisted/plugins/netlab_plugins.py",
            "twisted/plugins/netlab_endpoints.py",
            "netlab/tap/lab.py",
            "netlab/services/hello.py",
            "netlab/compat/socket_server.py",
            # netlab bench compiles its load generator and C servers from these.
            "netlab/tools/bench/c/loadgen.c",
            "netlab/tools/bench/c/cserver.c",
            "netlab/tools/bench/c/fanout.c",
            "netlab/tools/bench/c/common.h",
        ):
            self.assertIn(expected, names)
        for forbidden in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
            self.assertNotIn(forbidden, names)
        self.assertFalse([n for n in names if n.startswith(("tests/", "docs/"))])
        self.assertFalse([n for n in names if n.endswith("dropin.cache")])

        # A scratch venv holding only the wheel; Twisted and the other
        # dependencies come from this environment through a .pth line (which
        # does not run this environment's own .pth files, so the development
        # install of netlab stays out of sight).
        venv = scratch / "venv"
        result = await run(
            without=_DEVELOPMENT, args=python("-m", "venv", "--without-pip", str(venv))
        )
        self.assertEqual(result.status, 0, result)
        scratch_python = str(venv / "bin" / "python")
        result = await run(
            without=_DEVELOPMENT,
            args=python(
                "-m",
                "pip",
                "--python",
                scratch_python,
                "install",
                "--no-deps",
                "--no-index",
                str(wheel),
            ),
        )
        self.assertEqual(result.status, 0, result)
        [packages] = venv.glob("lib/python*/site-packages")
        dependencies = pathlib.Path(twisted.__file__).parent.parent
        (packages / "dependencies.pth").write_text(f"{dependencies}\n")

        outside = scratch / "elsewhere"
        outside.mkdir()
        where = await run(
            without=_DEVELOPMENT,
            args=[scratch_python, "-c", "import netlab; print(netlab.__file__)"],
            cwd=str(outside),
        )
        self.assertTrue(where.out.decode().startswith(str(packages)), where)

        listed = await run(
            without=_DEVELOPMENT,
            args=[
                scratch_python,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "--help",
            ],
            cwd=str(outside),
        )
        self.assertEqual(listed.status, 0, listed)
        for name in (
            *(b"netlab ", b"netlab-echo ", b"netlab-greeting ", b"netlab-http "),
            b"netlab-ws ",
            b"netlab-tcp ",
            b"web ",
        ):
            self.assertIn(b"    " + name, listed.out)
