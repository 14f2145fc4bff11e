"""
Browsers as clients of every mode: an HTTP listener that serves the chat page
at C{/} and WebSocket (RFC 6455) at C{/ws}.

A WebSocket connection is not a new protocol: it carries the mode's own
protocol, built by the same factory as the TCP connections (so the limits,
the connection counts, collect's count and relay's hub are shared), behind
L{LineBridge}, a transport that turns each browser message into a line and
each line written into a message.

Twisted's own L{twisted.web.websocket} (wsproto underneath) does the
handshake, the pings and the close frames; the frames of messages are read
and written by aiohttp's (L{sockservice.web.frames} says why). This module
leans on Twisted beyond its documented API in one way, checked by
tests/test_websocket.py on Twisted's code: L{LineBridge} takes over the HTTP
channel's C{dataReceived} after the upgrade, as Twisted's upgrade itself
does, and gives each read to its frame reader; so the messages of one read
reach the mode as one chunk, and a message is refused past C{--max-line} as
soon as a frame header says so.
"""

from importlib import resources
from urllib.parse import urlsplit

from twisted.application import service
from twisted.internet import endpoints, interfaces
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.web.websocket import WebSocketResource
from wsproto.events import BytesMessage, TextMessage
from zope.interface import implementer

from sockservice.modes.relay import TOO_SLOW
from sockservice.service.listening import ListeningService
from sockservice.wire.auth import UNAUTHORIZED
from sockservice.wire.limits import SERVER_FULL
from sockservice.wire.lines import IDLE_TIMEOUT, LINE_TOO_LONG

NORMAL = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
TOO_BIG = 1009
TRY_AGAIN_LATER = 1013
#: The close codes of a peer that closed on purpose: a clean close, like a
#: TCP FIN, that ends a relay client's last held line.
CLEAN_CLOSES = (NORMAL, GOING_AWAY)

#: The close code each ERROR line implies, when it is the last line sent.
CLOSE_CODES = {
    LINE_TOO_LONG: TOO_BIG,
    IDLE_TIMEOUT: NORMAL,
    SERVER_FULL: TRY_AGAIN_LATER,
    TOO_SLOW: POLICY_VIOLATION,
    UNAUTHORIZED: POLICY_VIOLATION,
}

KEEPALIVE = 30.0
HTTP_TIMEOUT = 30


def chunkLines(chunk):
    """
    The complete lines in C{chunk}, without their line endings.
    """
    lines = chunk.split(b"\n")[:-1]
    if b"\r" in chunk:
        lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    return lines


def isText(line):
    """
    Whether C{line} is UTF-8, so goes as a text message (else binary).
    """
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def lineMessages(chunk):
    """
    The messages for the complete lines in C{chunk}, without their line
    endings: text when a line is UTF-8, else binary.
    """
    for line in chunkLines(chunk):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            yield BytesMessage(line)
        else:
            yield TextMessage(text)


class LineMessages:
    """
    Writing a byte stream of lines as WebSocket messages, one a line: the
    sending half that the server's L{LineBridge} and the C{sockservice chat
    --websocket} client share. A partial line waits for its LF.

    @ivar socket: Twisted's WebSocket transport.
    """

    socket = None
    _partial = b""

    def write(self, data):
        if self.disconnecting:
            return
        if self._partial:
            data = self._partial + data
        end = data.rfind(b"\n") + 1
        self._partial = data[end:]
        if end:
            self.sendLines(data if end == len(data) else data[:end])

    def sendLines(self, chunk):
        """
        Send each complete line of C{chunk} as a message.
        """
        for message in lineMessages(chunk):
            if isinstance(message, TextMessage):
                self.socket.sendTextMessage(message.data)
            else:
                self.socket.sendBytesMessage(message.data)

    def writeSequence(self, data):
        self.write(b"".join(data))


@implementer(interfaces.ITransport, interfaces.IConsumer, interfaces.IPushProducer)
class LineBridge(LineMessages):
    """
    One WebSocket connection, seen by a mode's protocol as its byte-stream
    transport: a browser message is a line (a message with LFs in it is
    several), and every line the protocol writes goes out as one message
    without its line ending (text when it is UTF-8, else binary).

    Closing maps to close frames: C{loseConnection} sends the code that the
    last line written implies (L{CLOSE_CODES}: 1009 after C{ERROR line too
    long}, ...), C{loseWriteConnection} (a graceful stop) sends 1001 "going
    away". Back-pressure is the HTTP request's: a registered producer is
    paused while the socket's write buffer is full, and pausing this
    transport stops reading from the socket.

    @ivar protocol: the mode's protocol, once the upgrade is done.
    @ivar disconnecting: whether this side closed (or the socket is gone):
        what came before the peer's close frame is still read.
    @ivar peerCloseCode: the code of the peer's close frame, once read.
    """

    protocol = None
    disconnecting = False
    peerCloseCode = None
    _lastLine = b""
    _inbound = ()
    # Why the socket closed, as the mode hears it unless the peer closed
    # cleanly.
    _cut = "closed without a WebSocket close frame"

    def __init__(self, sockets, request):
        self.sockets = sockets
        self.request = request

    # The WebSocket side: Twisted's WebSocketProtocol, and what the frame
    # reader reads (L{sockservice.web.frames.MessageSink}).

    def negotiationStarted(self, socket):
        self.socket = socket

    def negotiationFinished(self):
        proto = self.sockets.factory.buildProtocol(self.getPeer())
        if proto is None:
            # collect has served its count; its listeners are stopping.
            self.socket.loseConnection(TRY_AGAIN_LATER)
            return
        self.protocol = proto
        self._frames = self.sockets.messages.reader(self, self.sockets.factory.maxLine)
        self.request.channel.dataReceived = self._rawDataReceived
        self.sockets.bridges.add(self)
        proto.makeConnection(self)

    def _rawDataReceived(self, data):
        """
        Read like TCP: the lines of all the messages in one read go to the
        protocol as one chunk (relay publishes them with one write to each
        member, greet answers them with one write).
        """
        if self.disconnecting:
            return
        self._inbound = []
        self.sockets.messages.read(self, self._frames, data)
        self._flushInbound()

    def messageReceived(self, data):
        """
        One message read: its lines are kept for the protocol, unless it is
        longer than C{--max-line} (which a reload may have lowered since
        the frame reader was made).
        """
        if self.disconnecting:
            return
        if len(data) > self.sockets.factory.maxLine:
            self._flushInbound()
            self._refuseLongMessage()
        else:
            self._inbound += (data, b"\n")

    def pingReceived(self, payload):
        if self._sending:
            self.request.transport.write(self.sockets.frames.pong(payload))

    def closeReceived(self, code):
        """
        The peer's close frame: the lines read before it go to the
        protocol, and it is answered with its code, as Twisted's own
        reading does.
        """
        if self.disconnecting:
            return
        self.peerCloseCode = code
        self._cut = f"WebSocket close code {code}"
        self._flushInbound()
        self._close(code)

    def messageTooLong(self):
        """
        The frame reader read a frame header saying the message passes
        C{--max-line}, and reads nothing more.
        """
        self._flushInbound()
        if not self.disconnecting:
            self._refuseLongMessage()

    def frameError(self, code, why):
        """
        The frame reader found a frame it does not take (code 1002, a broken
        frame; 1007, text that is not UTF-8), and reads nothing more: close
        with that code, as Twisted's own reading does.
        """
        self._flushInbound()
        if not self.disconnecting:
            self._cut = f"WebSocket protocol error {code}: {why}"
            self._close(code)

    def _flushInbound(self):
        inbound, self._inbound = self._inbound, ()
        if inbound and not self.disconnecting:
            self.protocol.dataReceived(b"".join(inbound))

    def _refuseLongMessage(self):
        """
        A message may carry C{--max-line} bytes, like a line (its LFs
        included): past that, C{ERROR line too long} and close 1009, even
        before the rest of it arrives.
        """
        self.protocol.refuse(
            LINE_TOO_LONG, "message too long from {peer} (over {maxLine} bytes): closing",
            maxLine=self.sockets.factory.maxLine,
        )

    def pongReceived(self, payload):
        """
        An answered keep-alive ping is activity, for the idle timeout.
        """
        idle = self.sockets.factory.limits.idle
        if idle is not None and not self.disconnecting:
            idle.touch(self.protocol)

    def connectionLost(self, reason):
        """
        The mode sees a clean close (L{ConnectionDone}) only when the peer
        sent a close frame of L{CLEAN_CLOSES}: a socket closed without one
        is a connection cut short, as a reset is on TCP.
        """
        self.disconnecting = True
        self.sockets.bridges.discard(self)
        # The frame reader refers back to this bridge: let go of it, so that
        # both are freed now, not by the cycle collector.
        self._frames = None
        if self.protocol is None:
            return
        if self.peerCloseCode in CLEAN_CLOSES:
            reason = Failure(ConnectionDone())
        elif reason.check(ConnectionDone):
            reason = Failure(ConnectionLost(self._cut))
        self.protocol.connectionLost(reason)

    def ping(self):
        if self._sending:
            self.socket.ping(b"")

    @property
    def _sending(self):
        """
        Whether frames may still be sent: not after a close frame either
        way (the peer's is answered, and the socket closed).
        """
        return not self.request.transport.disconnecting

    # The mode protocol's side (ITransport and the rest it uses).

    @property
    def connected(self):
        return not self.disconnecting

    def write(self, data):
        """
        Whole lines with no partial line held, as the modes write them (relay
        each chunk to every member), skip the partial-line path.
        """
        if self._partial or not data.endswith(b"\n"):
            LineMessages.write(self, data)
        elif not self.disconnecting:
            self.sendLines(data)

    def sendLines(self, chunk):
        """
        Write the lines' frames, framed once for every connection
        (L{sockservice.web.frames.ServerFrames}), to the socket's transport.
        They are queued there, not sent at once, as relay's lines to a TCP
        client are: relay may write several chunks to a socket in one
        reactor turn (one for each sender read), which then leave in one
        send instead of one each.
        """
        transport = self.request.transport
        if not transport.disconnecting:
            frames, self._lastLine = self.sockets.frames.framed(chunk)
            transport.write(frames)

    def loseConnection(self):
        self._close(CLOSE_CODES.get(self._lastLine, NORMAL))

    def loseWriteConnection(self):
        """
        Stop sending (a graceful stop): "going away" after what is queued.
        """
        self._close(GOING_AWAY)

    def _close(self, code):
        self.disconnecting = True
        if self._sending:
            self.socket.loseConnection(code)

    def abortConnection(self):
        self.disconnecting = True
        self.request.transport.abortConnection()

    def getPeer(self):
        return self.request.getClientAddress()

    def getHost(self):
        return self.request.getHost()

    def registerProducer(self, producer, streaming):
        self.request.registerProducer(producer, streaming)

    def unregisterProducer(self):
        self.request.unregisterProducer()

    def pauseProducing(self):
        self.request.transport.pauseProducing()

    def resumeProducing(self):
        self.request.transport.resumeProducing()

    def stopProducing(self):
        self.request.transport.stopProducing()


class LineSockets(service.Service):
    """
    The WebSocket side of one mode factory: a L{LineBridge} for each
    connection, and a keep-alive ping to all of them every C{keepAlive}
    seconds so that proxies do not cut idle browsers (one timer for all).

    @ivar factory: the mode's factory.
    @ivar bridges: the open connections.
    """

    def __init__(self, factory, clock, keepAlive=KEEPALIVE):
        self.factory = factory
        self.bridges = set()
        # Imported here, not with this module: aiohttp takes some 250 ms and
        # 8 MB to import, which servers without --websocket and the chat
        # client need not spend.
        from sockservice.web.frames import MessageSink, ServerFrames

        self.frames = ServerFrames()
        self.messages = MessageSink()
        self._pinging = LoopingCall(self._ping)
        self._pinging.clock = clock
        self.keepAlive = keepAlive

    def buildProtocol(self, request):
        return LineBridge(self, request)

    def startService(self):
        service.Service.startService(self)
        self._pinging.start(self.keepAlive, now=False)

    def stopService(self):
        service.Service.stopService(self)
        self._pinging.stop()

    def _ping(self):
        for bridge in list(self.bridges):
            bridge.ping()


def parseOrigin(text):
    """
    The origin C{scheme://host[:port]} in the form browsers send it.

    @raise ValueError: saying why C{text} is no origin.
    """
    try:
        url = urlsplit(text)
        url.port
    except ValueError:
        url = None
    if (
        url is None or url.scheme not in ("http", "https") or not url.hostname
        or url.path or url.query or url.fragment or url.username is not None
    ):
        raise ValueError(
            f"--websocket-origin {text!r} is not an origin like https://chat.example.com"
        )
    return f"{url.scheme}://{url.netloc}".lower()


class OriginCheckedResource(WebSocketResource):
    """
    C{/ws}: upgrades requests from the allowed origins and answers others
    with 403, so another site's page cannot join for its visitors. With no
    origins given, the page's own is allowed: an Origin whose host (and
    port) is the request's Host, whatever the scheme, so a TLS-terminating
    proxy in front changes nothing. Clients that send no Origin (not
    browsers) are let in.
    """

    def __init__(self, sockets, origins=()):
        super().__init__(sockets)
        self.origins = frozenset(origins)

    def allowed(self, origin, host):
        if self.origins:
            return origin.lower() in self.origins
        return host is not None and urlsplit(origin.lower()).netloc == host.lower()

    def render_GET(self, request):
        origin = request.getHeader("origin")
        if origin is not None and not self.allowed(origin, request.getHeader("host")):
            request.setResponseCode(403)
            request.setHeader("content-type", "text/plain")
            return b"origin not allowed\n"
        return super().render_GET(request)


class ChatPage(resource.Resource):
    """
    C{/}: the chat page (one file of HTML, CSS and JS, in the package) for
    C{factory}'s mode, with the token field shown while the factory wants a
    token (a reload may start or stop asking for one).
    """

    isLeaf = True

    def __init__(self, factory):
        super().__init__()
        self.factory = factory
        page = resources.files(__package__).joinpath("page", "chat.html").read_bytes()
        self.page = page.replace(b"{{mode}}", factory.mode.encode("ascii"))

    def render_GET(self, request):
        request.setHeader("content-type", "text/html; charset=utf-8")
        request.setHeader("cache-control", "no-cache")
        token = b"none" if getattr(self.factory, "gate", None) is None else b"required"
        return self.page.replace(b"{{token}}", token)


class ChatSite(server.Site):
    """
    The page and the socket on one listener. An HTTP request (before any
    upgrade) has L{HTTP_TIMEOUT} seconds to arrive, within Twisted's bounds
    on header size.

    @ivar mode: what its listener is logged as serving.
    """

    noisy = False

    def __init__(self, reactor, sockets, origins=()):
        root = resource.Resource()
        root.putChild(b"", ChatPage(sockets.factory))
        root.putChild(b"ws", OriginCheckedResource(sockets, origins))
        super().__init__(root, timeout=HTTP_TIMEOUT, reactor=reactor)
        self.mode = f"{sockets.factory.mode} (WebSocket)"


class WebSocketService(service.MultiService):
    """
    Listens with a L{ChatSite} on each endpoint description and keeps the
    sockets alive.

    @ivar listeners: a L{ListeningService} per endpoint.
    """

    def __init__(self, reactor, factory, descriptions, origins=()):
        super().__init__()
        sockets = LineSockets(factory, reactor)
        sockets.setServiceParent(self)
        site = ChatSite(reactor, sockets, origins)
        self.listeners = []
        for description in descriptions:
            endpoint = endpoints.serverFromString(reactor, description)
            listener = ListeningService(endpoint, description, site)
            listener.setServiceParent(self)
            self.listeners.append(listener)
