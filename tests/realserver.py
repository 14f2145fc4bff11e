"""
Helpers for integration tests: the real C{twistd -n sockservice} process and
loopback clients that record what they receive.
"""

import os
import re
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
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
        self._errorWaiters = []

    def outReceived(self, data):
        self.output += data
        match = LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def errReceived(self, data):
        self.errors += data
        for waiter in [w for w in self._errorWaiters if w[0] in self.errors]:
            self._errorWaiters.remove(waiter)
            waiter[1].callback(self.errors)

    def whenErrorsContain(self, text):
        """
        Fire with stderr so far once it contains C{text}.
        """
        waiting = Deferred()
        if text in self.errors:
            waiting.callback(self.errors)
        else:
            self._errorWaiters.append((text, waiting))
        return waiting

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


def startTwistd(testCase, *args, environ=None, launcher=()):
    """
    Start C{twistd -n sockservice ARGS} in a fresh directory, so the plugin
    comes from the installed package; it is stopped when the test ends.
    C{environ} adds to its environment; C{launcher} is a command (such as
    systemd-socket-activate) that runs it.
    """
    process = TwistdProcess()
    path = testCase.mktemp()
    os.makedirs(path)
    argv = [*launcher, twistdCommand(), "-n", "--pidfile=", "sockservice", *args]
    env = dict(os.environ, **(environ or {}))
    reactor.spawnProcess(process, argv[0], argv, env=env, path=path)
    testCase.addCleanup(process.stop)
    return process


class Peer(Protocol):
    """
    A loopback client that records every byte it receives.

    @ivar closed: fires with everything received once the connection ends.
    @ivar reason: why it ended, once it has.
    """

    reason = None

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
        self.reason = reason
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


@inlineCallbacks
def connectPeer(testCase, port, peer=None):
    """
    Connect C{peer} (a new L{Peer} by default) to 127.0.0.1:C{port}; it is
    aborted when the test ends.
    """
    peer = yield connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", port), peer or Peer()
    )
    testCase.addCleanup(lambda: peer.closed.called or peer.transport.abortConnection())
    return peer
