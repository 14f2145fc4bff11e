"""
The limits on string transports and a clock: idle timeout, connection caps,
greet's paused reading and relay's slow consumers.
"""

import socket

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.internet.interfaces import INegotiated
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.hubs.local import LocalHub
from sockservice.wire.limits import (
    ABORT_BATCH,
    ABORT_SPACING,
    QUEUED_ENTRY,
    QUEUED_FLOOR,
    Limits,
    limitKernelBuffer,
    raiseOpenFileLimit,
)
from sockservice.modes.relay import RelayFactory
from tests.support import CapturedLog, connect, disconnect, received

ACK = b"Information Received\n"


class IdleTimeoutTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.clock = Clock()
        self.limits = Limits(self.clock, idleTimeout=300)

    def test_silentClientClosed(self):
        proto, transport = connect(GreetFactory(self.captured.log, limits=self.limits))
        self.clock.advance(299)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertEqual(received(transport), b"connect\nERROR idle timeout\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.captured.messages()[-1], "idle for 300s: closing 127.0.0.1:5000"
        )

    def test_linesRestartTheTimer(self):
        proto, transport = connect(GreetFactory(self.captured.log, limits=self.limits))
        self.clock.advance(200)
        proto.dataReceived(b"still here\n")
        self.clock.advance(200)
        proto.dataReceived(b"a partial line does not count")
        self.clock.advance(99)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnecting)
        self.assertTrue(received(transport).endswith(ACK + b"ERROR idle timeout\n"))

    def test_relayTrafficDoesNotKeepAListenerAlive(self):
        factory = RelayFactory(self.captured.log, LocalHub(), limits=self.limits)
        talker, _ = connect(factory, 5001)
        listener, transport = connect(factory, 5002)
        for _ in range(3):
            self.clock.advance(100)
            talker.dataReceived(b"news\n")
        self.assertEqual(received(transport), b"news\n" * 2 + b"ERROR idle timeout\n")
        talker.dataReceived(b"after\n")
        self.assertEqual(received(transport), b"")

    def test_abortedIfTheErrorIsNotRead(self):
        """
        A closing peer that does not read is aborted after the grace period;
        one that goes in time leaves no call behind.
        """
        factory = GreetFactory(self.captured.log, limits=self.limits)
        proto, transport = connect(factory, 5001)
        self.clock.advance(300)
        self.assertFalse(transport.disconnected)
        self.clock.advance(self.limits.closeGrace)
        self.assertTrue(transport.disconnected)
        gone, _ = connect(factory, 5002)
        self.clock.advance(300)
        disconnect(gone)
        disconnect(proto)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_offWithZero(self):
        proto, transport = connect(GreetFactory(self.captured.log, limits=Limits(self.clock)))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10**6)
        self.assertFalse(transport.disconnecting)


class AbortingTransport(StringTransport):
    """
    Counts its aborts in the list it shares with the others.
    """

    def __init__(self, aborted):
        StringTransport.__init__(self)
        self.aborted = aborted

    def abortConnection(self):
        self.aborted.append(self)


class MassAbortTests(SynchronousTestCase):
    """
    Connections whose close grace runs out in the same instant are aborted
    a batch at a time, so the event loop serves others in between.
    """

    def test_abortsSpreadOverTurns(self):
        clock = Clock()
        limits = Limits(clock)
        aborted = []
        transports = [AbortingTransport(aborted) for _ in range(2 * ABORT_BATCH + 1)]
        aborts = [limits.close(transport) for transport in transports]
        self.assertTrue(all(transport.disconnecting for transport in transports))
        clock.advance(limits.closeGrace)
        self.assertEqual(aborted, transports[:ABORT_BATCH])
        clock.advance(ABORT_SPACING)
        self.assertEqual(aborted, transports[: 2 * ABORT_BATCH])
        clock.advance(ABORT_SPACING)
        self.assertEqual(aborted, transports)
        self.assertFalse(any(abort.active() for abort in aborts))
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelledWhileWaitingItsTurn(self):
        """
        A connection that goes while waiting for its batch is not aborted.
        """
        clock = Clock()
        limits = Limits(clock)
        aborted = []
        transports = [AbortingTransport(aborted) for _ in range(ABORT_BATCH + 2)]
        aborts = [limits.close(transport) for transport in transports]
        clock.advance(limits.closeGrace)
        self.assertTrue(aborts[-1].active())
        aborts[-1].cancel()
        self.assertFalse(aborts[-1].active())
        clock.advance(ABORT_SPACING)
        self.assertEqual(aborted, transports[:-1])
        self.assertEqual(clock.getDelayedCalls(), [])


class KernelBufferTests(SynchronousTestCase):
    """
    L{limitKernelBuffer} caps a socket connection's kernel send buffer and
    leaves other transports alone.
    """

    def test_socketConnection(self):
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        before = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        limitKernelBuffer(tcp.Connection(ours, None, MemoryReactor()), 8192)
        after = ours.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        self.assertLess(after, before)
        # Linux doubles what it is given, for its bookkeeping.
        self.assertIn(after, (8192, 16384))

    def test_otherTransport(self):
        transport = StringTransport()
        limitKernelBuffer(transport, 8192)
        self.assertEqual(transport.value(), b"")

    def test_fileDescriptorWithoutSocket(self):
        """
        A transport with a socket transport's buffering but no socket (a
        test's) is left alone: nothing is asked of it, so nothing raises.
        """
        limitKernelBuffer(FileDescriptor(reactor=MemoryReactor()), 8192)


class ConnectionLimitTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.clock = Clock()

    def factory(self, **limits):
        return GreetFactory(self.captured.log, limits=Limits(self.clock, **limits))

    def connectFrom(self, factory, host, port):
        address = IPv4Address("TCP", host, port)
        proto = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        return proto, transport

    def test_maxConnections(self):
        factory = self.factory(maxConnections=2)
        first, _ = connect(factory, 5001)
        connect(factory, 5002)
        over, transport = connect(factory, 5003)
        self.assertEqual(transport.value(), b"ERROR server full\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(
            self.captured.messages()[-1],
            "server full (2 connections open): refused 127.0.0.1:5003",
        )
        self.assertEqual(len(factory.protocols), 2)
        disconnect(first)
        again, transport = connect(factory, 5004)
        self.assertEqual(transport.value(), b"connect\n")

    def test_refusedAbortedAfterGrace(self):
        factory = self.factory(maxConnections=1)
        connect(factory, 5001)
        over, transport = connect(factory, 5002)
        self.clock.advance(5)
        self.assertTrue(transport.disconnected)
        disconnect(over)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_maxPerIP(self):
        factory = self.factory(maxPerIP=2)
        first, _ = self.connectFrom(factory, "10.0.0.1", 1)
        self.connectFrom(factory, "10.0.0.1", 2)
        over, transport = self.connectFrom(factory, "10.0.0.1", 3)
        self.assertEqual(transport.value(), b"ERROR server full\n")
        self.assertEqual(
            self.captured.messages()[-1],
            "server full (2 connections open from 10.0.0.1): refused 10.0.0.1:3",
        )
        other, transport = self.connectFrom(factory, "10.0.0.2", 4)
        self.assertEqual(transport.value(), b"connect\n")
        disconnect(first)
        self.assertEqual(factory.limits.perHost, {"10.0.0.1": 1, "10.0.0.2": 1})
        again, transport = self.connectFrom(factory, "10.0.0.1", 5)
        self.assertEqual(transport.value(), b"connect\n")

    def test_unixPeersHaveNoHost(self):
        limits = Limits(self.clock, maxPerIP=1)
        address = UNIXAddress(b"/run/sock")
        self.assertIsNone(limits.refusal(address, 5))
        limits.opened(address)
        self.assertEqual(limits.perHost, {})

    def test_refusedCollectConnectionsDoNotCount(self):
        factory = CollectFactory(
            self.captured.log, count=2, limits=Limits(self.clock, maxConnections=1)
        )
        first, _ = connect(factory, 5001)
        over, transport = connect(factory, 5002)
        self.assertEqual(transport.value(), b"ERROR server full\n")
        self.assertEqual(factory.remaining, 1)
        first.dataReceived(b"one\n")
        disconnect(first)
        second, transport = connect(factory, 5003)
        self.assertEqual(factory.remaining, 0)
        self.assertTrue(factory.allAccepted.called)


class GreetBackpressureTests(SynchronousTestCase):
    """
    greet registers as its transport's streaming producer: a full write
    buffer pauses reading from that client until it drains.
    """

    def setUp(self):
        self.captured = CapturedLog()
        self.proto, self.transport = connect(GreetFactory(self.captured.log))

    def test_pauseAndResume(self):
        self.assertIsNone(self.transport.producer)
        self.proto.dataReceived(b"first\n")
        self.assertIs(self.transport.producer, self.proto)
        self.assertTrue(self.transport.streaming)
        self.proto.pauseProducing()
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(
            self.captured.messages()[-1],
            "127.0.0.1:5000 is not reading its acks: reading from it paused",
        )
        self.proto.resumeProducing()
        self.assertEqual(self.transport.producerState, "producing")
        self.assertEqual(
            self.captured.messages()[-1],
            "127.0.0.1:5000 read its acks: reading from it resumed",
        )

    def test_refusalUnregisters(self):
        """
        A closing connection drops its producer, else the transport would
        resume it instead of closing once its buffer drains.
        """
        self.proto.dataReceived(b"first\n")
        self.proto.pauseProducing()
        self.proto.dataReceived(b"x" * 70000 + b"\n")
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)


class RelaySlowConsumerTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.clock = Clock()
        self.factory = RelayFactory(
            self.captured.log, LocalHub(), limits=Limits(self.clock, maxBuffer=10)
        )
        self.sender, _ = connect(self.factory, 5001)
        self.slow, self.slowTransport = connect(self.factory, 5002)
        self.fast, self.fastTransport = connect(self.factory, 5003)

    def test_droppedPastMaxBuffer(self):
        """
        While the transport's buffer is full, deliveries wait; past
        --max-buffer bytes waiting, the client gets C{ERROR too slow} and
        what waited is dropped.
        """
        self.slow.pauseProducing()
        self.sender.dataReceived(b"1234\n")
        self.slow.pauseProducing()
        self.sender.dataReceived(b"5678\n")
        self.slow.pauseProducing()
        self.assertEqual(received(self.slowTransport), b"")
        self.assertEqual(self.slow.queuedSize, 10)
        self.assertFalse(self.slowTransport.disconnecting)
        self.sender.dataReceived(b"1\n")
        self.sender.dataReceived(b"2\n")
        self.assertEqual(received(self.slowTransport), b"ERROR too slow\n")
        self.assertTrue(self.slowTransport.disconnecting)
        self.assertEqual(self.slow.queued, [])
        self.assertEqual(
            self.captured.messages()[-1],
            "127.0.0.1:5002 is too slow: over 10 bytes queued for it, dropping it",
        )
        self.assertEqual(received(self.fastTransport), b"1234\n5678\n1\n2\n")
        self.clock.advance(5)
        self.assertTrue(self.slowTransport.disconnected)

    def test_resumeWritesWhatWaited(self):
        self.slow.pauseProducing()
        self.sender.dataReceived(b"123456789\n")
        self.assertEqual(received(self.slowTransport), b"")
        self.slow.resumeProducing()
        self.assertEqual(received(self.slowTransport), b"123456789\n")
        self.slow.pauseProducing()
        self.sender.dataReceived(b"abcdefghi\n")
        self.slow.resumeProducing()
        self.sender.dataReceived(b"x\n")
        self.assertEqual(received(self.slowTransport), b"abcdefghi\nx\n")
        self.assertFalse(self.slowTransport.disconnecting)

    def test_resumeWritesUntilPausedAgain(self):
        """
        A resumed reader is written what waited one chunk at a time until
        its transport pauses it again; the rest stays queued, the very
        chunks the other readers got, and counted as before.
        """
        self.slow.pauseProducing()
        chunks = []
        for line in (b"aaaa\n", b"bb\n", b"c\n"):
            self.sender.dataReceived(line)
            chunks.append(self.slow.queued[-1])
        self.slowTransport.write = lambda data: (
            StringTransport.write(self.slowTransport, data), self.slow.pauseProducing())
        self.slow.resumeProducing()
        self.assertEqual(received(self.slowTransport), b"aaaa\n")
        self.assertEqual(len(self.slow.queued), 2)
        self.assertIs(self.slow.queued[0], chunks[1])
        self.assertIs(self.slow.queued[1], chunks[2])
        self.assertEqual(self.slow.queuedSize, 5)
        limits = self.factory.limits
        self.assertEqual((limits.queued, limits.slowReaders), (5 + 2 * QUEUED_ENTRY, 1))
        del self.slowTransport.write
        self.slow.resumeProducing()
        self.assertEqual(received(self.slowTransport), b"bb\nc\n")
        self.assertEqual((limits.queued, limits.slowReaders), (0, 0))

    def test_noLimit(self):
        factory = RelayFactory(self.captured.log, LocalHub())
        sender, _ = connect(factory, 5001)
        slow, transport = connect(factory, 5002)
        slow.pauseProducing()
        sender.dataReceived(b"x" * 100 + b"\n")
        self.assertEqual(slow.queuedSize, 101)
        slow.resumeProducing()
        self.assertEqual(received(transport), b"x" * 100 + b"\n")
        self.assertFalse(transport.disconnecting)

    def test_allSlowReadersTogetherBounded(self):
        """
        Past C{maxQueued} queued for every slow reader together (each line
        counted C{QUEUED_ENTRY} bytes more), a reader that would hold more
        than its share of it is dropped; one holding less than
        C{QUEUED_FLOOR} never is. What a dropped reader held is given back.
        """
        maxQueued = 4 * QUEUED_FLOOR
        factory = RelayFactory(
            self.captured.log, LocalHub(),
            limits=Limits(self.clock, maxBuffer=10 * QUEUED_FLOOR, maxQueued=maxQueued),
        )
        line = b"x" * (QUEUED_FLOOR - QUEUED_ENTRY - 1) + b"\n"
        sender, _ = connect(factory, 6001)
        readers = [connect(factory, 6002 + n) for n in range(5)]
        for reader, _ in readers:
            reader.pauseProducing()
        sender.dataReceived(line)
        self.assertEqual(factory.limits.queued, 5 * QUEUED_FLOOR)
        sender.dataReceived(line)
        self.assertEqual([reader.queuedCost for reader, _ in readers],
                         [0, 0, 2 * QUEUED_FLOOR, 0, 2 * QUEUED_FLOOR])
        self.assertEqual([received(transport) for _, transport in readers],
                         [b"ERROR too slow\n"] * 2 + [b""] + [b"ERROR too slow\n"] + [b""])
        self.assertEqual((factory.limits.queued, factory.limits.slowReaders), (maxQueued, 2))
        # Counted as too slow; what they had queued, and the line that did
        # not fit, as dropped.
        self.assertEqual((factory.counters.refused["too_slow"], factory.counters.droppedLines),
                         (3, 3 * 2))
        self.assertIn(
            f"127.0.0.1:6002 is too slow: {5 * QUEUED_FLOOR} bytes queued for slow readers "
            f"in all, {QUEUED_FLOOR} of them for it, dropping it",
            self.captured.messages(),
        )

    def test_queuedGivenBackWhenWritten(self):
        factory = RelayFactory(self.captured.log, LocalHub(), limits=Limits(self.clock))
        sender, _ = connect(factory, 6001)
        first, firstTransport = connect(factory, 6002)
        first.pauseProducing()
        sender.dataReceived(b"1234567\n")
        self.assertEqual(factory.limits.queued, 8 + QUEUED_ENTRY)
        first.resumeProducing()
        self.assertEqual(received(firstTransport), b"1234567\n")
        self.assertEqual(factory.limits.queued, 0)

    def test_readingContinues(self):
        """
        Unlike greet, a relay client whose output is full is still read.
        """
        self.slow.pauseProducing()
        self.slow.dataReceived(b"from slow\n")
        self.assertEqual(self.slowTransport.producerState, "producing")
        self.assertEqual(received(self.fastTransport), b"from slow\n")


class FakeResource:
    """
    The parts of the C{resource} module that L{raiseOpenFileLimit} uses.
    """

    RLIMIT_NOFILE = 7
    RLIM_INFINITY = -1

    def __init__(self, soft, hard):
        self.limits = (soft, hard)

    def getrlimit(self, which):
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which, limits):
        assert which == self.RLIMIT_NOFILE
        self.limits = limits


class OpenFileLimitTests(SynchronousTestCase):
    def test_raisedToFit(self):
        rlimits = FakeResource(1024, 524288)
        self.assertEqual(raiseOpenFileLimit(10000, rlimits), 10000)
        self.assertEqual(rlimits.limits, (10064, 524288))

    def test_cappedByHardLimit(self):
        rlimits = FakeResource(1024, 4096)
        self.assertEqual(raiseOpenFileLimit(10000, rlimits), 4096 - 64)
        self.assertEqual(rlimits.limits, (4096, 4096))

    def test_neverLowered(self):
        for limits in [(65536, 65536), (-1, -1), (1024, -1)]:
            rlimits = FakeResource(*limits)
            self.assertEqual(raiseOpenFileLimit(100, rlimits), 100)
            self.assertEqual(rlimits.limits, limits)


@implementer(INegotiated)
class TLSTransport(StringTransport):
    """
    A string transport that says it is TLS, as Twisted's TLS transport does.
    """

    negotiatedProtocol = None


class HandshakeLimitTests(SynchronousTestCase):
    """
    Past C{maxHandshakes} TLS handshakes unfinished at once, the oldest is
    aborted, so stalled handshakes neither hold memory without bound nor
    keep a new client out.
    """

    def test_oldestUnfinishedAborted(self):
        captured = CapturedLog()
        limits = Limits(maxHandshakes=2)
        factory = GreetFactory(captured.log, limits=limits)
        first, firstTransport = connect(factory, 5001, TLSTransport)
        second, secondTransport = connect(factory, 5002, TLSTransport)
        second.handshakeCompleted()
        third, thirdTransport = connect(factory, 5003, TLSTransport)
        self.assertFalse(firstTransport.disconnecting)
        fourth, fourthTransport = connect(factory, 5004, TLSTransport)
        self.assertTrue(firstTransport.disconnected)
        self.assertFalse(secondTransport.disconnecting or thirdTransport.disconnecting)
        self.assertEqual(list(limits.handshakes), [third, fourth])
        self.assertEqual(
            captured.messages()[-2],
            "over 2 TLS handshakes unfinished: aborted the oldest, 127.0.0.1:5001's",
        )
        disconnect(third)
        self.assertEqual(list(limits.handshakes), [fourth])

    def test_plainConnectionsNotCounted(self):
        limits = Limits(maxHandshakes=1)
        factory = GreetFactory(CapturedLog().log, limits=limits)
        connect(factory, 5001)
        connect(factory, 5002)
        self.assertEqual(list(limits.handshakes), [])
