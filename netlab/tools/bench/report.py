"""
What a run prints and writes: the table (with the machine, the versions and
the settings), the JSON file with every sample, the chart.
"""

from __future__ import annotations

import datetime
import json
import shlex
from typing import Any

from netlab.tools.bench import build, machine
from netlab.tools.bench.generators import wrk_version
from netlab.tools.bench.implementations import (
    CLIENTS_SPARE,
    NETLAB_IDLE_OPTIONS,
    TWIN_IDLE_OPTIONS,
)
from netlab.tools.bench.runner import Result, Row, Run, format_value
from netlab.tools.bench.stats import GENERATOR_BOUND
from netlab.tools.bench.workloads import (
    BROADCAST_WINDOW,
    C_BROADCAST_WINDOW,
    WORKLOADS,
    Metric,
)


def environment(run: Run) -> dict[str, Any]:
    """
    :return: the machine, the versions and the generators of ``run``.
    """
    generators = run.generators
    versions: dict[str, Any] = dict(machine.versions())
    versions["cc"] = build.compiler_version()
    versions["wrk"] = wrk_version(generators.wrk if generators else None)
    return {
        "machine": {**machine.describe(), "load_average": run.load},
        "versions": versions,
        "generator": {
            "kind": generators.kind if generators else None,
            "command": generators.loadgen if generators else None,
            "wrk": generators.wrk if generators else None,
            "spin": bool(generators and generators.spin and generators.kind == "c"),
            "why_not_c": run.generator_note,
        },
    }


def _gib(size: int | None) -> str:
    return f"{size / 2**30:.1f} GiB" if size else "? GiB"


def header(run: Run, env: dict[str, Any]) -> list[str]:
    s = run.settings
    m, v, g = env["machine"], env["versions"], env["generator"]
    started = datetime.datetime.fromtimestamp(run.started, datetime.UTC)
    idle_only = all(WORKLOADS[name].idle for name in s.workloads)
    if idle_only:
        rounds = (
            f"{s.rounds}, implementations alternating, each round starting its "
            "server afresh"
        )
    else:
        rounds = (
            f"{s.rounds} x {s.seconds:g} s per figure, implementations alternating, "
            f"after a {s.warmup:g} s warm-up each"
        )
    software = [f"Python {v['python']}"]
    for name in ("twisted", "autobahn", "websockets", "netlab"):
        software.append(f"{name} {v[name] or '(not installed)'}")
    if v["cc"]:
        software.append(v["cc"])
    if v["wrk"]:
        software.append(v["wrk"])
    return [
        f"netlab bench, {started:%Y-%m-%d %H:%M} UTC",
        f"command:   {shlex.join(['netlab', 'bench', *s.command])}",
        f"machine:   {m['cpu']}, {m['cpus']} CPUs, {m['kernel']}, {_gib(m['memory'])}",
        f"software:  {', '.join(software)}",
        f"pinning:   each server on CPU {s.server_cpu}, the load generator on "
        f"CPU {s.load_cpu}"
        + (
            " (THE SAME CPU: only one is usable, so they compete)"
            if s.server_cpu == s.load_cpu
            else ""
        ),
        f"rounds:    {rounds}; median [min-max]",
        f"generator: {_generators(run, g, idle_only)}",
        _load_line(m["load_average"]),
    ]


def _generators(run: Run, g: dict[str, Any], idle_only: bool) -> str:
    """
    :return: the load generator each workload used (wrk measures http when
        installed, the C or Python generator the rest), and what to know of it.
    """
    used: dict[str, list[str]] = {}
    for result in run.results:
        for name in dict.fromkeys(result.generator.values()):
            used.setdefault(name, []).append(result.workload.name)
    if not used:  # interrupted before the first workload
        used = {"C loadgen" if g["kind"] == "c" else "Python pyloadgen": []}
    about = {
        "C loadgen": (
            " (busy-polling, as the C servers do while they have clients)"
            if g["spin"] and not idle_only
            else ""
        ),
        "Python pyloadgen": (
            f" ({g['why_not_c'] or 'asked for'}): GENERATOR-BOUND LIKELY, a "
            "Python generator cannot keep a Python server busy"
        ),
        "C fanout": (
            f" (epoll, one process, {C_BROADCAST_WINDOW} messages in flight, "
            "no busy-polling)"
        ),
        "Python fanout": (
            f" (asyncio, one process, {BROADCAST_WINDOW} messages in flight: "
            "against a fast room it measures itself too"
            + ("" if g["kind"] == "c" else f"; {g['why_not_c'] or 'asked for'}")
            + ")"
        ),
    }
    return "; ".join(
        name + (f" for {', '.join(names)}" if names else "") + about.get(name, "")
        for name, names in used.items()
    )


#: A 1-minute load average above this before the run means something else
#: was running: the figures then say less.
BUSY = 0.5


def _load_line(load: dict[str, float]) -> str:
    line = f"load:      1-minute load average {load['before']:.2f} before the run"
    if load["before"] > BUSY:
        line += " (OTHER WORK WAS RUNNING: expect noisy figures)"
    return line


def server_options(result: Result, run: Run) -> list[str]:
    """
    :return: what the servers were told beyond their defaults, and why.
    """
    families = {row.impl.family for row in result.rows if row.measured}
    names = {row.name for row in result.rows if row.measured}
    lines = []
    if result.workload.idle:
        if "netlab" in families:
            lines.append(
                "netlab services run with "
                + " ".join(NETLAB_IDLE_OPTIONS)
                + " (so the limits do not refuse or drop the idle connections)"
            )
        if "compat" in families:
            lines.append("the twins run with " + " ".join(TWIN_IDLE_OPTIONS))
    rooms = sorted(
        row.name
        for row in result.rows
        if row.measured and row.impl.kind == "ws-broadcast"
    )
    if "netlab" in families and rooms:
        most = run.settings.subscribers + 1 + CLIENTS_SPARE
        lines.append(
            f"netlab's rooms run with --max-per-ip {most} --max-connections {most} "
            "(every subscriber comes from 127.0.0.1)"
        )
    spread = sorted(
        row.name for row in result.rows if row.measured and row.impl.processes
    )
    if spread:
        s = run.settings
        lines.append(
            f"{' and '.join(spread)} run several processes (netlab's and a "
            f"redis-server) on CPUs {s.server_cpu} and {s.load_cpu}, sharing CPU "
            f"{s.load_cpu} with the load generator; the others run on CPU "
            f"{s.server_cpu} alone"
        )
    clients = sorted(names & {"threads_echo", "processes_echo"})
    if clients:
        most = (
            max(run.settings.levels)
            if result.workload.idle
            else (run.settings.connections)
        )
        lines.append(
            f"{' and '.join(clients)} run with --max-clients {most + CLIENTS_SPARE} "
            "(their default caps would leave connections waiting)"
        )
    return [f"servers: {line}" for line in lines]


def value_cell(result: Result, row: Row, metric: Metric) -> str:
    summary = result.summaries(metric).get(row.name)
    if summary is None or summary.median is None:
        return "-"
    cell = format_value(summary.median)
    low, high = format_value(summary.low), format_value(summary.high)
    if len(summary.measured) > 1 and low != high:
        dash = ".." if min(summary.measured) < 0 else "-"
        cell += f" [{low}{dash}{high}]"
    return cell + (" !" if summary.failed else "")


def ratio_cell(result: Result, row: Row, metric: Metric) -> str:
    value, note = result.ratio(row, metric)
    if value is None:
        return note
    return f"{value:.2f}"


def table(result: Result, run: Run) -> list[str]:
    """
    :return: the lines of one workload's table, with its title and notes.
    """
    workload = result.workload
    title = f"{workload.name}: {workload.summary}"
    if result.interrupted:
        title += " (INTERRUPTED: partial)"
    lines = ["", title]
    generators = sorted(set(result.generator.values()))
    lines.append(f"  generator: {', '.join(generators)}")
    ceilings = []
    for metric in result.metrics:
        top, by = result.ceiling(metric)
        if top is not None:
            ceilings.append(f"{metric.label} {format_value(top)}")
    if ceilings:
        bounded = [m for m in result.metrics if m.bounded]
        whose = sorted({result.ceiling(m)[1] or "" for m in bounded} - {""})
        lines.append(
            f"  generator ceiling (its best figure, against {', '.join(whose)}): "
            + ", ".join(ceilings)
            + f" {result.metrics[0].unit}"
        )
    compared = [m for m in result.metrics if m.compare]
    if compared:
        rule = f"median / {result.baseline}'s median, same run"
        if any(m.bounded for m in compared):
            rule += (
                f"; n/a when within {1 - GENERATOR_BOUND:.0%} of the "
                "generator's ceiling"
            )
        lines.append(f"  ratio: {rule}")
        if any(row.impl.family == "netlab" for row in result.rows):
            lines.append(
                "  netlab's rows run netlab's own transport and fast paths, not "
                "stock Twisted's (see what each runs, below): a ratio compares "
                "whole servers"
            )

    lines += [f"  {line}" for line in server_options(result, run)]
    scaling = result.scaling()
    if scaling:
        lines.append(
            f"  scaling: {result.metrics[0].label}, median / {workload.scaling}'s "
            "median, same run: "
            + ", ".join(
                f"{name} {'n/a' if value is None else f'{value:.2f}'}"
                + ("" if value is not None else f" ({note})")
                for name, (value, note) in scaling.items()
            )
        )

    head = ["implementation"]
    for metric in result.metrics:
        head.append(metric.label)
        if metric.compare:
            head.append("ratio")
    body: list[list[str]] = []
    notes: list[str] = []
    for row in result.rows:
        label = row.name + (" (baseline)" if row.role == "baseline" else "")
        if not row.samples:
            why = row.reason or "not measured (interrupted)"
            body.append([label, f"{row.status}: {why}" if row.reason else why])
            continue
        cells = [label]
        for metric in result.metrics:
            cells.append(value_cell(result, row, metric))
            if metric.compare:
                cells.append(ratio_cell(result, row, metric))
        body.append(cells)
        if row.status == "died":
            notes.append(f"{row.name}: {row.reason}")
        failures: dict[tuple[int, str], list[str]] = {}
        for metric in result.metrics:
            for index, sample in enumerate(row.samples.get(metric.key, [])):
                if sample.errors:
                    what = f"{sample.errors} errors, first: {sample.error}"
                    failures.setdefault((index + 1, what), []).append(metric.label)
        for (turn, what), labels in failures.items():
            notes.append(
                f"{row.name}, round {turn} ({', '.join(labels)}): FAILED, {what}"
            )
    widths = [len(cell) for cell in head]
    for cells in body:
        if len(cells) == len(head):
            widths = [max(w, len(c)) for w, c in zip(widths, cells, strict=True)]
    lines.append("")
    heading = "  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))
    lines.append(("  " + heading).rstrip())
    lines.append("  " + "  ".join("-" * w for w in widths))
    for cells in body:
        if len(cells) == len(head):
            text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        else:
            text = cells[0].ljust(widths[0]) + "  " + cells[1]
        lines.append(("  " + text).rstrip())
    lines += runs_table(result)
    notes += result.notes
    if notes:
        lines.append("")
        lines += [f"  note: {note}" for note in dict.fromkeys(notes)]
    return lines


def runs_table(result: Result) -> list[str]:
    """
    :return: the lines that say what each implementation of ``result``
        runs: its transport, logger, access log (HTTP) and fast path.
    """
    http = any(row.impl.runs.access_log is not None for row in result.rows)
    head = ["what each runs", "transport", "logger"]
    head += ["access log"] if http else []
    head.append("fast path")
    body = []
    for row in result.rows:
        runs = row.impl.runs
        cells = [row.name, runs.transport, runs.logger]
        cells += [runs.access_log or "-"] if http else []
        cells.append(runs.fast_path)
        body.append(cells)
    widths = [max(len(cells[i]) for cells in [head, *body]) for i in range(len(head))]
    lines = [""]
    for cells in [head, ["-" * w for w in widths], *body]:
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        lines.append(("  " + text).rstrip())
    return lines


def text(run: Run, env: dict[str, Any]) -> str:
    """
    :return: everything ``netlab bench`` prints on standard output.
    """
    lines = header(run, env)
    for result in run.results:
        lines += table(result, run)
    if run.interrupted:
        lines += ["", "INTERRUPTED: the figures above are partial."]
    return "\n".join(lines) + "\n"


def as_json(run: Run, env: dict[str, Any]) -> dict[str, Any]:
    """
    :return: the run as JSON-ready data: settings, environment, every
        sample, and the medians, ranges, ceilings and ratios drawn from them.
    """
    s = run.settings
    started = datetime.datetime.fromtimestamp(run.started, datetime.UTC)
    workloads: dict[str, Any] = {}
    for result in run.results:
        metrics = []
        for metric in result.metrics:
            top, by = result.ceiling(metric)
            described: dict[str, Any] = {
                "key": metric.key,
                "label": metric.label,
                "unit": metric.unit,
                "connections": metric.connections,
                "higher_is_better": metric.higher_is_better,
                "compared": metric.compare,
                "bounded": metric.bounded,
                "generator": result.generator.get(metric.key),
                "ceiling": {"value": top, "by": by},
            }
            # What each request asks for, and (HTTP) the body it must get.
            if metric.mode in ("http", "ws"):
                described["path"] = metric.path
            if metric.mode == "http":
                described["expect"] = metric.expect
            metrics.append(described)
        rows = []
        for row in result.rows:
            entry: dict[str, Any] = {
                "name": row.name,
                "role": row.role,
                "family": row.impl.family,
                "summary": row.impl.summary,
                "runs": row.impl.runs.as_json(),
                "status": row.status,
                "reason": row.reason,
                "command": row.command,
                "processes": [
                    {
                        "name": server.name,
                        "pid": server.pid,
                        "port": server.port,
                        "command": list(server.argv),
                    }
                    for server in row.started
                ],
                "samples": {
                    key: [sample.as_json() for sample in samples]
                    for key, samples in row.samples.items()
                },
                "warmup": {key: sample.as_json() for key, sample in row.warmup.items()},
                "median": {},
                "min": {},
                "max": {},
                "failed": {},
                "ratio": {},
                "note": {},
            }
            for metric in result.metrics:
                summary = result.summaries(metric).get(row.name)
                if summary is None:
                    continue
                entry["median"][metric.key] = summary.median
                entry["min"][metric.key] = summary.low
                entry["max"][metric.key] = summary.high
                entry["failed"][metric.key] = summary.failed
                if metric.compare:
                    value, note = result.ratio(row, metric)
                    entry["ratio"][metric.key] = value
                    entry["note"][metric.key] = note
            rows.append(entry)
        scaled = result.scaling()
        scaling = (
            {
                result.metrics[0].key: {
                    "over": result.workload.scaling,
                    "rows": {
                        name: {"ratio": value, "note": note}
                        for name, (value, note) in scaled.items()
                    },
                }
            }
            if scaled
            else {}
        )
        workloads[result.workload.name] = {
            "summary": result.workload.summary,
            "baseline": result.baseline,
            "scaling": scaling,
            "ceiling_server": result.workload.ceiling,
            "generator_bound_share": GENERATOR_BOUND,
            "interrupted": result.interrupted,
            "metrics": metrics,
            "implementations": rows,
            "notes": result.notes,
        }
    return {
        "netlab_bench": 1,
        "started": started.isoformat(),
        "command": ["netlab", "bench", *s.command],
        **env,
        "settings": {
            "workloads": s.workloads,
            "rounds": s.rounds,
            "seconds": s.seconds,
            "warmup": s.warmup,
            "inner_warmup": s.inner_warmup(),
            "server_cpu": s.server_cpu,
            "load_cpu": s.load_cpu,
            "connections": s.connections,
            "subscribers": s.subscribers,
            "idle_levels": list(s.levels),
            "wrk": s.wrk,
        },
        "interrupted": run.interrupted,
        "workloads": workloads,
    }


def write_json(path: str, data: dict[str, Any]) -> None:
    with open(path, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")


#: What each bar's colour says, in the order the legend lists them.
BAR_COLOURS = {
    "tab:blue": "measured",
    "tab:orange": "baseline",
    "tab:gray": "C server (the generator's ceiling)",
    "tab:red": "FAILED: wrong replies",
}


def _colour(name: str, result: Result, summary: Any) -> str:
    if summary.failed:
        return "tab:red"
    if name == result.workload.ceiling:
        return "tab:gray"
    if name == result.baseline:
        return "tab:orange"
    return "tab:blue"


def figure(run: Run) -> Any:
    """
    :return: a matplotlib figure of every compared figure of ``run``: a bar
        (the median) with min-max error bars per implementation, a panel per
        metric, each with a legend of what its colours and lines mean.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    panels = []
    for result in run.results:
        for metric in result.metrics:
            if not metric.compare:
                continue
            summaries = result.summaries(metric)
            names = [r.name for r in result.rows if r.name in summaries]
            names = [n for n in names if summaries[n].median is not None]
            if names:
                panels.append((result, metric, names, summaries))
    drawn, axes = plt.subplots(
        max(len(panels), 1), 1, figsize=(12, 4 * max(len(panels), 1)), squeeze=False
    )
    for axis, (result, metric, names, summaries) in zip(
        axes[:, 0], panels, strict=False
    ):
        medians = [summaries[n].median for n in names]
        below = [summaries[n].median - summaries[n].low for n in names]
        above = [summaries[n].high - summaries[n].median for n in names]
        colours = [_colour(n, result, summaries[n]) for n in names]
        runs = {row.name: row.impl.runs for row in result.rows}
        labels = [f"{n}\n{runs[n].short()}" for n in names]
        axis.bar(labels, medians, yerr=[below, above], capsize=4, color=colours)
        better = "higher" if metric.higher_is_better else "lower"
        axis.set_title(
            f"{result.workload.name}: {metric.label} "
            f"({metric.unit}, {better} is better)"
        )
        axis.tick_params(axis="x", labelsize="small")
        handles: list[Any] = [
            Patch(color=colour, label=label)
            for colour, label in BAR_COLOURS.items()
            if colour in colours
        ]
        handles.append(Line2D([], [], color="black", label="min-max of the rounds"))
        top, _ = result.ceiling(metric)
        if top:
            handles.append(
                axis.axhline(
                    top * GENERATOR_BOUND,
                    color="tab:gray",
                    linestyle=":",
                    linewidth=1,
                    label="generator-bound above",
                )
            )
        axis.legend(handles=handles, loc="upper right", fontsize="small")
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no figures", ha="center")
    drawn.tight_layout()
    return drawn


def plot(path: str, run: Run) -> None:
    """
    Draw :func:`figure` in the PNG file ``path``.
    """
    import matplotlib.pyplot as plt

    drawn = figure(run)
    drawn.savefig(path, dpi=100)
    plt.close(drawn)
