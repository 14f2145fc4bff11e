"""
Listening on server endpoints: Twisted's L{StreamServerEndpointService}
that names its endpoint in logs and reports a failure to listen as
L{CannotListen}, for the tap to turn into its one line and exit status.
"""

from twisted.application.internet import StreamServerEndpointService
from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from sockservice.wire.addresses import describeAddress


class CannotListen(Exception):
    """
    An endpoint could not listen; the message says which and why
    (C{cannot listen on tcp:12345: Address already in use}).
    """

    def __init__(self, description, failure):
        error = getattr(failure.value, "socketError", None)
        reason = getattr(error, "strerror", None) or failure.getErrorMessage()
        super().__init__(f"cannot listen on {description}: {reason}")


class ListeningService(StreamServerEndpointService):
    """
    Listens with C{factory} on C{endpoint}; C{description} names it in
    errors and logs.

    Unlike its base class, a listen that fails at once raises
    L{CannotListen} from L{privilegedStartService} (as twistd's own
    strports services do), and starting twice listens once, so the tap can
    listen before twistd daemonizes and twistd's own start then finds it
    done. A listen that fails later is logged.

    @ivar port: the listening port, once listening.
    """

    log = Logger()
    port = None

    def __init__(self, endpoint, description, factory):
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self.description = description
        self._waiting = []

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        if self._waitingForPort is not None:
            return
        failures = []
        self._waitingForPort = self.endpoint.listen(self.factory)
        self._waitingForPort.addCallbacks(self._listening, failures.append)
        if failures:
            raise CannotListen(self.description, failures[0])
        # An endpoint that listens later must not fail unseen.
        self._waitingForPort.addCallback(
            lambda port: failures and self.log.critical(
                "{problem}", problem=str(CannotListen(self.description, failures[0]))
            ) or port
        )

    def _listening(self, port):
        self.port = port
        self.announce(describeAddress(port.getHost()))
        waiting, self._waiting = self._waiting, []
        for listening in waiting:
            listening.callback(port)
        return port

    def announce(self, address):
        """
        Log that it listens on C{address}.
        """
        self.log.info("{mode} mode listening on {address}", mode=self.factory.mode, address=address)

    def whenListening(self):
        """
        A L{Deferred} that fires with the port once it is listening, so
        readiness is announced only when every listener is bound.
        """
        if self.port is not None:
            return succeed(self.port)
        listening = Deferred()
        self._waiting.append(listening)
        return listening

    def stopService(self):
        self.port = None
        if self._waitingForPort is None:
            return service.Service.stopService(self)
        return StreamServerEndpointService.stopService(self)
