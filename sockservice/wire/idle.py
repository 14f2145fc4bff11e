"""
The idle timeout, kept with one timer for all of a factory's connections.

A timer per connection (Twisted's TimeoutMixin) costs a DelayedCall for each
one and two Python calls to restart it on every read. Every connection has
the same timeout, so the one longest without a line always expires first:
kept in order of their last line, only the oldest needs a timer.
"""

from collections import OrderedDict


class IdleWatch:
    """
    Calls C{timeoutConnection()} on each watched protocol C{timeout} seconds
    after its last L{touch} (or L{watch}), unless it is forgotten first.
    """

    def __init__(self, clock, timeout):
        self.timeout = timeout
        self._clock = clock
        self._seconds = clock.seconds
        #: protocol -> the time of its last line, oldest first.
        self._lastLine = OrderedDict()
        self._timer = None

    def watch(self, proto):
        self._lastLine[proto] = self._seconds()
        if self._timer is None:
            self._timer = self._clock.callLater(self.timeout, self._expire)

    def touch(self, proto):
        """
        Restart C{proto}'s timeout: called on every read with a line.
        """
        lastLine = self._lastLine
        if proto in lastLine:
            lastLine[proto] = self._seconds()
            lastLine.move_to_end(proto)

    def forget(self, proto):
        """
        Stop watching C{proto}. The timer stays until its deadline even when
        nobody is left to watch: cancelling it with the last connection and
        setting it again with the next would cost every short connection a
        C{callLater} and a C{cancel}; expiring with nobody watched, it ends.
        """
        self._lastLine.pop(proto, None)

    def _expire(self):
        self._timer = None
        now = self._seconds()
        lastLine = self._lastLine
        while lastLine:
            proto, last = next(iter(lastLine.items()))
            if last + self.timeout > now:
                self._timer = self._clock.callLater(last + self.timeout - now, self._expire)
                return
            del lastLine[proto]
            proto.timeoutConnection()
