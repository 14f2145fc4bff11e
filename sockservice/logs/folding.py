"""
A log that never becomes the bottleneck: structured C{twisted.logger} events
with L{Logger}'s signature, plus a C{kind}. Events of a kind are logged one
by one up to a budget per interval; the rest are counted and folded into one
summary event. Events without a kind (collect's messages, warnings that
matter) are never folded.
"""

from collections import defaultdict

from twisted.logger import Logger, LogLevel


class FoldingLog:
    """
    Rate-limited front of a L{Logger}: C{log.info(format, kind=..., **fields)}.

    Where working out the fields costs more than the event (a peer's address
    on a busy server), claim first with L{take} and log the claimed events
    without a kind.

    @ivar budget: events logged individually per C{interval} seconds.
    """

    def __init__(self, logger, clock, budget=100, interval=1.0):
        self._logger = logger
        self._clock = clock
        self.budget = budget
        self.interval = interval
        self._left = budget
        #: kind -> events, and kind -> their bytes, folded in this window.
        self._folded = defaultdict(int)
        self._foldedBytes = defaultdict(int)
        self._window = None

    def take(self, kind, wanted=1, nbytes=0):
        """
        Claim up to C{wanted} events of C{kind} to log one by one; return how
        many. When none may be, all C{wanted} (and their C{nbytes}) are
        folded here, so a busy server pays this one call for them; after a
        partial claim the caller folds the rest with L{fold}.
        """
        if self._window is None:
            self._left = self.budget
            self._window = self._clock.callLater(self.interval, self._flush)
        left = self._left
        if left:
            granted = wanted if wanted < left else left
            self._left = left - granted
            return granted
        # What fold does, without the call: this is every busy read's cost.
        self._folded[kind] += wanted
        self._foldedBytes[kind] += nbytes
        return 0

    def fold(self, kind, count, nbytes=0):
        """
        Count C{count} events of C{kind} (and their C{nbytes}) for the summary.
        """
        self._folded[kind] += count
        self._foldedBytes[kind] += nbytes

    def emit(self, level, format=None, kind=None, **fields):
        """
        Log one event at C{level}; with a C{kind}, only if the budget allows,
        else it is folded under C{kind}.
        """
        if kind is None or self.take(kind):
            self._logger.emit(level, format, **fields)

    def info(self, format=None, kind=None, **fields):
        self.emit(LogLevel.info, format, kind, **fields)

    def warn(self, format=None, kind=None, **fields):
        self.emit(LogLevel.warn, format, kind, **fields)

    def error(self, format=None, kind=None, **fields):
        self.emit(LogLevel.error, format, kind, **fields)

    def observer(self, kind):
        """
        An observer for a logger that is not ours (Twisted's own): passes
        its events on, folded under C{kind} past the budget.
        """

        def observe(event):
            if self.take(kind):
                self._logger.observer(event)

        return observe

    def stop(self):
        """
        Cancel the window timer and log what is still folded.
        """
        if self._window is not None and self._window.active():
            self._window.cancel()
        self._flush()

    def _flush(self):
        self._window = None
        if not self._folded:
            return
        folded, self._folded = dict(sorted(self._folded.items())), defaultdict(int)
        foldedBytes, self._foldedBytes = self._foldedBytes, defaultdict(int)
        parts = [
            f"{kind} {count}" + (f" ({foldedBytes[kind]} bytes)" if foldedBytes[kind] else "")
            for kind, count in folded.items()
        ]
        self._logger.info(
            "not logged one by one in the last {interval:g}s: {summary}",
            interval=self.interval,
            summary=", ".join(parts),
            folded=folded,
            foldedBytes={kind: foldedBytes[kind] for kind in folded},
        )


def foldAcceptErrors(port, log):
    """
    Send C{port}'s accept errors (C{EMFILE} and the like, one event per
    refused connection, hundreds a second when out of descriptors) through
    C{log}, which folds them. Twisted logs them to the port's C{_logger}, a
    private class attribute replaced here on the one instance.
    """
    if hasattr(port, "_logger"):
        port._logger = Logger(
            namespace=port._logger.namespace, observer=log.observer("accept errors")
        )
    return port
