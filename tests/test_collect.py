"""
collect mode on a string transport (seed 004): greet, one message, close,
and the connection count that ends the service.
"""

from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from sockservice.modes.collect import CollectFactory
from tests.support import CapturedLog, connect, disconnect, peerAddress, received

GREETING = "测试成功！\n".encode()


class CollectProtocolTests(SynchronousTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.factory = CollectFactory(self.captured.log)

    def test_seedExchange(self):
        """
        The seed 004 client reads the greeting, sends C{hello \\r\\n}; the
        server logs C{收到的信息:hello } and closes.
        """
        proto, transport = connect(self.factory)
        self.assertEqual(received(transport), GREETING)
        proto.dataReceived(b"hello \r\n")
        self.assertEqual(received(transport), b"")
        self.assertTrue(transport.disconnecting)
        disconnect(proto)
        self.assertEqual(
            self.captured.messages(),
            [
                "connection opened: 127.0.0.1:5000",
                "收到的信息:hello  (from 127.0.0.1:5000)",
                "connection closed: 127.0.0.1:5000 (Connection was closed cleanly.)",
            ],
        )

    def test_onlyFirstLineTaken(self):
        proto, transport = connect(self.factory)
        proto.dataReceived(b"first\nsecond\nthird")
        proto.dataReceived(b"\n")
        disconnect(proto)
        received_ = [m for m in self.captured.messages() if m.startswith("收到")]
        self.assertEqual(received_, ["收到的信息:first (from 127.0.0.1:5000)"])

    def test_messageBeforeClientClose(self):
        """
        Without an LF, what arrived before the client closed is the message
        (the seed server's C{socket_read} returned it the same way).
        """
        proto, transport = connect(self.factory)
        proto.dataReceived(b"Hello ")
        proto.dataReceived(b"World")
        self.assertFalse(transport.disconnecting)
        disconnect(proto)
        self.assertIn("收到的信息:Hello World (from 127.0.0.1:5000)", self.captured.messages())

    def test_emptyMessageOnSilentClose(self):
        proto, transport = connect(self.factory)
        disconnect(proto, ConnectionLost)
        self.assertEqual(self.captured.messages()[1], "收到的信息: (from 127.0.0.1:5000)")

    def test_bytesLoggedWithReplacement(self):
        proto, transport = connect(self.factory)
        proto.dataReceived("中文".encode("gbk") + b"\n")
        self.assertEqual(self.captured.events[1]["message"], "\ufffd\ufffd\ufffd\ufffd")

    def test_longLineRefusedAndNotLogged(self):
        factory = CollectFactory(self.captured.log, maxLine=4)
        proto, transport = connect(factory)
        received(transport)
        proto.dataReceived(b"toolong\n")
        self.assertEqual(received(transport), b"ERROR line too long\n")
        self.assertTrue(transport.disconnecting)
        disconnect(proto)
        self.assertFalse([m for m in self.captured.messages() if m.startswith("收到")])

    def test_customGreeting(self):
        factory = CollectFactory(self.captured.log, greeting=b"")
        proto, transport = connect(factory)
        self.assertEqual(transport.value(), b"")


class CollectCountTests(SynchronousTestCase):
    """
    The factory serves C{count} connections, refuses the rest, and says when
    the last one is accepted and when it has closed.
    """

    def setUp(self):
        self.factory = CollectFactory(CapturedLog().log, count=2)
        self.accepted = []
        self.finished = []
        self.factory.allAccepted.addCallback(self.accepted.append)
        self.factory.finished.addCallback(self.finished.append)

    def test_countThenRefuse(self):
        first, _ = connect(self.factory, 5001)
        self.assertEqual(self.accepted, [])
        second, _ = connect(self.factory, 5002)
        self.assertEqual(self.accepted, [None])
        self.assertIsNone(self.factory.buildProtocol(peerAddress(5003)))
        first.dataReceived(b"one\n")
        disconnect(first)
        self.assertEqual(self.finished, [])
        second.dataReceived(b"two\n")
        disconnect(second)
        self.assertEqual(self.finished, [None])

    def test_finishedWaitsForOpenConnections(self):
        """
        Connections closing before the count is reached do not finish it.
        """
        first, _ = connect(self.factory, 5001)
        disconnect(first)
        self.assertEqual(self.finished, [])
        second, _ = connect(self.factory, 5002)
        disconnect(second)
        self.assertEqual(self.finished, [None])


class CollectNeverFoldsTests(SynchronousTestCase):
    def test_everyMessageLogged(self):
        """
        300 clients at once with C{--count 300}: 300 messages logged in full,
        one event each, though the log budget folds the connection chatter.
        """
        captured = CapturedLog(budget=100)
        factory = CollectFactory(captured.log, count=300)
        clients = [connect(factory, 1000 + n)[0] for n in range(300)]
        for n, proto in enumerate(clients):
            proto.dataReceived(b"message %d\r\n" % n)
            disconnect(proto)
        captured.clock.advance(1)
        collected = [m for m in captured.messages() if m.startswith("收到的信息:")]
        self.assertEqual(
            collected,
            [f"收到的信息:message {n} (from 127.0.0.1:{1000 + n})" for n in range(300)],
        )
        self.assertEqual(
            captured.messages()[-1],
            "not logged one by one in the last 1s: closed 300, opened 200",
        )
