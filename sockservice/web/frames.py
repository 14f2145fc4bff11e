"""
WebSocket frames for the listener in L{sockservice.web.websocket}, read and
written by aiohttp's frame reader (compiled with Cython) and frame writer.

Twisted's own WebSocket code frames with wsproto, which is pure Python: it
spends some 14 us reading a small message and 6 us framing one, where relay
spends about 2 us on a line from TCP (fanned out to 49 clients). With it,
WebSocket relay came to a tenth of TCP's throughput; aiohttp's reader takes
under 1 us a message and its writer under 1 us, which brings it to about
half (docs/browser.md has the figures). Twisted still does the handshake,
the pings and the close frames.

aiohttp's reader and writer serve its asyncio streams. They are used here
beyond aiohttp's documented API in three ways, checked by
tests/test_websocket.py on aiohttp's code (pyproject pins aiohttp to 3.14):

 - The reader gives each message to its queue's C{feed_data}, and each
   error to its C{set_exception}: L{MessageSink} is that queue (a subclass
   of aiohttp's, from a private module), one for all connections, and hands
   them to the bridge being read instead of queueing them.
 - L{FrameReader} overrides the reader's C{_handle_frame}, which its
   compiled parser calls with each frame's payload. aiohttp's reader takes
   unmasked frames, which RFC 6455 (5.1) says a server must refuse; it
   gives the payload of a masked frame as the C{bytearray} it unmasked in
   place, and that of an unmasked one as C{bytes}, so the override refuses
   the latter (close 1002). One unmasked frame gets past: one whose
   payload came in more than 1024 reads (more for a --max-line over
   256 KiB), which aiohttp gathers into a C{bytearray} either way. The
   same override hands a whole message (one final frame, ASCII or binary)
   straight to its bridge, the common case, which saves a Python call and a
   decode and encode per message; all else goes on to aiohttp's own
   handling.
 - L{ServerFrames} frames with the writer's private C{_write_websocket_frame},
   being the transport it writes each frame to.
"""

from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.http_websocket import (
    WebSocketError,
    WebSocketReader,
    WebSocketWriter,
    WSCloseCode,
    WSMsgType,
)

from sockservice.web.websocket import chunkLines, isText

TEXT, BINARY, PING, PONG = WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.PING, WSMsgType.PONG
#: Opcodes as the reader's C{_handle_frame} gets them (C ints, not enum members).
TEXT_OPCODE, BINARY_OPCODE = int(TEXT), int(BINARY)
#: What a close frame without a code is taken for (RFC 6455, 7.1.5).
NO_STATUS = 1005


class MessageSink(WebSocketDataQueue):
    """
    Where the frame readers of all connections put what they read: each
    message (as bytes), ping, pong, close frame or error goes to the
    L{LineBridge<sockservice.web.websocket.LineBridge>} whose read is being
    parsed.
    """

    def __init__(self):
        super().__init__(None, 0, loop=None)
        self._bridge = None

    def reader(self, bridge, maxSize):
        """
        A frame reader for C{bridge}'s connection, that refuses a message of
        more than C{maxSize} bytes as soon as a frame header says so.
        """
        # aiohttp refuses a message of its limit, a line may have maxSize bytes.
        return FrameReader(bridge, self, maxSize + 1)

    def read(self, bridge, reader, data):
        """
        Parse C{data}, read by C{bridge}, with its frame C{reader}.
        """
        self._bridge = bridge
        reader.feed_data(data)

    def feed_data(self, message, size):
        kind, data, _ = message
        if kind is TEXT:
            self._bridge.messageReceived(data.encode("utf-8"))
        elif kind is BINARY:
            self._bridge.messageReceived(data)
        elif kind is PING:
            self._bridge.pingReceived(data)
        elif kind is PONG:
            self._bridge.pongReceived(data)
        else:
            self._bridge.closeReceived(data or NO_STATUS)

    def set_exception(self, error, cause=None):
        if error.code == WSCloseCode.MESSAGE_TOO_BIG:
            self._bridge.messageTooLong()
        else:
            self._bridge.frameError(error.code, str(error))


class FrameReader(WebSocketReader):
    """
    aiohttp's compiled frame reader for one connection, which refuses client
    frames that are not masked and gives whole messages to its bridge
    itself.

    @ivar bridge: the L{LineBridge<sockservice.web.websocket.LineBridge>}
        it reads for.
    @ivar fragmented: whether a message in several frames has begun.
    """

    # No __dict__: this is kept per connection.
    __slots__ = ("bridge", "fragmented")

    def __init__(self, bridge, sink, maxSize):
        super().__init__(sink, maxSize, False, True)
        self.bridge = bridge
        self.fragmented = False

    def _handle_frame(self, fin, opcode, payload, compressed):
        if type(payload) is not bytearray:
            # Unmasked: aiohttp unmasks a masked payload into a bytearray.
            raise WebSocketError(WSCloseCode.PROTOCOL_ERROR, "Received an unmasked frame")
        if fin and not self.fragmented and (
            opcode == BINARY_OPCODE or opcode == TEXT_OPCODE and payload.isascii()
        ):
            # A whole message of one frame, and valid text if text (ASCII is
            # UTF-8): what aiohttp would queue, without decoding it.
            self.bridge.messageReceived(payload)
            return
        WebSocketReader._handle_frame(self, fin, opcode, payload, compressed)
        if opcode <= BINARY_OPCODE:
            self.fragmented = not fin


class _FrameList(list):
    """
    The transport aiohttp's writer writes frames to: a list of them, with
    C-level methods, since the writer calls both for every frame.
    """

    write = list.append
    # bool() is False: the transport is never closing.
    is_closing = bool


class ServerFrames:
    """
    Lines framed as server WebSocket messages, once for all connections:
    server frames are not masked and, with no extension negotiated (Twisted
    offers none), they are the same bytes on every connection. So relay
    frames a chunk once however many browsers it goes to; what one
    connection's Twisted transport would have framed, message by message,
    goes out as the same bytes in one write.
    """

    def __init__(self):
        self._frames = _FrameList()
        self._writer = WebSocketWriter(None, self._frames)
        self._chunk = None
        self._framed = None

    def framed(self, chunk):
        """
        The frames of C{chunk}'s lines (text when a line is UTF-8, else
        binary, without line endings), and its last line (with its LF).
        """
        if chunk is not self._chunk:
            frame = self._writer._write_websocket_frame
            lines = chunkLines(chunk)
            if isText(chunk):
                # Then each line is: an LF is no byte of another character.
                for line in lines:
                    frame(line, TEXT, 0)
            else:
                for line in lines:
                    frame(line, TEXT if isText(line) else BINARY, 0)
            last = chunk[chunk.rfind(b"\n", 0, -1) + 1:]
            self._chunk, self._framed = chunk, (self._written(), last)
        return self._framed

    def pong(self, payload):
        """
        The answer to a ping carrying C{payload}.
        """
        self._writer._write_websocket_frame(payload, PONG, 0)
        return self._written()

    def _written(self):
        frames = b"".join(self._frames)
        self._frames.clear()
        return frames
