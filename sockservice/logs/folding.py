"""
A log that never becomes the bottleneck: events are logged one by one up to a
budget per interval, the rest are counted and folded into one summary event.
"""


class FoldingLog:
    """
    Rate-limited front of a L{twisted.logger.Logger}.

    @ivar budget: events logged individually per C{interval} seconds.
    """

    def __init__(self, logger, clock, budget=100, interval=1.0):
        self.logger = logger
        self._clock = clock
        self.budget = budget
        self.interval = interval
        self._left = budget
        #: kind -> [events, bytes] folded in this window.
        self._folded = {}
        self._window = None

    def take(self, kind, wanted, nbytes=0):
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
        self.fold(kind, wanted, nbytes)
        return 0

    def fold(self, kind, count, nbytes=0):
        """
        Count C{count} events of C{kind} (and their C{nbytes}) for the summary.
        """
        folded = self._folded.get(kind)
        if folded is None:
            self._folded[kind] = [count, nbytes]
        else:
            folded[0] += count
            folded[1] += nbytes

    def info(self, kind, format, **fields):
        """
        Log one event if the budget allows, else fold it under C{kind}.
        """
        self.emit(self.logger.info, kind, format, fields)

    def warn(self, kind, format, **fields):
        """
        Like L{info}, at warning level.
        """
        self.emit(self.logger.warn, kind, format, fields)

    def emit(self, method, kind, format, fields):
        if self.take(kind, 1):
            method(format, **fields)

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
        folded = sorted(self._folded.items())
        self._folded = {}
        parts = [
            f"{kind} {count}" + (f" ({nbytes} bytes)" if nbytes else "")
            for kind, (count, nbytes) in folded
        ]
        self.logger.info(
            "not logged one by one in the last {interval:g}s: {summary}",
            interval=self.interval,
            summary=", ".join(parts),
            folded={kind: count for kind, (count, _) in folded},
            foldedBytes={kind: nbytes for kind, (_, nbytes) in folded},
        )
