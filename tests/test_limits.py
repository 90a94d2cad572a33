"""
:class:`netlab.limits.Limits`: the defaults the docs state, and the rule that
every limit is a positive, finite number.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import fields

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from netlab.limits import (
    _OPTIONS,
    DEFAULT_LIMITS,
    HTTP_LIMITS,
    LimitOptions,
    Limits,
    limit_parameters,
)

DOCS = pathlib.Path(__file__).parent.parent / "docs"
# A list-table row: its option cells, then its default.
_ROW = re.compile(
    r"^   \* - (``--[^\n]*(?:\n       ``--[^\n]*)*)\n     - ([^\n]+)$", re.M
)
_UNITS = {"KiB": 1024, "MiB": 1024 * 1024, "s": 1}


def documented_defaults() -> dict[str, list[tuple[str, float]]]:
    """
    :return: each option a docs table gives a default for, with each
        ``(file, default)`` it is given.
    """
    found: dict[str, list[tuple[str, float]]] = {}
    for path in sorted(DOCS.glob("*.rst")):
        for options, defaults in _ROW.findall(path.read_text()):
            names = re.findall(r"``--([a-z-]+)``", options)
            values = [v.strip() for v in defaults.split(",")]
            if len(values) != len(names):
                continue
            for name, value in zip(names, values, strict=True):
                number = re.fullmatch(r"([0-9.]+) ?(KiB|MiB|s)?", value)
                if number is None:
                    continue
                amount = float(number.group(1)) * _UNITS.get(number.group(2), 1)
                found.setdefault(name, []).append((path.name, amount))
    return found


class LimitOptionsForTests(LimitOptions):
    optParameters = limit_parameters(HTTP_LIMITS)


class LimitsTests(SynchronousTestCase):
    def test_documented_defaults(self) -> None:
        """
        Every limit has a documented default in the docs' tables, and each
        table that states one states the value Limits has.
        """
        documented = documented_defaults()
        for field in fields(Limits):
            option = _OPTIONS[field.name][0]
            self.assertIn(option, documented, f"--{option} has no documented default")
            for place, value in documented[option]:
                self.assertEqual(
                    value, getattr(DEFAULT_LIMITS, field.name), (option, place)
                )

    def test_every_limit_is_positive_and_finite(self) -> None:
        """
        0, a negative number, infinity and NaN are refused for every limit,
        in code and on the command line; the smallest positive values pass.
        """
        for field in fields(Limits):
            option = _OPTIONS[field.name][0]
            for bad in (0, -1, math.inf, math.nan):
                self.assertRaises(ValueError, Limits, **{field.name: bad})
            for bad in ("0", "-1", "inf", "nan"):
                self.assertRaises(
                    usage.UsageError,
                    LimitOptionsForTests().parseOptions,
                    [f"--{option}", bad],
                )
            small = 1 if field.type in (int, "int") else 0.001
            self.assertEqual(getattr(Limits(**{field.name: small}), field.name), small)
            given = LimitOptionsForTests()
            given.parseOptions([f"--{option}", str(small)])
            self.assertEqual(getattr(given.limits(), field.name), small)
