"""
Graceful stop: once the listeners are closed, every connection stops taking
lines and closes after its pending output is sent. A peer that does not read
or close within the deadline is cut off, so the process exits well inside
systemd's TimeoutStopSec.
"""

from twisted.application import service
from twisted.internet.defer import succeed
from twisted.logger import Logger

log = Logger()


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
        self.factory.log.warn(
            "{count} connection(s) not closed {timeout:g}s after stopping: aborting",
            count=len(stuck),
            timeout=self.timeout,
        )
        for proto in stuck:
            proto.transport.abortConnection()


class StopInOrder(service.MultiService):
    """
    A L{service.MultiService} that stops its children one after the other,
    the last added first, each once the one before it has stopped: the
    listeners close, then the connections drain and hand their last lines to
    the hub, then the hub stops. (L{service.MultiService} stops them all in
    the same tick.)
    """

    def stopService(self):
        service.Service.stopService(self)
        stopped = succeed(None)
        for child in reversed(list(self)):
            stopped.addCallback(lambda _, child=child: child.stopService())
            stopped.addErrback(self._failed, child)
        return stopped

    def _failed(self, failure, child):
        log.failure("{child} did not stop cleanly", failure, child=child)
