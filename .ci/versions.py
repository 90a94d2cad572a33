"""
Print the installed versions of netlab's direct dependencies (setup.cfg's
install_requires and its compat and test extras) and of pyOpenSSL and txaio,
which netlab reaches into through Twisted and autobahn.

``--exact FILE``: also fail unless FILE pins each direct dependency at
exactly setup.cfg's lower bound, and the installed version is that pin.

``--newest``: also say which direct dependencies have a newer release than
the one installed (one that another package's cap keeps out, say); this
only informs.

Run it with the venv's own Python.
"""

from __future__ import annotations

import argparse
import configparser
import json
import pathlib
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version

ROOT = pathlib.Path(__file__).resolve().parent.parent
_REQUIREMENT = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^]]*\])?\s*(?:>=\s*([^,;\s]+))?")
_EXTRAS = ("compat", "plot", "test")
_ALSO = ("pyopenssl", "txaio")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds() -> dict[str, str | None]:
    """
    :return: each direct dependency's name, with its ``>=`` bound (or None).
    """
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options"]["install_requires"].splitlines()
    for extra in _EXTRAS:
        lines += config["options.extras_require"][extra].splitlines()
    bounds: dict[str, str | None] = {}
    for line in lines:
        line = line.strip()
        match = _REQUIREMENT.match(line)
        if not line or match is None or _normal(match.group(1)) == "netlab":
            continue
        bounds[_normal(match.group(1))] = match.group(2)
    return bounds


def pins(path: pathlib.Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            found[_normal(name)] = pinned.strip()
    return found


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def same(one: str | None, other: str | None) -> bool:
    """
    :return: whether two release numbers name one release (2.10 is 2.10.0).
    """
    if one is None or other is None:
        return one == other

    def release(text: str) -> list[str]:
        parts = text.split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return parts

    return release(one) == release(other)


def installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exact", type=pathlib.Path, metavar="FILE")
    parser.add_argument("--newest", action="store_true")
    arguments = parser.parse_args()
    bounds = lower_bounds()
    say(f"Python {sys.version.split()[0]}")
    for name in [*bounds, *_ALSO]:
        say(f"  {name}=={installed(name)}")
    problems = []
    if arguments.exact is not None:
        pinned = pins(arguments.exact)
        for name, bound in bounds.items():
            if bound is None:
                problems.append(f"setup.cfg gives {name} no lower bound")
            elif not same(pinned.get(name), bound):
                problems.append(
                    f"{arguments.exact} pins {name} at {pinned.get(name)}, "
                    f"setup.cfg's lower bound is {bound}"
                )
            elif not same(installed(name), bound):
                problems.append(f"{name} {installed(name)} is installed, not {bound}")
        for name in pinned.keys() - bounds.keys():
            problems.append(f"{arguments.exact} pins {name}, not in setup.cfg")
    if arguments.newest:
        listed = subprocess.run(
            [sys.executable, "-m", "pip", "list", "--outdated", "--format=json"],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            outdated = json.loads(listed.stdout or "[]")
        except ValueError:
            outdated = []
            say("  (pip list --outdated gave no answer)")
        for package in outdated:
            if _normal(package["name"]) in bounds:
                say(
                    f"  note: {package['name']} {package['latest_version']} is out; "
                    f"{package['version']} is the newest that installs with the rest"
                )
    for problem in problems:
        say(f"ERROR: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
