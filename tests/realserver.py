"""
Helpers for integration tests: the real C{twistd -n sockservice} process and
loopback clients that record what they receive.
"""

import hashlib
import os
import re
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import ProcessProtocol, Protocol

LISTENING = re.compile(rb"mode listening on 127\.0\.0\.1:(\d+)")


def twistdCommand():
    """
    The C{twistd} script installed beside the running interpreter.
    """
    return os.path.join(os.path.dirname(sys.executable), "twistd")


class TwistdProcess(ProcessProtocol):
    """
    A running C{twistd -n sockservice}.

    @ivar listening: fires with the first port it listens on.
    @ivar ended: fires with its exit status, or minus the signal that ended
        it (twistd re-raises the SIGTERM it shut down on).
    """

    def __init__(self):
        self.output = b""
        self.errors = b""
        self.listening = Deferred()
        self.ended = Deferred()
        self._awaited = []

    def logged(self, text):
        """
        Fire once the output holds C{text}.
        """
        waiting = Deferred()
        self._awaited.append((text, waiting))
        self.outReceived(b"")
        return waiting

    def outReceived(self, data):
        self.output += data
        for awaited in [a for a in self._awaited if a[0] in self.output]:
            self._awaited.remove(awaited)
            awaited[1].callback(self.output)
        match = LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def errReceived(self, data):
        self.errors += data

    def processEnded(self, reason):
        if not self.listening.called:
            self.listening.errback(
                RuntimeError(f"twistd ended before listening: {self.errors!r}")
            )
            self.listening.addErrback(lambda _: None)
        status = reason.value.exitCode
        self.ended.callback(-reason.value.signal if status is None else status)

    def stop(self):
        """
        SIGTERM it if still running; fire when it has ended.
        """
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        return self.ended


def spawnTwistd(path, *args):
    """
    Start C{twistd -n sockservice ARGS} in the directory C{path}, away from
    the checkout, so the plugin comes from the installed package.
    """
    process = TwistdProcess()
    argv = [twistdCommand(), "-n", "--pidfile=", "sockservice", *args]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=path)
    return process


def startTwistd(testCase, *args):
    """
    L{spawnTwistd} in a fresh directory; it is stopped when the test ends.
    """
    path = testCase.mktemp()
    os.makedirs(path)
    process = spawnTwistd(path, *args)
    testCase.addCleanup(process.stop)
    return process


class Peer(Protocol):
    """
    A loopback client that records every byte it receives.

    @ivar closed: fires with everything received once the connection ends.
    """

    def __init__(self):
        self.data = b""
        self.closed = Deferred()
        self._waiting = []

    def dataReceived(self, data):
        self.data += data
        ready = [w for w in self._waiting if len(self.data) >= w[0]]
        for waiting in ready:
            self._waiting.remove(waiting)
            waiting[1].callback(self.data)

    def connectionLost(self, reason):
        for size, waiting in self._waiting:
            waiting.errback(AssertionError(f"closed with {self.data!r}, wanted {size} bytes"))
        self._waiting = []
        self.closed.callback(self.data)

    def receive(self, size):
        """
        Fire with all data received so far once it is at least C{size} bytes.
        """
        waiting = Deferred()
        if len(self.data) >= size:
            waiting.callback(self.data)
        else:
            self._waiting.append((size, waiting))
        return waiting

    def send(self, data):
        self.transport.write(data)


class DigestPeer(Protocol):
    """
    A loopback client that keeps only the size and SHA-256 of what it
    receives, for transfers too big to hold.
    """

    def __init__(self):
        self.count = 0
        self.digest = hashlib.sha256()
        self.closed = Deferred()
        self._waiting = None

    def dataReceived(self, data):
        self.count += len(data)
        self.digest.update(data)
        if self._waiting and self.count >= self._waiting[0]:
            waiting, self._waiting = self._waiting[1], None
            waiting.callback(self.count)

    def connectionLost(self, reason):
        if self._waiting:
            self._waiting[1].errback(
                AssertionError(f"closed after {self.count} of {self._waiting[0]} bytes")
            )
        self.closed.callback(None)

    def receive(self, size):
        """
        Fire once C{size} bytes in all have come.
        """
        waiting = Deferred()
        if self.count >= size:
            waiting.callback(self.count)
        else:
            self._waiting = (size, waiting)
        return waiting


def connectProtocolTo(port, peer, tls=None):
    """
    Connect C{peer} to 127.0.0.1:C{port}, over TLS with the client options
    C{tls} if given.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
    return connectProtocol(endpoint, peer)


@inlineCallbacks
def connectPeer(testCase, port, tls=None, peer=None):
    """
    Connect a L{Peer} (or C{peer}) with L{connectProtocolTo}; it is aborted
    when the test ends.
    """
    peer = yield connectProtocolTo(port, Peer() if peer is None else peer, tls)
    testCase.addCleanup(lambda: peer.closed.called or peer.transport.abortConnection())
    return peer
