"""
Helpers for integration tests: the real C{twistd -n sockservice} process, the
real C{sockservice} client command, and loopback clients that record what
they receive.
"""

import os
import re
import socket
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


class RecordingProcess(ProcessProtocol):
    """
    A child process whose output and errors are kept.

    @ivar ended: fires with its exit status, or minus the signal that ended
        it.
    """

    def __init__(self):
        self.output = b""
        self.errors = b""
        self.ended = Deferred()
        self._awaited = []

    def outReceived(self, data):
        self.output += data
        for awaited in [a for a in self._awaited if a[0] in self.output]:
            self._awaited.remove(awaited)
            awaited[1].callback(self.output)

    def errReceived(self, data):
        self.errors += data

    def printed(self, data):
        """
        Fire with all output so far once it holds C{data}.
        """
        awaited = Deferred()
        self._awaited.append((data, awaited))
        self.outReceived(b"")
        return awaited

    def stop(self):
        """
        SIGTERM it if still running; fire when it has ended.
        """
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        return self.ended

    def processEnded(self, reason):
        for data, awaited in self._awaited:
            awaited.errback(AssertionError(f"ended with {self.output!r}, wanted {data!r}"))
        self._awaited = []
        status = reason.value.exitCode
        self.ended.callback(-reason.value.signal if status is None else status)


class TwistdProcess(RecordingProcess):
    """
    A running C{twistd -n sockservice}.

    @ivar listening: fires with the first port it listens on.
    @ivar ended: twistd re-raises the SIGTERM it shut down on, so it fires
        with C{-SIGTERM} after L{stop}.
    """

    def __init__(self):
        RecordingProcess.__init__(self)
        self.listening = Deferred()

    def outReceived(self, data):
        RecordingProcess.outReceived(self, data)
        match = LISTENING.search(self.output)
        if match and not self.listening.called:
            self.listening.callback(int(match.group(1)))

    def processEnded(self, reason):
        if not self.listening.called:
            self.listening.errback(
                RuntimeError(f"twistd ended before listening: {self.errors!r}")
            )
            self.listening.addErrback(lambda _: None)
        RecordingProcess.processEnded(self, reason)


def startTwistd(testCase, *args):
    """
    Start C{twistd -n sockservice ARGS} in a fresh directory, so the plugin
    comes from the installed package; it is stopped when the test ends.
    """
    process = TwistdProcess()
    path = testCase.mktemp()
    os.makedirs(path)
    argv = [twistdCommand(), "-n", "--pidfile=", "sockservice", *args]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ), path=path)
    testCase.addCleanup(process.stop)
    return process


def runClient(testCase, *args):
    """
    Run the C{sockservice ARGS} command installed beside C{twistd}; it is
    stopped if still running when the test ends. Its stdin stays open until
    C{process.transport.closeStdin()}.
    """
    process = RecordingProcess()
    argv = [os.path.join(os.path.dirname(twistdCommand()), "sockservice"), *args]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ))
    testCase.addCleanup(process.stop)
    return process


def unansweredPort(testCase):
    """
    A loopback port that takes no more connections: its listen queue is full
    and nothing accepts, so the kernel drops new SYNs and connecting times
    out.
    """
    listener = socket.socket()
    testCase.addCleanup(listener.close)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    for _ in range(3):
        filler = socket.socket()
        testCase.addCleanup(filler.close)
        filler.setblocking(False)
        filler.connect_ex(address)
    return address[1]


def closedPort(testCase):
    """
    A loopback port that nothing listens on, so connecting is refused.
    """
    unused = socket.socket()
    unused.bind(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    return port


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


@inlineCallbacks
def connectPeer(testCase, port):
    """
    Connect a L{Peer} to 127.0.0.1:C{port}; it is aborted when the test ends.
    """
    peer = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Peer())
    testCase.addCleanup(lambda: peer.closed.called or peer.transport.abortConnection())
    return peer
