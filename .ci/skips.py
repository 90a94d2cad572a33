"""
Fail a CI run whose trial output reports a skip that is not expected.

``python .ci/skips.py EXPECTED OUTPUT...``: EXPECTED is ``.ci/expected-skips``
(one ``test.id  reason`` a line; ``#`` starts a comment); each OUTPUT is what
one ``python -m twisted.trial`` run printed. Trial lists its skips at the end,
each reason under a ``[SKIPPED]`` heading followed by the ids of the tests it
skipped, and counts them in its summary line (``PASSED (skips=2, ...)``).

Exit status 0 when every skip of every output is expected; 1 when one is
not (each named on standard error with its reason), or when an output's
skips cannot be read back (no summary line, or fewer ids than it counts);
2 on a usage mistake. An expected skip that did not happen is only said.

Anything CI could run must run: ``.ci/run`` installs what the tests need, and
``NETLAB_CI=1`` makes the tests' own guards (``tests.support.require``) fail
instead of skipping. This is the net under them, for a skip raised another
way.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: The rule trial draws between its report's sections.
_RULE = re.compile(r"^(={79}|-{79})$")
_TEST_ID = re.compile(r"^[A-Za-z_][\w.]*$")
_SUMMARY = re.compile(r"^(PASSED|FAILED) \((?P<counts>[^)]*)\)$", re.M)
_SKIPS = re.compile(r"\bskips=(\d+)")


def expected(text: str) -> dict[str, str]:
    """
    :return: each expected skip's test id, with the reason given for it.
    :raise ValueError: for a line that names no reason.
    """
    found = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        test, _, reason = line.partition(" ")
        if not _TEST_ID.match(test) or not reason.strip():
            raise ValueError(f"line {number}: expected 'test.id  reason', got {line!r}")
        found[test] = reason.strip()
    return found


def skipped(output: str) -> dict[str, str]:
    """
    :return: each test id trial's ``output`` lists as skipped, with its
        reason.
    :raise ValueError: when the output has no summary line, or lists fewer
        skips than its summary counts.
    """
    summary = list(_SUMMARY.finditer(output))
    if not summary:
        raise ValueError("no trial summary line (PASSED or FAILED) in the output")
    counted = _SKIPS.search(summary[-1].group("counts"))
    found: dict[str, str] = {}
    lines = output.splitlines()
    for start, line in enumerate(lines):
        if line != "[SKIPPED]":
            continue
        end = start + 1
        while end < len(lines) and not _RULE.match(lines[end]):
            end += 1
        block = lines[start + 1 : end]
        # The reason, a blank line, then the ids of the tests it skipped.
        blanks = [i for i, part in enumerate(block) if not part.strip()]
        blank = blanks[-1] if blanks else -1
        reason = " ".join(part.strip() for part in block[: blank + 1] if part.strip())
        for test in block[blank + 1 :]:
            if not _TEST_ID.match(test):
                raise ValueError(f"not a test id under [SKIPPED]: {test!r}")
            found[test] = reason
    total = int(counted.group(1)) if counted else 0
    if len(found) != total:
        raise ValueError(
            f"the summary counts {total} skips, but {len(found)} are listed"
        )
    return found


def check(allowed: dict[str, str], output: str) -> list[str]:
    """
    :return: a line for each skip in ``output`` that ``allowed`` does not
        name (empty when every skip is expected).
    """
    return [
        f"unexpected skip: {test}: {reason}"
        for test, reason in sorted(skipped(output).items())
        if test not in allowed
    ]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        sys.stderr.write("usage: skips.py EXPECTED OUTPUT...\n")
        return 2
    try:
        allowed = expected(Path(argv[0]).read_text())
    except (OSError, ValueError) as error:
        sys.stderr.write(f"skips.py: {argv[0]}: {error}\n")
        return 2
    status = 0
    seen: set[str] = set()
    for name in argv[1:]:
        try:
            output = Path(name).read_text(errors="replace")
            problems = check(allowed, output)
            seen.update(skipped(output))
        except (OSError, ValueError) as error:
            problems = [f"cannot read its skips: {error}"]
        for problem in problems:
            sys.stderr.write(f"skips.py: {name}: {problem}\n")
            status = 1
    for test in sorted(set(allowed) - seen):
        sys.stdout.write(f"skips.py: expected skip did not happen: {test}\n")
    if status == 0:
        sys.stdout.write(f"skips.py: every skip expected in {len(argv) - 1} runs\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
