"""
The client protocols on a string transport: exact bytes out, exact text
shown, and how each exchange ends.
"""

from OpenSSL import SSL
from twisted.internet.error import ConnectionAborted, ConnectionLost
from twisted.internet.interfaces import INegotiated
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from sockservice.client.protocols import (
    ChatClient,
    ChatInput,
    CollectClient,
    ExchangeFailed,
    GreetClient,
    SendClient,
    displayText,
)
from tests.support import disconnect, peerAddress, received

ACK = b"Information Received\n"


class ClientTestCase(SynchronousTestCase):
    """
    Connects a client to a string transport, with what it shows in
    C{self.shown} and its timeouts on C{self.clock}.
    """

    def connect(self, clientType, *args):
        self.shown = []
        self.clock = Clock()
        client = clientType(self.shown.append, self.clock, 10, *args)
        transport = StringTransport(peerAddress=peerAddress())
        client.makeConnection(transport)
        return client, transport

    def assertFailed(self, client, problem):
        self.assertEqual(str(self.failureResultOf(client.done, ExchangeFailed).value), problem)


class DisplayTextTests(SynchronousTestCase):
    def test_lineEndingsReplacedByLF(self):
        self.assertEqual(displayText(b"a\r\n"), b"a\n")
        self.assertEqual(displayText(b"a"), b"a\n")

    def test_utf8Kept(self):
        self.assertEqual(displayText("测试成功！\n".encode()), "测试成功！\n".encode())

    def test_undecodableEscaped(self):
        self.assertEqual(
            displayText("你好".encode("gbk") + b" \xff\n"), b"\\xc4\\xe3\\xba\\xc3 \\xff\n"
        )


class GreetClientTests(ClientTestCase):
    def test_seedExchange(self):
        """
        The greeting is shown and answered with C{SOME DATA\\n}; the ack is
        shown and the client closes.
        """
        client, transport = self.connect(GreetClient)
        self.assertEqual(received(transport), b"")
        client.dataReceived(b"connect\n")
        self.assertEqual(received(transport), b"SOME DATA\n")
        self.assertEqual(self.shown, [b"connect\n"])
        self.assertFalse(transport.disconnecting)
        client.dataReceived(ACK)
        self.assertEqual(self.shown, [b"connect\n", ACK])
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(client.done)
        disconnect(client)
        self.assertIsNone(self.successResultOf(client.done))
        self.assertFalse(self.clock.getDelayedCalls())

    def test_oneMessageAtATime(self):
        client, transport = self.connect(GreetClient, [b"one", "二".encode(), b""])
        client.dataReceived(b"connect\r\nInformation ")
        self.assertEqual(received(transport), b"one\n")
        client.dataReceived(b"Received\r\n")
        self.assertEqual(received(transport), "二\n".encode())
        client.dataReceived(ACK)
        self.assertEqual(received(transport), b"\n")
        self.assertFalse(transport.disconnecting)
        client.dataReceived(ACK)
        self.assertEqual(received(transport), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.shown, [b"connect\n"] + [ACK] * 3)

    def test_undecodableShownEscaped(self):
        client, transport = self.connect(GreetClient)
        client.dataReceived(b"caf\xc3\xa9 \xff\n")
        self.assertEqual(self.shown, ["café \\xff\n".encode()])

    def test_noGreeting(self):
        client, transport = self.connect(GreetClient)
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnected)
        disconnect(client, ConnectionAborted)
        self.assertFailed(client, "no greeting within 10s")

    def test_noAck(self):
        client, transport = self.connect(GreetClient)
        self.clock.advance(9)
        client.dataReceived(b"connect\n")
        self.clock.advance(9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(transport.disconnected)
        disconnect(client, ConnectionAborted)
        self.assertFailed(client, "no ack within 10s")

    def test_closedBeforeGreeting(self):
        client, transport = self.connect(GreetClient)
        disconnect(client)
        self.assertFailed(client, "closed the connection before the greeting")
        self.assertFalse(self.clock.getDelayedCalls())

    def test_closedBeforeEveryAck(self):
        client, transport = self.connect(GreetClient, [b"a", b"b"])
        client.dataReceived(b"connect\n" + ACK)
        disconnect(client)
        self.assertFailed(client, "closed the connection after 1 of 2 acks")

    def test_messageRefused(self):
        client, transport = self.connect(GreetClient)
        client.dataReceived(b"connect\nERROR line too long\n")
        self.assertTrue(transport.disconnected)
        disconnect(client)
        self.assertFailed(client, "refused a message: ERROR line too long")
        self.assertEqual(self.shown, [b"connect\n"])

    def test_interrupted(self):
        """
        Stopping the program closes the connection; the exchange ends as
        interrupted, not as the server closing.
        """
        client, transport = self.connect(GreetClient)
        client.interrupt()
        disconnect(client, ConnectionLost)
        self.assertFailed(client, "interrupted")

    def test_interruptedAfterTheEnd(self):
        client, transport = self.connect(GreetClient)
        client.dataReceived(b"connect\n" + ACK)
        disconnect(client)
        client.interrupt()
        self.successResultOf(client.done)

    def test_lineTooLong(self):
        client, transport = self.connect(GreetClient)
        client.dataReceived(b"x" * (client.MAX_LENGTH + 1))
        self.assertTrue(transport.disconnected)
        disconnect(client, ConnectionAborted)
        self.assertFailed(client, "sent a line longer than 1048576 bytes")


class SendClientTests(ClientTestCase):
    def test_sendAndClose(self):
        client, transport = self.connect(SendClient, [b"Hello World", "你好".encode()])
        self.assertEqual(self.shown, [b"CONNECTED\n"])
        self.assertEqual(received(transport), "Hello World\n你好\n".encode())
        self.assertTrue(transport.disconnecting)
        disconnect(client)
        self.assertIsNone(self.successResultOf(client.done))
        self.assertFalse(self.clock.getDelayedCalls())

    def test_repliesIgnored(self):
        client, transport = self.connect(SendClient, [b"x"])
        client.dataReceived("测试成功！\n".encode())
        self.assertEqual(self.shown, [b"CONNECTED\n"])

    def test_lostBeforeFlushed(self):
        client, transport = self.connect(SendClient, [b"x"])
        disconnect(client, ConnectionLost)
        self.assertFailed(
            client, "connection lost (Connection to the other side was lost in a non-clean fashion.)"
        )

    def test_flushTimeout(self):
        client, transport = self.connect(SendClient, [b"x"])
        self.clock.advance(10)
        self.assertTrue(transport.disconnected)
        disconnect(client, ConnectionAborted)
        self.assertFailed(client, "no clean close within 10s")


class CollectClientTests(ClientTestCase):
    def test_seedExchange(self):
        """
        The seed 004 client sends C{hello\\r\\n} and shows all it gets until
        the server closes.
        """
        client, transport = self.connect(CollectClient)
        self.assertEqual(received(transport), b"hello\r\n")
        client.dataReceived("测试".encode())
        client.dataReceived("成功！\n".encode())
        self.assertEqual(self.shown, ["测试成功！\n".encode()])
        disconnect(client)
        self.assertIsNone(self.successResultOf(client.done))
        self.assertFalse(transport.disconnecting)

    def test_messageAndPartialLastLine(self):
        client, transport = self.connect(CollectClient, "你好 x".encode())
        self.assertEqual(received(transport), "你好 x\r\n".encode())
        client.dataReceived(b"one\r\ntwo")
        disconnect(client)
        self.assertEqual(self.shown, [b"one\n", b"two\n"])
        self.successResultOf(client.done)

    def test_nothingSent(self):
        client, transport = self.connect(CollectClient)
        disconnect(client)
        self.assertEqual(self.shown, [])
        self.successResultOf(client.done)

    def test_silence(self):
        client, transport = self.connect(CollectClient)
        client.dataReceived(b"greeting\npart")
        self.clock.advance(10)
        self.assertTrue(transport.disconnected)
        disconnect(client, ConnectionAborted)
        self.assertFailed(client, "no reply within 10s")
        self.assertEqual(self.shown, [b"greeting\n"])

    def test_reset(self):
        client, transport = self.connect(CollectClient)
        disconnect(client, ConnectionLost)
        self.assertFailed(
            client, "connection lost (Connection to the other side was lost in a non-clean fashion.)"
        )


class ChatTests(ClientTestCase):
    def setUp(self):
        self.client, self.transport = self.connect(ChatClient)
        self.terminal = ChatInput(self.client)
        self.terminal.makeConnection(StringTransport())

    def test_inputGoesOutByteForByte(self):
        self.terminal.dataReceived(b"hello from A\n")
        self.terminal.dataReceived("你好".encode("gbk") + b"\r\nhalf")
        self.assertEqual(
            received(self.transport), b"hello from A\n" + "你好".encode("gbk") + b"\r\nhalf"
        )

    def test_relayedLinesShown(self):
        self.client.dataReceived(b"hi A\r\nfrom ")
        self.client.dataReceived(b"B\n\xff\n")
        self.assertEqual(self.shown, [b"hi A\n", b"from B\n", b"\\xff\n"])
        self.assertEqual(received(self.transport), b"")

    def test_endOfInputLeaves(self):
        self.terminal.readConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        disconnect(self.client)
        self.assertIsNone(self.successResultOf(self.client.done))
        self.assertNoResult(self.terminal.closed)
        disconnect(self.terminal)
        self.assertIsNone(self.successResultOf(self.terminal.closed))

    def test_outputGoneLeaves(self):
        """
        With nowhere to show what arrives (a closed pipe), the chat leaves and
        does not wait for its terminal side to flush.
        """
        self.terminal.writeConnectionLost()
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNone(self.successResultOf(self.terminal.closed))
        disconnect(self.terminal)
        disconnect(self.client)
        self.successResultOf(self.client.done)

    def test_serverClosing(self):
        disconnect(self.client)
        self.assertFailed(self.client, "closed the connection")

    def test_noTimeoutWhileChatting(self):
        self.assertFalse(self.clock.getDelayedCalls())


class ChatOverTLSTests(ClientTestCase):
    """
    Leaving waits for the TLS handshake, which Twisted would otherwise
    abort.
    """

    def setUp(self):
        self.shown = []
        self.clock = Clock()
        self.client = ChatClient(self.shown.append, self.clock, 10)
        self.transport = StringTransport(peerAddress=peerAddress())
        directlyProvides(self.transport, INegotiated)
        self.client.makeConnection(self.transport)

    def test_leavesOnceHandshakeDone(self):
        self.client.leave()
        self.assertFalse(self.transport.disconnecting)
        self.client.handshakeCompleted()
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        disconnect(self.client)
        self.assertIsNone(self.successResultOf(self.client.done))

    def test_leavesAtOnceAfterHandshake(self):
        self.client.handshakeCompleted()
        self.client.leave()
        self.assertTrue(self.transport.disconnecting)

    def test_handshakeNeverDone(self):
        self.client.leave()
        self.clock.advance(9)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnecting)
        disconnect(self.client)
        self.assertFailed(self.client, "no TLS handshake within 10s")


class TLSFailureTests(ClientTestCase):
    def test_tlsProblemNamed(self):
        """
        A connection ended by TLS says what failed, not that the server
        closed it.
        """
        client, transport = self.connect(GreetClient)
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        client.connectionLost(Failure(error))
        self.assertFailed(client, "TLS failed: certificate verify failed")


class FirstLineTests(ClientTestCase):
    def test_sentBeforeAnything(self):
        self.shown = []
        client = SendClient(self.shown.append, Clock(), 10, [b"hello"])
        client.firstLine = b"token"
        transport = StringTransport()
        client.makeConnection(transport)
        self.assertEqual(transport.value(), b"token\nhello\n")
