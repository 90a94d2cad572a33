"""
README.md holds exactly two set-up commands, and CI runs the second one as written.
"""

from __future__ import annotations

import pathlib
import re

from twisted.trial.unittest import SynchronousTestCase

ROOT = pathlib.Path(__file__).resolve().parent.parent


class ReadmeTests(SynchronousTestCase):
    def setUp(self) -> None:
        readme = (ROOT / "README.md").read_text()
        self.commands = re.findall(r"```sh\n(.*?)\n```", readme, re.S)

    def test_two_set_up_commands(self) -> None:
        self.assertEqual(len(self.commands), 2, self.commands)
        run_lab, run_tests = self.commands
        self.assertTrue(run_lab.endswith("twistd -n netlab"), run_lab)
        self.assertIn("python -m twisted.trial tests", run_tests)
        for command in self.commands:
            self.assertNotIn("\n", command)

    def test_ci_runs_the_test_command(self) -> None:
        ci = (ROOT / ".ci" / "run").read_text().splitlines()
        self.assertIn(self.commands[1], ci)
        self.assertIn("set -euo pipefail", ci)
