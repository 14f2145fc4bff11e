"""
The real C{sockservice} command with C{--tls}, C{--cafile} and
C{--token-file} against the real C{twistd -n sockservice}, over loopback.
"""

import os

from twisted.internet.defer import inlineCallbacks

from tests.realserver import connectPeer, runClient, startTwistd
from tests.support import clientTLSOptions, makeCertificate
from tests.test_clientcommand import GREETING, CommandTestCase


class SecureCommandTests(CommandTestCase):
    def setUp(self):
        key, self.cert = makeCertificate(os.path.abspath(self.mktemp()))
        self.listen = ("--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={self.cert}")
        self.token = os.path.abspath(self.mktemp())
        with open(self.token, "w") as f:
            f.write("let me in\n")

    @inlineCallbacks
    def test_greetAndCollect(self):
        server = startTwistd(self, *self.listen)
        port = str((yield server.listening))
        yield self.assertRuns(
            ["greet", "-p", port, "--cafile", self.cert], b"connect\nInformation Received\n"
        )
        server = startTwistd(self, *self.listen, "--mode", "collect", "--count", "1")
        port = str((yield server.listening))
        yield self.assertRuns(["collect", "-p", port, "--cafile", self.cert], GREETING)
        yield server.logged("收到的信息:hello (from 127.0.0.1:".encode())

    @inlineCallbacks
    def test_untrustedCertificate(self):
        """
        Without C{--cafile} a self-signed certificate is not trusted: one
        line, status 1.
        """
        server = startTwistd(self, *self.listen)
        port = yield server.listening
        client = runClient(self, "greet", "-p", str(port), "--tls")
        self.assertEqual((yield client.ended), 1)
        self.assertEqual(client.output, b"")
        self.assertEqual(
            client.errors,
            f"sockservice greet: 127.0.0.1:{port}: TLS failed: certificate verify failed\n"
            .encode(),
        )

    @inlineCallbacks
    def test_chatWithToken(self):
        server = startTwistd(
            self, *self.listen, "--mode", "relay", "--token-file", self.token, "--log-messages"
        )
        port = yield server.listening
        chat = runClient(self, "chat", "-p", str(port), "--cafile", self.cert,
                         "--token-file", self.token)
        chat.transport.write(b"first\n")
        yield server.logged(b"relayed first (from 127.0.0.1:")
        peer = yield connectPeer(self, port, clientTLSOptions(self.cert))
        peer.send(b"let me in\nhi chat\n")
        yield chat.logged(b"hi chat\n")
        chat.transport.write(b"bye\n")
        self.assertEqual((yield peer.receive(4)), b"bye\n")
        chat.transport.closeStdin()
        self.assertEqual((yield chat.ended), 0, chat.errors)

    @inlineCallbacks
    def test_chatWithEmptyInput(self):
        """
        A chat whose input ends at once still leaves cleanly: it waits for
        the TLS handshake to close.
        """
        server = startTwistd(self, *self.listen, "--mode", "relay")
        port = yield server.listening
        chat = runClient(self, "chat", "-p", str(port), "--cafile", self.cert)
        chat.transport.closeStdin()
        self.assertEqual((yield chat.ended), 0, chat.errors)
        self.assertEqual((chat.output, chat.errors), (b"", b""))

    @inlineCallbacks
    def test_chatWithoutToken(self):
        server = startTwistd(self, *self.listen, "--mode", "relay", "--token-file", self.token)
        port = yield server.listening
        chat = runClient(self, "chat", "-p", str(port), "--cafile", self.cert)
        chat.transport.write(b"guess\n")
        self.assertEqual((yield chat.ended), 1)
        self.assertEqual(chat.output, b"ERROR unauthorized\n")
        self.assertEqual(
            chat.errors, f"sockservice chat: 127.0.0.1:{port}: closed the connection\n".encode()
        )
