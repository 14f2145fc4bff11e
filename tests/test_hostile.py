"""
bench/hostile.py: its table and the kernel counter it reads, and one short
real run against the real twistd on loopback.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import hostile

REPO = Path(__file__).resolve().parent.parent

NETSTAT = """\
TcpExt: SyncookiesSent ListenOverflows ListenDrops
TcpExt: 0 42 43
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""


class HostileScriptTests(SynchronousTestCase):
    def test_listenOverflows(self):
        path = os.path.join(tempfile.mkdtemp(), "netstat")
        with open(path, "w") as f:
            f.write(NETSTAT)
        self.assertEqual(hostile.listenOverflows(path), 42)

    def test_table(self):
        self.assertEqual(
            hostile.formatTable([("burst", 5000, 50 << 20, 60 << 20, 55 << 20, "0.300 s", True),
                                 ("relay", 9990, 1 << 20, 600 << 20, 2 << 20, "1.5 s", False)]),
            "| attack | clients | RSS before | RSS peak | RSS after | fresh client answered "
            "| result |\n|---|---|---|---|---|---|---|\n"
            "| burst | 5,000 | 50.0 MiB | 60.0 MiB | 55.0 MiB | 0.300 s | pass |\n"
            "| relay | 9,990 | 1.0 MiB | 600.0 MiB | 2.0 MiB | 1.5 s | FAIL |",
        )

    def test_shortRealRun(self):
        """
        Twenty attackers of two kinds against the real server: a table with
        both rows, passing, and exit status 0.
        """
        result = subprocess.run(
            [sys.executable, str(REPO / "bench" / "hostile.py"), "--clients", "20",
             "--hold", "0.5", "--only", "partial-lines", "greet-newlines"],
            capture_output=True, text=True, timeout=120, cwd=tempfile.mkdtemp(),
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = [line for line in result.stdout.splitlines() if line.startswith("| greet")]
        self.assertEqual(len(rows), 4)
        self.assertTrue(all(row.endswith("| pass |") for row in rows), rows)
        self.assertIn("| greet: partial lines of 65,535 bytes | 20 |", rows[-2])
