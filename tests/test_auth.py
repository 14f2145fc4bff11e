"""
relay's token gate: nothing passes either way until a client's first line
is the token.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from sockservice.wire.auth import TokenGate
from sockservice.hubs.local import LocalHub
from sockservice.modes.relay import RelayFactory
from tests.support import CapturedLog, connect, disconnect, received


class TokenGateTests(SynchronousTestCase):
    def test_fromFile(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"s3cret\r\nignored\n")
        gate = TokenGate.fromFile(path)
        self.assertTrue(gate.admits(b"s3cret\r\n"))
        self.assertTrue(gate.admits(b"s3cret\n"))
        self.assertFalse(gate.admits(b"s3cret \n"))
        self.assertFalse(gate.admits(b"ignored\n"))

    def test_missingFile(self):
        path = self.mktemp()
        with self.assertRaises(ValueError) as caught:
            TokenGate.fromFile(path)
        self.assertEqual(
            str(caught.exception),
            f"cannot read --token-file {path!r}: No such file or directory",
        )

    def test_emptyFirstLine(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\ntoken on line 2\n")
        with self.assertRaises(ValueError) as caught:
            TokenGate.fromFile(path)
        self.assertEqual(
            str(caught.exception), f"--token-file {path!r} has no token on its first line"
        )
        os.remove(path)


class RelayTokenTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.factory = RelayFactory(self.captured.log, LocalHub(), gate=TokenGate(b"tok"))
        self.a, self.ta = connect(self.factory, 5001)
        self.b, self.tb = connect(self.factory, 5002)

    def test_admittedClientsTalk(self):
        self.a.dataReceived(b"tok\nhello\n")
        self.b.dataReceived(b"tok\r\n")
        self.a.dataReceived(b"again\n")
        self.b.dataReceived(b"hi")
        self.b.dataReceived(b"\n")
        self.assertEqual((received(self.ta), received(self.tb)), (b"hi\n", b"again\n"))

    def test_wrongToken(self):
        self.a.dataReceived(b"tok\n")
        self.b.dataReceived(b"guess\nhello\n")
        self.assertEqual(received(self.tb), b"ERROR unauthorized\n")
        self.assertTrue(self.tb.disconnecting)
        self.assertEqual(received(self.ta), b"")
        self.assertEqual(
            self.captured.messages()[-1], "unauthorized: wrong token from 127.0.0.1:5002, closing"
        )

    def test_unadmittedReceiveNothing(self):
        self.a.dataReceived(b"tok\nsecret news\n")
        self.assertEqual(received(self.tb), b"")

    def test_partialLineBeforeTokenNotRelayed(self):
        self.a.dataReceived(b"tok\n")
        self.b.dataReceived(b"tok")
        disconnect(self.b)
        self.assertEqual(received(self.ta), b"")
