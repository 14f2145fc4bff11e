"""
relay mode (seed 002's goal: A and B talk through S): every line from one
client goes, byte for byte, to every other client; never back to the sender.
"""

from sockservice.lines import LineFactory, LineProtocol


class RelayProtocol(LineProtocol):
    """
    Publishes each read's complete lines as one chunk, and a last partial
    line (given an LF) when the client goes.
    """

    def connectionMade(self):
        LineProtocol.connectionMade(self)
        self.factory.hub.join(self)

    def linesReceived(self, chunk):
        self.factory.relay(self, chunk)

    def connectionLost(self, reason):
        if self._buffer:
            chunk, self._buffer = self._buffer + b"\n", b""
            self.factory.relay(self, chunk)
        self.factory.hub.leave(self)
        LineProtocol.connectionLost(self, reason)

    def deliver(self, data):
        # Queued, not sent at once: what several senders publish in one
        # reactor iteration then leaves in one send per receiver.
        self.transport.write(data)


class RelayFactory(LineFactory):
    """
    Owns the hub; logs relayed lines only when asked to.
    """

    mode = "relay"
    protocol = RelayProtocol
    messageFormat = "relayed {message} (from {peer})"

    def __init__(self, log, hub, maxLine=65536, greeting=b"", logMessages=False):
        super().__init__(log, maxLine, greeting)
        self.hub = hub
        self.logRelayed = logMessages

    def relay(self, sender, chunk):
        self.hub.publish(sender, chunk)
        if self.logRelayed:
            self.logMessages(sender, chunk, chunk.count(b"\n"))
