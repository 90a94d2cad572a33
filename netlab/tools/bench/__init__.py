"""
``netlab bench``: one command that runs a workload against chosen
implementations side by side, fairly, and prints a table.

See ``netlab bench --help`` and the performance page of the docs. The
modules, one per concern:

- :mod:`~netlab.tools.bench.options`: the command line;
- :mod:`~netlab.tools.bench.workloads`: what each workload measures;
- :mod:`~netlab.tools.bench.implementations`: the servers there are, and how to
  start each;
- :mod:`~netlab.tools.bench.processes`: starting, pinning, watching and stopping
  processes;
- :mod:`~netlab.tools.bench.build`: compiling the C programs (``c/``) on first use;
- :mod:`~netlab.tools.bench.generators`: running the load generators (C, Python,
  wrk);
- :mod:`~netlab.tools.bench.pyloadgen`: the Python load generator, without gcc;
- :mod:`~netlab.tools.bench.runner`: a run, its rounds and its results;
- :mod:`~netlab.tools.bench.stats`: medians, ceilings and ratios;
- :mod:`~netlab.tools.bench.report`: the table, the JSON, the chart;
- :mod:`~netlab.tools.bench.machine`: the machine and the versions;
- :mod:`~netlab.tools.bench.bare_echo`, :mod:`~netlab.tools.bench.bare_web`,
  :mod:`~netlab.tools.bench.bare_ws`, :mod:`~netlab.tools.bench.bare_web_user`: the bare
  baselines;
- :mod:`~netlab.tools.bench.userapp`: a user's own resource and WebSocket handler
  (the http-user and ws-user workloads);
- :mod:`~netlab.tools.bench.fanout`, :mod:`~netlab.tools.bench.room`,
  :mod:`~netlab.tools.bench.ws_room`: the ws-broadcast workload's generator,
  its room on netlab, and the same room on a plain websockets server.
"""

from __future__ import annotations

import sys
from typing import Any


def run(options: Any) -> int:
    """
    Run ``netlab bench`` with parsed :class:`~netlab.tools.bench.options.BenchOptions`.

    :return: the exit status.
    """
    from netlab.tools.bench import report
    from netlab.tools.bench.runner import Run, Settings

    if options["list"]:
        return list_implementations(options)
    settings = Settings(
        workloads=options["workloads"],
        implementations=options["impl"],
        externals=options["vs"],
        baseline=options["baseline"],
        rounds=options["rounds"],
        seconds=options["seconds"],
        warmup=options["warmup"],
        server_cpu=options["server-cpu"],
        load_cpu=options["load-cpu"],
        connections=options["connections"],
        subscribers=options["subscribers"],
        levels=options["levels"],
        generator=options["generator"],
        wrk=not options["no-wrk"],
        spin=not options["no-spin"],
        json=options["json"],
        plot=options["plot"],
        quiet=options["quiet"],
        startup_timeout=options["startup-timeout"],
        command=options.get("argv", []),
    )
    bench = Run(settings)
    try:
        status = bench.run()
    except Exception as error:  # a build failure, say: one line
        sys.stderr.write(f"netlab bench: {error}\n")
        return 1
    env = report.environment(bench)
    sys.stdout.write(report.text(bench, env))
    sys.stdout.flush()
    if settings.json:
        report.write_json(settings.json, report.as_json(bench, env))
    if settings.plot:
        report.plot(settings.plot, bench)
    return status


def list_implementations(options: Any) -> int:
    """
    Print every implementation, what it serves and whether it can run here.
    """
    from netlab.tools.bench.implementations import BUILTIN

    impls = [*BUILTIN.values(), *options["vs"]]
    width = max(len(impl.name) for impl in impls)
    for impl in impls:
        state = impl.skip and "skipped" or impl.unavailable() or "available"
        sys.stdout.write(
            f"{impl.name:<{width}}  {','.join(impl.kinds):<15}  {impl.summary}  "
            f"[{state}]\n"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """
    ``python -m netlab.tools.bench``: the same as ``netlab bench``.
    """
    from twisted.python import usage

    from netlab.tools.bench.options import BenchOptions

    options = BenchOptions()
    args = sys.argv[1:] if argv is None else argv
    try:
        options.parseOptions(args)
    except usage.UsageError as mistake:
        sys.stderr.write(f"netlab bench: {mistake} (see netlab bench --help)\n")
        return 2
    return run(options)
