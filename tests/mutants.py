"""
Mutation check: break netlab on purpose, one plausible mistake at a time, and
see that the suite notices.

Each :class:`Mutant` names a file, an exact piece of its text, what to put
instead (an off-by-one, a constant changed, a branch inverted, a timer never
started, a wrong status), the trial names that should fail, and the
guarantee in words. For each mutant this copies the tree to a scratch
directory, applies the one change there, and runs the named tests with the
scratch copy first on ``PYTHONPATH`` (and as the working directory, so that
child processes such as twistd import it too)::

    python -m tests.mutants --list          # the mutants, one a line
    python -m tests.mutants                 # all of them
    python -m tests.mutants per-ip-off-by-one date-1970

It prints ``caught`` or ``SURVIVED`` for each, and exits non-zero if any
survived, or if a mutant's original text is no longer in its file exactly
once (so a refactor cannot leave the list checking nothing).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Not copied to the scratch tree: history, environments, build output.
_IGNORED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "__pycache__",
    "_trial_temp*",
    "_build",
    "*.egg-info",
    "dropin.cache",
)
#: Seconds one mutant's tests may run before the run counts as a hang.
TIMEOUT = 600.0


@dataclass(frozen=True)
class Mutant:
    """
    One deliberate mistake.

    :ivar name: a short unique name, for the command line.
    :ivar path: the file, relative to the repository root.
    :ivar original: text that occurs in it exactly once.
    :ivar replacement: what the mutant puts instead.
    :ivar tests: trial names (modules, classes or methods) that must fail.
    :ivar guarantee: what the mistake breaks, in words.
    """

    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    guarantee: str

    def apply(self, root: pathlib.Path) -> None:
        """
        Make the change in the tree at ``root``.

        :raises ValueError: if the original text is not there exactly once.
        """
        target = root / self.path
        text = target.read_text()
        count = text.count(self.original)
        if count != 1:
            raise ValueError(
                f"{self.name}: original text found {count} times in {self.path}"
            )
        target.write_text(text.replace(self.original, self.replacement))


def m(
    name: str, path: str, original: str, replacement: str, tests: str, guarantee: str
) -> Mutant:
    return Mutant(name, path, original, replacement, tuple(tests.split()), guarantee)


MUTANTS: tuple[Mutant, ...] = (
    # The three the issue names.
    m(
        "fastpath-off-for-root",
        "netlab/services/hello.py",
        'if path == b"/":\n            return self\n',
        'if path == b"/":\n            return None\n',
        "tests.test_http_fastpath",
        "GET / is answered from the request head, without a twisted.web Request",
    ),
    m(
        "date-1970",
        "netlab/http.py",
        "route.response(_http_date(time.time()), is_head)",
        "route.response(_http_date(0), is_head)",
        "tests.test_http_fastpath",
        "the fast path's Date header is the current time",
    ),
    m(
        "per-ip-off-by-one",
        "netlab/tracking.py",
        '_host(address) or ""] >= self.limits.max_per_ip:',
        '_host(address) or ""] >= self.limits.max_per_ip - 1:',
        "tests.test_drain.AdmissionTests",
        "the connection at the per-IP cap is served, the one over it refused",
    ),
)


def by_name(names: list[str]) -> list[Mutant]:
    """
    :return: the mutants named (all when ``names`` is empty).
    :raises KeyError: for a name that is not a mutant's.
    """
    known = {mutant.name: mutant for mutant in MUTANTS}
    return [known[name] for name in names] if names else list(MUTANTS)


def run(mutant: Mutant, timeout: float = TIMEOUT) -> tuple[str, float, str]:
    """
    Apply ``mutant`` to a scratch copy of the tree and run its tests there.

    :return: the verdict (``caught``, ``caught (timeout)`` or ``SURVIVED``),
        the seconds it took and the tail of trial's output.
    """
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="netlab-mutant-") as scratch:
        tree = pathlib.Path(scratch) / "tree"
        shutil.copytree(ROOT, tree, ignore=_IGNORED)
        mutant.apply(tree)
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        command = [sys.executable, "-m", "twisted.trial", "--exitfirst"]
        try:
            done = subprocess.run(
                [*command, *mutant.tests],
                cwd=tree,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return "caught (timeout)", time.monotonic() - started, ""
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-3:])
    verdict = "SURVIVED" if done.returncode == 0 else "caught"
    return verdict, time.monotonic() - started, tail


def stale(mutants: list[Mutant]) -> list[str]:
    """
    :return: a line for each mutant whose original text is not in its file
        exactly once.
    """
    problems = []
    for mutant in mutants:
        text = (ROOT / mutant.path).read_text()
        count = text.count(mutant.original)
        if count != 1:
            problems.append(f"{mutant.name}: original text found {count} times")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutants", description=__doc__.split("\n\n")[1]
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="mutants to run")
    parser.add_argument("--list", action="store_true", help="list the mutants")
    parser.add_argument(
        "--timeout", type=float, default=TIMEOUT, help="seconds per mutant"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show trial's last lines"
    )
    options = parser.parse_args(argv)
    try:
        mutants = by_name(options.names)
    except KeyError as error:
        parser.error(f"no mutant named {error}")
    if options.list:
        for mutant in mutants:
            print(f"{mutant.name}: {mutant.path}: {mutant.guarantee}")
        return 0
    problems = stale(mutants)
    for problem in problems:
        print(f"STALE {problem}")
    survived = 0
    for mutant in mutants:
        if any(p.startswith(f"{mutant.name}:") for p in problems):
            continue
        verdict, seconds, tail = run(mutant, options.timeout)
        survived += verdict == "SURVIVED"
        print(f"{verdict:16} {seconds:6.1f}s  {mutant.name}", flush=True)
        if options.verbose or verdict == "SURVIVED":
            print("    " + tail.replace("\n", "\n    "), flush=True)
    print(f"{len(mutants) - survived - len(problems)} caught, {survived} survived")
    return 1 if survived or problems else 0


if __name__ == "__main__":
    sys.exit(main())
