"""
bench/websocket.py's own logic: which servers it starts, the order of its
rounds and the table it prints. (Its figures come from running it.)
"""

from argparse import Namespace

from twisted.trial.unittest import SynchronousTestCase

from bench import websocket


class FakeServer:
    def __init__(self, name, argv, port):
        self.name, self.argv, self.port = name, argv, port
        self.process = Namespace(pid=port)
        self.logPath = Namespace(read_bytes=lambda: (
            b"greet (WebSocket) mode listening on 127.0.0.1:%d\n" % (port + 1)
        ))
        self.stopped = False

    def stop(self):
        self.stopped = True


class MeasureTests(SynchronousTestCase):
    def measure(self, baseline=None):
        servers, calls = [], []

        def startServer(name, argv):
            servers.append(FakeServer(name, argv, 1000 * (len(servers) + 1)))
            return servers[-1]

        def relayRate(kind, duration, pid):
            calls.append((kind.name, kind.port, duration))
            # WebSocket relays a quarter of TCP's rate, the baseline's a tenth.
            rate = 1000.0 if kind.name == "TCP" else (100.0 if pid == 2000 else 250.0)
            return rate, rate * 2, 0.25

        def idleMemory(kind, server, count):
            return (1024.0 if kind.name == "TCP" else 7168.0) * (2 if server.port == 4000 else 1)

        self.patch(websocket, "relayRate", relayRate)
        self.patch(websocket, "idleMemory", idleMemory)
        arguments = Namespace(rounds=2, duration=3.0, idle=500, baseline=baseline)
        table = websocket.measure(startServer, ["twistd", "-n", "--pidfile="], arguments)
        return table, servers, calls

    def test_alone(self):
        table, servers, calls = self.measure()
        self.assertEqual([(s.name, s.argv[0], s.stopped) for s in servers], [
            ("sockservice-relay-websocket", "twistd", True),
            ("sockservice-greet-websocket", "twistd", True),
        ])
        # Every other round in the opposite order.
        self.assertEqual(calls, [("TCP", 1000, 3.0), ("WebSocket", 1001, 3.0),
                                 ("WebSocket", 1001, 3.0), ("TCP", 1000, 3.0)])
        self.assertEqual(table.splitlines()[2:], [
            "| relay deliveries per second (50 clients, 10 senders) | 1,000 | 250 | 0.25 "
            "| 0.25-0.25 | >= 0.5 |",
            "| relay deliveries per second of server CPU (50 clients, 10 senders) | 2,000 | 500 "
            "| 0.25 | 0.25-0.25 | >= 0.5 |",
            "| memory per idle connection (500) | 1.00 KB | 7.00 KB | 7.00 | | <= 8 KB |",
            "",
            "| relay round | TCP per second | WebSocket | ratio | TCP per second of server CPU "
            "| WebSocket | ratio | load client busy (TCP, WebSocket) |",
            "|---|---|---|---|---|---|---|---|",
            "| 1 | 1,000 | 250 | 0.25 | 2,000 | 500 | 0.25 | 0.25, 0.25 |",
            "| 2 | 1,000 | 250 | 0.25 | 2,000 | 500 | 0.25 | 0.25, 0.25 |",
        ])

    def test_baseline(self):
        """
        With --baseline, the earlier checkout's twistd serves beside this
        one's, round by round in turn, and its rows follow, named so.
        """
        table, servers, calls = self.measure(baseline="/old/venv/bin/twistd")
        self.assertEqual([(s.name, s.argv[:3]) for s in servers], [
            ("sockservice-relay-websocket", ["twistd", "-n", "--pidfile="]),
            ("sockservice-relay-websocket (baseline)", ["/old/venv/bin/twistd", "-n", "--pidfile="]),
            ("sockservice-greet-websocket", ["twistd", "-n", "--pidfile="]),
            ("sockservice-greet-websocket (baseline)", ["/old/venv/bin/twistd", "-n", "--pidfile="]),
        ])
        self.assertTrue(all(s.stopped for s in servers))
        oneRound = [("TCP", 1000, 3.0), ("WebSocket", 1001, 3.0),
                    ("TCP", 2000, 3.0), ("WebSocket", 2001, 3.0)]
        self.assertEqual(calls, oneRound + oneRound[::-1])
        self.assertEqual([row.split(" | ")[0] for row in table.splitlines()[2:]], [
            "| relay deliveries per second (50 clients, 10 senders)",
            "| relay deliveries per second of server CPU (50 clients, 10 senders)",
            "| relay deliveries per second (50 clients, 10 senders) (baseline)",
            "| relay deliveries per second of server CPU (50 clients, 10 senders) (baseline)",
            "| memory per idle connection (500)",
            "| memory per idle connection (500) (baseline)",
            "",
            "| relay round",
            "|---|---|---|---|---|---|---|---|",
            "| 1",
            "| 1 (baseline)",
            "| 2",
            "| 2 (baseline)",
        ])
        self.assertEqual(
            table.splitlines()[12], "| 1 (baseline) | 1,000 | 100 | 0.10 | 2,000 | 200 | 0.10 "
            "| 0.25, 0.25 |"
        )
        self.assertIn("| 1,000 | 100 | 0.10 |", table.splitlines()[4])
        self.assertIn("| 2.00 KB | 14.00 KB |", table.splitlines()[7])
