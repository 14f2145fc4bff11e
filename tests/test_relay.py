"""
relay mode on string transports: every line to every other client, byte for
byte, in order, never echoed.
"""

import socket

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sockservice.hubs.local import LocalHub
from sockservice.modes.relay import RelayFactory
from sockservice.wire.limits import Limits
from tests.support import CapturedLog, connect, disconnect, peerAddress, received


class Member:
    def __init__(self):
        self.got = []

    def deliver(self, data):
        self.got.append(data)


class LocalHubTests(SynchronousTestCase):
    def test_publishToOthersInJoinOrder(self):
        hub = LocalHub()
        a, b, c = Member(), Member(), Member()
        order = []
        for member in (a, b, c):
            hub.join(member)
            member.deliver = lambda data, m=member: order.append((m, data))
        hub.publish(b, b"x\n")
        self.assertEqual(order, [(a, b"x\n"), (c, b"x\n")])

    def test_leave(self):
        hub = LocalHub()
        a, b = Member(), Member()
        hub.join(a)
        hub.join(b)
        hub.leave(b)
        hub.leave(b)
        hub.publish(a, b"x\n")
        hub.publish(None, b"y\n")
        self.assertEqual((a.got, b.got), ([b"y\n"], []))

    def test_leaveWhilePublishing(self):
        """
        Members that leave as a chunk is handed to them (readers dropped as
        too slow) leave once it has gone to every other member.
        """
        hub = LocalHub()
        a, b, c = Member(), Member(), Member()
        for member in (a, b, c):
            hub.join(member)
        for member in (a, b):
            member.deliver = lambda data, m=member: (m.got.append(data), hub.leave(m))
        hub.publish(None, b"x\n")
        self.assertEqual(list(hub.members), [c])
        hub.publish(None, b"y\n")
        self.assertEqual((a.got, b.got, c.got), ([b"x\n"], [b"x\n"], [b"x\n", b"y\n"]))

    def test_leaveDuringNestedPublish(self):
        """
        A publish from within a delivery (a member closing with a last
        line) leaves the outer one's leavers to it: no member is taken out
        while the outer publish still goes through them (so one that left
        during the inner publish still gets the outer one's chunk).
        """
        hub = LocalHub()
        a, b, c = Member(), Member(), Member()
        for member in (a, b, c):
            hub.join(member)

        def deliverA(data):
            a.got.append(data)
            if data == b"x\n":
                hub.publish(a, b"last\n")
                hub.leave(a)

        a.deliver = deliverA
        b.deliver = lambda data: (b.got.append(data), hub.leave(b))
        hub.publish(None, b"x\n")
        self.assertEqual(list(hub.members), [c])
        self.assertEqual((a.got, b.got, c.got),
                         ([b"x\n"], [b"last\n", b"x\n"], [b"last\n", b"x\n"]))

    def test_leaveAfterFailedPublish(self):
        """
        A member's failure does not leave the hub deferring every later
        leave.
        """
        hub = LocalHub()
        a, b = Member(), Member()
        hub.join(a)
        hub.join(b)
        a.deliver = lambda data: 1 / 0
        self.assertRaises(ZeroDivisionError, hub.publish, None, b"x\n")
        hub.leave(b)
        self.assertEqual(list(hub.members), [a])


class RelayProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.hub = LocalHub()
        self.factory = RelayFactory(self.captured.log, self.hub)
        self.a, self.ta = connect(self.factory, 5001)
        self.b, self.tb = connect(self.factory, 5002)
        self.c, self.tc = connect(self.factory, 5003)

    def assertReceived(self, a, b, c):
        self.assertEqual(
            (received(self.ta), received(self.tb), received(self.tc)), (a, b, c)
        )

    def test_nothingOnConnect(self):
        self.assertReceived(b"", b"", b"")

    def test_lineToEveryOtherClient(self):
        self.a.dataReceived(b"hello\n")
        self.assertReceived(b"", b"hello\n", b"hello\n")
        self.b.dataReceived(b"hi A\r\n")
        self.assertReceived(b"hi A\r\n", b"", b"hi A\r\n")

    def test_bytesUntouched(self):
        """
        GBK, CRLF and every byte value but LF pass through exactly.
        """
        gbk = "你好，世界".encode("gbk") + b"\r\n"
        binary = bytes(range(256)).replace(b"\n", b"") + b"\n"
        self.a.dataReceived(gbk + binary)
        self.assertReceived(b"", gbk + binary, gbk + binary)

    def test_orderKept(self):
        for chunk in (b"1\n2", b"\n3\n", b"4", b"\n"):
            self.a.dataReceived(chunk)
        self.c.dataReceived(b"c\n")
        self.assertReceived(b"c\n", b"1\n2\n3\n4\nc\n", b"1\n2\n3\n4\n")

    def test_partialLineWaits(self):
        self.a.dataReceived(b"par")
        self.assertReceived(b"", b"", b"")
        self.a.dataReceived(b"tial\r\n")
        self.assertReceived(b"", b"partial\r\n", b"partial\r\n")

    def test_lastPartialLineDeliveredAtDisconnect(self):
        self.a.dataReceived(b"one\nbye")
        disconnect(self.a)
        self.assertReceived(b"", b"one\nbye\n", b"one\nbye\n")
        self.b.dataReceived(b"gone?\n")
        self.assertReceived(b"", b"", b"gone?\n")

    def test_cutLineDroppedUnlessCleanClose(self):
        """
        Only a clean close (FIN) ends a last line: after a reset or an abort
        the line was cut short, and nobody gets it.
        """
        for reason in (ConnectionLost, ConnectionAborted):
            self.a.dataReceived(b"whole\nTRUNCATED-mid-li")
            disconnect(self.a, reason)
            self.assertReceived(b"", b"whole\n", b"whole\n")
            self.a, _ = connect(self.factory, 5001)

    def test_idleTimeoutDropsThePartialLine(self):
        clock = Clock()
        factory = RelayFactory(
            self.captured.log, LocalHub(), limits=Limits(clock, idleTimeout=10)
        )
        talker, talkerTransport = connect(factory, 6001)
        listener, listenerTransport = connect(factory, 6002)
        clock.advance(5)
        listener.dataReceived(b"ok\n")
        talker.dataReceived(b"half a li")
        clock.advance(5)
        self.assertEqual(received(talkerTransport), b"ok\nERROR idle timeout\n")
        disconnect(talker)
        self.assertEqual(received(listenerTransport), b"")

    def test_resetMidStreamDisturbsNobody(self):
        self.a.dataReceived(b"x\n")
        disconnect(self.b, ConnectionLost)
        self.a.dataReceived(b"y\n")
        self.c.dataReceived(b"z\n")
        self.assertReceived(b"z\n", b"x\n", b"x\ny\n")

    def test_longLineRefusedOthersUnaffected(self):
        factory = RelayFactory(self.captured.log, LocalHub(), maxLine=5)
        a, ta = connect(factory, 6001)
        b, tb = connect(factory, 6002)
        a.dataReceived(b"ok\n" + b"x" * 9)
        self.assertEqual(received(ta), b"ERROR line too long\n")
        self.assertTrue(ta.disconnecting)
        disconnect(a)
        self.assertEqual(received(tb), b"ok\n")
        b.dataReceived(b"still\n")
        self.assertEqual(received(tb), b"")

    def test_greeting(self):
        factory = RelayFactory(self.captured.log, LocalHub(), greeting=b"welcome\n")
        a, ta = connect(factory)
        self.assertEqual(ta.value(), b"welcome\n")

    def test_contentsNotLoggedByDefault(self):
        self.a.dataReceived(b"secret\n")
        disconnect(self.a)
        self.assertEqual(
            self.captured.messages()[3:],
            ["connection closed: 127.0.0.1:5001 (Connection was closed cleanly.)"],
        )

    def test_contentsLoggedWhenAsked(self):
        captured = CapturedLog()
        factory = RelayFactory(captured.log, LocalHub(), logMessages=True)
        a, ta = connect(factory)
        a.dataReceived(b"one\r\ntwo\n")
        self.assertEqual(
            captured.messages()[1:],
            ["relayed one (from 127.0.0.1:5000)", "relayed two (from 127.0.0.1:5000)"],
        )


class SocketLikeTransport(FileDescriptor):
    """
    A socket transport's buffering (L{FileDescriptor}) on a memory reactor.
    """

    connected = True

    def getPeer(self):
        return peerAddress()


class PeerConnection(tcp.Connection):
    """
    A socket connection on a memory reactor, with a peer address.
    """

    def getPeer(self):
        return peerAddress()


class RelayTransportBufferTests(SynchronousTestCase):
    def test_kernelBufferCapped(self):
        """
        A relay client's kernel send buffer is capped at 32 KiB (Linux
        doubles it), not sized by the kernel: on loopback that is megabytes
        for each client that never reads.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        client = socket.create_connection(listener.getsockname())
        self.addCleanup(client.close)
        server, _ = listener.accept()
        self.addCleanup(server.close)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        factory = RelayFactory(CapturedLog().log, LocalHub())
        proto = factory.buildProtocol(peerAddress())
        proto.makeConnection(PeerConnection(server, proto, MemoryReactor()))
        self.assertIn(server.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                      (32 * 1024, 64 * 1024))

    def test_resumedStraightToTheSocket(self):
        """
        A reader that was paused gets what waited for it straight to its
        socket when it resumes, as much as the socket takes at once, not a
        chunk per turn of the reactor behind every other connection's.
        """
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        client = socket.create_connection(listener.getsockname(), timeout=5)
        self.addCleanup(client.close)
        server, _ = listener.accept()
        self.addCleanup(server.close)
        factory = RelayFactory(CapturedLog().log, LocalHub())
        proto = factory.buildProtocol(peerAddress())
        reactor = MemoryReactor()
        transport = PeerConnection(server, proto, reactor)
        transport.connected = True  # as a tcp.Server is once accepted
        proto.makeConnection(transport)
        proto.pauseProducing()
        for data in (b"one\n", b"two\n", b"three\n"):
            proto.deliver(data)
        proto.resumeProducing()
        self.assertEqual((proto.queued, proto.queuedSize), (None, 0))
        received = b""
        while len(received) < len(b"one\ntwo\nthree\n"):
            received += client.recv(100)
        self.assertEqual(received, b"one\ntwo\nthree\n")
        self.assertEqual(reactor.getWriters(), [])

    def test_smallTransportBuffer(self):
        """
        Each relay client's transport holds (and reads) at most 16 KiB, a
        private copy per client, before lines for it wait, shared, in the
        relay's own queue: 10,000 clients that never read hold 16 KiB each.
        """
        factory = RelayFactory(CapturedLog().log, LocalHub())
        proto = factory.buildProtocol(peerAddress())
        transport = SocketLikeTransport(reactor=MemoryReactor())
        proto.makeConnection(transport)
        self.assertEqual(transport.bufferSize, 16 * 1024)
        self.assertIs(transport.producer, proto)
        proto.deliver(b"x" * (16 * 1024 + 1))
        self.assertEqual(proto.queued, [])
        proto.deliver(b"next\n")
        self.assertEqual(proto.queued, [b"next\n"])


class CountedChunk(bytes):
    """
    A relayed chunk that records each time its lines are counted.
    """

    counted = 0

    def count(self, *args):
        type(self).counted += 1
        return bytes.count(self, *args)


class DroppedCountTests(SynchronousTestCase):
    """
    What readers that do not read queue and drop is counted exactly, each
    chunk's lines counted once however many readers queue or drop it.
    """

    def setUp(self):
        CountedChunk.counted = 0
        self.hub = LocalHub()
        self.factory = RelayFactory(CapturedLog().log, self.hub, limits=Limits(maxBuffer=10))
        self.sender, _ = connect(self.factory, 5000)
        self.readers = [connect(self.factory, 5001 + n) for n in range(3)]
        for reader, _ in self.readers:
            reader.pauseProducing()

    def test_queuedThenDropped(self):
        self.hub.publish(self.sender, CountedChunk(b"a\nb\n"))
        self.assertEqual([reader.queuedLines for reader, _ in self.readers], [2, 2, 2])
        self.hub.publish(self.sender, CountedChunk(b"too long\n"))
        self.hub.publish(self.sender, CountedChunk(b"c\n"))
        for _, transport in self.readers:
            self.assertEqual(received(transport), b"ERROR too slow\n")
        # Each reader dropped what it had queued and the chunk that did not
        # fit (3 lines, 13 bytes), and left the hub: the third chunk went to
        # no one.
        counters = self.factory.counters
        self.assertEqual((counters.droppedLines, counters.droppedBytes), (3 * 3, 3 * 13))
        self.assertEqual(list(self.hub.members), [self.sender])
        # The hub counts each chunk once, and the relay the two it handed
        # out once more.
        self.assertEqual(CountedChunk.counted, 3 + 2)

    def test_resumedRestCounted(self):
        """
        A reader that resumes and pauses again after one chunk still holds
        the lines of the rest.
        """
        reader, transport = self.readers[0]
        self.hub.publish(self.sender, b"a\n")
        self.hub.publish(self.sender, b"b\nc\n")
        transport.write = lambda data: (StringTransport.write(transport, data),
                                        reader.pauseProducing())
        reader.resumeProducing()
        self.assertEqual((reader.queued, reader.queuedLines), ([b"b\nc\n"], 2))
