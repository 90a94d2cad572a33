"""
Compiling the C load generator and C servers on first use.

The sources are package data (``netlab/tools/bench/c/``). Each binary is cached
under ``$XDG_CACHE_HOME/netlab-bench`` (``~/.cache/netlab-bench``), named by
a hash of its sources, compiler and flags, so a changed source or compiler
builds anew and concurrent runs never see a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCES = Path(__file__).resolve().parent / "c"
FLAGS = ["-O2", "-Wall", "-std=gnu11"]

#: The programs there are, each from its .c file (plus common.h).
PROGRAMS = ("loadgen", "cserver", "fanout")


class BuildError(Exception):
    """
    A C program could not be built; the message says why, in one line.
    """


def cache_dir() -> Path:
    """
    :return: where compiled programs are kept.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "netlab-bench"


def compiler() -> str | None:
    """
    :return: the C compiler's path (``$CC``, else ``gcc``), or None.
    """
    return shutil.which(os.environ.get("CC", "gcc"))


def compiler_version() -> str | None:
    """
    :return: the C compiler's version, as it says it, or None without one.
    """
    cc = compiler()
    if cc is None:
        return None
    try:
        result = subprocess.run(
            [cc, "-dumpfullversion", "-dumpversion"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{Path(cc).name} {result.stdout.strip()}"


def program(name: str) -> Path:
    """
    :return: the path of the compiled program ``name``, built if needed.
    :raise BuildError: without a compiler, or if the build fails.
    """
    if name not in PROGRAMS:
        raise ValueError(f"unknown program {name!r}")
    cc = compiler()
    if cc is None:
        raise BuildError("no C compiler (gcc) found")
    source = SOURCES / f"{name}.c"
    digest = hashlib.sha256()
    for part in (source, SOURCES / "common.h"):
        digest.update(part.read_bytes())
    digest.update(" ".join([str(compiler_version()), *FLAGS]).encode())
    target = cache_dir() / f"{name}-{digest.hexdigest()[:16]}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(prefix=f".{name}-", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run(
            [cc, *FLAGS, "-I", str(SOURCES), "-o", scratch, str(source)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise BuildError(f"{name}.c did not compile: {lines[-1] if lines else '?'}")
        os.chmod(scratch, 0o755)
        os.replace(scratch, target)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
    return target
