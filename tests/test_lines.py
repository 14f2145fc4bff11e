"""
The line rules every mode shares: line endings and --max-line.
"""

from twisted.trial.unittest import SynchronousTestCase

from sockservice.modes.greet import GreetFactory
from sockservice.wire.lines import stripLineEnding
from tests.support import CapturedLog, connect, received

ACK = b"Information Received\n"
TOO_LONG = b"ERROR line too long\n"


class StripLineEndingTests(SynchronousTestCase):
    def test_endings(self):
        self.assertEqual(stripLineEnding(b"a\n"), b"a")
        self.assertEqual(stripLineEnding(b"a\r\n"), b"a")
        self.assertEqual(stripLineEnding(b"a\r"), b"a")
        self.assertEqual(stripLineEnding(b"a\r\r\n"), b"a\r")
        self.assertEqual(stripLineEnding(b""), b"")


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
