"""
The real C{twistd -n sockservice} process, talked to over loopback.
"""

import signal
import socket

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import TestCase

from tests.realserver import connectPeer, startTwistd

ACK = b"Information Received\n"
LOCAL = ("--interface", "127.0.0.1", "--port", "0")


class GreetProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_seedExchangeAndPipelining(self):
        server = startTwistd(self, *LOCAL)
        port = yield server.listening
        peer = yield connectPeer(self, port)
        self.assertEqual((yield peer.receive(8)), b"connect\n")
        peer.send(b"SOME DATA\n")
        self.assertEqual((yield peer.receive(8 + len(ACK))), b"connect\n" + ACK)
        peer.send(b"a\r\nb\nc")
        peer.send(b"\n")
        self.assertEqual((yield peer.receive(8 + 4 * len(ACK))), b"connect\n" + ACK * 4)
        peer.transport.loseConnection()
        yield peer.closed
        self.assertEqual((yield server.stop()), -signal.SIGTERM)
        self.assertIn(b"Buffer: SOME DATA (from 127.0.0.1:", server.output)
        self.assertIn(b"connection opened: 127.0.0.1:", server.output)
        self.assertIn(b"connection closed: 127.0.0.1:", server.output)

    @inlineCallbacks
    def test_greetingAckAndMaxLine(self):
        server = startTwistd(
            self, *LOCAL, "--greeting", "你好", "--ack", "好的", "--max-line", "4"
        )
        port = yield server.listening
        peer = yield connectPeer(self, port)
        peer.send(b"1234\r\n12345\n")
        self.assertEqual(
            (yield peer.closed), "你好\n好的\n".encode() + b"ERROR line too long\n"
        )


class CollectProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_countThenExit(self):
        """
        After --count connections the port is closed, and once they are
        done the process exits 0 by itself.
        """
        server = startTwistd(self, *LOCAL, "--mode", "collect", "--count", "2")
        port = yield server.listening
        greeting = "测试成功！\n".encode()
        first = yield connectPeer(self, port)
        second = yield connectPeer(self, port)
        yield first.receive(len(greeting))
        yield second.receive(len(greeting))
        yield self.assertFailure(connectPeer(self, port), ConnectionRefusedError)
        first.send(b"hello \r\n")
        second.send("你好".encode())
        second.transport.loseConnection()
        self.assertEqual((yield first.closed), greeting)
        self.assertEqual((yield second.closed), greeting)
        self.assertEqual((yield server.ended), 0)
        self.assertIn("收到的信息:hello  (from 127.0.0.1:".encode(), server.output)
        self.assertIn("收到的信息:你好 (from 127.0.0.1:".encode(), server.output)


class RelayProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_relayBetweenClients(self):
        server = startTwistd(self, *LOCAL, "--mode", "relay", "--greeting", "hi")
        port = yield server.listening
        a = yield connectPeer(self, port)
        b = yield connectPeer(self, port)
        c = yield connectPeer(self, port)
        for peer in (a, b, c):
            yield peer.receive(3)
        payload = "你好".encode("gbk") + b"\r\n" + bytes(range(256)).replace(b"\n", b"") + b"\n"
        a.send(payload)
        self.assertEqual((yield b.receive(3 + len(payload))), b"hi\n" + payload)
        self.assertEqual((yield c.receive(3 + len(payload))), b"hi\n" + payload)
        b.send(b"from b\n")
        self.assertEqual((yield a.receive(10)), b"hi\nfrom b\n")
        c.transport.abortConnection()
        yield c.closed
        a.send(b"after reset\nbye")
        a.transport.loseConnection()
        expected = b"hi\n" + payload + b"after reset\nbye\n"
        self.assertEqual((yield b.receive(len(expected))), expected)
        self.assertEqual((yield a.closed), b"hi\nfrom b\n")
        self.assertEqual((yield server.stop()), -signal.SIGTERM)


class StartupFailureTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_portInUse(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = startTwistd(self, "--interface", "127.0.0.1", "--port", str(port))
        self.assertEqual((yield server.ended), 1)
        self.assertEqual(
            server.errors.decode(),
            f"sockservice: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "Address already in use\n",
        )
        self.assertNotIn(b"Traceback", server.output)

    @inlineCallbacks
    def test_badOption(self):
        server = startTwistd(self, "--mode", "chat")
        self.assertEqual((yield server.ended), 2)
        self.assertEqual(
            server.errors.decode(),
            "twistd sockservice: unknown --mode 'chat': choose greet, collect or relay"
            " (see twistd sockservice --help)\n",
        )
        self.assertEqual(server.output, b"")
