"""
bench/callgrind.py: its fit, and a short run for real (the real twistd under
callgrind, a few operations of each load).
"""

import io
import re
import shutil
import sys
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from bench import callgrind


class FitTests(SynchronousTestCase):
    def test_costsRecovered(self):
        """
        Counts made of a fixed part, a cost per operation and a cost per log
        line give back both costs.
        """
        runs = [(n, lines, 5_000_000 + 30_000 * n + 200_000 * lines)
                for n, lines in [(200, 100), (1000, 300), (200, 200), (1000, 100)]]
        perOperation, perLine = callgrind.fit(runs)
        self.assertAlmostEqual(perOperation, 30_000, places=3)
        self.assertAlmostEqual(perLine, 200_000, places=3)

    def test_linesConstant(self):
        """
        When every run wrote as many log lines, they are part of the fixed
        cost and no cost per line is given.
        """
        runs = [(200, 7, 1_000 + 25 * 200), (1000, 7, 1_000 + 25 * 1000)]
        perOperation, perLine = callgrind.fit(runs)
        self.assertAlmostEqual(perOperation, 25, places=6)
        self.assertIsNone(perLine)

    def test_linePerOperation(self):
        """
        When each operation wrote one log line, the line's cost is part of
        the operation's.
        """
        runs = [(n, n, 5_000 + 300 * n) for n in (10, 60, 10, 60)]
        perOperation, perLine = callgrind.fit(runs)
        self.assertAlmostEqual(perOperation, 300, places=6)
        self.assertIsNone(perLine)

    def test_linesNearlyPerOperation(self):
        """
        When the log lines follow the operations all but for a few, the
        three-part fit can split the cost into a negative cost per
        operation (as a real short run gave: -9,739 per greet reply); the
        lines' cost then stays part of the operation's, fitted on the
        operations alone.
        """
        runs = [(10, 10, 8_000), (60, 60, 23_000), (10, 14, 9_500), (60, 55, 21_000)]
        perOperation, perLine = callgrind.fit(runs)
        self.assertAlmostEqual(perOperation, 265, places=6)
        self.assertIsNone(perLine)

    def test_fewNotBelowMany(self):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as raised:
            callgrind.parseArguments(["--few", "10", "--many", "10"])
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(stderr.getvalue().splitlines()[-1],
                         "bench/callgrind.py: error: need 0 < --few < --many")


class CallgrindTests(SynchronousTestCase):
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        skip = "valgrind (callgrind_control) is missing"

    def test_counts(self):
        """
        It prints one positive count per load, in this order and form.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            status = callgrind.main(["--few", "10", "--many", "60", "--rounds", "2"])
        self.assertEqual(status, 0)
        pattern = re.compile(r"instructions per (greet reply|short connection): ([\d,]+)"
                             r"( \(and -?[\d,]+ per log line written\))?")
        names = []
        for line in out.getvalue().splitlines():
            match = pattern.fullmatch(line)
            self.assertIsNotNone(match, line)
            names.append(match.group(1))
            self.assertGreater(int(match.group(2).replace(",", "")), 0)
        self.assertEqual(names, ["greet reply", "short connection"])
