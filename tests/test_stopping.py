"""
Stopping in order (listeners, then draining connections, then the hub), the
listen queue asked for, and the server out of descriptors: on a memory
reactor, then against two real nodes on a real redis-server.
"""

import errno
import os
import resource
import tempfile

from twisted.internet import tcp
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sockservice.logs.folding import FoldingLog, foldAcceptErrors
from sockservice.service.listening import ListeningService
from sockservice.tap import Options, makeService
from sockservice.wire.addresses import defaultBacklog, withBacklog
from tests.support import HalfClosingTransport, connect, disconnect
from tests.test_crossnode import backplaneUp, connectClient, receiveUntil, startNode
from tests.realserver import startRedis


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class StopOrderTests(SynchronousTestCase):
    """
    makeService's stop: the listeners close, the connections drain and
    hand the hub their last lines, and only then does the hub stop.
    """

    def test_hubStopsAfterTheLastLine(self):
        reactor = MemoryReactorClock()
        top = makeService(
            parse("--mode", "relay", "--backplane", "redis://127.0.0.1:1"),
            reactor=reactor, environ={},
        )
        top.privilegedStartService()
        top.startService()
        [listener] = [each for each in top if isinstance(each, ListeningService)]
        factory = listener.factory
        hub = factory.hub
        events = []
        stopListening = listener.stopService
        self.patch(listener, "stopService", lambda: events.append("listener") or stopListening())
        self.patch(hub, "publish", lambda sender, data: events.append(data))
        self.patch(hub, "stopService", lambda: events.append("hub"))
        proto, transport = connect(factory, 5001, HalfClosingTransport)
        proto.dataReceived(b"first\nlast words")
        self.assertEqual(events, [b"first\n"])

        stopped = top.stopService()
        self.assertEqual(events, [b"first\n", "listener"])
        self.assertTrue(transport.writeClosed)
        self.assertNoResult(stopped)
        disconnect(proto)
        self.assertEqual(events, [b"first\n", "listener", b"last words\n", "hub"])
        self.successResultOf(stopped)


class BacklogTests(SynchronousTestCase):
    def start(self, *argv):
        reactor = MemoryReactorClock()
        top = makeService(parse(*argv), reactor=reactor, environ={})
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        return reactor

    def test_defaultOnPort(self):
        reactor = self.start("--port", "0")
        [(port, factory, backlog, interface)] = reactor.tcpServers
        self.assertEqual(backlog, defaultBacklog())
        self.assertEqual(backlog, min(1024, int(open("/proc/sys/net/core/somaxconn").read())))

    def test_everyQueuedEndpoint(self):
        """
        --backlog goes to every TCP, SSL and UNIX endpoint that does not
        name its own.
        """
        path = os.path.join(tempfile.mkdtemp(), "s")
        reactor = self.start(
            "--backlog", "99", "--listen", "tcp:0", "--listen", "tcp:0:backlog=7",
            "--listen", f"unix:{path}",
        )
        self.assertEqual([server[2] for server in reactor.tcpServers], [99, 7])
        self.assertEqual([server[2] for server in reactor.unixServers], [99])

    def test_withBacklog(self):
        self.assertEqual(withBacklog("tcp:1", 5), "tcp:1:backlog=5")
        self.assertEqual(withBacklog("TCP6:1:interface=\\:\\:1", 5),
                         "TCP6:1:interface=\\:\\:1:backlog=5")
        self.assertEqual(withBacklog("ssl:1:backlog=3:privateKey=k", 5),
                         "ssl:1:backlog=3:privateKey=k")
        self.assertEqual(withBacklog("unix:/run/x", 5), "unix:/run/x:backlog=5")
        self.assertEqual(withBacklog("systemd:domain=INET:index=0", 5),
                         "systemd:domain=INET:index=0")

    def test_cappedBySomaxconn(self):
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "somaxconn")
        with open(path, "w") as f:
            f.write("128\n")
        self.assertEqual(defaultBacklog(path), 128)
        self.assertEqual(defaultBacklog(os.path.join(directory, "absent")), 1024)

    def test_badBacklog(self):
        for value in ("0", "x"):
            with self.assertRaises(SystemExit):
                Options().parseOptions(["--backlog", value])


class NoDescriptors:
    """
    A listening socket whose every accept fails as when the system is out
    of file descriptors.
    """

    def accept(self):
        raise OSError(errno.ENFILE, "Too many open files in system")


class OutOfDescriptorsTests(SynchronousTestCase):
    def test_acceptErrorsFolded(self):
        """
        Twisted logs one event per failed accept; they come out one a
        second, the rest counted.
        """
        events = []
        clock = Clock()
        log = FoldingLog(Logger(observer=events.append), clock, budget=1)
        port = tcp.Port(0, Factory(), reactor=MemoryReactorClock())
        port.socket = NoDescriptors()
        port.numberAccepts = 1
        self.assertIs(foldAcceptErrors(port, log), port)
        for _ in range(549):
            port.doRead()
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["Could not accept new connection (ENFILE)"],
        )
        clock.advance(1)
        self.assertEqual(
            formatEvent(events[-1]),
            "not logged one by one in the last 1s: accept errors 548",
        )

    def test_maxConnectionsLoweredToFit(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            raise self.skipTest("no hard limit on open files here")
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        reactor = MemoryReactorClock()
        top = makeService(parse("--max-connections", str(hard * 2)), reactor=reactor, environ={})
        top.privilegedStartService()
        self.addCleanup(top.stopService)
        factory = reactor.tcpServers[0][1]
        self.assertEqual(factory.limits.maxConnections, hard - 64)


class CrossNodeStopTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_lastLineOfADrainingConnectionReachesTheOtherNode(self):
        """
        SIGTERM to a node whose client has sent half a line: the node
        drains, the client closes, and its last line still crosses Redis
        to the other node's client before the node exits.
        """
        redis = yield startRedis(self)
        one, onePort = yield startNode(self, redis)
        two, twoPort = yield startNode(self, redis)
        yield backplaneUp([one, two])
        leaving = yield connectClient(self, onePort)
        staying = yield connectClient(self, twoPort)
        leaving.send(b"before\nlast words")
        yield receiveUntil(staying, b"before\n")
        one.transport.signalProcess("TERM")
        yield leaving.closed
        yield receiveUntil(staying, b"before\nlast words\n")
        status = yield one.ended
        self.assertEqual(staying.data, b"before\nlast words\n")
        self.assertIn(status, (0, -15))
