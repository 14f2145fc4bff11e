"""
A log that never becomes the bottleneck: events are logged one by one up to a
budget per interval, the rest are counted and folded into one summary event.
"""

from collections import Counter


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
        self._folded = Counter()
        self._foldedBytes = Counter()
        self._window = None

    def take(self, wanted):
        """
        Claim up to C{wanted} individual log events; return how many may be
        logged. The caller folds the rest with L{fold}.
        """
        if self._window is None:
            self._left = self.budget
            self._window = self._clock.callLater(self.interval, self._flush)
        granted = min(wanted, self._left)
        self._left -= granted
        return granted

    def fold(self, kind, count, nbytes=0):
        """
        Count C{count} events of C{kind} (and their C{nbytes}) for the summary.
        """
        self._folded[kind] += count
        self._foldedBytes[kind] += nbytes

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
        if self.take(1):
            method(format, **fields)
        else:
            self.fold(kind, 1)

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
        parts = []
        for kind, count in sorted(self._folded.items()):
            nbytes = self._foldedBytes[kind]
            parts.append(f"{kind} {count}" + (f" ({nbytes} bytes)" if nbytes else ""))
        self.logger.info(
            "not logged one by one in the last {interval:g}s: {summary}",
            interval=self.interval,
            summary=", ".join(parts),
            folded=dict(self._folded),
            foldedBytes=dict(self._foldedBytes),
        )
        self._folded.clear()
        self._foldedBytes.clear()
