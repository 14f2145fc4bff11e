"""
Helpers for integration tests: the real C{twistd -n sockservice} process, the
real C{sockservice} client command, and loopback clients that record what
they receive.
"""

import hashlib
import os
import re
import shutil
import socket
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.trial.unittest import SkipTest

LISTENING = re.compile(rb"mode listening on 127\.0\.0\.1:(\d+)")

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def temporaryDirectory(testCase):
    """
    A new directory outside the checkout, removed when the test ends.
    """
    path = tempfile.mkdtemp(prefix="sockservice-test-")
    testCase.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


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
        self._waiting = []

    def outReceived(self, data):
        self.output += data
        self._received()

    def errReceived(self, data):
        self.errors += data
        self._received()

    def _received(self):
        ready = [w for w in self._waiting if getattr(self, w[3]).count(w[0]) >= w[1]]
        for waiting in ready:
            self._waiting.remove(waiting)
            waiting[2].callback(None)

    def logged(self, text, times=1, stream="output"):
        """
        Fire once C{text} (bytes) has been written C{times} times in all to
        C{stream}: C{"output"} or C{"errors"}.
        """
        waiting = Deferred()
        if getattr(self, stream).count(text) >= times:
            waiting.callback(None)
        else:
            self._waiting.append((text, times, waiting, stream))
        return waiting

    def processEnded(self, reason):
        for text, times, waiting, stream in self._waiting:
            waiting.errback(AssertionError(f"ended before logging {text!r} {times} times"))
        self._waiting = []
        status = reason.value.exitCode
        self.ended.callback(-reason.value.signal if status is None else status)

    def stop(self):
        """
        SIGTERM it if still running; fire when it has ended.
        """
        if not self.ended.called:
            self.transport.signalProcess("TERM")
        return self.ended


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


def spawnTwistd(path, *args, env=None, launcher=(), reactorName=None):
    """
    Start C{twistd -n sockservice ARGS} in the directory C{path}, with
    C{env} added to the environment; C{launcher} is a command (such as
    systemd-socket-activate) that runs it, C{reactorName} a C{twistd --reactor}.

    Away from the checkout, twistd cannot find the package by its working
    directory: it runs the one installed in the venv, which the test install
    (C{deploy/venv.sh DIR test}, editable) makes this working tree, as
    tests/test_workingtree.py proves.
    """
    process = TwistdProcess()
    twistd = [twistdCommand(), "-n", "--pidfile="]
    if reactorName:
        twistd += ["--reactor", reactorName]
    argv = [*launcher, *twistd, "sockservice", *args]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ, **(env or {})), path=path)
    return process


def startTwistd(testCase, *args, env=None, launcher=(), reactorName=None):
    """
    L{spawnTwistd} in a fresh directory; it is stopped when the test ends.
    """
    path = temporaryDirectory(testCase)
    process = spawnTwistd(path, *args, env=env, launcher=launcher, reactorName=reactorName)
    testCase.addCleanup(process.stop)
    return process


def runClient(testCase, *args, env=None):
    """
    Run the C{sockservice ARGS} command installed beside C{twistd}, with
    C{env} added to the environment; it is stopped if still running when the
    test ends. Its stdin stays open until C{process.transport.closeStdin()}.
    """
    process = RecordingProcess()
    argv = [os.path.join(os.path.dirname(twistdCommand()), "sockservice"), *args]
    reactor.spawnProcess(process, argv[0], argv, env=dict(os.environ, **(env or {})))
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


def freePort():
    """
    A TCP port on 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer(ProcessProtocol):
    """
    A throwaway C{redis-server} on 127.0.0.1: no persistence, its files in a
    temporary directory, killed when the test ends; it can be killed and
    started again on the same port. Given C{tls}, the paths of a certificate
    and its key, it speaks only TLS.

    @ivar url: the C{--backplane} URL that reaches it.
    """

    READY = b"Ready to accept connections"

    def __init__(self, testCase, *args, tls=None):
        executable = shutil.which("redis-server")
        if executable is None:
            raise SkipTest("redis-server is not installed (apt-get install redis-server)")
        self.port = freePort()
        self.url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{self.port}"
        self.directory = temporaryDirectory(testCase)
        if tls:
            certificate, key = tls
            listen = [
                "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", certificate,
                "--tls-key-file", key, "--tls-ca-cert-file", certificate,
                "--tls-auth-clients", "no",
            ]
        else:
            listen = ["--port", str(self.port)]
        self.argv = [
            executable, *listen, "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", ".", *args,
        ]
        self.ended = None
        testCase.addCleanup(self.kill)

    def start(self):
        """
        Start it; fire when it accepts connections.
        """
        self.output = b""
        self.ready = Deferred()
        self.ended = Deferred()
        reactor.spawnProcess(self, self.argv[0], self.argv, env={}, path=self.directory)
        return self.ready

    def outReceived(self, data):
        self.output += data
        if self.READY in self.output and not self.ready.called:
            self.ready.callback(self)

    def processEnded(self, reason):
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"redis-server ended: {self.output!r}"))
        self.ended.callback(None)

    def kill(self):
        """
        SIGKILL it if running, as a crash would; fire when it has ended.
        """
        if self.ended is None:
            return None
        if not self.ended.called:
            self.transport.signalProcess("KILL")
        return self.ended


@inlineCallbacks
def startRedis(testCase, *args, tls=None):
    """
    A running L{RedisServer} with C{args} (such as C{--requirepass PW}).
    """
    server = RedisServer(testCase, *args, tls=tls)
    yield server.start()
    return server


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


@inlineCallbacks
def redisCommand(testCase, server, *args):
    """
    Send one command (bytes arguments) to C{server}, a running
    L{RedisServer}, on a connection of its own; fire with the first line
    of its reply once it has come.
    """
    peer = yield connectPeer(testCase, server.port)
    peer.send(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    while b"\r\n" not in peer.data:
        yield peer.receive(len(peer.data) + 1)
    peer.transport.loseConnection()
    return peer.data.split(b"\r\n")[0]
