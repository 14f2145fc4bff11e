"""
Graceful stop: connections stop taking lines, flush and close; the stuck
ones are cut off at the deadline.
"""

from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from sockservice.service.draining import DrainingService
from sockservice.modes.greet import GreetFactory
from sockservice.hubs.local import LocalHub
from sockservice.modes.relay import RelayFactory
from tests.support import CapturedLog, HalfClosingTransport, connect, disconnect, received

ACK = b"Information Received\n"


class DrainingServiceTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.factory = GreetFactory(self.captured.log)
        self.service = DrainingService(self.factory, self.captured.clock, 10)
        self.service.startService()

    def test_noConnections(self):
        self.assertIsNone(self.successResultOf(self.service.stopService()))

    def test_flushThenCloseSendingSide(self):
        """
        Each connection answers the lines it has, then takes no more and
        closes its sending side; the stop is done when all have closed.
        """
        first, firstTransport = connect(self.factory, 1, HalfClosingTransport)
        second, secondTransport = connect(self.factory, 2, HalfClosingTransport)
        first.dataReceived(b"a\nb\nc")
        self.assertEqual(received(firstTransport), b"connect\n" + ACK * 2)
        stopped = self.service.stopService()
        self.assertTrue(firstTransport.writeClosed and secondTransport.writeClosed)
        self.assertFalse(firstTransport.disconnecting)
        first.dataReceived(b"\nd\n")
        self.assertEqual(received(firstTransport), b"")
        disconnect(first)
        self.assertNoResult(stopped)
        disconnect(second)
        self.successResultOf(stopped)
        self.assertEqual(self.captured.clock.getDelayedCalls(), [])

    def test_transportWithoutHalfClose(self):
        """
        A transport that cannot close one side (TLS) is closed whole once
        its output is sent.
        """
        proto, transport = connect(self.factory, 1, StringTransport)
        self.service.stopService()
        self.assertTrue(transport.disconnecting)

    def test_cutOffAtDeadline(self):
        stuck, stuckTransport = connect(self.factory, 1, HalfClosingTransport)
        done, doneTransport = connect(self.factory, 2, HalfClosingTransport)
        stopped = self.service.stopService()
        disconnect(done)
        self.captured.clock.advance(9.9)
        self.assertFalse(stuckTransport.disconnected)
        self.captured.clock.advance(0.1)
        self.assertTrue(stuckTransport.disconnected)
        self.assertFalse(doneTransport.disconnected)
        self.assertIn(
            "1 connection(s) not closed 10s after stopping: aborting", self.captured.messages()
        )
        disconnect(stuck, ConnectionAborted)
        self.successResultOf(stopped)

    def test_foldedLogFlushedAtTheEnd(self):
        """
        Events folded while draining reach the log once the last connection
        has closed.
        """
        self.captured.log.budget = 0
        proto, transport = connect(self.factory, 1, HalfClosingTransport)
        stopped = self.service.stopService()
        disconnect(proto)
        self.successResultOf(stopped)
        self.assertIn(
            "not logged one by one in the last 1s: closed 1, opened 1",
            self.captured.messages(),
        )

    def test_pausedProducer(self):
        """
        A client whose acks piled up (reading from it paused) is read again,
        discarding, and its transport is no longer held back by the protocol.
        """
        proto, transport = connect(self.factory, 1, HalfClosingTransport)
        proto.dataReceived(b"a\n")
        self.assertIs(transport.producer, proto)
        proto.pauseProducing()
        self.assertEqual(transport.producerState, "paused")
        self.service.stopService()
        self.assertIsNone(transport.producer)
        self.assertEqual(transport.producerState, "producing")
        self.assertTrue(transport.writeClosed)
        self.assertEqual(
            self.captured.messages()[-1],
            "127.0.0.1:1 is not reading its acks: reading from it paused",
        )

    def test_noResumedLineWhenDraining(self):
        """
        Draining reads on from a client that was paused, but that client
        did not read its acks: the log does not say it did.
        """
        proto, transport = connect(self.factory, 1, HalfClosingTransport)
        proto.dataReceived(b"a\n")
        proto.pauseProducing()
        self.service.stopService()
        disconnect(proto)
        self.assertNotIn(
            "127.0.0.1:1 read its acks: reading from it resumed", self.captured.messages()
        )


class RelayDrainingTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.factory = RelayFactory(self.captured.log, LocalHub())
        self.service = DrainingService(self.factory, self.captured.clock, 10)
        self.service.startService()

    def test_queuedLinesGoOutFirst(self):
        """
        Lines relay held back for a client that was not reading are written
        before its sending side closes.
        """
        factory, service = self.factory, self.service
        sender, _ = connect(factory, 1, HalfClosingTransport)
        stalled, stalledTransport = connect(factory, 2, HalfClosingTransport)
        stalled.pauseProducing()
        sender.dataReceived(b"one\ntwo\n")
        self.assertEqual(stalledTransport.value(), b"")
        service.stopService()
        self.assertEqual(stalledTransport.value(), b"one\ntwo\n")
        self.assertTrue(stalledTransport.writeClosed)

    def test_partialLineDeliveredOnCleanClose(self):
        """
        A draining connection's partial line goes to the others when its
        client closes cleanly, and not after the deadline's abort.
        """
        factory, service, captured = self.factory, self.service, self.captured
        clean, _ = connect(factory, 1, HalfClosingTransport)
        stuck, _ = connect(factory, 2, HalfClosingTransport)
        other, otherTransport = connect(factory, 3, HalfClosingTransport)
        clean.dataReceived(b"bye")
        stuck.dataReceived(b"cut")
        stopped = service.stopService()
        disconnect(clean)
        self.assertEqual(received(otherTransport), b"bye\n")
        captured.clock.advance(10)
        disconnect(stuck, ConnectionAborted)
        disconnect(other)
        self.assertEqual(received(otherTransport), b"")
        self.successResultOf(stopped)
