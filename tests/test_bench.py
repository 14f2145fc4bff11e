"""
The benchmark script's own logic: finding the C tools, picking the median
round, and the table it prints. (Its figures come from running it.)
"""

import io
import os
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from bench import rounds, run


class FindToolsTests(SynchronousTestCase):
    def test_missing(self):
        """
        Without the C sources the benchmark says where it looked and how to
        point it elsewhere, in one line.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        error = self.assertRaises(run.BenchError, run.findTools, directory)
        self.assertEqual(
            str(error),
            f"no loadgen.c in {directory}: pass --tools DIR or set SOCKSERVICE_TOOLS",
        )

    def test_found(self):
        directory = self.mktemp()
        os.makedirs(directory)
        for name in ("loadgen.c", "cbroker.c"):
            open(os.path.join(directory, name), "w").close()
        self.assertEqual(
            run.findTools(directory),
            {"loadgen": Path(directory, "loadgen.c"), "cbroker": Path(directory, "cbroker.c")},
        )

    def test_ownTools(self):
        """
        Unless told otherwise, the benchmark builds its own loadgen.c and
        cbroker.c from bench/, whatever lies beside the checkout.
        """
        bench = Path(run.__file__).resolve().parent
        self.assertEqual(
            run.findTools(None),
            {"loadgen": bench / "loadgen.c", "cbroker": bench / "cbroker.c"},
        )

    def test_mainWithoutTools(self):
        directory = self.mktemp()
        os.makedirs(directory)
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        self.assertEqual(run.main(["--tools", directory]), 1)
        self.assertEqual(
            stderr.getvalue(),
            f"bench/run.py: no loadgen.c in {directory}: "
            "pass --tools DIR or set SOCKSERVICE_TOOLS\n",
        )


class MedianTests(SynchronousTestCase):
    def test_median(self):
        rounds = [{"value": 3.0}, {"value": 1.0}, {"value": 2.0}]
        self.assertEqual(run._median(rounds), {"value": 2.0})

    def test_failure(self):
        failed = {"failed": "error=stalled"}
        self.assertIs(run._median([{"value": 1.0}, failed]), failed)


class FormatTableTests(SynchronousTestCase):
    def test_table(self):
        results = {
            "greet-1": {
                "C": {"value": 100000.0, "latency": (300, 700), "cpu": 8.5, "user": 0.25},
                "default": {"value": 60000.0, "latency": (500, 990), "ratios": [0.6, 0.61],
                            "cpu": 12.25, "user": 4.0},
                "directepoll": {"value": 75000.0, "latency": (400, 900), "ratios": [0.7, 0.81]},
            },
            "relay": {
                "C": {"value": 1.0, "latency": (1, 2)},
                "directepoll": {"failed": "echoes=3"},
            },
            "idle": {
                "C": {"value": 4096.0, "latency": None, "count": 4000},
                "directepoll": {"value": 1228.8, "latency": None, "count": 5000},
            },
        }
        self.assertEqual(
            run.formatTable(results).splitlines(),
            [
                "| figure | reactor | sockservice | C reference | ratio | rounds | target "
                "| p50 / p99 µs | C p50 / p99 µs | CPU µs/op | C CPU µs/op |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
                "| greet replies/s, 1 in flight | default | 60,000 | 100,000 | 0.60 "
                "| 0.60-0.61 | >= 0.7 | 500 / 990 | 300 / 700 | 12.25 (4.00 user) | 8.50 (0.25 user) |",
                "| greet replies/s, 1 in flight | directepoll | 75,000 | 100,000 | 0.75 "
                "| 0.70-0.81 | >= 0.7 | 400 / 900 | 300 / 700 |  | 8.50 (0.25 user) |",
                "| relay deliveries/s (50 clients, 10 senders) | directepoll "
                "| failed: echoes=3 | | | | | | | | |",
                "| memory per idle connection (5000; C 4000) | directepoll | 1.20 KB "
                "| 4.00 KB | 0.30 |  | <= 2 KB |  |  |  |  |",
            ],
        )


class BaselineTests(SynchronousTestCase):
    """
    C{--baseline TWISTD} measures an earlier sockservice beside this one, in
    the same rounds, under the first reactor named.
    """

    def servers(self, argv):
        started = []
        self.patch(run, "Server", lambda name, argv, workdir: started.append((name, argv)))
        bench = run.Bench(run.parseArguments(argv), {}, Path("."))
        for name in bench.measured:
            bench.startSockservice("greet", name)
        return bench.measured, started

    def test_measuredBesideThisOne(self):
        old = sys.executable  # any executable stands for the other twistd
        measured, started = self.servers(["--reactor", "directepoll", "epoll", "--baseline", old])
        self.assertEqual(measured, ["directepoll", "epoll", "baseline"])
        ours = run.twistdCommand()
        tail = ["sockservice", "--mode", "greet", "--interface", "127.0.0.1", "--port", "0"]
        self.assertEqual(started, [
            ("sockservice-greet-directepoll",
             [ours, "-n", "--pidfile=", "--reactor", "directepoll", *tail]),
            ("sockservice-greet-epoll", [ours, "-n", "--pidfile=", "--reactor", "epoll", *tail]),
            ("sockservice-greet-baseline",
             [old, "-n", "--pidfile=", "--reactor", "directepoll", *tail]),
        ])

    def test_notExecutable(self):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        error = self.assertRaises(SystemExit, run.parseArguments, ["--baseline", "/nonexistent"])
        self.assertEqual(error.code, 2)
        self.assertEqual(
            stderr.getvalue().splitlines()[-1],
            "bench/run.py: error: --baseline /nonexistent: not an executable twistd",
        )


class FormatRoundsTests(SynchronousTestCase):
    def test_rounds(self):
        results = {
            "greet-1": {
                "C": {"value": 2.0, "rounds": [{"value": 100000.0}, {"value": 90500.4}]},
                "directepoll": {"value": 1.0, "rounds": [{"value": 70000.0},
                                                          {"failed": "echoes=1"}]},
            },
            "idle": {"C": {"value": 4096.0, "count": 4000}},
        }
        self.assertEqual(run.formatRounds(results).splitlines(), [
            "greet-1 C: 100,000, 90,500",
            "greet-1 directepoll: 70,000, echoes=1",
        ])


class RoundOrderTests(SynchronousTestCase):
    """
    Each round takes the servers in the order opposite to the round before.
    """

    def test_alternates(self):
        names = ["C", "directepoll", "baseline"]
        self.assertEqual(
            [rounds.roundOrder(names, number) for number in range(3)],
            [names, ["baseline", "directepoll", "C"], names],
        )

    def test_runUsesIt(self):
        arguments = run.parseArguments(["--rounds", "2", "--only", "greet-1",
                                        "--reactor", "directepoll"])
        bench = run.Bench(arguments, {}, Path("."))
        measuredIn = []

        class Stub:
            def __init__(self, name):
                self.name = name

            def stop(self):
                pass

        self.patch(bench, "startAll", lambda mode: {"C": Stub("c"), "directepoll": Stub("d")})

        def loadgen(figure, server):
            measuredIn.append(server.name)
            return {"value": 1.0, "latency": (1, 1)}

        self.patch(bench, "loadgen", loadgen)
        bench.run({"greet-1"})
        self.assertEqual(measuredIn, ["c", "d", "d", "c"])
