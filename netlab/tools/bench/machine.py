"""
What a table says about where it was measured: the machine and the
versions of what ran.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """
    :return: the CPU's model name, as the kernel says it.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def memory_total() -> int | None:
    """
    :return: the machine's memory in bytes, if known.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def version(distribution: str) -> str | None:
    """
    :return: the installed version of ``distribution``, or None.
    """
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    """
    :return: the machine: CPU model, CPUs (all and usable), kernel, memory.
    """
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "memory": memory_total(),
    }


def versions() -> dict[str, str | None]:
    """
    :return: the versions of Python and of the libraries the servers use.
    """
    return {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "netlab": version("netlab"),
        "twisted": version("twisted"),
        "autobahn": version("autobahn"),
        "websockets": version("websockets"),
    }
