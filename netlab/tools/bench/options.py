"""
``netlab bench``'s command line.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from twisted.python import usage

from netlab.commandline import CommandOptions
from netlab.tools.bench import implementations, workloads

LONGDESC = """\
Runs WORKLOAD (one or more of: {workloads}; or all) against each
implementation side by side and prints a table: the median of the
rounds [min-max], and the ratio of each median to the baseline's, measured
in the same run.

Workloads:
{workload_lines}

Implementations (--impl NAME,NAME, or a family: netlab, bare, compat,
ceiling, external; default: all that serve the workload; --list shows which
can run here):
{impl_lines}
  NAME (--vs 'NAME=CMD')  any command that serves the workload on {{port}}

The C server of each workload (c-echo, c-http, c-ws) and the baseline are
always measured: the C server gives the load generator its ceiling, and no
ratio is printed for a figure within 20% of that ceiling (generator-bound).

Fairness: each server runs alone in its process, pinned to one CPU; the load
generator (C, epoll, compiled with gcc on first use into
$XDG_CACHE_HOME/netlab-bench; Python without gcc, marked in the table; wrk
for http when installed) in another process pinned to the other CPU. Every
reply is checked: a figure with wrong replies is marked FAILED. Servers
listen on free loopback ports and are always stopped (SIGTERM, then kill),
Ctrl-C included. Exit status: 0; 1 when a server failed or a reply was
wrong; 2 for a usage mistake; 130 when interrupted.
"""


#: The numeric options: (type, whether zero is allowed).
#: What ``--impl`` may name instead of implementations: every one of a family.
FAMILIES = ("ceiling", "netlab", "bare", "compat", "external")

NUMBERS = {
    "rounds": (int, False),
    "seconds": (float, False),
    "warmup": (float, True),
    "connections": (int, False),
    "subscribers": (int, False),
    "startup-timeout": (float, False),
}


def _longdesc() -> str:
    workload_lines = "\n".join(
        f"  {w.name:<10} {w.summary}" for w in workloads.WORKLOADS.values()
    )
    impl_lines = "\n".join(
        f"  {impl.name:<22} {','.join(impl.kinds):<9} {impl.summary}"
        for impl in implementations.BUILTIN.values()
    )
    return LONGDESC.format(
        workloads=", ".join(workloads.WORKLOADS),
        workload_lines=workload_lines,
        impl_lines=impl_lines,
    )


class BenchOptions(CommandOptions):
    """
    ``netlab bench``: its options go anywhere (``netlab bench tcp-echo
    --rounds 3``), as every ``netlab`` command's do.
    """

    synopsis = "Usage: netlab bench [options] WORKLOAD [WORKLOAD ...]"
    #: Empty: usage.Options would reflow it; getUsage() adds it as it is.
    longdesc = ""

    def getUsage(self, width: int | None = None) -> str:
        return super().getUsage(width).rstrip("\n") + "\n\n" + _longdesc()

    optFlags = [
        ["list", "l", "List the implementations and whether each can run here."],
        ["no-wrk", None, "Measure http with the built-in generator, not wrk."],
        [
            "no-spin",
            None,
            "Let the C generator and the C servers sleep between events (by "
            "default they busy-poll their own CPU, so never wait to be woken).",
        ],
        ["quiet", "q", "No progress on standard error."],
    ]
    optParameters = [
        [
            "baseline",
            "b",
            None,
            "The implementation ratios are to [default: "
            "bare-echo for tcp-echo, tcp-bulk and idle; bare-web for http; "
            "bare-web-user for http-user; bare-ws for ws, ws-user and ws-idle].",
        ],
        ["rounds", "r", 3, "Measurements of each figure, implementations alternating."],
        [
            "seconds",
            "s",
            3.0,
            "Seconds each measurement counts (wrk: rounded up to whole seconds).",
        ],
        [
            "warmup",
            "w",
            1.0,
            "Seconds of warm-up per implementation and figure "
            "before the rounds (0: none).",
        ],
        [
            "cpu",
            None,
            None,
            "SERVER,LOAD: the CPUs for the servers and for the "
            "load generator [default: the first two this process may use].",
        ],
        [
            "connections",
            "c",
            100,
            "Connections for the many-connection figures (tcp-echo, http, ws).",
        ],
        [
            "subscribers",
            None,
            1000,
            "The subscribers of the ws-broadcast room.",
        ],
        [
            "idle-levels",
            None,
            "1000,5000,10000",
            "The idle connections to hold, in turn.",
        ],
        [
            "generator",
            "g",
            "auto",
            "The load generator: auto (C if gcc is found), c or python.",
        ],
        [
            "startup-timeout",
            None,
            30.0,
            "Seconds a server has to start accepting connections.",
        ],
        [
            "json",
            None,
            None,
            "Also write every sample, median and ratio to this JSON file.",
        ],
        [
            "plot",
            None,
            None,
            "Also draw a bar chart with min-max error bars in "
            "this PNG file (needs matplotlib: pip install '.[plot]').",
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["impl"] = None
        self["vs"] = []

    def opt_impl(self, names: str) -> None:
        """
        Measure these implementations (comma-separated; repeatable).
        """
        self["impl"] = (self["impl"] or []) + [
            name.strip() for name in names.split(",") if name.strip()
        ]

    opt_i = opt_impl

    def opt_vs(self, spec: str) -> None:
        """
        NAME=CMD: also measure this command, with {port} in CMD (repeatable).
        """
        try:
            impl = implementations.external(spec)
        except ValueError as error:
            raise usage.UsageError(str(error)) from None
        if any(other.name == impl.name for other in self["vs"]):
            raise usage.UsageError(f"--vs {impl.name} given twice")
        self["vs"].append(impl)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """
        Parse ``options`` (default: ``sys.argv[1:]``), keeping them as given
        for the report's ``command:`` line.
        """
        self["argv"] = sys.argv[1:] if options is None else list(options)
        super().parseOptions(self["argv"])

    def parseArgs(self, *names: str) -> None:
        self["workloads"] = list(names)

    def postOptions(self) -> None:
        if self["list"]:
            return
        names = self["workloads"]
        if not names:
            raise usage.UsageError(
                f"a workload is required: {', '.join(workloads.WORKLOADS)} or all"
            )
        if "all" in names:
            names = list(workloads.WORKLOADS)
        for name in names:
            if name not in workloads.WORKLOADS:
                raise usage.UsageError(
                    f"unknown workload {name!r}: expected "
                    f"{', '.join(workloads.WORKLOADS)} or all"
                )
        self["workloads"] = list(dict.fromkeys(names))
        for option, (kind, zero) in NUMBERS.items():
            self[option] = self._number(option, kind, zero)
        everything = [*implementations.BUILTIN.values(), *self["vs"]]
        known = {impl.name for impl in everything}
        if self["impl"] is not None:
            names = []
            for name in self["impl"]:
                if name in FAMILIES:
                    names += [impl.name for impl in everything if impl.family == name]
                elif name in known:
                    names.append(name)
                else:
                    raise usage.UsageError(
                        f"unknown implementation {name!r} "
                        "(netlab bench --list shows them)"
                    )
            self["impl"] = list(dict.fromkeys(names))
        self._check_baseline(known)
        self._check_cpus()
        self["levels"] = self._levels(self["idle-levels"])
        if self["generator"] not in ("auto", "c", "python"):
            raise usage.UsageError(
                f"--generator must be auto, c or python, not {self['generator']!r}"
            )
        if self["plot"] and importlib.util.find_spec("matplotlib") is None:
            raise usage.UsageError("--plot needs matplotlib: pip install '.[plot]'")
        for option in ("json", "plot"):
            path = self[option]
            if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
                raise usage.UsageError(f"--{option} {path}: no such directory")

    def _check_baseline(self, known: set[str]) -> None:
        baseline = self["baseline"]
        if baseline is None:
            return
        if baseline not in known:
            raise usage.UsageError(
                f"unknown baseline {baseline!r} (netlab bench --list shows them)"
            )
        kinds = {workloads.WORKLOADS[name].kind for name in self["workloads"]}
        impl = implementations.BUILTIN.get(baseline)
        if impl is not None and not kinds & set(impl.kinds):
            raise usage.UsageError(
                f"--baseline {baseline} serves {', '.join(impl.kinds)}, which none of "
                f"{', '.join(self['workloads'])} measures"
            )

    def _check_cpus(self) -> None:
        usable = sorted(os.sched_getaffinity(0))
        if self["cpu"] is None:
            self["server-cpu"] = usable[0]
            self["load-cpu"] = usable[1] if len(usable) > 1 else usable[0]
            return
        try:
            server, load = (int(part) for part in self["cpu"].split(","))
        except ValueError:
            raise usage.UsageError(
                f"--cpu {self['cpu']!r}: expected SERVER,LOAD (two CPU numbers)"
            ) from None
        for cpu in (server, load):
            if cpu not in usable:
                raise usage.UsageError(
                    f"--cpu {self['cpu']}: CPU {cpu} is not one of those usable "
                    f"here ({', '.join(map(str, usable))})"
                )
        if server == load and len(usable) > 1:
            raise usage.UsageError(
                "--cpu: the servers and the load generator must not share a CPU"
            )
        self["server-cpu"], self["load-cpu"] = server, load

    def _number(self, option: str, kind: type, zero: bool) -> float:
        text = str(self[option])
        try:
            number = kind(text)
        except ValueError:
            number = None
        if (
            number is None
            or not (0 <= number < float("inf"))
            or (number == 0 and not zero)
        ):
            what = "whole number" if kind is int else "number"
            least = "zero or more" if zero else f"a positive {what}"
            raise usage.UsageError(f"--{option} must be {least}, not {text!r}")
        return number

    @staticmethod
    def _levels(text: str) -> tuple[int, ...]:
        try:
            levels = tuple(int(part) for part in text.split(","))
        except ValueError:
            levels = ()
        if not levels or any(level <= 0 for level in levels):
            raise usage.UsageError(
                f"--idle-levels {text!r}: expected positive numbers, like 1000,5000"
            )
        if list(levels) != sorted(set(levels)):
            raise usage.UsageError(
                f"--idle-levels {text!r}: each level must be more than the last"
            )
        if len(levels) > 16:
            raise usage.UsageError("--idle-levels: at most 16 levels")
        return levels
