"""
The real C{sockservice} command against the real C{twistd -n sockservice},
over loopback.
"""

import signal

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.realserver import (
    connectPeer,
    freePort,
    runClient,
    startTwistd,
    unansweredPort,
)

LOCAL = ("--interface", "127.0.0.1", "--port", "0")
GREETING = "测试成功！\n".encode()


class CommandTestCase(TestCase):
    timeout = 30

    @inlineCallbacks
    def server(self, *args):
        """
        Start a server on loopback; fire with its process and port.
        """
        server = startTwistd(self, *LOCAL, *args)
        port = yield server.listening
        return server, port

    @inlineCallbacks
    def assertRuns(self, args, output, errors=b"", status=0):
        """
        Run C{sockservice ARGS}; check what it printed and its exit status.
        """
        client = runClient(self, *args)
        self.assertEqual((yield client.ended), status, client.errors)
        self.assertEqual((client.output, client.errors), (output, errors))


class CommandTests(CommandTestCase):
    @inlineCallbacks
    def test_greet(self):
        server, port = yield self.server()
        yield self.assertRuns(
            ["greet", "-p", str(port)], b"connect\nInformation Received\n"
        )
        yield self.assertRuns(
            ["greet", "127.0.0.1", str(port), "nc-style"], b"connect\nInformation Received\n"
        )
        yield self.assertRuns(
            ["greet", "--port", str(port), "one", "你好", ""],
            b"connect\n" + b"Information Received\n" * 3,
        )
        yield server.stop()
        self.assertIn("Buffer: 你好 (from 127.0.0.1:".encode(), server.output)
        self.assertIn(b"Buffer: nc-style (from 127.0.0.1:", server.output)
        self.assertNotIn(b"Buffer: 127.0.0.1", server.output)

    @inlineCallbacks
    def test_sendToSeed002Server(self):
        server, port = yield self.server("--mode", "collect", "--count", "1", "--greeting", "")
        yield self.assertRuns(["send", "-p", str(port), "Hello World"], b"CONNECTED\n")
        self.assertEqual((yield server.ended), 0)
        self.assertIn("收到的信息:Hello World (from 127.0.0.1:".encode(), server.output)

    @inlineCallbacks
    def test_sendFlushesEverything(self):
        """
        Large messages all arrive before the command closes.
        """
        server, port = yield self.server("--mode", "relay")
        peer = yield connectPeer(self, port)
        messages = [c * 60000 for c in "abc"]
        yield self.assertRuns(["send", "-p", str(port), *messages], b"CONNECTED\n")
        expected = "".join(m + "\n" for m in messages).encode()
        self.assertEqual((yield peer.receive(len(expected))), expected)

    @inlineCallbacks
    def test_collect(self):
        server, port = yield self.server("--mode", "collect", "--count", "2")
        yield self.assertRuns(["collect", "-p", str(port)], GREETING)
        yield self.assertRuns(["collect", "-p", str(port), "你好 world"], GREETING)
        self.assertEqual((yield server.ended), 0)
        self.assertIn("收到的信息:hello (from 127.0.0.1:".encode(), server.output)
        self.assertIn("收到的信息:你好 world (from 127.0.0.1:".encode(), server.output)

    @inlineCallbacks
    def test_help(self):
        for flag in ["-h", "--help"]:
            client = runClient(self, "chat", flag)
            self.assertEqual((yield client.ended), 0)
            self.assertTrue(client.output.startswith(b"Usage: sockservice chat [options] [HOST [PORT]]\n"))

    @inlineCallbacks
    def test_hostWithoutPort(self):
        """
        A host where a message could be is a usage error, never sent.
        """
        yield self.assertRuns(
            ["greet", "127.0.0.1"],
            b"",
            b"sockservice greet: '127.0.0.1' is a host: give HOST PORT to connect to it,"
            b" or put messages after -- (see sockservice greet --help)\n",
            2,
        )


class FailureTests(CommandTestCase):
    """
    Each failure is one line on stderr naming the server, and a non-zero
    status.
    """

    @inlineCallbacks
    def test_refused(self):
        port = freePort()
        yield self.assertRuns(
            ["greet", "-p", str(port)],
            b"",
            f"sockservice greet: 127.0.0.1:{port}: connection refused\n".encode(),
            1,
        )

    @inlineCallbacks
    def test_connectTimeout(self):
        port = unansweredPort(self)
        yield self.assertRuns(
            ["collect", "-p", str(port), "--timeout", "1"],
            b"",
            f"sockservice collect: 127.0.0.1:{port}: no connection within 1s\n".encode(),
            1,
        )

    @inlineCallbacks
    def test_replyTimeout(self):
        """
        A relay server sends no greeting, so the greet command gives up.
        """
        server, port = yield self.server("--mode", "relay")
        yield self.assertRuns(
            ["greet", "-p", str(port), "-t", "0.5"],
            b"",
            f"sockservice greet: 127.0.0.1:{port}: no greeting within 0.5s\n".encode(),
            1,
        )

    @inlineCallbacks
    def test_serverClosingEarly(self):
        """
        A collect server greets, takes the first message and closes without
        an ack.
        """
        server, port = yield self.server("--mode", "collect", "--count", "1")
        yield self.assertRuns(
            ["greet", "-p", str(port), "one", "two"],
            GREETING,
            f"sockservice greet: 127.0.0.1:{port}: closed the connection after 0 of 2 acks\n".encode(),
            1,
        )

    @inlineCallbacks
    def test_badOption(self):
        yield self.assertRuns(
            ["send", "--port", "nope", "x"],
            b"",
            b"sockservice send: --port must be a whole number from 1 to 65535, not 'nope'"
            b" (see sockservice send --help)\n",
            2,
        )


class ChatTests(CommandTestCase):
    @inlineCallbacks
    def connectedChat(self, port, witness, *server):
        """
        Run C{sockservice chat SERVER} (by default C{-p PORT}); fire with it
        once C{witness}, a peer on the same relay server, has seen a line
        from it.
        """
        chat = runClient(self, "chat", *(server or ["-p", str(port)]))
        before = len(witness.data)
        chat.transport.write(b"here\n")
        yield witness.receive(before + 5)
        return chat

    @inlineCallbacks
    def test_relayBetweenTwoChats(self):
        """
        Two C{sockservice chat} commands on pipes talk through a relay
        server; the end of input ends one cleanly, the server stopping ends
        the other.
        """
        server, port = yield self.server("--mode", "relay")
        witness = yield connectPeer(self, port)
        a = yield self.connectedChat(port, witness)
        b = yield self.connectedChat(port, witness, "127.0.0.1", str(port))
        yield a.logged(b"here\n")
        a.transport.write(b"hello from A\n")
        yield b.logged(b"hello from A\n")
        b.transport.write("你好".encode("gbk") + "\r\ncafé\n".encode())
        yield a.logged("café\n".encode())
        a.transport.write(b"bye")
        a.transport.closeStdin()
        self.assertEqual((yield a.ended), 0, a.errors)
        self.assertEqual(a.output, b"here\n\\xc4\\xe3\\xba\\xc3\ncaf\xc3\xa9\n")
        self.assertEqual(a.errors, b"")
        yield b.logged(b"bye\n")
        yield server.stop()
        self.assertEqual((yield b.ended), 1)
        self.assertEqual(b.output, b"hello from A\nbye\n")
        self.assertEqual(
            b.errors, f"sockservice chat: 127.0.0.1:{port}: closed the connection\n".encode()
        )
        self.assertEqual(
            witness.data,
            b"here\nhere\nhello from A\n" + "你好".encode("gbk") + "\r\ncafé\n".encode() + b"bye\n",
        )

    @inlineCallbacks
    def test_outputClosed(self):
        """
        A chat whose output pipe is closed (C{sockservice chat | head -1})
        leaves as soon as it has a line it cannot show.
        """
        server, port = yield self.server("--mode", "relay")
        witness = yield connectPeer(self, port)
        chat = yield self.connectedChat(port, witness)
        chat.transport.closeStdout()
        witness.send(b"anyone?\n")
        self.assertEqual((yield chat.ended), 0, chat.errors)

    @inlineCallbacks
    def test_interrupted(self):
        """
        Ctrl-C (SIGINT) ends a chat with one line and status 1.
        """
        server, port = yield self.server("--mode", "relay")
        witness = yield connectPeer(self, port)
        chat = yield self.connectedChat(port, witness)
        chat.transport.signalProcess(signal.SIGINT)
        self.assertEqual((yield chat.ended), 1)
        self.assertEqual(
            chat.errors, f"sockservice chat: 127.0.0.1:{port}: interrupted\n".encode()
        )
