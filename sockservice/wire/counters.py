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
        reason: C{server_full}, C{per_ip} (both C{ERROR server full}),
        C{tls_handshakes} (aborted as the oldest of too many unfinished TLS
        handshakes), and the words of the C{ERROR} line otherwise
        (L{refusedWith}): C{unauthorized}, C{line_too_long},
        C{idle_timeout}, C{too_slow}, C{server_busy}.
    @ivar linesReceived: complete lines received.
    @ivar bytesReceived: bytes received, partial lines included.
    @ivar linesSent: lines the protocols write themselves: greetings, acks,
        errors (relayed lines are counted by the relay hub, once per chunk).
    @ivar bytesSent: their bytes.
    @ivar droppedLines: relay: lines the hub handed to a client that it
        never got (queued when it was closed as too slow, and the chunk
        that did not fit; a closed client is handed nothing more); the hub
        counts what it hands out (L{LocalHub.stats}).
    @ivar droppedBytes: their bytes.
    @ivar collected: collect: messages taken.
    """

    def __init__(self):
        self.accepted = 0
        self.refused = Counter()
        self.linesReceived = 0
        self.bytesReceived = 0
        self.linesSent = 0
        self.bytesSent = 0
        self.droppedLines = 0
        self.droppedBytes = 0
        self.collected = 0

    def sent(self, data, lines=None):
        """
        Count C{data} (whole lines, C{lines} of them if the caller knows)
        as written.
        """
        self.linesSent += data.count(b"\n") if lines is None else lines
        self.bytesSent += len(data)

    def refusedWith(self, error):
        """
        Count C{error} (C{ERROR too slow\n}) as sent, and as one refusal
        of its reason (C{too_slow}).
        """
        self.sent(error)
        self.refused[error[len(b"ERROR "):-1].decode("ascii").replace(" ", "_")] += 1

    def dropped(self, lines, nbytes):
        """
        Count C{lines} (C{nbytes} bytes) as relayed to a client but never
        sent; the caller counts them, from what it counted already.
        """
        self.droppedLines += lines
        self.droppedBytes += nbytes
