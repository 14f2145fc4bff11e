"""
Prometheus metrics and a health check over HTTP, served by twisted.web on
the server's own reactor: C{GET /metrics} (the text exposition of
prometheus_client's registry), C{GET /healthz}, 404 for any other path.

Nothing here runs per line: the server keeps plain integer counters
(L{sockservice.wire.counters.Counters}, and the relay hub's C{stats()}) and
L{ServerCollector} reads them, and the open connections, only when scraped.
"""

import re

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
)
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from sockservice import __version__
from sockservice.service.listening import ListeningService

#: Why connections are refused or closed, each reported even while zero so
#: that rate() and alerts see every series from the first scrape.
REFUSALS = ("server_full", "per_ip", "unauthorized", "line_too_long", "idle_timeout", "too_slow",
            "server_busy", "tls_handshakes")

#: Seconds the Redis backplane may be down before /healthz fails: a node
#: still relays locally, and a restart of Redis should not pull every node
#: out of the load balancer.
BACKPLANE_GRACE = 30.0


def _counter(name, documentation, value):
    return CounterMetricFamily(f"sockservice_{name}", documentation, value=value)


def _gauge(name, documentation, value):
    return GaugeMetricFamily(f"sockservice_{name}", documentation, value=value)


class ServerCollector:
    """
    A prometheus_client collector of one server: what its factory counted,
    its open connections and, in relay mode, its hub's C{stats()}: the
    lines it handed out, and the backplane's state.
    """

    def __init__(self, factory, reactorName):
        self.factory = factory
        self.reactorName = reactorName

    def collect(self):
        factory = self.factory
        counters = factory.counters
        hub = hubStats(factory)
        linesSent, bytesSent = counters.linesSent, counters.bytesSent
        if hub is not None:
            # The hub counts lines as it hands them out, once per publish;
            # the ones a client never got were counted again as dropped.
            linesSent += hub["delivered"] - counters.droppedLines
            bytesSent += hub["deliveredBytes"] - counters.droppedBytes
        yield InfoMetricFamily(
            "sockservice", "The server's version, mode and reactor.",
            value={"version": __version__, "mode": factory.mode, "reactor": self.reactorName},
        )
        connections = GaugeMetricFamily(
            "sockservice_connections_open", "Client connections open now.", labels=["mode"]
        )
        connections.add_metric([factory.mode], len(factory.protocols))
        yield connections
        yield _counter("connections_accepted", "Client connections served.", counters.accepted)
        refusals = CounterMetricFamily(
            "sockservice_refusals",
            "Connections refused, or closed with an ERROR line, by reason.",
            labels=["reason"],
        )
        for reason in sorted(set(REFUSALS) | set(counters.refused)):
            refusals.add_metric([reason], counters.refused[reason])
        yield refusals
        yield _counter("lines_received", "Complete lines received.", counters.linesReceived)
        yield _counter("bytes_received", "Bytes received.", counters.bytesReceived)
        yield _counter("lines_sent", "Lines sent: greetings, acks, relayed lines, errors.",
                       linesSent)
        yield _counter("bytes_sent", "Bytes sent.", bytesSent)
        if hub is not None:
            yield _counter("relay_deliveries", "Lines relayed to a client.",
                           hub["delivered"] - counters.droppedLines)
            yield _counter("relay_dropped_lines",
                           "Lines a client never got because it read too slowly.",
                           counters.droppedLines)
        if factory.mode == "collect":
            yield _counter("collect_messages", "Messages collected.", counters.collected)
            yield _gauge("collect_remaining", "Connections still to serve before exiting.",
                         factory.remaining)
        if hub is not None and "up" in hub:
            yield _gauge("backplane_up", "1 while connected to the Redis backplane.",
                         int(hub["up"]))
            yield _gauge("backplane_outbox_bytes", "Bytes waiting to be appended to Redis.",
                         hub["outboxBytes"])
            yield _counter("backplane_lost_lines",
                           "Lines that could not cross nodes: not appended to Redis from "
                           "this node, or lost on the way here.", hub["lost"])
            yield _counter("backplane_resets",
                           "Times Redis lost stream entries this node had not read.",
                           hub["resets"])
            yield _counter("backplane_reconnects", "Connections to Redis made again after a loss.",
                           hub["reconnects"])


def hubStats(factory):
    """
    The relay hub's C{stats()} (L{sockservice.hubs.local.LocalHub.stats},
    and with a backplane L{sockservice.hubs.redis.RedisHub.stats}), or
    L{None} in the other modes.
    """
    hub = getattr(factory, "hub", None)
    return None if hub is None else hub.stats()


def serverRegistry(factory, reactorName):
    """
    A registry of the server's metrics and the process's (memory, CPU, open
    files): its own, not prometheus_client's global one, so that two servers
    in one process (tests) do not collide.
    """
    registry = CollectorRegistry()
    registry.register(ServerCollector(factory, reactorName))
    ProcessCollector(registry=registry)
    return registry


class Page(Resource):
    """
    A resource with no children: any path below it is 404.
    """

    def getChild(self, path, request):
        return notFound()


class MetricsPage(Page):
    """
    C{/metrics}: the registry in the format the scraper asks for (Prometheus
    text, or OpenMetrics).
    """

    def __init__(self, registry):
        Page.__init__(self)
        self.registry = registry

    def render_GET(self, request):
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        encode, contentType = choose_encoder(accept)
        request.setHeader(b"content-type", contentType.encode("ascii"))
        return encode(self.registry)


class HealthPage(Page):
    """
    C{/healthz} for a load balancer: C{200 ok} while every listener listens
    and the process is not stopping, else 503 with the reason on one line.
    """

    def __init__(self, listeners, factory, clock, grace=BACKPLANE_GRACE):
        Page.__init__(self)
        self.listeners = listeners
        self.factory = factory
        self.clock = clock
        self.grace = grace

    def problem(self):
        """
        Why the server is not healthy, or L{None}.
        """
        for listener in self.listeners:
            if not listener.running:
                return f"stopping: {len(self.factory.protocols)} connection(s) draining"
            if listener.port is None:
                return f"not listening on {listener.description}"
        stats = hubStats(self.factory)
        if stats is not None and "up" in stats and not stats["up"]:
            down = self.clock.seconds() - stats["downSince"]
            if down > self.grace:
                return f"Redis backplane down for {down:.0f}s"
        return None

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        problem = self.problem()
        if problem is None:
            return b"ok\n"
        request.setResponseCode(503)
        return f"{problem}\n".encode("utf-8")


class BodilessRequest(Request):
    """
    A request that may not carry a body: none of these pages takes one, and
    twisted.web would spool it to a temporary file without limit. The
    connection is cut at its first byte. (Request line and headers are
    bounded by twisted.web: 16 KiB in all.)
    """

    def handleContentChunk(self, data):
        self.channel.transport.abortConnection()


class QuietSite(Site):
    """
    A L{Site} that keeps no access log: Prometheus and load balancers ask
    every few seconds, which would bury the server's own events.
    """

    noisy = False
    requestFactory = BodilessRequest

    def log(self, request):
        pass


def metricsSite(factory, listeners, clock, reactorName):
    """
    The HTTP site: C{/metrics}, C{/healthz}, and 404 for everything else.
    """
    root = Page()
    root.putChild(b"metrics", MetricsPage(serverRegistry(factory, reactorName)))
    root.putChild(b"healthz", HealthPage(listeners, factory, clock))
    return QuietSite(root, reactor=clock)


class MetricsService(ListeningService):
    """
    Serves L{metricsSite} on C{endpoint}, apart from the line protocol (its
    connections count against no client limit). Added to the tap's
    L{sockservice.service.draining.StopInOrder} before the draining
    service, it stops only once the line protocol's connections have
    drained, so /healthz answers 503 meanwhile instead of refusing
    connections.
    """

    def __init__(self, endpoint, description, factory, listeners, clock, reactorName):
        ListeningService.__init__(
            self, endpoint, description, metricsSite(factory, listeners, clock, reactorName)
        )

    def announce(self, address):
        self.log.info("metrics on http://{address}/metrics and /healthz", address=address)


_TCP_KINDS = {"tcp", "tcp6", "ssl"}
_ANY_INTERFACE = {"", "0.0.0.0", "::"}


def _listensOn(description):
    """
    Where a server endpoint string listens, as C{(family, port or path,
    interface)}, for telling whether two of them would share a port.
    """
    kind, *fields = re.split(r"(?<!\\):", description)
    positional = [field for field in fields if "=" not in field]
    named = dict(field.split("=", 1) for field in fields if "=" in field)
    if kind in _TCP_KINDS:
        port = named.get("port", positional[0] if positional else "")
        return "tcp", port, named.get("interface", positional[1] if len(positional) > 1 else "")
    if kind == "unix":
        return "unix", named.get("address", positional[0] if positional else ""), ""
    return kind, ":".join(sorted(fields)), ""


def sharedPort(metrics, lines):
    """
    The first of the line protocol's endpoint strings C{lines} that the
    metrics endpoint string C{metrics} would share a port (or socket path)
    with, or L{None}. Port 0 (any free one) never clashes.
    """
    family, where, interface = _listensOn(metrics)
    for description in lines:
        otherFamily, otherWhere, otherInterface = _listensOn(description)
        if (family, where) != (otherFamily, otherWhere) or where in ("", "0"):
            continue
        if interface == otherInterface or {interface, otherInterface} & _ANY_INTERFACE:
            return description
    return None
