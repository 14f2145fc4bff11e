"""
The real C{twistd -n sockservice --metrics ...}: its exposition passes
C{promtool check metrics}, and its counters move exactly as the traffic that
the test sends over loopback.
"""

import os
import re
import shutil
import socket
import tempfile

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import Agent, readBody

from tests.realserver import Peer, RecordingProcess, connectPeer, startRedis, startTwistd
from tests.test_crossnode import backplaneUp
from tests.test_twistd import ACK, LOCAL

METRICS = ("--metrics", "tcp:0:interface=127.0.0.1")
SERVING = re.compile(rb"metrics on http://(127\.0\.0\.1:\d+)/metrics")


@inlineCallbacks
def metricsURL(server):
    """
    The base URL the server's metrics listener announced.
    """
    yield server.logged(b"metrics on http://")
    return "http://" + SERVING.search(server.output).group(1).decode()


@inlineCallbacks
def fetch(url):
    """
    The status and body of C{GET url}.
    """
    response = yield Agent(reactor).request(b"GET", url.encode())
    body = yield readBody(response)
    return response.code, body


@inlineCallbacks
def scrape(base):
    """
    Every sample of C{base}/metrics, by name and labels.
    """
    code, body = yield fetch(base + "/metrics")
    assert code == 200, (code, body)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def moved(before, after):
    """
    The samples that changed, by how much.
    """
    return {
        key: after[key] - before.get(key, 0) for key in after
        if after[key] != before.get(key, 0) and not key[0].startswith("process_")
    }


def refused(reason):
    return ("sockservice_refusals_total", (("reason", reason),))


def total(name):
    return (f"sockservice_{name}_total", ())


@inlineCallbacks
def connectFrom(testCase, port, source):
    """
    A L{Peer} connected to 127.0.0.1:C{port} from the address C{source}.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source, 0))
    peer = yield connectProtocol(endpoint, Peer())
    testCase.addCleanup(lambda: peer.closed.called or peer.transport.abortConnection())
    return peer


class MetricsProcessTests(TestCase):
    timeout = 60
    maxDiff = None

    @inlineCallbacks
    def test_promtoolAccepts(self):
        promtool = shutil.which("promtool")
        if promtool is None:
            raise SkipTest("promtool is not installed (apt-get install prometheus)")
        server = startTwistd(self, *LOCAL, *METRICS)
        base = yield metricsURL(server)
        code, body = yield fetch(base + "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b"\nsockservice_info{", body)
        check = RecordingProcess()
        reactor.spawnProcess(check, promtool, [promtool, "check", "metrics"])
        self.addCleanup(check.stop)
        check.transport.write(body)
        check.transport.closeStdin()
        status = yield check.ended
        self.assertEqual((status, check.output + check.errors), (0, b""))

    @inlineCallbacks
    def test_greetCounters(self):
        """
        Three lines in, then one refusal of each kind greet has: each
        counter moves by exactly that, and nothing else does.
        """
        server = startTwistd(
            self, *LOCAL, *METRICS, "--max-line", "16", "--max-per-ip", "2",
            "--max-connections", "3",
        )
        port = yield server.listening
        base = yield metricsURL(server)
        start = yield scrape(base)
        self.assertEqual(start[("sockservice_connections_open", (("mode", "greet"),))], 0)
        a = yield connectPeer(self, port)
        a.send(b"one\ntwo\r\nthree\n")
        yield a.receive(8 + 3 * len(ACK))
        after = yield scrape(base)
        self.assertEqual(moved(start, after), {
            total("connections_accepted"): 1,
            ("sockservice_connections_open", (("mode", "greet"),)): 1,
            total("lines_received"): 3,
            total("bytes_received"): 15,
            total("lines_sent"): 4,
            total("bytes_sent"): 8 + 3 * len(ACK),
        })
        b = yield connectPeer(self, port)
        yield b.receive(8)
        perIP = yield connectPeer(self, port)
        self.assertEqual((yield perIP.closed), b"ERROR server full\n")
        c = yield connectFrom(self, port, "127.0.0.2")
        yield c.receive(8)
        full = yield connectFrom(self, port, "127.0.0.2")
        self.assertEqual((yield full.closed), b"ERROR server full\n")
        c.send(b"x" * 17 + b"\n")
        self.assertEqual((yield c.closed), b"connect\nERROR line too long\n")
        refusals = yield scrape(base)
        self.assertEqual(moved(after, refusals), {
            total("connections_accepted"): 2,
            ("sockservice_connections_open", (("mode", "greet"),)): 1,
            refused("per_ip"): 1,
            refused("server_full"): 1,
            refused("line_too_long"): 1,
            total("bytes_received"): 18,
            total("lines_sent"): 5,
            total("bytes_sent"): 8 * 2 + 18 * 2 + 20,
        })

    @inlineCallbacks
    def test_relayCounters(self):
        """
        One line relayed to two clients is two deliveries; a wrong token and
        a silent client are one refusal each.
        """
        path = os.path.join(tempfile.mkdtemp(), "token")
        self.addCleanup(shutil.rmtree, os.path.dirname(path))
        with open(path, "w") as f:
            f.write("let me in\n")
        server = startTwistd(
            self, *LOCAL, *METRICS, "--mode", "relay", "--token-file", path,
            "--idle-timeout", "3",
        )
        port = yield server.listening
        base = yield metricsURL(server)
        peers = []
        for _ in range(3):
            peer = yield connectPeer(self, port)
            peer.send(b"let me in\n")
            peers.append(peer)
        start = yield scrape(base)
        peers[0].send(b"hello\n")
        for peer in peers[1:]:
            self.assertEqual((yield peer.receive(6)), b"hello\n")
        delivered = yield scrape(base)
        self.assertEqual(moved(start, delivered), {
            total("lines_received"): 1,
            total("bytes_received"): 6,
            total("lines_sent"): 2,
            total("bytes_sent"): 12,
            total("relay_deliveries"): 2,
        })
        for peer in peers:
            peer.transport.loseConnection()
            yield peer.closed
        intruder = yield connectPeer(self, port)
        intruder.send(b"guess\n")
        self.assertEqual((yield intruder.closed), b"ERROR unauthorized\n")
        silent = yield connectPeer(self, port)
        self.assertEqual((yield silent.closed), b"ERROR idle timeout\n")
        refusals = yield scrape(base)
        self.assertEqual(moved(delivered, refusals), {
            total("connections_accepted"): 2,
            ("sockservice_connections_open", (("mode", "relay"),)): -3,
            refused("unauthorized"): 1,
            refused("idle_timeout"): 1,
            total("lines_received"): 1,
            total("bytes_received"): 6,
            total("lines_sent"): 2,
            total("bytes_sent"): 19 + 19,
        })

    @inlineCallbacks
    def test_healthAndNotFound(self):
        server = startTwistd(self, *LOCAL, *METRICS)
        base = yield metricsURL(server)
        self.assertEqual((yield fetch(base + "/healthz")), (200, b"ok\n"))
        self.assertEqual((yield fetch(base + "/"))[0], 404)

    @inlineCallbacks
    def test_metricsPortInUse(self):
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        description = f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1"
        server = startTwistd(self, *LOCAL, "--metrics", description)
        self.assertEqual((yield server.ended), 1)
        self.assertEqual(
            server.errors,
            f"sockservice: cannot listen on {description}: Address already in use\n".encode(),
        )

    @inlineCallbacks
    def test_healthWhileDraining(self):
        """
        After SIGTERM, while a client has not closed, /healthz still answers
        (503, saying why); the process ends once the client has gone.
        """
        server = startTwistd(self, *LOCAL, *METRICS)
        port = yield server.listening
        base = yield metricsURL(server)
        # A plain socket: it stays open after the server's FIN until closed.
        client = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(client.close)
        yield server.logged(b"connection opened")
        server.transport.signalProcess("TERM")
        yield server.logged(b"Received SIGTERM")
        self.assertEqual(
            (yield fetch(base + "/healthz")), (503, b"stopping: 1 connection(s) draining\n")
        )
        client.close()
        self.assertEqual((yield server.ended), -15)


class BackplaneProcessTests(TestCase):
    """
    The backplane metrics of a real relay node on a real redis-server that
    is killed and started again.
    """

    timeout = 60

    @inlineCallbacks
    def test_downLostAndBack(self):
        redis = yield startRedis(self)
        server = startTwistd(
            self, *LOCAL, *METRICS, "--mode", "relay", "--backplane", redis.url,
            "--backplane-outbox", "0",
        )
        port = yield server.listening
        base = yield metricsURL(server)
        yield backplaneUp([server])
        start = yield scrape(base)
        self.assertEqual(
            [start[total(name)] for name in ("backplane_lost_lines", "backplane_reconnects")]
            + [start[("sockservice_backplane_up", ())]],
            [0, 0, 1],
        )
        yield redis.kill()
        yield server.logged(b"lost the Redis backplane")
        sender = yield connectPeer(self, port)
        sender.send(b"stays here\n")
        yield server.logged(b"not relayed to other nodes")
        down = yield scrape(base)
        self.assertEqual(moved(start, down), {
            ("sockservice_backplane_up", ()): -1,
            total("backplane_lost_lines"): 1,
            total("connections_accepted"): 1,
            ("sockservice_connections_open", (("mode", "relay"),)): 1,
            total("lines_received"): 1,
            total("bytes_received"): 11,
        })
        yield redis.start()
        yield backplaneUp([server], times=2)
        back = yield scrape(base)
        self.assertEqual(
            [back[("sockservice_backplane_up", ())], back[total("backplane_reconnects")]], [1, 2]
        )
