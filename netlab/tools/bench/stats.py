"""
From samples to the figures a table prints: medians, ranges, the
generator's ceiling, and ratios to the baseline (or why there is none).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

#: A figure within this share of the generator's ceiling measures the
#: generator, not the server: no ratio is printed for it.
GENERATOR_BOUND = 0.8


@dataclass
class Summary:
    """
    One implementation's figure for one metric.

    :ivar values: every sample's figure (None where a sample had none).
    :ivar failed: some sample had errors.
    """

    values: list[float | None]
    failed: bool

    @property
    def measured(self) -> list[float]:
        return [v for v in self.values if v is not None]

    @property
    def median(self) -> float | None:
        return statistics.median(self.measured) if self.measured else None

    @property
    def low(self) -> float | None:
        return min(self.measured) if self.measured else None

    @property
    def high(self) -> float | None:
        return max(self.measured) if self.measured else None


def ceiling(summaries: dict[str, Summary]) -> tuple[float | None, str | None]:
    """
    :return: the generator's ceiling for a metric, the best median of the
        run (the C server's, mostly: the fastest server there is), and whose
        it is. A figure near it may measure the generator, not the server.
    """
    best: tuple[float | None, str | None] = (None, None)
    for name, summary in summaries.items():
        if summary.failed or summary.median is None:
            continue
        if best[0] is None or summary.median > best[0]:
            best = (summary.median, name)
    return best


def ratio(
    name: str,
    summaries: dict[str, Summary],
    baseline: str,
    top: float | None,
    bounded: bool,
) -> tuple[float | None, str]:
    """
    The ratio of ``name``'s median to ``baseline``'s, or why there is none.

    :param top: the generator's ceiling for this metric (see :func:`ceiling`).
    :param bounded: whether this metric can be generator-bound (throughput;
        not memory).
    :return: the ratio (None when none can be given) and a note:
        ``baseline``, ``failed``, ``n/a: generator-bound``, ...
    """
    mine, base = summaries.get(name), summaries.get(baseline)
    if mine is not None and mine.failed:
        return None, "failed"
    if mine is None or mine.median is None:
        return None, "n/a: no figure"
    if bounded and top and mine.median >= GENERATOR_BOUND * top:
        return None, "n/a: generator-bound"
    if base is None or base.median is None or base.failed:
        return None, "n/a: no baseline"
    if bounded and top and base.median >= GENERATOR_BOUND * top:
        return None, "n/a: baseline generator-bound"
    if name == baseline:
        return 1.0, "baseline"
    if base.median == 0:
        return None, "n/a: baseline is 0"
    return mine.median / base.median, ""
