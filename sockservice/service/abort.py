"""
A second SIGINT or SIGTERM while stopping: the operator will not wait for
the drain, so the connections still open are aborted and the process exits
at once. The first signal still goes to the reactor's own handler (it stops
the reactor); left to that handler, a second one would only call
C{reactor.stop} again and log C{ReactorNotRunning}.
"""

import signal

from twisted.application import service
from twisted.logger import Logger


class SecondSignalService(service.Service):
    """
    Once the reactor runs, takes SIGINT and SIGTERM over from the handlers
    it installed: the first one (unless the service is stopping already)
    is passed on to them; any later one aborts every connection of
    C{factory}, so the drain ends now.
    """

    log = Logger()

    def __init__(self, factory, reactor, signals=signal):
        self.factory = factory
        self._reactor = reactor
        self._signals = signals
        self._stopping = False
        self._reactorHandlers = {}

    def startService(self):
        service.Service.startService(self)
        self._reactor.callWhenRunning(self._takeOver)

    def _takeOver(self):
        for number in (self._signals.SIGINT, self._signals.SIGTERM):
            handler = self._signals.getsignal(number)
            # Only what the reactor handles: a signal inherited as ignored
            # (SIGINT in a shell's background job) stays ignored, or the
            # first one would stop nothing and the next abort to no end.
            if callable(handler):
                self._reactorHandlers[number] = handler
                self._signals.signal(number, self._received)

    def stopService(self):
        service.Service.stopService(self)
        self._stopping = True

    def _received(self, number, frame):
        # In the signal handler: only hand over to the reactor.
        if self._stopping:
            self._reactor.callFromThread(self.abort, self._signals.Signals(number).name)
            return
        self._stopping = True
        self._reactorHandlers[number](number, frame)

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
