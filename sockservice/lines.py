"""
The wire shared by every mode: LF-terminated lines of raw bytes, a CR before
the LF counted as part of the line ending, and a maximum line length.
"""

from twisted.internet import protocol
from twisted.protocols.basic import LineReceiver

from sockservice.addresses import describeAddress
from sockservice.directwrite import noDelay, writeNow

LINE_TOO_LONG = b"ERROR line too long\n"


def stripLineEnding(line):
    """
    Return C{line} without its LF and the CR right before it.
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line


def logText(data):
    """
    Decode bytes for log output only; the data path never decodes.
    """
    return data.decode("utf-8", "replace")


class LineProtocol(LineReceiver):
    """
    A L{LineReceiver} that splits each read once and hands all of its
    complete lines to L{linesReceived} as one chunk, so a mode can answer a
    whole read with one write instead of one write per line.

    """

    delimiter = b"\n"
    refused = False

    def connectionMade(self):
        self.MAX_LENGTH = self.factory.maxLine
        noDelay(self.transport)
        self.factory.connectionOpened(self)

    @property
    def peer(self):
        """
        The peer's address as logged; worked out only for events that are
        logged, not folded.
        """
        return describeAddress(self.transport.getPeer())

    def connectionLost(self, reason):
        self.factory.connectionClosed(self, reason)

    def send(self, data):
        """
        Write C{data}, straight to the socket when nothing is queued.
        """
        writeNow(self.transport, data)

    def dataReceived(self, data):
        if self.transport.disconnecting:
            return
        if self._buffer:
            data = self._buffer + data
            self._buffer = b""
        end = data.rfind(b"\n") + 1
        if end:
            chunk = data[:end] if end < len(data) else data
            if end > self.MAX_LENGTH + 1:
                bad = self._firstLongLine(chunk)
                if bad is not None:
                    if bad:
                        self.linesReceived(chunk[:bad])
                    self._refuseLongLine()
                    return
            self.linesReceived(chunk)
        if end < len(data) and not self.transport.disconnecting:
            tail = data[end:]
            if self._tooLong(tail):
                self._refuseLongLine()
            else:
                self._buffer = tail

    def linesReceived(self, chunk):
        """
        Called with one or more complete lines, each still ending in LF.
        """
        raise NotImplementedError()

    def _tooLong(self, line):
        """
        Whether C{line} (without its LF) holds more than MAX_LENGTH bytes
        before its line ending. A partial line ending in CR may still be a
        line of exactly MAX_LENGTH bytes.
        """
        size = len(line)
        return size > self.MAX_LENGTH and (
            size > self.MAX_LENGTH + 1 or not line.endswith(b"\r")
        )

    def _firstLongLine(self, chunk):
        """
        Return the offset in C{chunk} at which its first over-long line
        starts, or L{None}.
        """
        offset = 0
        for line in chunk.split(b"\n")[:-1]:
            if self._tooLong(line):
                return offset
            offset += len(line) + 1
        return None

    def _refuseLongLine(self):
        self.refused = True
        self._buffer = b""
        self.transport.write(LINE_TOO_LONG)
        self.factory.log.warn(
            "refused",
            "line too long from {peer} (over {maxLine} bytes): closing",
            peer=self.peer,
            maxLine=self.MAX_LENGTH,
        )
        self.transport.loseConnection()

    def lineLengthExceeded(self, line):
        self._refuseLongLine()


class LineFactory(protocol.Factory):
    """
    State shared by a mode's connections: the line limit, the folding log
    and the greeting sent on connect.

    @ivar greeting: bytes sent on connect (already ending in LF), or C{b""}.
    @ivar protocols: the connected protocols.
    """

    noisy = False
    messageFormat = "received {message} (from {peer})"

    def __init__(self, log, maxLine=65536, greeting=b""):
        self.log = log
        self.maxLine = maxLine
        self.greeting = greeting
        self.protocols = set()

    def connectionOpened(self, proto):
        self.protocols.add(proto)
        if self.log.take(1):
            self.log.logger.info("connection opened: {peer}", peer=proto.peer)
        else:
            self.log.fold("opened", 1)
        if self.greeting:
            proto.send(self.greeting)

    def connectionClosed(self, proto, reason):
        self.protocols.discard(proto)
        if self.log.take(1):
            self.log.logger.info(
                "connection closed: {peer} ({reason})",
                peer=proto.peer,
                reason=reason.getErrorMessage(),
            )
        else:
            self.log.fold("closed", 1)

    def logMessages(self, proto, chunk, count):
        """
        Log each of the C{count} lines in C{chunk} as the seed server printed
        it (L{messageFormat}), folding what the log budget cannot take.
        """
        logged = self.log.take(count)
        if not logged:
            self.log.fold("received", count, len(chunk))
            return
        parts = chunk.split(b"\n", logged)
        if logged < count:
            self.log.fold("received", count - logged, len(parts[-1]))
        for line in parts[:-1]:
            self.log.logger.info(
                self.messageFormat,
                peer=proto.peer,
                message=logText(stripLineEnding(line)),
            )

    def stopFactory(self):
        self.log.stop()
