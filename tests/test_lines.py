"""
The line rules every mode shares: line endings and --max-line.
"""

from twisted.trial.unittest import SynchronousTestCase

from sockservice.modes.greet import GreetFactory
from sockservice.wire.limits import Limits
from sockservice.wire.lines import LineProtocol, splitLines, stripLineEnding
from tests.support import CapturedLog, connect, disconnect, received

ACK = b"Information Received\n"
TOO_LONG = b"ERROR line too long\n"


class StripLineEndingTests(SynchronousTestCase):
    def test_endings(self):
        self.assertEqual(stripLineEnding(b"a\n"), b"a")
        self.assertEqual(stripLineEnding(b"a\r\n"), b"a")
        self.assertEqual(stripLineEnding(b"a\r"), b"a")
        self.assertEqual(stripLineEnding(b"a\r\r\n"), b"a\r")
        self.assertEqual(stripLineEnding(b""), b"")


class SplitLinesTests(SynchronousTestCase):
    """
    L{splitLines}: the complete lines, the rest, and whether a line was too
    long.
    """

    def test_cutAfterLastLF(self):
        self.assertEqual(splitLines(b"a\nb\r\nc", 5), (b"a\nb\r\n", b"c", False))
        self.assertEqual(splitLines(b"a\n", 5), (b"a\n", b"", False))
        self.assertEqual(splitLines(b"abc", 5), (b"", b"abc", False))

    def test_longLineStopsTheLines(self):
        self.assertEqual(
            splitLines(b"a\n123456\nb\n", 5), (b"a\n", b"123456\nb\n", True)
        )
        self.assertEqual(splitLines(b"a\n123456", 5), (b"a\n", b"123456", True))
        self.assertEqual(splitLines(b"a\n12345\r", 5), (b"a\n", b"12345\r", False))


class LineProtocolShapeTests(SynchronousTestCase):
    def test_builtOnProtocol(self):
        """
        A plain L{Protocol}: no L{LineReceiver} whose documented methods
        would not mean what its docs say.
        """
        from twisted.internet.protocol import Protocol
        from twisted.protocols.basic import LineReceiver

        self.assertEqual(LineProtocol.__bases__, (Protocol,))
        self.assertFalse(issubclass(LineProtocol, LineReceiver))
        self.assertTrue(LineProtocol.dataReceived.__doc__)


class MaxLineTests(SynchronousTestCase):
    """
    A line may hold C{maxLine} bytes before its line ending; one more is
    refused with C{ERROR line too long} and the connection closes.
    """

    def setUp(self):
        self.captured = CapturedLog()
        factory = GreetFactory(self.captured.log, maxLine=10, greeting=b"")
        self.proto, self.transport = connect(factory)

    def assertRefused(self, expected=TOO_LONG):
        self.assertEqual(received(self.transport), expected)
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.proto.refused)
        self.assertEqual(
            self.captured.messages()[-1],
            "line too long from 127.0.0.1:5000 (over 10 bytes): closing",
        )

    def test_exactlyMaxWithLF(self):
        self.proto.dataReceived(b"x" * 10 + b"\n")
        self.assertEqual(received(self.transport), ACK)
        self.assertFalse(self.transport.disconnecting)

    def test_exactlyMaxWithCRLF(self):
        self.proto.dataReceived(b"x" * 10 + b"\r\n")
        self.assertEqual(received(self.transport), ACK)

    def test_exactlyMaxWithCRLFSplit(self):
        """
        A partial line of C{maxLine} bytes and a CR may still end well.
        """
        self.proto.dataReceived(b"x" * 10 + b"\r")
        self.assertFalse(self.transport.disconnecting)
        self.proto.dataReceived(b"\n")
        self.assertEqual(received(self.transport), ACK)

    def test_oneOverWithLF(self):
        self.proto.dataReceived(b"x" * 11 + b"\n")
        self.assertRefused()

    def test_oneOverWithCRLF(self):
        self.proto.dataReceived(b"x" * 11 + b"\r\n")
        self.assertRefused()

    def test_partialOverLimitRefusedAtOnce(self):
        """
        A line already too long is refused before its LF arrives, so a
        client cannot grow the buffer without bound.
        """
        self.proto.dataReceived(b"x" * 6)
        self.assertEqual(received(self.transport), b"")
        self.proto.dataReceived(b"x" * 5)
        self.assertRefused()

    def test_partialCRThenMoreRefused(self):
        self.proto.dataReceived(b"x" * 10 + b"\r")
        self.proto.dataReceived(b"y")
        self.assertRefused()

    def test_linesBeforeLongLineAnswered(self):
        """
        Lines before the long one in the same read get their acks, in order;
        nothing after it is answered.
        """
        self.proto.dataReceived(b"ok\nfine\r\n" + b"x" * 11 + b"\nafter\n")
        self.assertRefused(ACK * 2 + TOO_LONG)

    def test_longLineAfterShortOnes(self):
        self.proto.dataReceived(b"ok\n" + b"x" * 20)
        self.assertRefused(ACK + TOO_LONG)

    def test_nothingAfterRefusal(self):
        """
        Data that was already read after the refusal is ignored.
        """
        self.proto.dataReceived(b"x" * 11 + b"\n")
        self.assertRefused()
        self.proto.dataReceived(b"more\n")
        self.assertEqual(received(self.transport), b"")


class PartialLineTests(SynchronousTestCase):
    """
    The protocol owns its partial line and shows it through
    C{pendingPartialLine} and C{takePartialLine}.
    """

    def setUp(self):
        self.captured = CapturedLog()
        self.proto, self.transport = connect(GreetFactory(self.captured.log, greeting=b""))

    def test_pendingAndTaken(self):
        self.proto.dataReceived(b"one\ntw")
        self.assertEqual(self.proto.pendingPartialLine(), b"tw")
        self.proto.dataReceived(b"o")
        self.assertEqual(self.proto.pendingPartialLine(), b"two")
        self.assertEqual(self.proto.takePartialLine(), b"two")
        self.assertEqual(self.proto.pendingPartialLine(), b"")
        self.proto.dataReceived(b"\n")
        self.assertEqual(received(self.transport), ACK * 2)

    def test_completeLinesLeaveNothing(self):
        self.proto.dataReceived(b"a\r\nb\n")
        self.assertEqual(self.proto.pendingPartialLine(), b"")


class InputBudgetTests(SynchronousTestCase):
    """
    Partial lines beyond a small allowance per connection draw on one
    total; a connection that would take it past its limit gets C{ERROR
    server busy} and is closed, and what it held is given back.
    """

    def setUp(self):
        self.captured = CapturedLog()
        self.limits = Limits(inputAllowance=10, maxInputHeld=25)
        self.factory = GreetFactory(self.captured.log, greeting=b"", limits=self.limits)

    def test_allowanceIsFree(self):
        proto, transport = connect(self.factory)
        proto.dataReceived(b"x" * 10)
        self.assertEqual(self.limits.inputHeld, 0)
        proto.dataReceived(b"x")
        self.assertEqual(self.limits.inputHeld, 1)

    def test_overTheTotalRefused(self):
        first, firstTransport = connect(self.factory, 5001)
        second, secondTransport = connect(self.factory, 5002)
        first.dataReceived(b"x" * 30)
        self.assertEqual(self.limits.inputHeld, 20)
        second.dataReceived(b"y" * 15)
        self.assertEqual(self.limits.inputHeld, 25)
        second.dataReceived(b"y")
        self.assertEqual(received(secondTransport), b"ERROR server busy\n")
        self.assertTrue(secondTransport.disconnecting)
        self.assertEqual(
            self.captured.messages()[-1],
            "input budget spent: 25 bytes of unfinished lines held, closing 127.0.0.1:5002",
        )
        self.assertEqual(self.limits.inputHeld, 20)
        self.assertEqual(second.pendingPartialLine(), b"")
        first.dataReceived(b"\n")
        self.assertEqual(received(firstTransport), ACK)
        self.assertEqual(self.limits.inputHeld, 0)

    def test_givenBackOnClose(self):
        proto, transport = connect(self.factory)
        proto.dataReceived(b"x" * 20)
        self.assertEqual(self.limits.inputHeld, 10)
        disconnect(proto)
        self.assertEqual(self.limits.inputHeld, 0)

    def test_onByDefault(self):
        """
        10,000 connections one byte short of a 64 KiB line would hold 640 MiB.
        """
        limits = Limits()
        self.assertEqual((limits.inputAllowance, limits.maxInputHeld), (4096, 32 << 20))
