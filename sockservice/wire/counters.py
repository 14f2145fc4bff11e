"""
What a server has done, as plain integers its factory owns: the protocols
add to them where it happens, and the metrics collector reads them only when
scraped, so the hot path pays an integer addition and never a lock (as a
prometheus_client C{Counter.inc()} per line would).
"""

from collections import Counter


class Counters:
    """
    Totals since the process started.

    @ivar accepted: connections served (refused ones are not).
    @ivar refused: connections refused or closed for bad behaviour, by
        reason: C{server_full}, C{per_ip}, C{unauthorized}, C{line_too_long},
        C{idle_timeout}, C{too_slow}.
    @ivar linesReceived: complete lines received.
    @ivar bytesReceived: bytes received, partial lines included.
    @ivar linesSent: lines written: greetings, acks, relayed lines, errors.
    @ivar bytesSent: their bytes.
    @ivar delivered: relay: lines written to another client.
    @ivar dropped: relay: lines a slow reader never got.
    @ivar collected: collect: messages taken.
    """

    def __init__(self):
        self.accepted = 0
        self.refused = Counter()
        self.linesReceived = 0
        self.bytesReceived = 0
        self.linesSent = 0
        self.bytesSent = 0
        self.delivered = 0
        self.dropped = 0
        self.collected = 0

    def sent(self, data):
        """
        Count C{data} (whole lines) as written.
        """
        self.linesSent += data.count(b"\n")
        self.bytesSent += len(data)

    def relayed(self, data):
        """
        Count C{data} (whole lines) as relayed to one client, and written.
        """
        lines = data.count(b"\n")
        self.delivered += lines
        self.linesSent += lines
        self.bytesSent += len(data)
