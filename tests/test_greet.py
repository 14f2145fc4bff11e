"""
greet mode on a string transport: the seed 000 exchange, byte for byte.
"""

import socket

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sockservice.modes.greet import (
    ACKS_PER_WRITE,
    BATCHES_PER_TURN,
    OUTPUT_BUDGET,
    GreetFactory,
)
from sockservice.wire.limits import Limits, limitBuffer
from tests.support import CapturedLog, connect, disconnect, received

ACK = b"Information Received\n"


class GreetProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.factory = GreetFactory(self.captured.log)

    def test_greetingOnConnect(self):
        proto, transport = connect(self.factory)
        self.assertEqual(transport.value(), b"connect\n")

    def test_seedClientExchange(self):
        """
        The seed 000 client reads the greeting, writes C{SOME DATA\\n} and
        reads C{Information Received\\n}.
        """
        proto, transport = connect(self.factory)
        self.assertEqual(received(transport), b"connect\n")
        proto.dataReceived(b"SOME DATA\n")
        self.assertEqual(received(transport), ACK)
        self.assertFalse(transport.disconnecting)

    def test_crlfLine(self):
        proto, transport = connect(self.factory)
        received(transport)
        proto.dataReceived(b"SOME DATA\r\n")
        self.assertEqual(received(transport), ACK)

    def test_pipelinedLinesInOneRead(self):
        proto, transport = connect(self.factory)
        received(transport)
        proto.dataReceived(b"one\ntwo\r\nthree\n")
        self.assertEqual(received(transport), ACK * 3)

    def test_partialLineWaitsForLF(self):
        proto, transport = connect(self.factory)
        received(transport)
        proto.dataReceived(b"SOME ")
        proto.dataReceived(b"DATA\r")
        self.assertEqual(received(transport), b"")
        proto.dataReceived(b"\nnext")
        self.assertEqual(received(transport), ACK)
        proto.dataReceived(b"\n")
        self.assertEqual(received(transport), ACK)

    def test_byteByByte(self):
        proto, transport = connect(self.factory)
        received(transport)
        for byte in b"a\nbb\r\n":
            proto.dataReceived(bytes([byte]))
        self.assertEqual(received(transport), ACK * 2)

    def test_emptyLineIsALine(self):
        proto, transport = connect(self.factory)
        received(transport)
        proto.dataReceived(b"\n\r\n")
        self.assertEqual(received(transport), ACK * 2)

    def test_customGreetingAndAck(self):
        factory = GreetFactory(
            self.captured.log, greeting="你好\n".encode(), ack="收到\n".encode()
        )
        proto, transport = connect(factory)
        proto.dataReceived(b"x\n")
        self.assertEqual(transport.value(), "你好\n收到\n".encode())

    def test_noGreeting(self):
        factory = GreetFactory(self.captured.log, greeting=b"")
        proto, transport = connect(factory)
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(b"x\n")
        self.assertEqual(transport.value(), ACK)

    def test_clientCloseLeavesConnectionToClient(self):
        """
        The server never closes a greet connection; the client does.
        """
        proto, transport = connect(self.factory)
        proto.dataReceived(b"a\nb\n")
        self.assertFalse(transport.disconnecting)
        disconnect(proto)
        self.assertEqual(
            self.captured.messages(),
            [
                "connection opened: 127.0.0.1:5000",
                "Buffer: a (from 127.0.0.1:5000)",
                "Buffer: b (from 127.0.0.1:5000)",
                "connection closed: 127.0.0.1:5000 (Connection was closed cleanly.)",
            ],
        )

    def test_logDecodesForDisplayOnly(self):
        """
        Messages are logged without their line ending, undecodable bytes
        replaced; the ack is unaffected.
        """
        proto, transport = connect(self.factory)
        received(transport)
        proto.dataReceived(b"caf\xc3\xa9 \xff\r\n")
        self.assertEqual(received(transport), ACK)
        self.assertEqual(
            self.captured.messages()[-1], "Buffer: café \ufffd (from 127.0.0.1:5000)"
        )
        self.assertEqual(self.captured.events[-1]["peer"], "127.0.0.1:5000")


class GreetLogFoldingTests(SynchronousTestCase):
    """
    Past the log budget, messages fold into a periodic summary; acks never
    depend on logging.
    """

    def test_foldsPastBudget(self):
        captured = CapturedLog(budget=3)
        proto, transport = connect(GreetFactory(captured.log))
        received(transport)
        proto.dataReceived(b"a\nbb\nccc\r\ndddd\n")
        self.assertEqual(received(transport), ACK * 4)
        self.assertEqual(
            captured.messages(),
            [
                "connection opened: 127.0.0.1:5000",
                "Buffer: a (from 127.0.0.1:5000)",
                "Buffer: bb (from 127.0.0.1:5000)",
            ],
        )
        proto.dataReceived(b"e\n")
        self.assertEqual(received(transport), ACK)
        captured.clock.advance(1)
        self.assertEqual(
            captured.messages()[3:],
            ["not logged one by one in the last 1s: received 3 (12 bytes)"],
        )
        self.assertEqual(captured.events[-1]["folded"], {"received": 3})
        self.assertEqual(captured.events[-1]["foldedBytes"], {"received": 12})
        proto.dataReceived(b"f\n")
        self.assertEqual(captured.messages()[-1], "Buffer: f (from 127.0.0.1:5000)")

    def test_nothingFoldedNoSummary(self):
        captured = CapturedLog(budget=10)
        proto, transport = connect(GreetFactory(captured.log))
        proto.dataReceived(b"a\n")
        captured.clock.advance(5)
        self.assertEqual(len(captured.events), 2)
        self.assertEqual(captured.clock.getDelayedCalls(), [])

    def test_stopFactoryFlushes(self):
        captured = CapturedLog(budget=1)
        factory = GreetFactory(captured.log)
        factory.doStart()
        proto, transport = connect(factory)
        proto.dataReceived(b"a\nb\n")
        factory.doStop()
        self.assertEqual(
            captured.messages()[-1],
            "not logged one by one in the last 1s: received 2 (4 bytes)",
        )
        self.assertEqual(captured.clock.getDelayedCalls(), [])

    def test_connectionEventsFold(self):
        """
        Connections opened and closed past the budget are counted in the
        summary, not logged one by one.
        """
        captured = CapturedLog(budget=1)
        factory = GreetFactory(captured.log)
        first, _ = connect(factory, 5001)
        second, _ = connect(factory, 5002)
        disconnect(first)
        disconnect(second)
        captured.clock.advance(1)
        self.assertEqual(
            captured.messages(),
            [
                "connection opened: 127.0.0.1:5001",
                "not logged one by one in the last 1s: closed 2, opened 1",
            ],
        )
        self.assertEqual(factory.protocols, set())


class PausingTransport(StringTransport):
    """
    A L{StringTransport} that, like a socket transport, pauses its streaming
    producer while more than C{bufferSize} bytes wait to be sent; the peer
    reads them with L{peerReads}.
    """

    bufferSize = 16 * 1024

    def write(self, data):
        StringTransport.write(self, data)
        if self.producer is not None and len(self.value()) > self.bufferSize:
            self.producer.pauseProducing()

    def peerReads(self):
        """
        The peer reads everything waiting; the producer is resumed, as a
        transport does once its buffer is empty.
        """
        data = received(self)
        if self.producerState == "paused":
            self.producerState = "producing"
            self.producer.resumeProducing()
        return data


class GreetOutputBudgetTests(SynchronousTestCase):
    """
    A client that sends bare newlines by the thousand and never reads costs
    at most its output budget in acks: one read is no longer answered whole.
    """

    def setUp(self):
        self.captured = CapturedLog(budget=0)
        self.proto, self.transport = connect(
            GreetFactory(self.captured.log, greeting=b""), transportType=PausingTransport
        )

    def test_floodAnsweredOnlyWithinTheBudget(self):
        self.proto.dataReceived(b"\n")
        self.proto.dataReceived(b"\n" * 16384)
        waiting = len(self.transport.value())
        self.assertLessEqual(waiting, OUTPUT_BUDGET + ACKS_PER_WRITE)
        self.assertGreater(waiting, OUTPUT_BUDGET)
        self.assertTrue(self.proto.paused)
        self.assertEqual(self.transport.producerState, "paused")
        self.assertEqual(len(self.proto.pendingPartialLine()), 16385 - waiting // len(ACK))

    def test_everyLineAnsweredInOrderOnceRead(self):
        self.proto.dataReceived(b"\n")
        lines = b"".join(b"%d\n" % n for n in range(20000))
        self.proto.dataReceived(lines)
        answered = self.transport.peerReads()
        self.proto.dataReceived(b"last\n")
        for _ in range(100):
            if not self.proto.paused:
                break
            answered += self.transport.peerReads()
        answered += self.transport.peerReads()
        self.assertEqual(answered, ACK * 20002)

    def test_socketTransportBuffersTheBudget(self):
        """
        A socket transport pauses its producer past its C{bufferSize} and
        reads that much at a time: greet sets it to its budget.
        """
        transport = FileDescriptor(reactor=MemoryReactor())
        self.assertEqual(transport.bufferSize, 65536)
        limitBuffer(transport, OUTPUT_BUDGET)
        self.assertEqual(transport.bufferSize, 16384)
        limitBuffer(StringTransport(), OUTPUT_BUDGET)


def runTurn(clock):
    """
    Run the timed calls due now as one reactor iteration does: not those
    they schedule meanwhile (C{Clock.advance} runs those too).
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.func(*call.args, **call.kw)


class GreetTakingTurnsTests(SynchronousTestCase):
    """
    A read of thousands of lines is answered a batch per reactor turn, so
    one client's flood does not hold up everyone else.
    """

    def test_oneBatchPerTurn(self):
        clock = Clock()
        factory = GreetFactory(CapturedLog(budget=0).log, greeting=b"", limits=Limits(clock))
        proto, transport = connect(factory)
        other, otherTransport = connect(factory, 5001)
        perWrite = ACKS_PER_WRITE // len(ACK)
        proto.dataReceived(b"x\n" * (perWrite * 2 + 5))
        self.assertEqual(received(transport), ACK * perWrite)
        self.assertEqual(transport.producerState, "paused")
        [turn] = clock.getDelayedCalls()
        self.assertEqual(turn.getTime(), clock.seconds())
        other.dataReceived(b"meanwhile\n")
        self.assertEqual(received(otherTransport), ACK)
        writes = []
        self.patch(transport, "write", writes.append)
        clock.advance(0)
        self.assertEqual(writes, [ACK * perWrite, ACK * 5])
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_batchFollowsAReloadedAck(self):
        """
        A batch is L{ACKS_PER_WRITE} bytes of the ack in force: after
        C{setAck} (what a reload calls) a longer ack makes smaller batches.
        """
        clock = Clock()
        factory = GreetFactory(CapturedLog(budget=0).log, greeting=b"", limits=Limits(clock))
        proto, transport = connect(factory)
        ack = b"a" * 4095 + b"\n"
        factory.setAck(ack)
        proto.dataReceived(b"x\n" * 3)
        self.assertEqual(received(transport), ack * 2)
        clock.advance(0)
        self.assertEqual(received(transport), ack)
        factory.setAck(b"b" * 9000 + b"\n")
        proto.dataReceived(b"y\n" * 2)
        self.assertEqual(received(transport), b"b" * 9000 + b"\n")
        clock.advance(0)
        self.assertEqual(received(transport), b"b" * 9000 + b"\n")

    def test_atMostSoManyBatchesPerTurn(self):
        """
        Flooding clients get a batch each per reactor turn, at most
        L{BATCHES_PER_TURN} of them in one turn, in the order they came to
        wait: with thousands, a turn stays short for a new client.
        """
        clock = Clock()
        factory = GreetFactory(CapturedLog(budget=0).log, greeting=b"", limits=Limits(clock))
        perWrite = ACKS_PER_WRITE // len(ACK)
        floods = [connect(factory, 5000 + n) for n in range(BATCHES_PER_TURN + 3)]
        for proto, transport in floods:
            proto.dataReceived(b"x\n" * (perWrite * 2))
            self.assertEqual(received(transport), ACK * perWrite)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        runTurn(clock)
        answered = [len(received(transport)) // len(ACK) for _, transport in floods]
        self.assertEqual(answered, [perWrite] * BATCHES_PER_TURN + [0, 0, 0])
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        runTurn(clock)
        answered = [len(received(transport)) // len(ACK) for _, transport in floods]
        self.assertEqual(answered, [0] * BATCHES_PER_TURN + [perWrite] * 3)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_turnCancelledWhenGone(self):
        clock = Clock()
        factory = GreetFactory(CapturedLog().log, greeting=b"", limits=Limits(clock))
        proto, transport = connect(factory)
        proto.dataReceived(b"\n" * 20000)
        disconnect(proto)
        self.assertEqual(clock.getDelayedCalls(), [])


class GreetNonReaderOnASocketTests(SynchronousTestCase):
    """
    A client that sends bare newlines as fast as it can and never reads,
    on a real loopback socket under Twisted's own TCP transport: what the
    server holds for it (input not answered yet, acks waiting to be sent)
    stays within 64 KiB from its first read on.
    """

    def test_heldWithin64KiB(self):
        with socket.create_server(("127.0.0.1", 0)) as listener:
            client = socket.create_connection(listener.getsockname())
            server, address = listener.accept()
        self.addCleanup(client.close)
        self.addCleanup(server.close)
        # Small kernel buffers both ways (as a distant peer's window would
        # make them), so what the server holds is in the process.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        client.setblocking(False)
        flood = b"\n" * (1 << 20)
        sent = client.send(flood)
        clock = Clock()
        factory = GreetFactory(CapturedLog(budget=0).log, greeting=b"", limits=Limits(clock))
        reactor = MemoryReactor()
        proto = factory.buildProtocol(address)
        transport = tcp.Server(server, proto, address, None, 1, reactor)
        proto.makeConnection(transport)
        held = []
        for _ in range(200):
            if transport in reactor.readers:
                transport.doRead()
            clock.advance(0)
            if transport in reactor.writers:
                transport.doWrite()
            held.append(
                len(proto.pendingPartialLine())
                + len(transport.dataBuffer)
                + sum(map(len, transport._tempDataBuffer))
            )
            try:
                sent += client.send(flood)
            except BlockingIOError:
                pass
        self.assertTrue(proto.paused)
        self.assertNotIn(transport, reactor.readers)
        self.assertGreater(max(held), OUTPUT_BUDGET)
        self.assertLessEqual(max(held), 64 * 1024)
