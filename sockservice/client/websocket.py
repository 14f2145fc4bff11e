"""
The line clients over WebSocket (C{sockservice chat --websocket URL}): the
same client protocols, talking to a C{--websocket} listener as a browser
does, one message a line.
"""

from urllib.parse import urlsplit

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.client import BrowserLikePolicyForHTTPS
from twisted.web.http import RESPONSES
from twisted.web.websocket import ConnectionRejected, WebSocketClientEndpoint
from zope.interface import implementer

from sockservice.web.websocket import NORMAL, LineMessages


def webSocketURL(text):
    """
    A C{--websocket} value: a ws:// or wss:// URL (the path defaults to
    C{/ws}, where the server listens).
    """
    try:
        url = urlsplit(text)
        url.port
    except ValueError:
        url = None
    if url is None or url.scheme not in ("ws", "wss") or not url.hostname:
        raise ValueError(f"--websocket must be a ws:// or wss:// URL, not {text!r}")
    return text if url.path else text + "/ws"


webSocketURL.coerceDoc = "(ws://HOST:PORT/ws or wss://...)"


class ClientLines(LineMessages):
    """
    The WebSocket side of a line client: each message received is a line
    for C{client}, each line it writes a message.
    """

    def __init__(self, client):
        self.client = client

    def negotiationStarted(self, socket):
        self.socket = socket

    def negotiationFinished(self):
        self.client.makeConnection(self)

    def textMessageReceived(self, text):
        self.client.dataReceived(text.encode("utf-8") + b"\n")

    def bytesMessageReceived(self, data):
        self.client.dataReceived(bytes(data) + b"\n")

    def pongReceived(self, payload):
        pass

    def connectionLost(self, reason):
        if self.client.transport is self:
            self.client.connectionLost(reason)

    @property
    def disconnecting(self):
        return self.socket.transport.disconnecting

    def loseConnection(self):
        """
        Send what is left of a last line without LF, then close.
        """
        if self._partial:
            self.write(b"\n")
        if not self.disconnecting:
            self.socket.loseConnection(NORMAL)

    def abortConnection(self):
        self.socket.transport.abortConnection()

    def getPeer(self):
        return self.socket.transport.getPeer()

    def getHost(self):
        return self.socket.transport.getHost()


@implementer(IStreamClientEndpoint)
class WebSocketLineEndpoint:
    """
    Connects a line client to the WebSocket at C{url}, so the commands reach
    a C{--websocket} listener as they reach a TCP port.
    """

    def __init__(self, reactor, url, trustRoot=None, timeout=None):
        self._endpoint = WebSocketClientEndpoint.new(
            reactor, url, BrowserLikePolicyForHTTPS(trustRoot), connectTimeout=timeout
        )

    def connect(self, protocolFactory):
        client = protocolFactory.buildProtocol(None)
        lines = ClientLines(client)
        connecting = Deferred.fromCoroutine(self._endpoint.connect(_Once(lines)))
        connecting.addCallbacks(lambda _: client, _rejected)
        return connecting


class _Once:
    """
    The WebSocket client factory of one connection.
    """

    def __init__(self, lines):
        self.lines = lines

    def buildProtocol(self, url):
        return self.lines


def _rejected(failure):
    """
    A refused upgrade (HTTP 403 for an origin, 404 for a wrong path) is a
    failure to connect.
    """
    failure.trap(ConnectionRejected)
    code = failure.value.response.code
    raise error.ConnectError(f"HTTP {code} {RESPONSES.get(code, b'').decode()}".strip())
