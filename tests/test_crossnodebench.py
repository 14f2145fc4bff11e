"""
The cross-node benchmark (bench/crossnode.py) run briefly, with this checkout
as its own baseline: every scenario of both versions in each round, in the
order the rounds alternate, every line in its sender's order, and the
ratios it prints. (Its figures come from running it for longer.)
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

REPO = Path(__file__).resolve().parent.parent
ROW = re.compile(r"^ +(\d+) (.+?) +(\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+) +(\d+)$")


class CrossNodeBenchTests(SynchronousTestCase):
    def test_baselineAlternates(self):
        if shutil.which("redis-server") is None:
            raise SkipTest("redis-server is not installed (apt-get install redis-server)")
        result = subprocess.run(
            [sys.executable, str(REPO / "bench" / "crossnode.py"), "--windows", "1",
             "--seconds", "0.3", "--rounds", "2", "--senders", "2", "--receivers", "2",
             "--baseline", str(REPO)],
            capture_output=True, timeout=120, cwd=os.path.dirname(REPO),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        rows = [ROW.match(line) for line in lines]
        self.assertEqual(
            [row.group(2) for row in rows if row],
            ["one node, no backplane",
             "across nodes (send on one, receive on two)",
             "one node of two, with Redis",
             "across nodes (send on one, receive on two) (baseline)",
             "one node of two, with Redis (baseline)",
             "one node, no backplane",
             "across nodes (send on one, receive on two) (baseline)",
             "one node of two, with Redis (baseline)",
             "across nodes (send on one, receive on two)",
             "one node of two, with Redis"],
        )
        for row in filter(None, rows):
            self.assertGreater(int(row.group(3)), 0, row.group(0))
            # The client's CPU time per line (the servers' is counted in
            # clock ticks, which a brief run may not reach).
            self.assertGreater(float(row.group(7)), 0, row.group(0))
            self.assertEqual(row.group(8), "0", row.group(0))
        self.assertEqual(
            [re.sub(r"\d\.\d\d", "R", line) for line in lines if re.match(r"window \d", line)],
            ["window 1: across nodes / one node = R, R (baseline)"] * 2
            + ["window 1, median of 2 rounds: across nodes / one node = R, R (baseline)"],
        )

    def test_baselineNotACheckout(self):
        directory = self.mktemp()
        os.makedirs(directory)
        result = subprocess.run(
            [sys.executable, str(REPO / "bench" / "crossnode.py"), "--baseline", directory],
            capture_output=True, timeout=60,
        )
        self.assertEqual(
            (result.returncode, result.stderr.decode()),
            (1, f"crossnode: no sockservice package in {directory}\n"),
        )
