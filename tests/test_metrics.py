"""
Metrics and health checks on string transports and a clock: every counter
moves exactly as the traffic sent, /healthz follows the listeners and the
backplane, the HTTP site answers only its two paths; and the options.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sockservice import __version__
from sockservice.hubs.envelope import pack
from sockservice.hubs.local import LocalHub
from sockservice.hubs.redis import RedisHub
from sockservice.hubs.redisurl import RedisAddress
from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import ACKS_PER_WRITE, GreetFactory
from sockservice.modes.relay import RelayFactory
from sockservice.service.listening import ListeningService
from sockservice.tap import makeService
from sockservice.web.metrics import (
    BACKPLANE_GRACE,
    REFUSALS,
    MetricsService,
    metricsSite,
    serverRegistry,
    sharedPort,
)
from sockservice.wire.auth import TokenGate
from sockservice.wire.limits import Limits
from tests.support import CapturedLog, connect, disconnect, received
from tests import test_redishub, test_tap
from tests.test_redishub import NODE, OTHER, Endpoint, entries, reply, xadd
from tests.test_limits import TLSTransport
from tests.test_tap import parse

ACK = b"Information Received\n"


class Scraped:
    """
    A server's registry, read sample by sample.
    """

    def __init__(self, factory):
        self.registry = serverRegistry(factory, "test.Reactor")

    def __call__(self, name, **labels):
        return self.registry.get_sample_value(f"sockservice_{name}", labels)

    def refusals(self):
        return {reason: self("refusals_total", reason=reason) for reason in REFUSALS}


def only(reason):
    """
    The refusals after exactly one of C{reason}.
    """
    return {each: 1.0 if each == reason else 0.0 for each in REFUSALS}


class CounterTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.clock = Clock()

    def test_greetLinesAndBytes(self):
        """
        Three lines in (both line endings, and a partial line that is not
        yet one): three received, the greeting and three acks sent.
        """
        factory = GreetFactory(self.captured.log)
        scraped = Scraped(factory)
        self.assertEqual(scraped("connections_accepted_total"), 0)
        proto, transport = connect(factory)
        proto.dataReceived(b"a\nbb\r\nc\npart")
        self.assertEqual(received(transport), b"connect\n" + 3 * ACK)
        self.assertEqual(
            [scraped(name) for name in (
                "connections_accepted_total", "lines_received_total", "bytes_received_total",
                "lines_sent_total", "bytes_sent_total",
            )],
            [1, 3, 12, 4, 8 + 3 * len(ACK)],
        )
        self.assertEqual(scraped("connections_open", mode="greet"), 1)
        proto.dataReceived(b"ial\n")
        self.assertEqual(scraped("lines_received_total"), 4)
        disconnect(proto)
        self.assertEqual(scraped("connections_open", mode="greet"), 0)
        self.assertEqual(scraped.refusals(), only(None))

    def test_info(self):
        scraped = Scraped(GreetFactory(self.captured.log))
        self.assertEqual(
            scraped("info", version=__version__, mode="greet", reactor="test.Reactor"), 1
        )

    def test_processCollector(self):
        registry = Scraped(GreetFactory(self.captured.log)).registry
        self.assertGreater(registry.get_sample_value("process_resident_memory_bytes"), 0)
        self.assertGreater(registry.get_sample_value("process_open_fds"), 0)
        self.assertIsNotNone(registry.get_sample_value("process_cpu_seconds_total"))

    def test_serverFullAndPerIP(self):
        """
        Both caps answer C{ERROR server full} (counted as a line sent) and
        count under their own reason; the refused connection is not served.
        """
        for limits, reason in [(Limits(maxConnections=1), "server_full"),
                               (Limits(maxPerIP=1), "per_ip")]:
            factory = GreetFactory(self.captured.log, limits=limits)
            scraped = Scraped(factory)
            connect(factory, 5001)
            proto, transport = connect(factory, 5002)
            self.assertEqual(received(transport), b"ERROR server full\n")
            self.assertEqual(scraped.refusals(), only(reason))
            self.assertEqual(scraped("connections_accepted_total"), 1)
            self.assertEqual(scraped("lines_sent_total"), 2)

    def test_lineTooLong(self):
        """
        The lines before an over-long one in the same read are received;
        the long one is not.
        """
        factory = GreetFactory(self.captured.log, maxLine=4)
        scraped = Scraped(factory)
        proto, transport = connect(factory)
        proto.dataReceived(b"ok\ntoo long\n")
        self.assertEqual(received(transport), b"connect\n" + ACK + b"ERROR line too long\n")
        self.assertEqual(scraped.refusals(), only("line_too_long"))
        self.assertEqual(scraped("lines_received_total"), 1)
        self.assertEqual(scraped("lines_sent_total"), 3)

    def test_idleTimeout(self):
        factory = GreetFactory(self.captured.log, limits=Limits(self.clock, idleTimeout=5))
        scraped = Scraped(factory)
        connect(factory)
        self.clock.advance(5)
        self.assertEqual(scraped.refusals(), only("idle_timeout"))

    def test_unauthorized(self):
        factory = RelayFactory(self.captured.log, LocalHub(), gate=TokenGate(b"secret"))
        scraped = Scraped(factory)
        proto, transport = connect(factory)
        proto.dataReceived(b"guess\n")
        self.assertEqual(received(transport), b"ERROR unauthorized\n")
        self.assertEqual(scraped.refusals(), only("unauthorized"))

    def test_relayDeliveriesAndTooSlow(self):
        """
        Each line relayed to each other client is one delivery, counted
        when handed to its connection (written, or queued while it does not
        read); what a client dropped as too slow had queued is then
        dropped, not delivered, and nothing is relayed to it after.
        """
        factory = RelayFactory(self.captured.log, LocalHub(), limits=Limits(maxBuffer=10))
        scraped = Scraped(factory)
        sender, _ = connect(factory, 5001)
        reader, readerTransport = connect(factory, 5002)
        slow, slowTransport = connect(factory, 5003)
        sender.dataReceived(b"1\n2\n")
        self.assertEqual(scraped("relay_deliveries_total"), 4)
        slow.pauseProducing()
        sender.dataReceived(b"3\n4\n5\n")
        self.assertEqual(scraped("relay_deliveries_total"), 10)
        self.assertEqual(scraped.refusals(), only(None))
        sender.dataReceived(b"6789\n")
        self.assertEqual(received(slowTransport), b"1\n2\nERROR too slow\n")
        self.assertEqual(scraped.refusals(), only("too_slow"))
        self.assertEqual(scraped("relay_dropped_lines_total"), 4)
        self.assertEqual(scraped("relay_deliveries_total"), 8)
        sender.dataReceived(b"x\n")
        self.assertEqual(scraped("relay_dropped_lines_total"), 4)
        self.assertEqual(scraped("relay_deliveries_total"), 9)
        self.assertEqual(received(readerTransport), b"1\n2\n3\n4\n5\n6789\nx\n")
        self.assertEqual(scraped("lines_received_total"), 7)
        self.assertEqual(scraped("lines_sent_total"), 9 + 1)

    def test_serverBusy(self):
        """
        A connection that would take the shared input budget past its limit
        is refused as C{server_busy}; its bytes were received.
        """
        factory = GreetFactory(
            self.captured.log, greeting=b"", limits=Limits(inputAllowance=10, maxInputHeld=5)
        )
        scraped = Scraped(factory)
        proto, transport = connect(factory)
        proto.dataReceived(b"x" * 16)
        self.assertEqual(received(transport), b"ERROR server busy\n")
        self.assertEqual(scraped.refusals(), only("server_busy"))
        self.assertEqual(
            [scraped(name) for name in ("bytes_received_total", "lines_received_total",
                                        "lines_sent_total")],
            [16, 0, 1],
        )

    def test_tlsHandshakes(self):
        """
        The oldest of too many unfinished TLS handshakes, aborted, counts
        as C{tls_handshakes}.
        """
        factory = GreetFactory(self.captured.log, limits=Limits(maxHandshakes=1))
        scraped = Scraped(factory)
        connect(factory, 5001, TLSTransport)
        self.assertEqual(scraped.refusals(), only(None))
        connect(factory, 5002, TLSTransport)
        self.assertEqual(scraped.refusals(), only("tls_handshakes"))

    def test_linesAnsweredOverSeveralTurns(self):
        """
        A read of many lines that greet answers over several reactor turns
        counts each line once, when it is taken.
        """
        factory = GreetFactory(self.captured.log, greeting=b"", limits=Limits(self.clock))
        scraped = Scraped(factory)
        proto, transport = connect(factory)
        proto.dataReceived(b"\n" * 1000)
        perTurn = ACKS_PER_WRITE // len(ACK)
        self.assertEqual(scraped("lines_received_total"), perTurn)
        while self.clock.getDelayedCalls():
            self.clock.advance(0)
        self.assertEqual(received(transport), 1000 * ACK)
        self.assertEqual(
            [scraped(name) for name in ("lines_received_total", "lines_sent_total")],
            [1000, 1000],
        )

    def test_history(self):
        """
        The history a client gets on joining counts as delivered to it.
        """
        factory = RelayFactory(self.captured.log, LocalHub(history=5))
        scraped = Scraped(factory)
        sender, _ = connect(factory, 5001)
        sender.dataReceived(b"a\nb\n")
        self.assertEqual(scraped("relay_deliveries_total"), 0)
        joiner, transport = connect(factory, 5002)
        self.assertEqual(received(transport), b"a\nb\n")
        self.assertEqual(scraped("relay_deliveries_total"), 2)
        self.assertEqual(scraped("bytes_sent_total"), 4)

    def test_relayRemoteOrigin(self):
        """
        Lines from another node (no local sender) count for every member.
        """
        hub = LocalHub()
        factory = RelayFactory(self.captured.log, hub)
        scraped = Scraped(factory)
        for port in (5001, 5002, 5003):
            connect(factory, port)
        hub.publish(None, b"a\nb\n")
        self.assertEqual(scraped("relay_deliveries_total"), 6)
        self.assertEqual(scraped("bytes_sent_total"), 12)
        self.assertEqual(scraped("lines_received_total"), 0)

    def test_collect(self):
        factory = CollectFactory(self.captured.log, count=2)
        scraped = Scraped(factory)
        self.assertEqual(scraped("collect_remaining"), 2)
        proto, _ = connect(factory)
        proto.dataReceived(b"hello\nmore\n")
        disconnect(proto)
        self.assertEqual(scraped("collect_remaining"), 1)
        self.assertEqual(scraped("collect_messages_total"), 1)
        self.assertEqual(scraped("lines_received_total"), 2)
        self.assertIsNone(scraped("relay_deliveries_total"))
        self.assertIsNone(scraped("backplane_up"))


class BackplaneTests(SynchronousTestCase):
    """
    The hub's C{stats()}, read as metrics, on RedisHub's string-transport
    fakes.
    """

    setUp = test_redishub.RedisHubTests.setUp
    makeHub = test_redishub.RedisHubTests.makeHub
    start = test_redishub.RedisHubTests.start
    connectWriter = test_redishub.RedisHubTests.connectWriter
    connectReader = test_redishub.RedisHubTests.connectReader
    connectBoth = test_redishub.RedisHubTests.connectBoth

    def test_upDownReconnectsLost(self):
        """
        Up once both connections to Redis are ready, down from the first
        loss; the bytes waiting for Redis; the lines that could not cross
        nodes, both ways: not appended (the outbox full) and lost on the
        way here (a gap in another node's line numbers).
        """
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379), outboxLimit=100)
        factory = RelayFactory(CapturedLog().log, self.hub)
        scraped = Scraped(factory)
        names = ("backplane_up", "backplane_outbox_bytes", "backplane_lost_lines_total",
                 "backplane_resets_total", "backplane_reconnects_total")
        self.start()
        self.assertEqual([scraped(name) for name in names], [0, 0, 0, 0, 0])
        writer, wt, reader, rt = self.connectBoth()
        self.assertEqual([scraped(name) for name in names], [1, 0, 0, 0, 0])
        a, _ = connect(factory, 5001)
        a.dataReceived(b"unconfirmed\n")
        self.assertEqual([scraped(name) for name in names], [1, len(b"unconfirmed\n"), 0, 0, 0])
        self.clock.advance(0)
        waiting = len(pack(NODE, 1, 1, b"unconfirmed\n"))
        self.assertEqual([scraped(name) for name in names], [1, waiting, 0, 0, 0])
        writer.connectionLost(Failure(ConnectionLost()))
        a.dataReceived(b"x" * 100 + b"\n")
        self.clock.advance(0)
        reader.dataReceived(entries(
            (b"1-0", pack(OTHER, 1, 1, b"1\n")), (b"2-0", pack(OTHER, 1, 4, b"4\n")),
        ))
        self.assertEqual([scraped(name) for name in names], [0, waiting, 1 + 2, 0, 0])
        self.clock.advance(1)
        writer, wt = self.connectWriter()
        self.assertEqual(received(wt), xadd(pack(NODE, 1, 1, b"unconfirmed\n")))
        writer.dataReceived(reply(b"3-0"))
        self.assertEqual([scraped(name) for name in names], [1, 0, 3, 0, 1])


def listener(reactor, factory):
    """
    A started L{ListeningService} on C{reactor} (a memory reactor).
    """
    listening = ListeningService(TCP4ServerEndpoint(reactor, 0), "tcp:0", factory)
    listening.startService()
    return listening


class NeverListening:
    def listen(self, factory):
        return Deferred()


def get(site, path, accept=None):
    """
    The HTTP response C{site} writes for C{GET path}.
    """
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9999))
    transport = StringTransport()
    channel.makeConnection(transport)
    headers = b"Host: localhost\r\nConnection: close\r\n"
    if accept:
        headers += b"Accept: " + accept + b"\r\n"
    channel.dataReceived(b"GET " + path + b" HTTP/1.1\r\n" + headers + b"\r\n")
    return transport.value()


def response(status, body, contentType=b"text/plain; charset=utf-8"):
    return status, contentType, body


def parsed(raw):
    """
    C{(status line, content-type, body)} of an HTTP response.
    """
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    return lines[0], headers.get(b"Content-Type"), body


class SiteTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        self.factory = GreetFactory(CapturedLog().log)
        self.listeners = [listener(self.reactor, self.factory)]
        self.site = metricsSite(self.factory, self.listeners, self.reactor, "test.Reactor")

    def test_healthy(self):
        self.assertEqual(
            parsed(get(self.site, b"/healthz")), response(b"HTTP/1.1 200 OK", b"ok\n")
        )

    def test_stopping(self):
        proto, _ = connect(self.factory)
        self.listeners[0].stopService()
        self.assertEqual(
            parsed(get(self.site, b"/healthz")),
            response(b"HTTP/1.1 503 Service Unavailable", b"stopping: 1 connection(s) draining\n"),
        )

    def test_notListening(self):
        self.listeners.append(ListeningService(NeverListening(), "tcp:7", self.factory))
        self.listeners[-1].startService()
        self.assertEqual(
            parsed(get(self.site, b"/healthz")),
            response(b"HTTP/1.1 503 Service Unavailable", b"not listening on tcp:7\n"),
        )

    def test_metrics(self):
        connect(self.factory)
        status, contentType, body = parsed(get(self.site, b"/metrics"))
        self.assertEqual(
            (status, contentType),
            (b"HTTP/1.1 200 OK", b"text/plain; version=0.0.4; charset=utf-8"),
        )
        self.assertIn(b'\nsockservice_connections_open{mode="greet"} 1.0\n', body)

    def test_openMetrics(self):
        """
        A scraper that asks for OpenMetrics gets it.
        """
        status, contentType, body = parsed(
            get(self.site, b"/metrics", b"application/openmetrics-text; version=1.0.0")
        )
        self.assertTrue(contentType.startswith(b"application/openmetrics-text; version=1.0.0"))
        self.assertTrue(body.endswith(b"# EOF\n"))

    def test_notFound(self):
        for path in (b"/", b"/metricsx", b"/metrics/", b"/healthz/x", b"/favicon.ico"):
            self.assertEqual(
                parsed(get(self.site, path))[0], b"HTTP/1.1 404 Not Found", path
            )

    def test_bodyCutOff(self):
        """
        A request with a body is aborted at its first byte of it, not
        stored.
        """
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9999))
        transport = StringTransport()
        channel.makeConnection(transport)
        channel.dataReceived(
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\nx"
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_noAccessLog(self):
        events = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        get(self.site, b"/metrics")
        self.assertEqual(events, [])


class BackplaneHealthTests(SynchronousTestCase):
    def test_downLongerThanGrace(self):
        """
        A backplane down (since start, here) fails the check only once the
        grace period is over, and passes again as soon as it is back.
        """
        reactor = MemoryReactorClock()
        endpoint = Endpoint()
        hub = RedisHub(
            reactor, endpoint, RedisAddress("127.0.0.1", 6379), "chan", CapturedLog().log,
            node=NODE, retryPolicy=lambda attempt: attempt,
        )
        factory = RelayFactory(CapturedLog().log, hub)
        site = metricsSite(factory, [listener(reactor, factory)], reactor, "test.Reactor")
        hub.startService()
        self.addCleanup(hub.stopService)
        reactor.advance(BACKPLANE_GRACE)
        self.assertEqual(parsed(get(site, b"/healthz"))[2], b"ok\n")
        reactor.advance(1)
        self.assertEqual(
            parsed(get(site, b"/healthz")),
            response(b"HTTP/1.1 503 Service Unavailable", b"Redis backplane down for 31s\n"),
        )
        tests = test_redishub.RedisHubTests()
        tests.endpoint = endpoint
        tests.connectBoth()
        self.assertEqual(parsed(get(site, b"/healthz"))[2], b"ok\n")


class MetricsServiceTests(SynchronousTestCase):
    def test_servesUntilDrained(self):
        """
        makeService's stop: the line listener closes at once, the metrics
        listener only once the last connection has drained, so /healthz
        says why meanwhile; then the hub stops.
        """
        reactor = MemoryReactorClock()
        top = makeService(
            parse("--mode", "relay", "--backplane", "redis://127.0.0.1:1", "--port", "0",
                  "--metrics", "tcp:0:interface=127.0.0.1"),
            reactor=reactor, environ={},
        )
        top.privilegedStartService()
        top.startService()
        [metrics] = [each for each in top if isinstance(each, MetricsService)]
        [listener] = [each for each in top if type(each) is ListeningService]
        factory = listener.factory
        events = []
        stopMetrics = metrics.stopService
        self.patch(metrics, "stopService", lambda: events.append("metrics") or stopMetrics())
        self.patch(factory.hub, "stopService", lambda: events.append("hub"))
        proto, _ = connect(factory, 5001)

        stopped = top.stopService()
        self.assertIsNone(listener.port)
        self.assertIsNotNone(metrics.port)
        self.assertEqual(
            parsed(get(metrics.factory, b"/healthz")),
            response(b"HTTP/1.1 503 Service Unavailable",
                     b"stopping: 1 connection(s) draining\n"),
        )
        self.assertNoResult(stopped)
        disconnect(proto)
        self.assertEqual(events, ["metrics", "hub"])
        self.assertIsNone(metrics.port)
        self.successResultOf(stopped)


class SharedPortTests(SynchronousTestCase):
    def test_shared(self):
        for metrics, lines in [
            ("tcp:9101", ["tcp:9101:interface=127.0.0.1"]),
            ("tcp:port=9101:interface=127.0.0.1", ["tcp:12345", "tcp:9101:interface=127.0.0.1"]),
            ("tcp6:9101:interface=\\:\\:1", ["tcp6:9101"]),
            ("tcp:9101:interface=0.0.0.0", ["ssl:9101:privateKey=k.pem"]),
            ("unix:/run/s.sock", ["unix:address=/run/s.sock"]),
        ]:
            self.assertEqual(sharedPort(metrics, lines), lines[-1], metrics)

    def test_apart(self):
        for metrics, lines in [
            ("tcp:9101:interface=127.0.0.1", ["tcp:12345:interface=0.0.0.0"]),
            ("tcp:9101:interface=127.0.0.1", ["tcp:9101:interface=127.0.0.2"]),
            ("tcp:0:interface=127.0.0.1", ["tcp:0:interface=127.0.0.1"]),
            ("unix:/run/m.sock", ["unix:/run/s.sock", "tcp:9101"]),
        ]:
            self.assertIsNone(sharedPort(metrics, lines), metrics)


class MetricsOptionsTests(SynchronousTestCase):
    setUp = test_tap.OptionsTests.setUp
    assertUsageError = test_tap.OptionsTests.assertUsageError

    def test_offByDefault(self):
        self.assertIsNone(parse()["metrics"])

    def test_given(self):
        self.assertEqual(
            parse("--metrics", "tcp:9101:interface=127.0.0.1")["metrics"],
            "tcp:9101:interface=127.0.0.1",
        )

    def test_notAnEndpoint(self):
        self.assertUsageError(
            ["--metrics", "9101x"],
            "--metrics '9101x' is not a usable endpoint: "
            "Unknown endpoint type: '9101x'",
        )

    def test_sharesThePort(self):
        self.assertUsageError(
            ["--port", "9101", "--metrics", "tcp:9101:interface=127.0.0.1"],
            "--metrics 'tcp:9101:interface=127.0.0.1' would share a port with the "
            "line protocol's 'tcp:9101:interface=0.0.0.0'",
        )

    def test_badLogFormat(self):
        self.assertUsageError(
            ["--log-format", "xml"], "unknown --log-format 'xml': choose text or json"
        )
