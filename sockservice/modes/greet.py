"""
greet mode (seeds 000/001): a greeting on connect, an ack for every line.
"""

from sockservice.wire.lines import LineFactory, LineProtocol


class GreetProtocol(LineProtocol):
    """
    Acknowledges every complete line, answering each read with one write.
    A client that sends but does not read its acks is not read either
    until it does, so its acks cannot pile up in memory.
    """

    def pauseProducing(self):
        LineProtocol.pauseProducing(self)
        self.factory.log.info(
            "paused", "{peer} is not reading its acks: reading from it paused",
            peer=self.peer,
        )

    def resumeProducing(self):
        self.factory.log.info(
            "resumed", "{peer} read its acks: reading from it resumed", peer=self.peer
        )
        LineProtocol.resumeProducing(self)

    def linesReceived(self, chunk):
        if not self.producing:
            # Not on connect: TLS pauses its producer until the handshake is
            # done, and pausing greet stops reading, which stalls the handshake.
            self.registerAsProducer()
        count = chunk.count(b"\n")
        self.send(self.factory.ack * count)
        self.factory.logMessages(self, chunk, count)


class GreetFactory(LineFactory):
    """
    @ivar ack: the acknowledgement line, ending in LF.
    """

    mode = "greet"
    protocol = GreetProtocol
    messageFormat = "Buffer: {message} (from {peer})"

    def __init__(self, log, maxLine=65536, greeting=b"connect\n",
                 ack=b"Information Received\n", limits=None):
        super().__init__(log, maxLine, greeting, limits)
        self.ack = ack
