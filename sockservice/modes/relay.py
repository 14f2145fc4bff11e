"""
relay mode (seed 002's goal: A and B talk through S): every line from one
client goes, byte for byte, to every other client; never back to the sender.
"""

from sockservice.wire.auth import UNAUTHORIZED
from sockservice.wire.lines import LineFactory, LineProtocol

TOO_SLOW = b"ERROR too slow\n"


class RelayProtocol(LineProtocol):
    """
    Publishes each read's complete lines as one chunk, and a last partial
    line (given an LF) when the client goes. With a token gate, a client
    joins the hub only once its first line is the token.

    As the transport's producer it learns when its write buffer is full;
    from then until it has drained, deliveries wait in L{queued} instead,
    and a client with more than C{limits.maxBuffer} bytes waiting there is
    dropped as too slow rather than let its output grow without bound.

    @ivar queued: deliveries held back while the transport's buffer is
        full, or L{None} while it has room.
    @ivar queuedSize: their total size.
    """

    member = False
    queued = None
    queuedSize = 0

    def connectionMade(self):
        LineProtocol.connectionMade(self)
        self.registerAsProducer()
        if self.factory.gate is None:
            self._join()

    def _join(self):
        self.member = True
        self.factory.hub.join(self)

    def linesReceived(self, chunk):
        if not self.member:
            token, _, chunk = chunk.partition(b"\n")
            if not self.factory.gate.admits(token):
                self.factory.counters.refused["unauthorized"] += 1
                self.refuse(UNAUTHORIZED, "unauthorized: wrong token from {peer}, closing")
                return
            self._join()
            if not chunk:
                return
        self.factory.relay(self, chunk)

    def connectionLost(self, reason):
        if self._buffer and self.member:
            chunk, self._buffer = self._buffer + b"\n", b""
            self.factory.relay(self, chunk)
        self.factory.hub.leave(self)
        LineProtocol.connectionLost(self, reason)

    def refuse(self, error, format, **fields):
        # Nothing more is delivered after the ERROR line.
        self.factory.counters.dropped(b"".join(self.queued or ()))
        self.queued, self.queuedSize = [], 0
        LineProtocol.refuse(self, error, format, **fields)

    def deliver(self, data):
        if self.queued is None:
            self.transport.write(data)
        elif self.refused:
            self.factory.counters.dropped(data)
        else:
            self.queued.append(data)
            self.queuedSize += len(data)
            maxBuffer = self.factory.limits.maxBuffer
            if maxBuffer and self.queuedSize > maxBuffer:
                self.factory.counters.refused["too_slow"] += 1
                self.refuse(
                    TOO_SLOW,
                    "{peer} is too slow: over {maxBuffer} bytes queued for it, dropping it",
                    maxBuffer=maxBuffer,
                )

    def pauseProducing(self):
        # The transport repeats this on every write while its buffer is full.
        if self.queued is None:
            self.queued, self.queuedSize = [], 0

    def resumeProducing(self):
        queued, self.queued, self.queuedSize = self.queued, None, 0
        if queued:
            self.transport.write(b"".join(queued))

    def stopProducing(self):
        pass


class RelayFactory(LineFactory):
    """
    Owns the hub; logs relayed lines only when asked to.

    @ivar gate: the L{TokenGate} clients must pass, or L{None}.
    """

    mode = "relay"
    protocol = RelayProtocol
    messageFormat = "relayed {message} (from {peer})"

    def __init__(self, log, hub, maxLine=65536, greeting=b"", logMessages=False,
                 limits=None, gate=None):
        super().__init__(log, maxLine, greeting, limits)
        self.hub = hub
        self.logRelayed = logMessages
        self.gate = gate

    def relay(self, sender, chunk):
        self.hub.publish(sender, chunk)
        if self.logRelayed:
            self.logMessages(sender, chunk, chunk.count(b"\n"))
