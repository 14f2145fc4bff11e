"""
The wire shared by every mode: LF-terminated lines of raw bytes, a CR before
the LF counted as part of the line ending, and a maximum line length.

L{LineProtocol} is built from parts a reader can find by name:

  - splitting: L{splitLines} cuts what was read after its last LF;
  - pending input: the partial line (and lines a paused protocol has not
    taken yet), held by the protocol, bounded by C{--max-line} and by the
    factory's shared input budget (L{Limits.chargeInput});
  - idle: the factory's L{IdleWatch} (C{wire/idle.py}), and for TLS the
    cap on unfinished handshakes (L{Limits.handshakeStarted});
  - refusal: L{LineProtocol.refuse}, then L{Limits.close};
  - draining: L{LineProtocol.drain};
  - back-pressure: L{LineProtocol.registerAsProducer} and the
    C{pauseProducing}/C{resumeProducing} the transport calls.

Protocols use only C{write}, C{loseConnection}, C{abortConnection},
C{getPeer}, C{registerProducer} and C{pauseProducing} of their transport
(plus C{loseWriteConnection} where there is one), so any stream transport
can carry them.
"""

from twisted.internet import protocol
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IHandshakeListener, INegotiated
from zope.interface import implementer

from sockservice.fastpath.directwrite import noDelay, writeNow
from sockservice.wire.addresses import describeAddress
from sockservice.wire.counters import Counters
from sockservice.wire.limits import Limits, RefusedProtocol, cancelAbort

LINE_TOO_LONG = b"ERROR line too long\n"
IDLE_TIMEOUT = b"ERROR idle timeout\n"
SERVER_BUSY = b"ERROR server busy\n"


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


def tooLong(line, maxLine):
    """
    Whether C{line} (without its LF) holds more than C{maxLine} bytes before
    its line ending. A partial line ending in CR may still be a line of
    exactly C{maxLine} bytes.
    """
    size = len(line)
    return size > maxLine and (size > maxLine + 1 or not line.endswith(b"\r"))


def splitLines(data, maxLine):
    """
    Cut C{data} after its last LF.

    @return: C{(lines, rest, refused)}: the complete lines (each still
        ending in LF) up to the first one longer than C{maxLine}; what
        follows them; and whether a line too long was found, in which case
        C{rest} starts with it (a partial line already too long counts).
    """
    end = data.rfind(b"\n") + 1
    if end > maxLine + 1:
        offset = 0
        for line in data[:end].split(b"\n")[:-1]:
            if tooLong(line, maxLine):
                return data[:offset], data[offset:], True
            offset += len(line) + 1
    if end == len(data):
        return data, b"", False
    rest = data[end:]
    return data[:end], rest, tooLong(rest, maxLine)


@implementer(IHandshakeListener)
class LineProtocol(protocol.Protocol):
    """
    Splits each read once and hands all of its complete lines to
    L{linesReceived} as one chunk, so a mode can answer a whole read with
    one write instead of one write per line.

    The idle timeout restarts on complete lines received, never on writes,
    so a peer that only listens (to relay traffic, say) still times out.

    @ivar taking: whether lines are still taken; no more once refused,
        draining or done (L{stopTaking}).
    @ivar paused: whether the transport asked its producer (this protocol)
        to pause; lines read meanwhile wait, unsplit.
    """

    taking = True
    refused = False
    draining = False
    producing = False
    paused = False
    _pending = b""
    _charged = 0
    _abort = None
    _idle = None

    def connectionMade(self):
        noDelay(self.transport)
        self._idle = self.factory.limits.idle
        if self._idle is not None:
            self._idle.watch(self)
        # Asked of the class: providedBy would cache a spec on each transport.
        if INegotiated.implementedBy(type(self.transport)):
            evicted = self.factory.limits.handshakeStarted(self)
            if evicted is not None:
                self.factory.counters.refused["tls_handshakes"] += 1
                self.factory.log.warn(
                    "over {maxHandshakes} TLS handshakes unfinished: aborted the oldest, "
                    "{peer}'s", kind="handshakes",
                    maxHandshakes=self.factory.limits.maxHandshakes, peer=evicted.peer,
                )
        self.factory.connectionOpened(self)

    def handshakeCompleted(self):
        """
        The TLS handshake is done: it no longer counts among the unfinished.
        """
        self.factory.limits.handshakeDone(self)

    @property
    def peer(self):
        """
        The peer's address as logged; worked out only for events that are
        logged, not folded.
        """
        return describeAddress(self.transport.getPeer())

    def connectionLost(self, reason):
        self.factory.limits.handshakeDone(self)
        self.stopTaking()
        self.takePartialLine()
        cancelAbort(self._abort)
        self.factory.connectionClosed(self, reason)

    def send(self, data, lines=None):
        """
        Write C{data} (C{lines} whole lines, if the caller knows how many),
        straight to the socket when nothing is queued.
        """
        writeNow(self.transport, data)
        self.factory.counters.sent(data, lines)

    def linesReceived(self, chunk, count):
        """
        Called with C{count} complete lines, each still ending in LF.

        @return: L{None}, or the end of C{chunk} not taken yet (when the
            protocol was paused while answering): it waits, with the
            partial line, until L{resumeProducing}.
        """
        raise NotImplementedError()

    # Splitting and the pending input.

    def dataReceived(self, data):
        """
        Take C{data}, after the input pending from earlier reads: its
        complete lines go to L{linesReceived} in one call, the partial line
        after them waits for the next read. While paused nothing is taken:
        it all waits (a transport may deliver what it had read before it
        paused). A line over the factory's C{maxLine}, complete or not, is
        refused once the lines before it are taken (at once while paused).
        Pending input counts against the factory's input budget; a
        connection that would exceed it is refused as well. After a
        refusal, while draining or once done, what arrives is discarded.
        """
        factory = self.factory
        counters = factory.counters
        counters.bytesReceived += len(data)
        if (self._pending or self.paused or not self.taking
                or data[-1:] != b"\n" or len(data) > factory.maxLine + 1):
            self._received(data)
            return
        # The usual read: whole lines, none too long, nothing pending, taking
        # and not paused. What _received does with it, in fewer steps: this
        # is every busy connection's every read.
        if self._idle is not None:
            self._idle.touch(self)
        count = data.count(b"\n")
        untaken = self.linesReceived(data, count)
        if untaken is None:
            counters.linesReceived += count
        else:
            self._untaken(untaken, count, b"")

    def _received(self, data):
        """
        L{dataReceived} for every read but the usual one.
        """
        if not self.taking:
            return
        if self._pending:
            data = self._pending + data
        maxLine = self.factory.maxLine
        lines, rest, refused = splitLines(data, maxLine)
        if self.paused:
            if not refused:
                self._hold(data)
                return
        elif lines:
            if self._idle is not None:
                self._idle.touch(self)
            count = lines.count(b"\n")
            untaken = self.linesReceived(lines, count)
            if untaken is not None:
                self._untaken(untaken, count, rest)
                return
            self.factory.counters.linesReceived += count
            if not self.taking:
                return
        if refused:
            self.refuse(
                LINE_TOO_LONG,
                "line too long from {peer} (over {maxLine} bytes): closing",
                maxLine=maxLine,
            )
        elif rest or self._pending:
            self._hold(rest)

    def _untaken(self, untaken, count, rest):
        """
        The mode took C{count} lines but for C{untaken}, the last of them
        (it was paused meanwhile): they wait with C{rest}, to come back from
        L{resumeProducing}, and are counted then.
        """
        self.factory.counters.linesReceived += count - untaken.count(b"\n")
        if self.taking:
            self._hold(untaken + rest)

    def pendingPartialLine(self):
        """
        The input read but not taken as lines yet: a partial line (and,
        while paused, complete lines waiting their turn).
        """
        return self._pending

    def takePartialLine(self):
        """
        Return L{pendingPartialLine} and forget it.
        """
        pending = self._pending
        self._hold(b"")
        return pending

    def _hold(self, pending):
        """
        Keep C{pending} for the next read, charged to the factory's input
        budget; refuse the connection if the budget cannot take it.
        """
        if self._charged or len(pending) > self.factory.limits.inputAllowance:
            charged = self.factory.limits.chargeInput(self._charged, len(pending))
            if charged is None:
                self.refuse(
                    SERVER_BUSY,
                    "input budget spent: {held} bytes of unfinished lines held, "
                    "closing {peer}",
                    held=self.factory.limits.inputHeld,
                )
                return
            self._charged = charged
        self._pending = pending

    def stopTaking(self):
        """
        Take no more lines; the idle timeout no longer applies.
        """
        self.taking = False
        if self._idle is not None:
            self._idle.forget(self)

    # Refusal.

    def refuse(self, error, format, **fields):
        """
        Send the C{error} line, log why (one C{refused} event) and close,
        reading nothing more; a peer that does not take the line in
        L{Limits.closeGrace} is aborted.
        """
        self.refused = True
        self.stopTaking()
        self.takePartialLine()
        self.transport.write(error)
        self.factory.counters.refusedWith(error)
        self.factory.log.warn(format, kind="refused", peer=self.peer, **fields)
        self.unregisterAsProducer()
        self._abort = self.factory.limits.close(self.transport)

    def timeoutConnection(self):
        """
        Called by the factory's L{IdleWatch} when no line came in time.
        """
        self.refuse(
            IDLE_TIMEOUT,
            "idle for {timeout}s: closing {peer}",
            timeout=self.factory.limits.idleTimeout,
        )

    # Draining.

    def drain(self):
        """
        Take no more lines and close once everything written is sent; a
        partial line stays pending, for the mode to deliver on a clean
        close. Only the sending side closes (a FIN after the pending output)
        and reading goes on, discarding, until the peer closes: closing with
        unread input would reset the connection and drop output still queued.
        """
        self.draining = True
        self.stopTaking()
        if self.producing:
            # Paused, it would neither finish writing nor read on to see the
            # peer close; what a mode holds back while paused goes out first.
            self.unregisterAsProducer()
            self.flushHeld()
            self._resumeReading()
        closeWriting = getattr(self.transport, "loseWriteConnection", None)
        (closeWriting or self.transport.loseConnection)()

    def flushHeld(self):
        """
        Write what the mode held back while paused, before a drain closes.
        """

    # Back-pressure.

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

    def pauseProducing(self):
        """
        The transport's write buffer is full: stop reading from the peer.
        """
        self.paused = True
        self.transport.pauseProducing()

    def resumeProducing(self):
        """
        The transport's write buffer has drained: take the lines that waited,
        then read on if that did not fill it again.
        """
        self.paused = False
        if self._pending:
            self.dataReceived(b"")
        if not self.paused:
            self.transport.resumeProducing()

    def _resumeReading(self):
        self.paused = False
        self.transport.resumeProducing()

    def stopProducing(self):
        pass


class LineFactory(protocol.Factory):
    """
    State shared by a mode's connections: the line limit, the folding log
    and the greeting sent on connect. Protocols read these attributes when
    they use them, so a reload that changes them takes effect at once.

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
        # getPeer builds a new address object each call: only for maxPerIP.
        if self.limits.maxPerIP:
            self.limits.opened(proto.transport.getPeer())
        if self.log.take("opened"):
            self.log.info("connection opened: {peer}", peer=proto.peer)
        if self.greeting:
            proto.send(self.greeting)

    def connectionClosed(self, proto, reason):
        self.protocols.discard(proto)
        if self.limits.maxPerIP:
            self.limits.closed(proto.transport.getPeer())
        if self.log.take("closed"):
            self.log.info(
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
        if logged:
            self.logTaken(proto, chunk, count, logged)

    def logTaken(self, proto, chunk, count, logged):
        """
        The rest of L{logMessages}, once the log's budget granted C{logged}
        of the C{count} lines: log those, fold the others.
        """
        parts = chunk.split(b"\n", logged)
        if logged < count:
            self.log.fold("received", count - logged, len(parts[-1]))
        for line in parts[:-1]:
            self.log.info(
                self.messageFormat,
                peer=proto.peer,
                message=logText(stripLineEnding(line)),
            )

    def stopFactory(self):
        self.log.stop()
