"""
A second SIGINT or SIGTERM while stopping: the operator will not wait for
the drain, so the connections still open are aborted and the process exits
at once. The first signal is the reactor's (it stops the reactor); calling
C{reactor.stop} again would only raise C{ReactorNotRunning}.
"""

import signal

from twisted.application import service
from twisted.logger import Logger


class SecondSignalService(service.Service):
    """
    From the moment it stops (add it last: it stops first), SIGINT and
    SIGTERM abort every connection of C{factory}, so the drain ends now.
    """

    log = Logger()

    def __init__(self, factory, reactor, signals=signal):
        self.factory = factory
        self._reactor = reactor
        self._signals = signals

    def stopService(self):
        service.Service.stopService(self)
        for number in (self._signals.SIGINT, self._signals.SIGTERM):
            self._signals.signal(number, self._again)

    def _again(self, number, frame):
        # In the signal handler: only hand over to the reactor.
        self._reactor.callFromThread(self.abort, self._signals.Signals(number).name)

    def abort(self, name):
        """
        Abort every connection still open, saying so in one line.
        """
        connections = list(self.factory.protocols)
        self.log.warn(
            "{signal} again while stopping: aborting {count} connection(s)",
            signal=name, count=len(connections),
        )
        for proto in connections:
            proto.transport.abortConnection()
