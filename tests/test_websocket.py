"""
The WebSocket listener on string transports: Twisted's own HTTP channel and
WebSocket code serve, with aiohttp's frame reader and writer; wsproto's
client side frames and reads, and the mode factories are the ones TCP uses.
"""

import gc
import io
import subprocess
import sys
import weakref

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, RejectConnection, RejectData,
    Request, TextMessage,
)

from sockservice.client.cli import Options as ClientCommand
from sockservice.client.websocket import webSocketURL
from sockservice.hubs.local import LocalHub
from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.modes.relay import RelayFactory
from sockservice.service.draining import DrainingService
from sockservice.service.listening import ListeningService
from sockservice.tap import Options, makeService
from sockservice.wire.auth import TokenGate
from sockservice.wire.limits import Limits
from sockservice.web.websocket import ChatSite, LineSockets, WebSocketService, parseOrigin
from tests.support import CapturedLog, connect, received

HOST = IPv4Address("TCP", "127.0.0.1", 8080)


class Browser:
    """
    A WebSocket client (wsproto's client side) on a string transport,
    connected to a L{ChatSite}'s HTTP channel.
    """

    def __init__(self, site, port=5000, origin=None, target="/ws", host="127.0.0.1:8080"):
        self.transport = StringTransport(
            peerAddress=IPv4Address("TCP", "127.0.0.1", port), hostAddress=HOST
        )
        self.channel = site.buildProtocol(self.transport.getPeer())
        self.channel.makeConnection(self.transport)
        self.ws = WSConnection(ConnectionType.CLIENT)
        headers = [] if origin is None else [("Origin", origin)]
        self.events = []
        self._messages = []
        self.channel.dataReceived(
            self.ws.send(Request(host=host, target=target, extra_headers=headers))
        )
        self._receive()

    def _receive(self):
        data = received(self.transport)
        if not data:
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            self.events.append(event)
            if isinstance(event, (TextMessage, BytesMessage)):
                self._messages.append(event.data)

    def read(self):
        """
        Return the messages (str or bytes) the server sent since the last
        read; every event is kept in C{events}.
        """
        self._receive()
        messages, self._messages = self._messages, []
        return messages

    def send(self, message, final=True):
        kind = TextMessage if isinstance(message, str) else BytesMessage
        self.channel.dataReceived(self.ws.send(kind(message, message_finished=final)))

    def closeCode(self):
        self._receive()
        closes = [e.code for e in self.events if isinstance(e, CloseConnection)]
        return closes[-1] if closes and self.transport.disconnecting else None

    def disconnect(self):
        self.channel.connectionLost(Failure(ConnectionDone()))


class WebSocketTestCase(SynchronousTestCase):
    def serve(self, factory, origins=()):
        self.clock = Clock()
        self.sockets = LineSockets(factory, self.clock)
        self.sockets.startService()
        self.addCleanup(lambda: self.sockets.running and self.sockets.stopService())
        self.site = ChatSite(self.clock, self.sockets, origins)
        return self.site

    def browser(self, **kwargs):
        browser = Browser(self.site, **kwargs)
        self.assertIsInstance(browser.events[0], AcceptConnection)
        return browser


class GreetTests(WebSocketTestCase):
    def setUp(self):
        self.captured = CapturedLog()
        self.factory = GreetFactory(self.captured.log)
        self.serve(self.factory)

    def test_greetingAndAcks(self):
        """
        The greeting is a message; each line of a message (text or binary)
        gets the ack, each ack one message without its line ending.
        """
        browser = self.browser()
        self.assertEqual(browser.read(), ["connect"])
        browser.send("one\r\ntwo")
        browser.send(b"\xff\xfe")
        self.assertEqual(browser.read(), ["Information Received"] * 3)
        self.assertEqual(self.captured.messages()[-3:], [
            "Buffer: one (from 127.0.0.1:5000)",
            "Buffer: two (from 127.0.0.1:5000)",
            "Buffer: \ufffd\ufffd (from 127.0.0.1:5000)",
        ])

    def test_sharedFactory(self):
        """
        A browser is one of the factory's connections, with its peer address,
        until its socket closes.
        """
        browser = self.browser()
        (proto,) = self.factory.protocols
        self.assertEqual(proto.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", 5000))
        self.assertEqual(proto.transport.getHost(), HOST)
        browser.disconnect()
        self.assertEqual(self.factory.protocols, set())
        self.assertEqual(self.sockets.bridges, set())

    def test_backPressure(self):
        """
        While the socket's write buffer is full, greet stops reading from it.
        """
        browser = self.browser()
        browser.send("x")
        self.assertEqual(browser.transport.producerState, "producing")
        browser.transport.producer.pauseProducing()
        self.assertEqual(browser.transport.producerState, "paused")
        browser.transport.producer.resumeProducing()
        self.assertEqual(browser.transport.producerState, "producing")

    def test_keepAlive(self):
        """
        Every open socket is pinged every 30 seconds, with one timer.
        """
        first, second = self.browser(), self.browser(port=5001)
        self.clock.advance(29)
        self.assertEqual([e for e in first.events if isinstance(e, Ping)], [])
        self.clock.advance(1)
        first.read(), second.read()
        self.assertEqual([type(e) for e in first.events[-1:] + second.events[-1:]], [Ping, Ping])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_drain(self):
        """
        A graceful stop closes browsers with 1001, going away.
        """
        browser = self.browser()
        draining = DrainingService(self.factory, self.clock, 10)
        draining.startService()
        stopping = draining.stopService()
        browser.read()
        self.assertEqual(browser.closeCode(), 1001)
        browser.disconnect()
        self.successResultOf(stopping)

    def test_page(self):
        """
        C{GET /} is the chat page, from the package, for this mode.
        """
        browser = Browser(self.site, target="/")
        response = browser.events[0]
        self.assertIsInstance(response, RejectConnection)
        self.assertEqual(response.status_code, 200)
        self.assertIn((b"content-type", b"text/html; charset=utf-8"), response.headers)
        page = b"".join(e.data for e in browser.events if isinstance(e, RejectData))
        self.assertIn(b'<body data-mode="greet" data-token="none">', page)
        for external in (b"://", b"src=", b"href=", b"@import", b"url("):
            self.assertNotIn(external, page)


class OriginTests(WebSocketTestCase):
    def setUp(self):
        self.factory = GreetFactory(CapturedLog().log)

    def status(self, origin, host="127.0.0.1:8080"):
        event = Browser(self.site, origin=origin, host=host).events[0]
        return 101 if isinstance(event, AcceptConnection) else event.status_code

    def test_ownOriginOnly(self):
        """
        By default only pages served by this host (any scheme, as behind a
        TLS proxy) may connect; clients sending no Origin are not browsers.
        """
        self.serve(self.factory)
        self.assertEqual(self.status("http://127.0.0.1:8080"), 101)
        self.assertEqual(self.status("https://Chat.Example:8080", host="chat.example:8080"), 101)
        self.assertEqual(self.status(None), 101)
        self.assertEqual(self.status("http://127.0.0.1:8081"), 403)
        self.assertEqual(self.status("http://evil.example"), 403)
        self.assertEqual(self.status("null"), 403)
        self.assertEqual(len(self.factory.protocols), 3)

    def test_listedOrigins(self):
        self.serve(self.factory, origins=["https://chat.example.com"])
        self.assertEqual(self.status("https://chat.example.com"), 101)
        self.assertEqual(self.status("http://chat.example.com"), 403)
        self.assertEqual(self.status("http://127.0.0.1:8080"), 403)

    def test_webSocketURL(self):
        """
        C{sockservice chat --websocket} takes ws:// and wss:// URLs, C{/ws}
        when no path is given.
        """
        self.assertEqual(webSocketURL("ws://127.0.0.1:8080"), "ws://127.0.0.1:8080/ws")
        self.assertEqual(webSocketURL("wss://chat.example/chat/ws"), "wss://chat.example/chat/ws")
        for bad in ["http://x", "ws://", "ws://x:99999", "127.0.0.1:8080"]:
            self.assertRaises(ValueError, webSocketURL, bad)

    def test_chatOptions(self):
        """
        C{chat --websocket URL} names the server: HOST PORT beside it is a
        usage error.
        """
        options = ClientCommand()
        options.parseOptions(["chat", "--websocket", "ws://127.0.0.1:8080"])
        self.assertEqual(options.subOptions["websocket"], "ws://127.0.0.1:8080/ws")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as raised:
            ClientCommand().parseOptions(["chat", "--websocket", "ws://x", "127.0.0.1", "80"])
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(
            stderr.getvalue(),
            "sockservice chat: --websocket URL names the server: give it or HOST PORT, "
            "not both (see sockservice chat --help)\n",
        )

    def test_parseOrigin(self):
        self.assertEqual(parseOrigin("https://Chat.Example.com:8443"), "https://chat.example.com:8443")
        for bad in ["chat.example.com", "https://chat.example.com/", "ftp://x", "https://x:99999",
                    "https://u@x"]:
            self.assertRaises(ValueError, parseOrigin, bad)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(["--port", "0", *args])
        return options

    def assertUsageError(self, args, message):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            self.parse(*args)
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(
            stderr.getvalue(), f"twistd sockservice: {message} (see twistd sockservice --help)\n"
        )

    def test_repeatable(self):
        options = self.parse(
            "--websocket", "tcp:0", "--websocket", "unix:/tmp/x.sock",
            "--websocket-origin", "https://A.example", "--websocket-origin", "http://b.example:81",
        )
        self.assertEqual(options.config.websocket, ("tcp:0", "unix:/tmp/x.sock"))
        self.assertEqual(options.config.websocketOrigin,
                         ("https://a.example", "http://b.example:81"))

    def test_errors(self):
        self.assertUsageError(
            ["--websocket", "nonsense:1"],
            "--websocket 'nonsense:1' is not a usable endpoint: Unknown endpoint type: 'nonsense'",
        )
        self.assertUsageError(
            ["--websocket", "tcp:0", "--websocket-origin", "x.example"],
            "--websocket-origin 'x.example' is not an origin like https://chat.example.com",
        )
        self.assertUsageError(
            ["--websocket-origin", "https://x.example"],
            "--websocket-origin applies only with --websocket",
        )


class ImportTests(SynchronousTestCase):
    def test_aiohttpOnlyWithWebSocket(self):
        """
        The server and the chat client import aiohttp (some 8 MB) only when
        a WebSocket listener is made.
        """
        code = (
            "import sys, sockservice.tap, sockservice.client.cli, sockservice.web.websocket\n"
            "print('aiohttp' in sys.modules)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        self.assertEqual((done.stdout, done.stderr), (b"False\n", b""))


class StopOrderTests(SynchronousTestCase):
    def test_drainedLikeTCP(self):
        """
        makeService's stop closes the WebSocket listener with the TCP one,
        before the drain; the drain then closes browsers with 1001 "going
        away", and the stop waits for them to go.
        """
        options = Options()
        options.parseOptions(["--mode", "relay", "--port", "0", "--websocket", "tcp:0"])
        top = makeService(options, reactor=MemoryReactorClock(), environ={})
        top.privilegedStartService()
        top.startService()
        [tcpListener] = [each for each in top if isinstance(each, ListeningService)]
        [[webListener]] = [each.listeners for each in top if isinstance(each, WebSocketService)]
        events = []
        for name, listener in [("tcp", tcpListener), ("websocket", webListener)]:
            stop = listener.stopService
            self.patch(listener, "stopService",
                       lambda name=name, stop=stop: events.append(name) or stop())
        browser = Browser(webListener.factory)
        self.assertEqual(browser.read(), [])

        stopped = top.stopService()
        self.assertEqual(events, ["websocket", "tcp"])
        self.assertEqual(browser.closeCode(), 1001)
        self.assertNoResult(stopped)
        browser.disconnect()
        self.successResultOf(stopped)


class LimitTests(WebSocketTestCase):
    def setUp(self):
        self.captured = CapturedLog()

    def greet(self, **limits):
        self.factory = GreetFactory(
            self.captured.log, maxLine=10, limits=Limits(self.captured.clock, **limits)
        )
        self.serve(self.factory)

    def test_messageTooLong(self):
        """
        A message of more than --max-line bytes (its LFs included) gets the
        error and close code 1009; one of --max-line bytes is a line.
        """
        self.greet()
        browser = self.browser()
        browser.send("0123456789")
        browser.send("0123\n56789")
        self.assertEqual(browser.read(), ["connect"] + ["Information Received"] * 3)
        self.assertIsNone(browser.closeCode())
        browser.send("0123\n567890")
        self.assertEqual(browser.read(), ["ERROR line too long"])
        self.assertEqual(browser.closeCode(), 1009)
        self.assertIn("message too long from 127.0.0.1:5000 (over 10 bytes): closing",
                      self.captured.messages())

    def test_partialMessageTooLong(self):
        """
        Refused as soon as the unfinished message passes --max-line, not
        when (if ever) it ends; nothing more is read.
        """
        self.greet()
        browser = self.browser()
        browser.read()
        browser.send(b"01234", final=False)
        self.assertEqual(browser.read(), [])
        browser.send(b"567890", final=False)
        self.assertEqual(browser.read(), ["ERROR line too long"])
        self.assertEqual(browser.closeCode(), 1009)
        browser.channel.dataReceived(b"\x80\x01\n")
        self.assertEqual(browser.read(), [])

    def test_idleTimeout(self):
        """
        Idle means neither a line nor an answered ping: a browser that
        answers the keep-alive pings stays, then the error and code 1000.
        """
        self.greet(idleTimeout=45)
        self.sockets.stopService()
        self.sockets = LineSockets(self.factory, self.captured.clock)
        self.sockets.startService()
        self.site = ChatSite(self.captured.clock, self.sockets)
        browser = self.browser()
        browser.read()
        self.captured.clock.advance(30)
        browser.read()
        self.assertIsInstance(browser.events[-1], Ping)
        browser.channel.dataReceived(browser.ws.send(browser.events[-1].response()))
        self.captured.clock.advance(44)
        self.assertIsNone(browser.closeCode())
        self.captured.clock.advance(1)
        self.assertEqual(browser.read(), ["ERROR idle timeout"])
        self.assertEqual(browser.closeCode(), 1000)

    def test_serverFull(self):
        self.greet(maxConnections=1)
        self.browser()
        refused = self.browser(port=5001)
        self.assertEqual(refused.read(), ["ERROR server full"])
        self.assertEqual(refused.closeCode(), 1013)

    def test_stuckPeerAborted(self):
        """
        A refused browser that does not take its close is aborted after the
        close grace, as TCP peers are.
        """
        self.greet(maxConnections=1)
        self.browser()
        refused = self.browser(port=5001)
        self.captured.clock.advance(5)
        self.assertTrue(refused.transport.disconnecting)
        self.assertEqual(self.captured.clock.getDelayedCalls(), [])


class RelayTests(WebSocketTestCase):
    def setUp(self):
        self.captured = CapturedLog()

    def relay(self, gate=None, **limits):
        self.factory = RelayFactory(
            self.captured.log, LocalHub(), gate=gate,
            limits=Limits(self.captured.clock, **limits),
        )
        self.serve(self.factory)

    def test_oneHubWithTCP(self):
        """
        Browser lines reach TCP clients byte for byte with LF, TCP lines
        reach the browser without their line ending; no echo.
        """
        self.relay()
        browser = self.browser()
        tcp, tcpTransport = connect(self.factory, 6000)
        other = self.browser(port=5001)
        browser.send("héllo\nworld")
        browser.send(b"\xff\r")
        self.assertEqual(received(tcpTransport), "héllo\nworld\n".encode() + b"\xff\r\n")
        self.assertEqual(other.read(), ["héllo", "world", b"\xff"])
        self.assertEqual(browser.read(), [])
        tcp.dataReceived(b"from tcp\r\nbin\x80\n")
        self.assertEqual(browser.read(), ["from tcp", b"bin\x80"])

    def test_oneReadOneChunk(self):
        """
        The messages of one read reach the hub as one chunk, as the lines of
        one TCP read do: one write to each member.
        """
        self.relay()
        browser = self.browser()
        writes = []
        tcp, tcpTransport = connect(self.factory, 6000)
        tcpTransport.write = writes.append
        browser.channel.dataReceived(b"".join(
            browser.ws.send(TextMessage(line)) for line in ["a", "b", "c"]
        ))
        self.assertEqual(writes, [b"a\nb\nc\n"])

    def test_linesBeforeClose(self):
        """
        Messages read together with the browser's close frame still count.
        """
        self.relay()
        browser = self.browser()
        tcp, tcpTransport = connect(self.factory, 6000)
        browser.channel.dataReceived(
            browser.ws.send(TextMessage("last")) + browser.ws.send(CloseConnection(1000))
        )
        self.assertEqual(received(tcpTransport), b"last\n")
        self.assertEqual(browser.closeCode(), 1000)
        tcp.dataReceived(b"too late\n")
        self.assertEqual(browser.read(), [])

    def test_closeReason(self):
        """
        A browser's close frame 1000 or 1001 is a clean close for the mode,
        like a FIN (relay would end a held last line); a socket closed
        without a close frame, or after another code, is one cut short.
        """
        self.relay()
        for port, code in [(5000, 1000), (5001, 1001), (5002, 4000), (5003, None)]:
            browser = self.browser(port=port)
            if code is not None:
                browser.channel.dataReceived(browser.ws.send(CloseConnection(code)))
            browser.disconnect()
        cut = "Connection to the other side was lost in a non-clean fashion: "
        self.assertEqual(
            [m for m in self.captured.messages() if m.startswith("connection closed")],
            ["connection closed: 127.0.0.1:5000 (Connection was closed cleanly.)",
             "connection closed: 127.0.0.1:5001 (Connection was closed cleanly.)",
             f"connection closed: 127.0.0.1:5002 ({cut}WebSocket close code 4000.)",
             f"connection closed: 127.0.0.1:5003 ({cut}closed without a WebSocket close frame.)"],
        )

    def test_tooSlow(self):
        """
        A browser whose socket does not drain is dropped past --max-buffer
        with the error and code 1008.
        """
        self.relay(maxBuffer=10)
        browser = self.browser()
        tcp, _ = connect(self.factory, 6000)
        browser.transport.producer.pauseProducing()
        tcp.dataReceived(b"12345\n12345\n")
        self.assertEqual(browser.read(), ["ERROR too slow"])
        self.assertEqual(browser.closeCode(), 1008)

    def test_token(self):
        """
        The first message is the token: the page's token field.
        """
        self.relay(gate=TokenGate(b"s3cret"))
        member = self.browser()
        member.send("s3cret\nhi")
        stranger = self.browser(port=5001)
        stranger.send("guess")
        self.assertEqual(stranger.read(), ["ERROR unauthorized"])
        self.assertEqual(stranger.closeCode(), 1008)
        self.assertIn(b'data-token="required"', self.page())
        self.factory.gate = None  # as a reload that drops token-file does
        self.assertIn(b'data-token="none"', self.page())

    def page(self):
        page = Browser(self.site, target="/")
        return b"".join(e.data for e in page.events if isinstance(e, RejectData))


class CollectTests(WebSocketTestCase):
    def test_countsBrowsers(self):
        """
        A browser is one of collect's connections: its message is logged,
        the socket closed with 1000, and the count goes down.
        """
        captured = CapturedLog()
        factory = CollectFactory(captured.log, count=1)
        self.serve(factory)
        browser = self.browser()
        self.assertEqual(browser.read(), ["测试成功！"])
        browser.send("hello")
        self.assertEqual(browser.closeCode(), 1000)
        self.assertIn("收到的信息:hello (from 127.0.0.1:5000)", captured.messages())
        self.assertTrue(factory.allAccepted.called)
        late = self.browser(port=5001)
        self.assertEqual(late.closeCode(), 1013)


def masked(first, payload):
    """
    A client frame (masked, with the all-zero key, so its payload reads as
    is) of first byte C{first} (FIN, RSV bits, opcode) carrying C{payload}
    of under 126 bytes.
    """
    return bytes([first, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class FrameTests(WebSocketTestCase):
    """
    The frames on the wire each way, byte for byte: read by aiohttp's frame
    reader, written by its writer.
    """

    def setUp(self):
        self.captured = CapturedLog()
        self.factory = RelayFactory(
            self.captured.log, LocalHub(), maxLine=300, limits=Limits(self.captured.clock)
        )
        self.serve(self.factory)
        self.browser = self.browser()
        self.tcp, self.tcpTransport = connect(self.factory, 6000)

    def send(self, data):
        self.browser.channel.dataReceived(data)

    def assertClosedFor(self, reason):
        self.browser.disconnect()
        self.assertIn(
            "connection closed: 127.0.0.1:5000 (Connection to the other side was lost in a "
            f"non-clean fashion: {reason}.)",
            self.captured.messages(),
        )

    def test_serverFrames(self):
        """
        Each line is one unmasked, final frame without its line ending:
        text when it is UTF-8, binary when not; 126 bytes and more take the
        16-bit length.
        """
        long = b"x" * 200
        self.tcp.dataReceived(b"abc\r\n\xff\nh\xc3\xa9\n\n" + long + b"\n")
        self.assertEqual(
            received(self.browser.transport),
            b"\x81\x03abc\x82\x01\xff\x81\x03h\xc3\xa9\x81\x00\x81\x7e\x00\xc8" + long,
        )

    def test_textChunkFrames(self):
        """
        A chunk that is all UTF-8 (framed on one path) gives the same frames
        as line by line.
        """
        self.tcp.dataReceived("é\r\nab\n".encode())
        self.assertEqual(received(self.browser.transport), b"\x81\x02\xc3\xa9\x81\x02ab")

    def test_readFrames(self):
        """
        Text, binary and fragmented messages are lines; one read of several
        is one chunk.
        """
        self.send(
            masked(0x81, "é".encode()) + masked(0x82, b"\xff")
            + masked(0x01, b"ab") + masked(0x00, b"c") + masked(0x80, b"d")
        )
        self.assertEqual(received(self.tcpTransport), "é\n".encode() + b"\xff\nabcd\n")

    def test_messageInsideFragments(self):
        """
        A new message while one in several frames is unfinished closes the
        socket with 1002; after a finished one, messages read as usual.
        """
        self.send(masked(0x01, b"a") + masked(0x89, b"") + masked(0x80, b"b") + masked(0x81, b"c"))
        self.assertEqual(received(self.tcpTransport), b"ab\nc\n")
        self.send(masked(0x02, b"d") + masked(0x81, b"e"))
        self.assertEqual(received(self.browser.transport), b"\x8a\x00\x88\x02\x03\xea")
        self.assertEqual(received(self.tcpTransport), b"")
        self.assertClosedFor(
            "WebSocket protocol error 1002: The opcode in non-fin frame is expected to be "
            "zero, got 1"
        )

    def test_pingAnswered(self):
        """
        A ping is answered with a pong carrying its payload.
        """
        self.send(masked(0x89, b"hi"))
        self.assertEqual(received(self.browser.transport), b"\x8a\x02hi")

    def test_closeWithoutCode(self):
        """
        A close frame without a code (1005, no status) is answered with
        1000, as wsproto does, and is no clean close for the mode.
        """
        self.send(masked(0x81, b"last") + masked(0x88, b""))
        self.assertEqual(received(self.tcpTransport), b"last\n")
        self.assertEqual(received(self.browser.transport), b"\x88\x02\x03\xe8")
        self.assertTrue(self.browser.transport.disconnecting)
        self.assertClosedFor("WebSocket close code 1005")

    def test_closeAnswered(self):
        """
        The peer's close frame is answered with its code; nothing read after
        it counts.
        """
        self.send(masked(0x88, b"\x0f\xa0bye") + masked(0x81, b"late"))
        self.assertEqual(received(self.browser.transport), b"\x88\x02\x0f\xa0")
        self.assertEqual(received(self.tcpTransport), b"")
        self.assertClosedFor("WebSocket close code 4000")

    def test_invalidText(self):
        """
        A text message that is not UTF-8 closes the socket with 1007; what
        came before it is read, nothing after.
        """
        self.send(masked(0x81, b"ok") + masked(0x81, b"\xff") + masked(0x81, b"late"))
        self.assertEqual(received(self.tcpTransport), b"ok\n")
        self.assertEqual(received(self.browser.transport), b"\x88\x02\x03\xef")
        self.assertTrue(self.browser.transport.disconnecting)
        self.send(masked(0x81, b"later"))
        self.assertEqual(received(self.tcpTransport), b"")
        self.assertClosedFor("WebSocket protocol error 1007: Invalid UTF-8 text message")

    def test_brokenFrame(self):
        """
        A frame with a reserved bit set (no extension is negotiated) closes
        the socket with 1002, protocol error.
        """
        self.send(masked(0xC1, b"x"))
        self.assertEqual(received(self.browser.transport), b"\x88\x02\x03\xea")
        self.assertClosedFor(
            "WebSocket protocol error 1002: Received frame with non-zero reserved bits"
        )

    def test_unmaskedFrame(self):
        """
        A client frame that is not masked closes the socket with 1002 (RFC
        6455, 5.1); what came before it is read, nothing after.
        """
        self.send(masked(0x81, b"ok") + b"\x81\x02hi" + masked(0x81, b"late"))
        self.assertEqual(received(self.tcpTransport), b"ok\n")
        self.assertEqual(received(self.browser.transport), b"\x88\x02\x03\xea")
        self.assertClosedFor("WebSocket protocol error 1002: Received an unmasked frame")

    def test_unmaskedFrameInPieces(self):
        """
        An unmasked frame is refused however its bytes are split over reads,
        and whatever its kind: a control frame, a frame of a message in
        several.
        """
        for frames in [
            [b"\x81\x04h", b"ijk"],
            [b"\x89\x00"],
            [masked(0x01, b"a"), b"\x80\x01b"],
        ]:
            browser = WebSocketTestCase.browser(self, port=5001)
            for frame in frames:
                browser.channel.dataReceived(frame)
            self.assertEqual(received(browser.transport), b"\x88\x02\x03\xea", frames)
        self.assertEqual(received(self.tcpTransport), b"")

    def test_readerFreed(self):
        """
        A closed socket's frame reader, which refers to its bridge, is freed
        at once, not left to the cycle collector.
        """
        bridge = next(iter(self.sockets.bridges))
        reader = weakref.ref(bridge._frames)
        gc.disable()
        self.addCleanup(gc.enable)
        self.browser.disconnect()
        self.assertIsNone(reader())

    def test_longMessageHeader(self):
        """
        A message is refused as soon as its frame header says it is longer
        than --max-line, before its payload comes.
        """
        self.send(b"\x81\xfe\x01\x2d\0\0\0\0")
        self.assertEqual(self.browser.read(), ["ERROR line too long"])
        self.assertEqual(self.browser.closeCode(), 1009)

    def test_maxLineLowered(self):
        """
        A reload's lower --max-line holds for whole messages on sockets
        opened before it.
        """
        self.factory.maxLine = 3
        self.send(masked(0x81, b"abc"))
        self.assertEqual(received(self.tcpTransport), b"abc\n")
        self.send(masked(0x81, b"abcd"))
        self.assertEqual(self.browser.read(), ["ERROR line too long"])
        self.assertEqual(self.browser.closeCode(), 1009)

    def test_partialLines(self):
        """
        A line written in pieces goes out once its LF is written.
        """
        bridge = next(iter(self.sockets.bridges))
        for piece in [b"a", b"b\nc", b"d", b"\n", b"e\nf\n"]:
            bridge.write(piece)
        self.assertEqual(
            received(self.browser.transport), b"\x81\x02ab\x81\x02cd\x81\x01e\x81\x01f"
        )
