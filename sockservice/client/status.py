"""
C{sockservice status}: a short human summary of a running server, read from
its Prometheus metrics (C{twistd sockservice --metrics ...}) with two scrapes
a few seconds apart.
"""

import sys
from email.utils import parsedate_to_datetime

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task
from twisted.internet.defer import inlineCallbacks
from twisted.web.client import Agent, readBody

from sockservice.client.options import CommandOptions

DEFAULT_URL = "http://127.0.0.1:9101/metrics"
CONNECT_TIMEOUT = 5


def _interval(value):
    """
    An C{--interval}: seconds above zero, at most a minute.
    """
    try:
        seconds = float(value)
    except ValueError:
        seconds = None
    if seconds is None or not 0 < seconds <= 60:
        raise ValueError(f"--interval must be seconds above 0, at most 60, not {value!r}")
    return seconds


_interval.coerceDoc = "(seconds)"


class StatusOptions(CommandOptions):
    synopsis = "[--metrics-url URL] [--interval SECONDS]"
    longdesc = (
        "Summarize a server run with --metrics: uptime, mode, open connections, "
        "lines per second, refusals by reason, backplane state. Exit 1 if its "
        "metrics cannot be read."
    )
    optParameters = [
        ["metrics-url", "u", DEFAULT_URL, "The server's /metrics URL."],
        ["interval", None, 2.0, "Seconds between the two scrapes lines/s is measured over.",
         _interval],
    ]


class StatusFailed(Exception):
    """
    Why the metrics could not be read, in a few words.
    """


class Scrape:
    """
    One scrape: every sample by name and labels, and the server's time.
    """

    def __init__(self, text, serverTime):
        self.time = serverTime
        self.samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value

    def value(self, name, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))))

    def labelled(self, name):
        """
        The samples called C{name}, by their labels (as a dict's items).
        """
        return {labels: value for (each, labels), value in self.samples.items() if each == name}


def _duration(seconds):
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return (f"{days}d " if days else "") + f"{hours}h {minutes:02d}m {seconds:02d}s"


def summarize(first, second, elapsed):
    """
    The status lines for two scrapes of one server, C{first} taken
    C{elapsed} seconds before C{second}.

    @raise StatusFailed: if they are not a sockservice server's metrics.
    """
    [info] = second.labelled("sockservice_info") or [None]
    if info is None:
        raise StatusFailed("no sockservice_info: not a sockservice server's metrics")
    info = dict(info)
    mode = info["mode"]

    def rate(name):
        return (second.value(name) - first.value(name)) / elapsed

    lines = [
        f"sockservice {info['version']}, {mode} mode, reactor {info['reactor']}",
        f"uptime: {_duration(second.time - second.value('process_start_time_seconds'))}",
        f"connections: {second.value('sockservice_connections_open', mode=mode):.0f} open, "
        f"{second.value('sockservice_connections_accepted_total'):.0f} served",
        f"lines/s: {rate('sockservice_lines_received_total'):.1f} in, "
        f"{rate('sockservice_lines_sent_total'):.1f} out (over {elapsed:.1f}s)",
    ]
    refusals = sorted(
        (dict(labels)["reason"], value)
        for labels, value in second.labelled("sockservice_refusals_total").items() if value
    )
    lines.append("refusals: " + (
        ", ".join(f"{reason} {value:.0f}" for reason, value in refusals) or "none"
    ))
    if mode == "collect":
        lines.append(
            f"collect: {second.value('sockservice_collect_messages_total'):.0f} messages, "
            f"{second.value('sockservice_collect_remaining'):.0f} connections to go"
        )
    up = second.value("sockservice_backplane_up")
    if up is not None:
        lines.append(
            f"backplane: {'up' if up else 'DOWN'}, "
            f"{second.value('sockservice_backplane_outbox_bytes'):.0f} bytes waiting, "
            f"{second.value('sockservice_backplane_lost_lines_total'):.0f} lines "
            f"could not cross nodes, "
            f"{second.value('sockservice_backplane_reconnects_total'):.0f} reconnects"
        )
    elif mode == "relay":
        lines.append("backplane: none (this node's clients only)")
    return "".join(line + "\n" for line in lines)


@inlineCallbacks
def scrape(agent, url, clock):
    """
    Fetch and parse C{url}; the server's time is its C{Date} header (so
    uptime does not depend on this machine's clock), else C{clock}'s.
    """
    try:
        response = yield agent.request(b"GET", url.encode("utf-8"))
        body = yield readBody(response)
    except Exception as e:
        raise StatusFailed(f"cannot fetch: {e}") from None
    if response.code != 200:
        raise StatusFailed(f"HTTP {response.code} {response.phrase.decode('latin-1')}")
    date = response.headers.getRawHeaders(b"date")
    serverTime = parsedate_to_datetime(date[0].decode()).timestamp() if date else clock.seconds()
    try:
        return Scrape(body.decode("utf-8"), serverTime)
    except ValueError as e:
        raise StatusFailed(f"not Prometheus metrics: {e}") from None


@inlineCallbacks
def run(reactor, options, output=sys.stdout.write):
    """
    Scrape twice, C{--interval} apart, and print the summary; a failure is
    one line on stderr naming the URL, and exit status 1.
    """
    url = options["metrics-url"]
    agent = Agent(reactor, connectTimeout=CONNECT_TIMEOUT)
    try:
        first = yield scrape(agent, url, reactor)
        started = reactor.seconds()
        yield task.deferLater(reactor, options["interval"], lambda: None)
        second = yield scrape(agent, url, reactor)
        output(summarize(first, second, reactor.seconds() - started))
    except StatusFailed as e:
        sys.stderr.write(f"sockservice status: {url}: {e}\n")
        raise SystemExit(1)
