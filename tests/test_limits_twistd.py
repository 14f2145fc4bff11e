"""
The limits, the token gate and TLS in the real C{twistd -n sockservice},
over loopback.
"""

import hashlib
import os
import shutil
import socket

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SkipTest, TestCase

from tests.realserver import DigestPeer, connectPeer, startTwistd
from tests.support import clientTLSOptions, makeCertificate
from tests.test_twistd import ACK, LOCAL


class LimitProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_idleTimeout(self):
        server = startTwistd(self, *LOCAL, "--idle-timeout", "1")
        port = yield server.listening
        peer = yield connectPeer(self, port)
        self.assertEqual((yield peer.closed), b"connect\nERROR idle timeout\n")
        yield server.logged(b"idle for 1s: closing 127.0.0.1:")

    @inlineCallbacks
    def test_serverFull(self):
        server = startTwistd(self, *LOCAL, "--max-connections", "2")
        port = yield server.listening
        first = yield connectPeer(self, port)
        second = yield connectPeer(self, port)
        yield first.receive(8)
        yield second.receive(8)
        third = yield connectPeer(self, port)
        self.assertEqual((yield third.closed), b"ERROR server full\n")
        first.send(b"still served\n")
        self.assertEqual((yield first.receive(8 + len(ACK))), b"connect\n" + ACK)
        yield server.logged(b"server full (2 connections open): refused 127.0.0.1:")

    @inlineCallbacks
    def test_openFileLimitLowersMaxConnections(self):
        """
        Under an open-file limit of 80, --max-connections 1000 is lowered to
        the 16 that fit (64 files kept for the server itself), so the 17th
        client gets C{ERROR server full} rather than an unanswered accept.
        """
        if shutil.which("prlimit") is None:
            raise SkipTest("prlimit is not installed (apt-get install util-linux)")
        server = startTwistd(self, *LOCAL, "--max-connections", "1000",
                             launcher=("prlimit", "--nofile=80:80"))
        port = yield server.listening
        yield server.logged(b"the open file limit lets only 16 connections in")
        peers = []
        for _ in range(16):
            peer = yield connectPeer(self, port)
            yield peer.receive(8)
            peers.append(peer)
        over = yield connectPeer(self, port)
        self.assertEqual((yield over.closed), b"ERROR server full\n")
        peers[0].send(b"still served\n")
        self.assertEqual((yield peers[0].receive(8 + len(ACK))), b"connect\n" + ACK)

    @inlineCallbacks
    def test_maxPerIP(self):
        server = startTwistd(self, *LOCAL, "--max-per-ip", "1")
        port = yield server.listening
        first = yield connectPeer(self, port)
        yield first.receive(8)
        second = yield connectPeer(self, port)
        self.assertEqual((yield second.closed), b"ERROR server full\n")
        first.transport.loseConnection()
        yield first.closed
        yield server.logged(b"connection closed: 127.0.0.1:")
        third = yield connectPeer(self, port)
        self.assertEqual((yield third.receive(8)), b"connect\n")

    @inlineCallbacks
    def test_greetPausesAClientThatDoesNotRead(self):
        """
        A client that pipelines 4 MB of lines without reading is paused,
        not buffered for; once it reads, it gets every ack.
        """
        server = startTwistd(self, *LOCAL, "--greeting", "")
        port = yield server.listening
        lines = 2 * 1024 * 1024
        peer = yield connectPeer(self, port, peer=DigestPeer())
        peer.transport.pauseProducing()
        peer.transport.write(b"x\n" * lines)
        # Logged one by one, or counted in the summary ("paused 1") when the
        # messages before it used up the log budget.
        yield server.logged(b"paused")
        peer.transport.resumeProducing()
        self.assertEqual((yield peer.receive(lines * len(ACK))), lines * len(ACK))
        self.assertEqual(peer.digest.hexdigest(), hashlib.sha256(ACK * lines).hexdigest())

    @inlineCallbacks
    def test_relayDropsASlowConsumer(self):
        """
        With a reader that stopped reading, 16 MB relayed (more than the
        kernel buffers hold), sent 64 KiB at a time as the readers take it:
        the readers get it all intact, the stalled one is dropped as too slow.
        """
        server = startTwistd(self, *LOCAL, "--mode", "relay", "--max-buffer", "262144")
        port = yield server.listening
        piece = b"".join(b"%07d " % i + b"y" * 1015 + b"\n" for i in range(64))
        stalled = yield connectPeer(self, port)
        stalled.transport.pauseProducing()
        stalled.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        readers = []
        for _ in range(2):
            readers.append((yield connectPeer(self, port, peer=DigestPeer())))
        sender = yield connectPeer(self, port)
        for sent in range(len(piece), 257 * len(piece), len(piece)):
            sender.send(piece)
            for reader in readers:
                yield reader.receive(sent)
        expected = hashlib.sha256(piece * 256).hexdigest()
        self.assertEqual([r.digest.hexdigest() for r in readers], [expected, expected])
        self.assertEqual([r.count for r in readers], [len(piece) * 256] * 2)
        yield server.logged(b"is too slow: over 262144 bytes queued for it, dropping it")


class TokenProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_onlyTokenHoldersTalk(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("let me in\n")
        server = startTwistd(self, *LOCAL, "--mode", "relay", "--token-file", path)
        port = yield server.listening
        a = yield connectPeer(self, port)
        b = yield connectPeer(self, port)
        intruder = yield connectPeer(self, port)
        a.send(b"let me in\n")
        b.send(b"let me in\r\n")
        intruder.send(b"guess\nhello\n")
        self.assertEqual((yield intruder.closed), b"ERROR unauthorized\n")
        a.send(b"hello b\n")
        self.assertEqual((yield b.receive(8)), b"hello b\n")
        self.assertEqual(a.data, b"")
        yield server.logged(b"unauthorized: wrong token from 127.0.0.1:")


class TLSProcessTests(TestCase):
    """
    Every mode over C{--listen ssl:...} with a throwaway certificate.
    """

    timeout = 30

    def setUp(self):
        key, cert = makeCertificate(os.path.abspath(self.mktemp()))
        self.listen = ("--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        self.tls = clientTLSOptions(cert)

    @inlineCallbacks
    def test_greet(self):
        server = startTwistd(self, *self.listen)
        port = yield server.listening
        peer = yield connectPeer(self, port, self.tls)
        peer.send(b"SOME DATA\n")
        self.assertEqual((yield peer.receive(8 + len(ACK))), b"connect\n" + ACK)

    @inlineCallbacks
    def test_collect(self):
        server = startTwistd(self, *self.listen, "--mode", "collect", "--count", "1")
        port = yield server.listening
        peer = yield connectPeer(self, port, self.tls)
        peer.send(b"hello\n")
        self.assertEqual((yield peer.closed), "测试成功！\n".encode())
        self.assertEqual((yield server.ended), 0)
        self.assertIn("收到的信息:hello (from 127.0.0.1:".encode(), server.output)

    @inlineCallbacks
    def test_relay(self):
        server = startTwistd(self, *self.listen, "--mode", "relay")
        port = yield server.listening
        a = yield connectPeer(self, port, self.tls)
        b = yield connectPeer(self, port, self.tls)
        a.send(b"over TLS\n")
        self.assertEqual((yield b.receive(9)), b"over TLS\n")
