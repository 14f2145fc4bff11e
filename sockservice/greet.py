"""
greet mode (seeds 000/001): a greeting on connect, an ack for every line.
"""

from sockservice.lines import LineFactory, LineProtocol


class GreetProtocol(LineProtocol):
    """
    Acknowledges every complete line, answering each read with one write.
    """

    def linesReceived(self, chunk):
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
                 ack=b"Information Received\n"):
        super().__init__(log, maxLine, greeting)
        self.ack = ack
