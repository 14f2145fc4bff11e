"""
The wire shared by every mode: LF-terminated lines of raw bytes, a CR before
the LF counted as part of the line ending, and a maximum line length.
"""

from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.protocols.basic import LineReceiver

from sockservice.wire.addresses import describeAddress
from sockservice.wire.counters import Counters
from sockservice.fastpath.directwrite import noDelay, writeNow
from sockservice.wire.limits import Limits, RefusedProtocol, cancelAbort

LINE_TOO_LONG = b"ERROR line too long\n"
IDLE_TIMEOUT = b"ERROR idle timeout\n"


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

    The idle timeout restarts on complete lines received, never on writes,
    so a peer that only listens (to relay traffic, say) still times out.
    """

    delimiter = b"\n"
    refused = False
    draining = False
    producing = False
    _abort = None
    _idle = None

    def connectionMade(self):
        self.MAX_LENGTH = self.factory.maxLine
        noDelay(self.transport)
        self._idle = self.factory.limits.idle
        if self._idle is not None:
            self._idle.watch(self)
        self.factory.connectionOpened(self)

    @property
    def peer(self):
        """
        The peer's address as logged; worked out only for events that are
        logged, not folded.
        """
        return describeAddress(self.transport.getPeer())

    def connectionLost(self, reason):
        self._stopIdleTimeout()
        cancelAbort(self._abort)
        self.factory.connectionClosed(self, reason)

    def send(self, data):
        """
        Write C{data}, straight to the socket when nothing is queued.
        """
        writeNow(self.transport, data)
        self.factory.counters.sent(data)

    def dataReceived(self, data):
        self.factory.counters.bytesReceived += len(data)
        if self.transport.disconnecting or self.draining:
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
                        self.factory.counters.linesReceived += chunk.count(b"\n", 0, bad)
                        self.linesReceived(chunk[:bad])
                    if not self.transport.disconnecting:
                        self._refuseLongLine()
                    return
            if self._idle is not None:
                self._idle.touch(self)
            self.factory.counters.linesReceived += chunk.count(b"\n")
            self.linesReceived(chunk)
        if end < len(data) and not self.transport.disconnecting:
            tail = data[end:]
            if self._tooLong(tail):
                self._refuseLongLine()
            else:
                self._buffer = tail

    def registerAsProducer(self):
        """
        Register as the transport's streaming producer, so it tells this
        protocol (L{pauseProducing}) when its write buffer is full.
        """
        self.producing = True
        self.transport.registerProducer(self, True)

    def unregisterAsProducer(self):
        if self.producing:
            self.producing = False
            self.transport.unregisterProducer()

    def linesReceived(self, chunk):
        """
        Called with one or more complete lines, each still ending in LF.
        """
        raise NotImplementedError()

    def drain(self):
        """
        Take no more lines and close once everything written is sent. Only
        the sending side closes (a FIN after the pending output) and reading
        goes on, discarding, until the peer closes: closing with unread input
        would reset the connection and drop output still queued.
        """
        self.draining = True
        if self.producing:
            # Paused, it would neither finish writing nor read on to see the
            # peer close; what a mode holds back while paused goes out first.
            self.unregisterAsProducer()
            self.resumeProducing()
        closeWriting = getattr(self.transport, "loseWriteConnection", None)
        (closeWriting or self.transport.loseConnection)()

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

    def refuse(self, error, format, **fields):
        """
        Send the C{error} line, log why (one C{refused} event) and close,
        reading nothing more; a peer that does not take the line in
        L{Limits.closeGrace} is aborted.
        """
        self.refused = True
        self._buffer = b""
        self._stopIdleTimeout()
        self.transport.write(error)
        self.factory.counters.sent(error)
        self.factory.log.warn("refused", format, peer=self.peer, **fields)
        self.unregisterAsProducer()
        self._abort = self.factory.limits.close(self.transport)

    def _stopIdleTimeout(self):
        if self._idle is not None:
            self._idle.forget(self)

    def timeoutConnection(self):
        """
        Called by the factory's L{IdleWatch} when no line came in time.
        """
        self.factory.counters.refused["idle_timeout"] += 1
        self.refuse(
            IDLE_TIMEOUT,
            "idle for {timeout}s: closing {peer}",
            timeout=self.factory.limits.idleTimeout,
        )

    def _refuseLongLine(self):
        self.factory.counters.refused["line_too_long"] += 1
        self.refuse(
            LINE_TOO_LONG,
            "line too long from {peer} (over {maxLine} bytes): closing",
            maxLine=self.MAX_LENGTH,
        )

    def lineLengthExceeded(self, line):
        self._refuseLongLine()


class LineFactory(protocol.Factory):
    """
    State shared by a mode's connections: the line limit, the folding log
    and the greeting sent on connect.

    @ivar greeting: bytes sent on connect (already ending in LF), or C{b""}.
    @ivar protocols: the connected protocols.
    @ivar limits: the L{Limits} enforced.
    @ivar counters: the L{Counters} of what its connections did.
    """

    noisy = False
    messageFormat = "received {message} (from {peer})"

    def __init__(self, log, maxLine=65536, greeting=b"", limits=None):
        self.log = log
        self.maxLine = maxLine
        self.greeting = greeting
        self.limits = Limits() if limits is None else limits
        self.protocols = set()
        self.counters = Counters()
        self._allClosed = []

    def buildProtocol(self, addr):
        refusal = self.limits.refusal(addr, len(self.protocols))
        if refusal is not None:
            kind, reason = refusal
            self.counters.refused[kind] += 1
            return RefusedProtocol(self, reason)
        return protocol.Factory.buildProtocol(self, addr)

    def connectionOpened(self, proto):
        self.protocols.add(proto)
        self.counters.accepted += 1
        self.limits.opened(proto.transport.getPeer())
        if self.log.take("opened", 1):
            self.log.logger.info("connection opened: {peer}", peer=proto.peer)
        if self.greeting:
            proto.send(self.greeting)

    def connectionClosed(self, proto, reason):
        self.protocols.discard(proto)
        self.limits.closed(proto.transport.getPeer())
        if self.log.take("closed", 1):
            self.log.logger.info(
                "connection closed: {peer} ({reason})",
                peer=proto.peer,
                reason=reason.getErrorMessage(),
            )
        if not self.protocols:
            waiting, self._allClosed = self._allClosed, []
            for allClosed in waiting:
                allClosed.callback(None)

    def whenAllClosed(self):
        """
        A L{Deferred} that fires once no connection is open, so a graceful
        stop can wait for the last one to flush and close.
        """
        if not self.protocols:
            return succeed(None)
        allClosed = Deferred()
        self._allClosed.append(allClosed)
        return allClosed

    def logMessages(self, proto, chunk, count):
        """
        Log each of the C{count} lines in C{chunk} as the seed server printed
        it (L{messageFormat}), folding what the log budget cannot take.
        """
        logged = self.log.take("received", count, len(chunk))
        if not logged:
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
