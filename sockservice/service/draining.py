"""
Graceful stop: once the listeners are closed, every connection stops taking
lines and closes after its pending output is sent. A peer that does not read
or close within the deadline is cut off, so the process exits well inside
systemd's TimeoutStopSec.
"""

from twisted.application import service


class DrainingService(service.Service):
    """
    Drains C{factory}'s connections when stopped. Add it before the
    listeners, so it stops after them.

    @ivar timeout: seconds the connections get to flush and close.
    """

    def __init__(self, factory, clock, timeout):
        self.factory = factory
        self._clock = clock
        self.timeout = timeout

    def stopService(self):
        service.Service.stopService(self)
        for proto in list(self.factory.protocols):
            proto.drain()
        allClosed = self.factory.whenAllClosed()
        if not allClosed.called:
            deadline = self._clock.callLater(self.timeout, self._cutOff)
            allClosed.addCallback(lambda _: deadline.active() and deadline.cancel())
        return allClosed.addCallback(lambda _: self.factory.log.stop())

    def _cutOff(self):
        stuck = list(self.factory.protocols)
        self.factory.log.logger.warn(
            "{count} connection(s) not closed {timeout:g}s after stopping: aborting",
            count=len(stuck),
            timeout=self.timeout,
        )
        for proto in stuck:
            proto.transport.abortConnection()
