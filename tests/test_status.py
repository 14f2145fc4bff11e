"""
C{sockservice status}: the summary of two scrapes, and the real command
against the real twistd's metrics.
"""

import re

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sockservice.client.status import Scrape, StatusFailed, summarize
from tests.realserver import connectPeer, freePort, runClient, startTwistd
from tests.test_metrics_twistd import METRICS, metricsURL
from tests.test_twistd import ACK, LOCAL

INFO = 'sockservice_info{mode="%s",reactor="r.R",version="1.2.3"} 1\n'


def exposition(mode, received, sent, **extra):
    """
    Metrics text as a server in C{mode} exposes it.
    """
    lines = [
        INFO % mode,
        "process_start_time_seconds 1000\n",
        f'sockservice_connections_open{{mode="{mode}"}} 4\n',
        "sockservice_connections_accepted_total 40\n",
        f"sockservice_lines_received_total {received}\n",
        f"sockservice_lines_sent_total {sent}\n",
        'sockservice_refusals_total{reason="server_full"} 0\n',
        'sockservice_refusals_total{reason="too_slow"} %d\n' % extra.pop("tooSlow", 0),
        'sockservice_refusals_total{reason="idle_timeout"} %d\n' % extra.pop("idle", 0),
    ]
    lines += [f"sockservice_{name} {value}\n" for name, value in extra.items()]
    return "".join(lines)


class SummaryTests(SynchronousTestCase):
    def test_greet(self):
        first = Scrape(exposition("greet", 100, 104), 4000)
        second = Scrape(exposition("greet", 130, 140, idle=2), 4002)
        self.assertEqual(summarize(first, second, 2.0), (
            "sockservice 1.2.3, greet mode, reactor r.R\n"
            "uptime: 0h 50m 02s\n"
            "connections: 4 open, 40 served\n"
            "lines/s: 15.0 in, 18.0 out (over 2.0s)\n"
            "refusals: idle_timeout 2\n"
        ))

    def test_relayWithBackplane(self):
        backplane = dict(
            backplane_up=0, backplane_outbox_bytes=512, backplane_lost_lines_total=3,
            backplane_reconnects_total=1, tooSlow=1, idle=4,
        )
        first = Scrape(exposition("relay", 0, 0, **backplane), 90000)
        second = Scrape(exposition("relay", 5, 20, **backplane), 91000 + 86400)
        self.assertEqual(summarize(first, second, 0.5).splitlines()[1:], [
            "uptime: 2d 1h 00m 00s",
            "connections: 4 open, 40 served",
            "lines/s: 10.0 in, 40.0 out (over 0.5s)",
            "refusals: idle_timeout 4, too_slow 1",
            "backplane: DOWN, 512 bytes waiting, 3 lines could not cross nodes, 1 reconnects",
        ])

    def test_relayAlone(self):
        scrape = Scrape(exposition("relay", 0, 0), 2000)
        self.assertEqual(
            summarize(scrape, scrape, 1).splitlines()[-2:],
            ["refusals: none", "backplane: none (this node's clients only)"],
        )

    def test_collect(self):
        scrape = Scrape(exposition(
            "collect", 2, 4, collect_messages_total=2, collect_remaining=3
        ), 2000)
        self.assertEqual(
            summarize(scrape, scrape, 1).splitlines()[-1],
            "collect: 2 messages, 3 connections to go",
        )

    def test_notSockservice(self):
        scrape = Scrape("process_start_time_seconds 1000\n", 2000)
        with self.assertRaises(StatusFailed) as caught:
            summarize(scrape, scrape, 1)
        self.assertEqual(
            str(caught.exception), "no sockservice_info: not a sockservice server's metrics"
        )


class StatusCommandTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_summary(self):
        server = startTwistd(self, *LOCAL, *METRICS)
        port = yield server.listening
        base = yield metricsURL(server)
        peer = yield connectPeer(self, port)
        peer.send(b"1\n2\n3\n")
        yield peer.receive(8 + 3 * len(ACK))
        status = runClient(self, "status", "--metrics-url", base + "/metrics", "--interval", "0.5")
        status.transport.closeStdin()
        self.assertEqual((yield status.ended), 0)
        self.assertEqual(status.errors, b"")
        self.assertRegex(status.output.decode(), re.compile(
            r"\Asockservice \S+, greet mode, reactor \S+DirectEPollReactor\n"
            r"uptime: 0h 00m \d\ds\n"
            r"connections: 1 open, 1 served\n"
            r"lines/s: 0\.0 in, 0\.0 out \(over 0\.\ds\)\n"
            r"refusals: none\n\Z"
        ))

    @inlineCallbacks
    def test_unreachable(self):
        url = f"http://127.0.0.1:{freePort()}/metrics"
        status = runClient(self, "status", "--metrics-url", url)
        status.transport.closeStdin()
        self.assertEqual((yield status.ended), 1)
        self.assertEqual((status.output, status.errors.decode()), (
            b"",
            f"sockservice status: {url}: cannot fetch: Connection was refused by "
            "other side: 111: Connection refused.\n",
        ))
