"""
relay mode (seed 002's goal: A and B talk through S): every line from one
client goes, byte for byte, to every other client; never back to the sender.
"""

from twisted.internet.error import ConnectionDone

from sockservice.fastpath.directwrite import writeNow
from sockservice.wire.auth import UNAUTHORIZED
from sockservice.wire.limits import QUEUED_ENTRY, limitBuffer, limitKernelBuffer
from sockservice.wire.lines import LineFactory, LineProtocol

TOO_SLOW = b"ERROR too slow\n"

#: Bytes a relay client's transport holds (and reads at a time) before it
#: pauses and lines for it wait in L{RelayProtocol.queued}, shared with the
#: other readers: 10,000 readers that never read hold this much each.
TRANSPORT_BUFFER = 16 * 1024

#: What the kernel may hold of a relay client's output (L{limitKernelBuffer}).
KERNEL_BUFFER = 32 * 1024


class RelayProtocol(LineProtocol):
    """
    Publishes each read's complete lines as one chunk, and a last partial
    line (given an LF) when the client closes cleanly. With a token gate, a client
    joins the hub only once its first line is the token.

    As the transport's producer it learns when its write buffer is full;
    from then until it has drained, deliveries wait in L{queued} instead,
    and a client with more than C{limits.maxBuffer} bytes waiting there is
    dropped as too slow rather than let its output grow without bound; so
    are those holding the most once all slow readers together hold more
    than C{limits.maxQueued} (L{Limits.chargeQueued}).

    @ivar queued: deliveries held back while the transport's buffer is
        full, or L{None} while it has room.
    @ivar queuedSize: their total size.
    @ivar queuedLines: their lines.
    @ivar queuedCost: what they count for in all slow readers' total: their
        size and C{QUEUED_ENTRY} bytes each for its place in the queue.
    """

    member = False
    queued = None
    queuedSize = 0
    queuedLines = 0
    queuedCost = 0

    def connectionMade(self):
        limitBuffer(self.transport, TRANSPORT_BUFFER)
        limitKernelBuffer(self.transport, KERNEL_BUFFER)
        LineProtocol.connectionMade(self)
        self.registerAsProducer()
        if self.factory.gate is None:
            self._join()

    def _join(self):
        self.member = True
        self.factory.hub.join(self)

    def linesReceived(self, chunk, count):
        if not self.member:
            token, _, chunk = chunk.partition(b"\n")
            if not self.factory.gate.admits(token):
                self.refuse(UNAUTHORIZED, "unauthorized: wrong token from {peer}, closing")
                return
            self._join()
            if not chunk:
                return
        self.factory.relay(self, chunk)

    def connectionLost(self, reason):
        partial = self.takePartialLine()
        if partial and self.member and reason.check(ConnectionDone):
            # Only a clean close (FIN) ends a last line; after a reset, an
            # abort or a refusal it is a line cut short.
            self.factory.relay(self, partial + b"\n")
        self._forgetQueued()
        self.factory.hub.leave(self)
        LineProtocol.connectionLost(self, reason)

    def refuse(self, error, format, **fields):
        # Nothing more is delivered after the ERROR line: what is queued is
        # dropped, and the hub hands it nothing more while it closes (up to
        # closeGrace), so thousands of readers dropped at once cost every
        # later publish nothing.
        if self.queued:
            self.factory.counters.dropped(self.queuedLines, self.queuedSize)
        self._forgetQueued()
        self.queued = []
        self.factory.hub.leave(self)
        LineProtocol.refuse(self, error, format, **fields)

    def deliver(self, data):
        if self.queued is None:
            self.transport.write(data)
        else:
            size = len(data)
            cost = size + QUEUED_ENTRY
            limits = self.factory.limits
            if limits.maxBuffer and self.queuedSize + size > limits.maxBuffer:
                self.refuse(
                    TOO_SLOW,
                    "{peer} is too slow: over {maxBuffer} bytes queued for it, dropping it",
                    maxBuffer=limits.maxBuffer,
                )
            elif not limits.chargeQueued(self.queuedCost, cost):
                self.refuse(
                    TOO_SLOW,
                    "{peer} is too slow: {queued} bytes queued for slow readers in all, "
                    "{queuedSize} of them for it, dropping it",
                    queued=limits.queued, queuedSize=self.queuedCost,
                )
            else:
                self.queued.append(data)
                self.queuedSize += size
                self.queuedLines += self.factory.lines(data)
                self.queuedCost += cost
                return
            self.factory.counters.dropped(self.factory.lines(data), len(data))

    def _forgetQueued(self):
        self.factory.limits.releaseQueued(self.queuedCost)
        self.queued, self.queuedSize, self.queuedLines, self.queuedCost = None, 0, 0, 0

    def pauseProducing(self):
        # The transport repeats this on every write while its buffer is full.
        if self.queued is None:
            self.queued, self.queuedSize = [], 0

    def resumeProducing(self):
        # One line chunk at a time, until the transport pauses again: the
        # rest stays queued as the chunks shared with the other readers,
        # so what the transport copies for this reader stays near its
        # buffer size, not all that waited.
        queued = self.queued
        self._forgetQueued()
        for index, data in enumerate(queued or ()):
            # Straight to the socket while it takes them: a reader that
            # caught up gets all it can take in one turn of the reactor,
            # not one chunk a turn behind every other connection's.
            writeNow(self.transport, data)
            if self.queued is not None:
                rest = queued[index + 1:]
                size = sum(map(len, rest))
                self.queued, self.queuedSize = rest, size
                self.queuedLines = sum(data.count(b"\n") for data in rest)
                self.queuedCost = size + QUEUED_ENTRY * len(rest)
                self.factory.limits.keepQueued(self.queuedCost)
                return

    flushHeld = resumeProducing


class RelayFactory(LineFactory):
    """
    Owns the hub; logs relayed lines only when asked to.

    @ivar gate: the L{TokenGate} clients must pass, or L{None}.
    """

    mode = "relay"
    protocol = RelayProtocol
    messageFormat = "relayed {message} (from {peer})"
    _counted = (None, 0)

    def __init__(self, log, hub, maxLine=65536, greeting=b"", logMessages=False,
                 limits=None, gate=None):
        super().__init__(log, maxLine, greeting, limits)
        self.hub = hub
        self.logRelayed = logMessages
        self.gate = gate

    def lines(self, data):
        """
        The lines in C{data}, a chunk relayed. The hub hands one chunk to
        each member in turn, so it is counted once however many readers
        queue or drop it: for thousands of readers that never read, counting
        it for each one took longer than anything else the relay did.
        """
        counted, lines = self._counted
        if counted is not data:
            lines = data.count(b"\n")
            self._counted = data, lines
        return lines

    def relay(self, sender, chunk):
        self.hub.publish(sender, chunk)
        if self.logRelayed:
            self.logMessages(sender, chunk, chunk.count(b"\n"))
