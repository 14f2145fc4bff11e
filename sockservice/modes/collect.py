"""
collect mode (seed 004; seed 002's server is C{--count 1} without greeting):
greet, take one message per connection, log it, close; after C{count}
connections stop listening, and finish once the last one has closed.
"""

from twisted.internet.defer import Deferred

from sockservice.wire.lines import LineFactory, LineProtocol, logText, stripLineEnding


class CollectProtocol(LineProtocol):
    """
    Takes the first complete line, or whatever arrived before the client
    closed, as the connection's one message.
    """

    collected = False

    def send(self, data):
        """
        Queue C{data} on the transport. The port stops listening on the next
        reactor iteration and queued bytes leave after that, so no client is
        greeted while one more could still connect.
        """
        self.transport.write(data)
        self.factory.counters.sent(data)

    def linesReceived(self, chunk, count):
        self._collect(chunk[: chunk.index(b"\n") + 1])
        self.stopTaking()
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not (self.collected or self.refused):
            self._collect(self.takePartialLine())
        LineProtocol.connectionLost(self, reason)

    def _collect(self, line):
        """
        Log the message, whatever the rate: it is collect's output, so it is
        never folded.
        """
        self.collected = True
        self.factory.counters.collected += 1
        self.factory.log.info(
            self.factory.messageFormat,
            peer=self.peer,
            message=logText(stripLineEnding(line)),
        )


class CollectFactory(LineFactory):
    """
    Serves C{count} connections, then refuses more.

    @ivar allAccepted: fires when the last allowed connection is accepted,
        so the listeners can stop.
    @ivar finished: fires when that connection has closed too.
    """

    mode = "collect"
    protocol = CollectProtocol
    messageFormat = "收到的信息:{message} (from {peer})"

    def __init__(self, log, maxLine=65536, greeting="测试成功！\n".encode(),
                 count=5, limits=None):
        super().__init__(log, maxLine, greeting, limits)
        self.remaining = count
        self.allAccepted = Deferred()
        self.finished = Deferred()

    def buildProtocol(self, addr):
        if not self.remaining:
            return None
        proto = LineFactory.buildProtocol(self, addr)
        if isinstance(proto, CollectProtocol):
            self.remaining -= 1
            if not self.remaining:
                self.allAccepted.callback(None)
        return proto

    def connectionClosed(self, proto, reason):
        LineFactory.connectionClosed(self, proto, reason)
        if not self.remaining and not self.protocols:
            self.finished.callback(None)
