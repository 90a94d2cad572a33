"""
Skips that CI cannot hide: ``.ci/skips.py`` fails a run whose trial report
holds a skip ``.ci/expected-skips`` does not name, ``.ci/run`` checks each of
its three runs with it, and ``tests.support.require`` skips a test locally
but fails it under CI.
"""

from __future__ import annotations

import os
import pathlib
import re

from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from tests.support import CI_VARIABLE, missing, python, require, run

ROOT = pathlib.Path(__file__).resolve().parent.parent
RULE = "=" * 79
DASHES = "-" * 79

#: What trial prints (with -j2, in whatever order the workers finished):
#: each reason once under [SKIPPED], then the ids it skipped.
REPORT = f"""\
tests.test_x
  Tools
    test_plain ...                                                      [OK]
    test_wrk ...                                                   [SKIPPED]

{RULE}
[SKIPPED]
needs wrk (apt-get install wrk)

tests.test_x.Tools.test_wrk
tests.test_x.Tools.test_wrk_again
{RULE}
[SKIPPED]
needs an IPv6 loopback:
cannot listen on ::1

tests.test_y.Six.test_ipv6
{DASHES}
Ran 4 tests in 0.123s

PASSED (skips=3, successes=1)
"""


class SkipsScriptTests(TestCase):
    """
    ``python .ci/skips.py EXPECTED OUTPUT...``, run as CI runs it.
    """

    timeout = 60

    def write(self, name: str, text: str) -> str:
        folder = pathlib.Path(self.mktemp())
        folder.mkdir(parents=True)
        path = folder / name
        path.write_text(text)
        return str(path)

    async def check(self, expected: str, *outputs: str) -> tuple[int, str, str]:
        paths = [self.write(f"run{i}.txt", text) for i, text in enumerate(outputs)]
        result = await run(
            python(
                str(ROOT / ".ci" / "skips.py"),
                self.write("expected", expected),
                *paths,
            )
        )
        self.assertNotIn(b"Traceback", result.err, result)
        return result.status, result.out.decode(), result.err.decode()

    async def test_unexpected_skip_fails(self) -> None:
        """
        A skip the list does not name fails, each named with its reason.
        """
        listed = "tests.test_x.Tools.test_wrk  CI has no wrk\n"
        status, out, err = await self.check(listed, REPORT)
        self.assertEqual(status, 1, (out, err))
        lines = err.splitlines()
        self.assertEqual(len(lines), 2, err)
        self.assertTrue(
            lines[0].endswith(
                ".txt: unexpected skip: tests.test_x.Tools.test_wrk_again: "
                "needs wrk (apt-get install wrk)"
            ),
            lines,
        )
        self.assertTrue(
            lines[1].endswith(
                ".txt: unexpected skip: tests.test_y.Six.test_ipv6: "
                "needs an IPv6 loopback: cannot listen on ::1"
            ),
            lines,
        )

    async def test_expected_skips_pass(self) -> None:
        """
        Every skip listed (a comment allowed): exit status 0.
        """
        listed = (
            "# why each cannot run in CI\n"
            "tests.test_x.Tools.test_wrk  reason one\n"
            "tests.test_x.Tools.test_wrk_again reason two  # and a comment\n"
            "\n"
            "tests.test_y.Six.test_ipv6  no IPv6 in CI's containers\n"
        )
        status, out, err = await self.check(listed, REPORT)
        self.assertEqual((status, err), (0, ""), out)

    async def test_each_run_checked(self) -> None:
        """
        With several runs, a skip in any one of them fails.
        """
        clean = f"{DASHES}\nRan 1 tests in 0.1s\n\nPASSED (successes=1)\n"
        status, _, err = await self.check("", clean, clean)
        self.assertEqual((status, err), (0, ""))
        status, _, err = await self.check("", clean, REPORT)
        self.assertEqual(status, 1, err)
        self.assertIn("run1.txt: unexpected skip", err)
        self.assertNotIn("run0.txt", err)

    async def test_failed_run_read_too(self) -> None:
        """
        A run that failed is read all the same (and trial's own status fails
        CI).
        """
        report = REPORT.replace("PASSED (skips=3", "FAILED (failures=1, skips=3")
        status, _, err = await self.check("", report)
        self.assertEqual(status, 1, err)
        self.assertEqual(err.count("unexpected skip"), 3, err)

    async def test_unreadable_reports_fail(self) -> None:
        """
        A report whose skips cannot all be read back fails: no summary line
        (trial crashed), or fewer ids than the summary counts (a format
        this script does not know).
        """
        for report, word in (
            (REPORT.split(DASHES)[0], "no trial summary"),
            (REPORT.replace("skips=3", "skips=4"), "counts 4 skips, but 3"),
            (REPORT.replace("wrk)\n\n", "wrk)\n"), "not a test id"),
        ):
            status, _, err = await self.check("", report)
            self.assertEqual(status, 1, (word, err))
            self.assertIn(word, err)

    async def test_bad_list(self) -> None:
        """
        A line of the list without a reason is a usage mistake: status 2.
        """
        status, _, err = await self.check("tests.test_x.Tools.test_wrk\n", REPORT)
        self.assertEqual(status, 2, err)
        self.assertIn("line 1", err)
        self.assertEqual(err.count("\n"), 1, err)

    async def test_repository_list(self) -> None:
        """
        The list in the repository reads, and accepts a run without skips.
        """
        result = await run(
            python(
                str(ROOT / ".ci" / "skips.py"),
                str(ROOT / ".ci" / "expected-skips"),
                self.write("clean", "PASSED (successes=3)\n"),
            )
        )
        self.assertEqual(result.status, 0, result)


class CIScriptTests(SynchronousTestCase):
    """
    ``.ci/run`` decides it is CI, installs what the tests need, and checks
    the skips of each of its trial runs.
    """

    def setUp(self) -> None:
        self.script = (ROOT / ".ci" / "run").read_text()
        self.lines = self.script.splitlines()

    def test_says_it_is_ci(self) -> None:
        self.assertIn(f"export {CI_VARIABLE}=1", self.lines)

    def test_each_trial_run_checked(self) -> None:
        """
        Every trial run's output goes to a log that the next line checks.
        """
        runs = [i for i, line in enumerate(self.lines) if "twisted.trial" in line]
        self.assertEqual(len(runs), 3, runs)
        for index in runs:
            after = self.lines[index : index + 3]
            log = re.search(r'tee "(\$logs/\w+\.txt)"', "\n".join(after))
            self.assertIsNotNone(log, after)
            self.assertIn(f'check_skips "{log.group(1)}"', after)

    def test_installs_the_tools(self) -> None:
        """
        What the guarded tests need is installed (after an ``apt-get
        update``) when missing.
        """
        (needed,) = re.findall(r"^needed=\((.*)\)$", self.script, re.M)
        for package in ("chromium", "chromium-driver", "tshark", "wrk", "gcc"):
            self.assertIn(package, needed.split())
        for package in ("libc6-dev", "redis-server", "haproxy"):
            self.assertIn(package, needed.split())
        update = self.script.index("apt-get update")
        self.assertLess(update, self.script.index("apt-get install"))


class RequireTests(SynchronousTestCase):
    """
    ``require``: a skip here, a failure under CI.
    """

    def under(self, value: str | None) -> None:
        previous = os.environ.pop(CI_VARIABLE, None)
        if value is not None:
            os.environ[CI_VARIABLE] = value
        self.addCleanup(self._restore, previous)

    @staticmethod
    def _restore(previous: str | None) -> None:
        os.environ.pop(CI_VARIABLE, None)
        if previous is not None:
            os.environ[CI_VARIABLE] = previous

    def test_locally_skips(self) -> None:
        for value in (None, "", "0"):
            self.under(value)
            with self.assertRaises(SkipTest) as caught:
                require(False, "needs wrk (apt-get install wrk)")
            self.assertEqual(str(caught.exception), "needs wrk (apt-get install wrk)")
            missing("needs wrk")  # returns: the test takes its other branch
            require(True, "needs nothing")

    def test_under_ci_fails(self) -> None:
        self.under("1")
        with self.assertRaises(AssertionError) as caught:
            require(None, "needs wrk (apt-get install wrk)")
        self.assertIn("needs wrk (apt-get install wrk)", str(caught.exception))
        self.assertIn(CI_VARIABLE, str(caught.exception))
        self.assertRaises(AssertionError, missing, "needs matplotlib")
        require("a path", "needs nothing")

    def test_not_the_runners_variable(self) -> None:
        """
        The runner's own ``CI`` alone is not CI: ``.ci/run`` says so itself.
        """
        self.under(None)
        previous = os.environ.get("CI")
        os.environ["CI"] = "true"
        if previous is None:
            self.addCleanup(os.environ.pop, "CI", None)
        else:
            self.addCleanup(os.environ.__setitem__, "CI", previous)
        self.assertRaises(SkipTest, require, False, "needs wrk")
