"""
The real C{twistd -n sockservice --websocket ...} against a WebSocket client
nobody here wrote (the C{websockets} package, run in a thread) and loopback
TCP clients.
"""

import contextlib
import os
import re
import socket
import ssl
import tempfile

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.realserver import connectPeer, runClient, startTwistd
from tests.support import makeCertificate

WEBSOCKET_LISTENING = re.compile(rb"\(WebSocket\) mode listening on 127\.0\.0\.1:(\d+)")
LOCAL_WEBSOCKET = "tcp:0:interface=127.0.0.1"


@inlineCallbacks
def startWithWebSocket(testCase, *args, websocket=LOCAL_WEBSOCKET):
    """
    Start twistd listening on a free TCP port and a free WebSocket port;
    fire with the process and both ports.
    """
    server = startTwistd(
        testCase, "--port", "0", "--interface", "127.0.0.1", "--websocket", websocket, *args
    )
    tcpPort = yield server.listening
    yield server.logged(b"(WebSocket) mode listening on 127.0.0.1:")
    webPort = int(WEBSOCKET_LISTENING.search(server.output).group(1))
    return server, tcpPort, webPort


def closeCode(client):
    """
    Read until the server closes C{client}; return the close code and the
    messages read before it.
    """
    messages = []
    try:
        while True:
            messages.append(client.recv(timeout=10))
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None, messages


def opened(testCase, url, **kwargs):
    """
    A connected client, closed when the test ends.
    """
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(connect(url, open_timeout=10, **kwargs))
        testCase.addCleanup(stack.pop_all().close)
    return client


class WebSocketProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_relayWithTCP(self):
        """
        A WebSocket client and a TCP client on one relay hub: lines byte for
        byte both ways, text and binary messages, no echo.
        """
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--mode", "relay", "--greeting", "welcome"
        )
        browser = yield deferToThread(opened, self, f"ws://127.0.0.1:{webPort}/ws")
        self.assertEqual((yield deferToThread(browser.recv, 10)), "welcome")
        peer = yield connectPeer(self, tcpPort)
        yield peer.receive(8)
        yield deferToThread(browser.send, "from the web\nsecond line")
        yield deferToThread(browser.send, b"\xffbinary\r")
        expected = b"welcome\nfrom the web\nsecond line\n\xffbinary\r\n"
        self.assertEqual((yield peer.receive(len(expected))), expected)
        peer.send(b"from tcp\r\n\x80\n")
        self.assertEqual((yield deferToThread(browser.recv, 10)), "from tcp")
        self.assertEqual((yield deferToThread(browser.recv, 10)), b"\x80")
        self.assertEqual(peer.data, expected)

    @inlineCallbacks
    def test_closeCodes(self):
        """
        --max-line, --max-connections and --idle-timeout close WebSocket
        clients with the TCP error line, then their close code.
        """
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--max-line", "8", "--max-connections", "2", "--idle-timeout", "3"
        )
        url = f"ws://127.0.0.1:{webPort}/ws"

        def exchange():
            first, second = opened(self, url), opened(self, url)
            full = closeCode(opened(self, url))
            first.send("12345678")
            first.send("123456789")
            tooLong = closeCode(first)
            idle = closeCode(second)
            return full, tooLong, idle

        full, tooLong, idle = yield deferToThread(exchange)
        self.assertEqual(full, (1013, ["ERROR server full"]))
        self.assertEqual(
            tooLong, (1009, ["connect", "Information Received", "ERROR line too long"])
        )
        self.assertEqual(idle, (1000, ["connect", "ERROR idle timeout"]))

    @inlineCallbacks
    def test_origins(self):
        """
        Pages from other origins get HTTP 403; listed origins and the page's
        own get in.
        """
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--websocket-origin", "https://chat.example.com"
        )
        url = f"ws://127.0.0.1:{webPort}/ws"
        for origin in ["http://evil.example", f"http://127.0.0.1:{webPort}"]:
            with self.assertRaises(InvalidStatus) as refused:
                yield deferToThread(opened, self, url, origin=origin)
            self.assertEqual(refused.exception.response.status_code, 403)
        allowed = yield deferToThread(opened, self, url, origin="https://chat.example.com")
        self.assertEqual((yield deferToThread(allowed.recv, 10)), "connect")

    @inlineCallbacks
    def test_unmaskedFrame(self):
        """
        A client frame that is not masked, sent on a raw socket, gets a close
        frame with 1002 (RFC 6455, 5.1), and the connection closes.
        """
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--mode", "relay", "--greeting", "welcome"
        )

        def exchange():
            with socket.create_connection(("127.0.0.1", webPort), timeout=10) as raw:
                raw.sendall(
                    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
                data = b""
                while not data.endswith(b"\x81\x07welcome"):
                    data += raw.recv(4096)
                raw.sendall(b"\x81\x02hi")
                while chunk := raw.recv(4096):
                    data += chunk
            return data.partition(b"\r\n\r\n")

        head, _, frames = yield deferToThread(exchange)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", head)
        self.assertEqual(frames, b"\x81\x07welcome\x88\x02\x03\xea")

    @inlineCallbacks
    def test_drainOnStop(self):
        """
        Stopping the server closes WebSocket clients with 1001, going away.
        """
        server, tcpPort, webPort = yield startWithWebSocket(self, "--mode", "relay")
        client = yield deferToThread(opened, self, f"ws://127.0.0.1:{webPort}/ws")
        server.transport.signalProcess("TERM")
        self.assertEqual((yield deferToThread(closeCode, client)), (1001, []))
        yield server.ended

    @inlineCallbacks
    def test_wss(self):
        """
        An ssl: endpoint serves wss:// with its certificate.
        """
        keyPath, certPath = makeCertificate(tempfile.mkdtemp())
        self.addCleanup(lambda: [os.remove(keyPath), os.remove(certPath)])
        server, tcpPort, webPort = yield startWithWebSocket(
            self, websocket=f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}"
        )
        context = ssl.create_default_context(cafile=certPath)
        client = yield deferToThread(
            opened, self, f"wss://localhost:{webPort}/ws", ssl=context
        )
        yield deferToThread(client.send, "over TLS")
        self.assertEqual((yield deferToThread(client.recv, 10)), "connect")
        self.assertEqual((yield deferToThread(client.recv, 10)), "Information Received")

    @inlineCallbacks
    def test_chatCommand(self):
        """
        C{sockservice chat --websocket URL} joins a relay from the terminal:
        stdin lines out (a last one without LF too), relayed lines printed.
        """
        server, tcpPort, webPort = yield startWithWebSocket(
            self, "--mode", "relay", "--greeting", "welcome"
        )
        peer = yield connectPeer(self, tcpPort)
        chat = runClient(self, "chat", "--websocket", f"ws://127.0.0.1:{webPort}")
        yield chat.logged(b"welcome\n")
        peer.send(b"from tcp\r\n")
        yield chat.logged(b"from tcp\n")
        chat.transport.write("from the terminal, ça va\nlast".encode())
        chat.transport.closeStdin()
        self.assertEqual((yield chat.ended), 0)
        self.assertEqual(chat.output, b"welcome\nfrom tcp\n")
        sent = "welcome\nfrom the terminal, ça va\nlast\n".encode()
        self.assertEqual((yield peer.receive(len(sent))), sent)

    @inlineCallbacks
    def test_chatCommandRejected(self):
        server, tcpPort, webPort = yield startWithWebSocket(self)
        url = f"ws://127.0.0.1:{webPort}/elsewhere"
        chat = runClient(self, "chat", "--websocket", url)
        self.assertEqual((yield chat.ended), 1)
        self.assertEqual(chat.errors, f"sockservice chat: {url}: cannot connect "
                         "(An error occurred while connecting: HTTP 404 Not Found.)\n".encode())
