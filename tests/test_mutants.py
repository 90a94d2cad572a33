"""
The mutation check's records (:mod:`tests.mutants`) stay honest: each
mutant's original text is in its file exactly once, its replacement differs,
and the tests it names exist.
"""

from __future__ import annotations

import io
import pathlib
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.runner import TestLoader
from twisted.trial.unittest import SynchronousTestCase

from tests import mutants


class MutantRecordTests(SynchronousTestCase):
    def test_each_original_is_in_the_tree_once(self) -> None:
        self.assertGreaterEqual(len(mutants.MUTANTS), 30)
        self.assertEqual(mutants.stale(list(mutants.MUTANTS)), [])
        for mutant in mutants.MUTANTS:
            self.assertNotEqual(mutant.original, mutant.replacement, mutant.name)

    def test_names_unique_and_tests_exist(self) -> None:
        names = [mutant.name for mutant in mutants.MUTANTS]
        self.assertEqual(len(names), len(set(names)))
        loader = TestLoader()
        for name in sorted({t for m in mutants.MUTANTS for t in m.tests}):
            self.assertGreater(loader.loadByName(name).countTestCases(), 0, name)

    def test_apply_changes_one_place(self) -> None:
        tree = pathlib.Path(self.mktemp())
        mutant = mutants.MUTANTS[0]
        target = tree / mutant.path
        target.parent.mkdir(parents=True)
        original = (mutants.ROOT / mutant.path).read_text()
        target.write_text(original)
        mutant.apply(tree)
        changed = target.read_text()
        self.assertNotEqual(changed, original)
        self.assertEqual(changed.replace(mutant.replacement, mutant.original), original)
        # Applied again, the original is gone: refused, not silently skipped.
        self.assertRaises(ValueError, mutant.apply, tree)

    def test_list_and_unknown_names(self) -> None:
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(mutants.main(["--list"]), 0)
        self.assertEqual(len(out.getvalue().splitlines()), len(mutants.MUTANTS))
        with redirect_stderr(io.StringIO()) as err:
            self.assertRaises(SystemExit, mutants.main, ["no-such-mutant"])
        self.assertIn("no mutant named 'no-such-mutant'", err.getvalue())
