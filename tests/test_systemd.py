"""
The real C{twistd -n sockservice} under systemd's protocols: readiness and
stopping over NOTIFY_SOCKET, socket activation, and a graceful SIGTERM.
"""

import os
import re
import shutil
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from tests.realserver import Peer, connectPeer, freePort, startTwistd

ACK = b"Information Received\n"
GREETING = b"connect\n"
LOCAL = ("--interface", "127.0.0.1", "--port", "0")
FOLDED_RECEIVED = re.compile(rb"not logged one by one in the last [\d.]+s: .*\breceived (\d+)")


class NotifyReceiver(DatagramProtocol):
    """
    Stands in for systemd's notification socket: records each datagram.
    """

    def __init__(self):
        self.states = []
        self._waiting = []

    def datagramReceived(self, datagram, address):
        self.states.append(datagram)
        ready = [w for w in self._waiting if len(self.states) >= w[0]]
        for waiting in ready:
            self._waiting.remove(waiting)
            waiting[1].callback(self.states[: waiting[0]])

    def receive(self, count):
        """
        Fire with the first C{count} datagrams once they have come.
        """
        waiting = Deferred()
        if len(self.states) >= count:
            waiting.callback(self.states[:count])
        else:
            self._waiting.append((count, waiting))
        return waiting


def listenForNotifications(testCase):
    """
    Listen on an abstract-namespace datagram socket; return the receiver and
    the NOTIFY_SOCKET value naming it.
    """
    name = f"sockservice-test-{os.getpid()}-{id(testCase)}"
    receiver = NotifyReceiver()
    port = reactor.listenUNIXDatagram(b"\0" + name.encode(), receiver)
    testCase.addCleanup(port.stopListening)
    return receiver, "@" + name


class NotifyTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_readyThenStopping(self):
        """
        READY=1 comes once the server accepts connections, STOPPING=1 when
        SIGTERM stops it; nothing else.
        """
        receiver, notifySocket = listenForNotifications(self)
        server = startTwistd(self, *LOCAL, env={"NOTIFY_SOCKET": notifySocket})
        port = yield server.listening
        [ready] = yield receiver.receive(1)
        self.assertEqual(ready, b"READY=1\nSTATUS=listening on 127.0.0.1:%d" % port)
        peer = yield connectPeer(self, port)
        self.assertEqual((yield peer.receive(len(GREETING))), GREETING)
        self.assertEqual((yield server.stop()), -signal.SIGTERM)
        self.assertEqual(receiver.states[1:], [b"STOPPING=1"])


class SocketActivationTests(TestCase):
    timeout = 30
    if shutil.which("systemd-socket-activate") is None:
        skip = "systemd-socket-activate is missing (.ci/run installs systemd)"

    @inlineCallbacks
    def test_inheritedSocket(self):
        """
        Under systemd-socket-activate the server serves the socket it was
        handed, named sockservice, and tells NOTIFY_SOCKET when ready.
        """
        receiver, notifySocket = listenForNotifications(self)
        port = freePort()  # systemd-socket-activate takes no port 0
        server = startTwistd(
            self,
            "--listen",
            "systemd:domain=INET:name=sockservice",
            launcher=[
                shutil.which("systemd-socket-activate"),
                "--fdname=sockservice",
                # It passes on only PATH, HOME, USER, TERM and what -E gives.
                f"--setenv=NOTIFY_SOCKET={notifySocket}",
                "-l",
                f"127.0.0.1:{port}",
            ],
        )
        yield server.logged(b"Listening on 127.0.0.1:%d" % port, stream="errors")
        # The first connection is what makes systemd-socket-activate start twistd.
        peer = yield connectPeer(self, port)
        self.assertEqual((yield server.listening), port)
        self.assertEqual((yield peer.receive(len(GREETING))), GREETING)
        peer.send(b"SOME DATA\n")
        self.assertEqual((yield peer.receive(len(GREETING + ACK))), GREETING + ACK)
        self.assertEqual(
            (yield receiver.receive(1)), [b"READY=1\nSTATUS=listening on 127.0.0.1:%d" % port]
        )
        self.assertEqual((yield server.stop()), -signal.SIGTERM)
        self.assertEqual((yield peer.closed), GREETING + ACK)
        self.assertIsInstance(peer.reason.value, ConnectionDone)


class Pipeliner(Peer):
    """
    Keeps C{batch} lines in flight: sends the next batch when the last one is
    acknowledged, up to C{limit} lines.

    @ivar flowing: fires once C{batch} lines have been acknowledged.
    """

    def __init__(self, batch=50, limit=200000):
        Peer.__init__(self)
        self.batch = batch
        self.limit = limit
        self.sent = 0
        self.flowing = Deferred()

    def connectionMade(self):
        self._sendBatch()

    def dataReceived(self, data):
        Peer.dataReceived(self, data)
        acked = self.data.count(ACK)
        if acked >= self.batch and not self.flowing.called:
            self.flowing.callback(None)
        if acked == self.sent and self.sent < self.limit:
            self._sendBatch()

    def _sendBatch(self):
        self.sent += self.batch
        self.transport.write(b"line\n" * self.batch)


class GracefulStopTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_sigtermDuringTrafficLosesNoAcknowledgedLine(self):
        """
        SIGTERM while clients pipeline lines and one has stopped reading:
        every client gets every ack the server wrote, whole, then a clean
        close; the acks add up to the lines the server logged; the process
        ends on the SIGTERM without cutting anyone off.
        """
        receiver, notifySocket = listenForNotifications(self)
        server = startTwistd(self, *LOCAL, env={"NOTIFY_SOCKET": notifySocket})
        port = yield server.listening
        yield receiver.receive(1)
        stalled = yield connectPeer(self, port)
        stalled.transport.pauseProducing()
        stalled.send(b"x\n" * 100000)
        pipeliners = [Pipeliner() for _ in range(4)]
        for pipeliner in pipeliners:
            yield connectPeer(self, port, peer=pipeliner)
        yield gatherResults([pipeliner.flowing for pipeliner in pipeliners])
        ended = server.stop()
        yield receiver.receive(2)
        stalled.transport.resumeProducing()
        self.assertEqual((yield ended), -signal.SIGTERM)
        peers = [stalled, *pipeliners]
        yield gatherResults([peer.closed for peer in peers])
        acks = 0
        for peer in peers:
            self.assertIsInstance(peer.reason.value, ConnectionDone)
            count = peer.data.count(ACK)
            self.assertEqual(peer.data, GREETING + ACK * count)
            acks += count
        logged = server.output.count(b"] Buffer: ")
        folded = sum(int(n) for n in FOLDED_RECEIVED.findall(server.output))
        self.assertEqual(acks, logged + folded)
        self.assertGreater(stalled.data.count(ACK), 0)
        self.assertNotIn(b"aborting", server.output)

    @inlineCallbacks
    def test_sigtermFlushesRelayedLinesToAStalledReader(self):
        """
        Lines relayed to a client that had stopped reading (megabytes still
        waiting in the server when SIGTERM comes) all reach it before the
        clean close.
        """
        receiver, notifySocket = listenForNotifications(self)
        server = startTwistd(
            self, *LOCAL, "--mode", "relay", "--max-buffer", "20000000",
            env={"NOTIFY_SOCKET": notifySocket},
        )
        port = yield server.listening
        stalled = yield connectPeer(self, port)
        stalled.transport.pauseProducing()
        reading = yield connectPeer(self, port)
        sender = yield connectPeer(self, port)
        lines = b"".join(b"%06d " % n + b"x" * 4000 + b"\n" for n in range(4000))
        sender.send(lines)
        yield reading.receive(len(lines))
        ended = server.stop()
        yield receiver.receive(2)
        stalled.transport.resumeProducing()
        self.assertEqual((yield ended), -signal.SIGTERM)
        self.assertEqual((yield stalled.closed), lines)
        self.assertIsInstance(stalled.reason.value, ConnectionDone)
        self.assertEqual((yield reading.closed), lines)
