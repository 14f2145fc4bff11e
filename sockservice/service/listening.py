"""
Listening on server endpoints as a service whose failure to listen ends
startup with one clear line instead of a traceback.
"""

import sys

from twisted.application import service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from sockservice.wire.addresses import describeAddress


def _reason(failure):
    """
    The socket error behind a failure to listen (C{Address already in use}),
    else the failure's message.
    """
    error = getattr(failure.value, "socketError", None)
    return getattr(error, "strerror", None) or failure.getErrorMessage()


class ListeningService(service.Service):
    """
    Listens with C{factory} on C{endpoint}; C{description} names it in
    errors and logs.
    """

    log = Logger()
    port = None

    def __init__(self, endpoint, description, factory):
        self.endpoint = endpoint
        self.description = description
        self.factory = factory
        self._started = False
        self._waiting = []

    def privilegedStartService(self):
        service.Service.privilegedStartService(self)
        self._listen()

    def startService(self):
        service.Service.startService(self)
        if not self._started:
            self._listen()

    def _listen(self):
        self._started = True
        failures = []
        listening = self.endpoint.listen(self.factory)
        listening.addCallbacks(self._listening, failures.append)
        if failures:
            sys.__stderr__.write(
                f"sockservice: cannot listen on {self.description}: "
                f"{_reason(failures[0])}\n"
            )
            raise SystemExit(1)
        # An endpoint that listens later must not fail unseen.
        listening.addCallback(
            lambda _: failures and self.log.critical(
                "cannot listen on {description}: {reason}",
                description=self.description,
                reason=_reason(failures[0]),
            )
        )

    def _listening(self, port):
        self.port = port
        self.announce(describeAddress(port.getHost()))
        waiting, self._waiting = self._waiting, []
        for listening in waiting:
            listening.callback(port)

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
        service.Service.stopService(self)
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
