"""
greet mode (seeds 000/001): a greeting on connect, an ack for every line.
"""

import re
from itertools import islice

from sockservice.fastpath.directwrite import writeNow
from sockservice.wire.limits import limitBuffer
from sockservice.wire.lines import LineFactory, LineProtocol

#: Bytes of acks a client that does not read may have waiting in the
#: server: its transport pauses reading from it past this.
OUTPUT_BUDGET = 16 * 1024

#: Acks are written at most this many bytes at a time: a read of thousands
#: of lines (bare newlines, one ack each) is answered a batch per reactor
#: turn, taking turns with every other client, and no more once the budget
#: is spent.
ACKS_PER_WRITE = 8 * 1024

#: Flooding clients answered a batch each per reactor turn, at most.
BATCHES_PER_TURN = 256

_batches = {}


def afterLines(chunk, count):
    """
    The offset in C{chunk} just after its C{count}th LF (it has more), found
    without splitting the lines out one by one.
    """
    pattern = _batches.get(count)
    if pattern is None:
        pattern = _batches[count] = re.compile(rb"(?:[^\n]*\n){%d}" % count)
    return pattern.match(chunk).end()


class GreetProtocol(LineProtocol):
    """
    Acknowledges every complete line, answering each read with one write
    (or a few, for thousands of lines). A client that sends but does not
    read its acks is not read either until it does: once L{OUTPUT_BUDGET}
    bytes wait for it, the lines it sent wait, unanswered (counted in the
    factory's input budget), and so does what it sends next, in its own
    socket buffers.
    """

    def pauseProducing(self):
        LineProtocol.pauseProducing(self)
        self.factory.log.info(
            "{peer} is not reading its acks: reading from it paused",
            kind="paused", peer=self.peer,
        )

    def resumeProducing(self):
        self.factory.log.info(
            "{peer} read its acks: reading from it resumed", kind="resumed", peer=self.peer
        )
        LineProtocol.resumeProducing(self)

    def connectionMade(self):
        # Before the first read, which would otherwise take 64 KiB at once.
        limitBuffer(self.transport, OUTPUT_BUDGET)
        LineProtocol.connectionMade(self)

    def linesReceived(self, chunk, count):
        if not self.producing:
            # Not on connect: TLS pauses its producer until the handshake is
            # done, and pausing greet stops reading, which stalls the handshake.
            self.registerAsProducer()
        factory = self.factory
        if count > factory.acksPerWrite:
            return self._answerInBatches(factory.ack, chunk, count)
        acks = factory.ack * count
        writeNow(self.transport, acks)
        # What send would count: an ack is one line (the tap makes it so).
        counters = factory.counters
        counters.linesSent += count
        counters.bytesSent += len(acks)
        logged = factory.log.take("received", count, len(chunk))
        if logged:
            factory.logTaken(self, chunk, count, logged)
        return None

    def _answerInBatches(self, ack, chunk, count):
        """
        Answer the first batch of a read of many lines and return the rest,
        which waits for the next reactor turn (or, if the batch filled the
        transport's buffer, until it drains). Without a clock to take turns
        on, the batches go on until the transport pauses.
        """
        perWrite = self.factory.acksPerWrite
        clock = self.factory.limits.clock
        while count > perWrite:
            end = afterLines(chunk, perWrite)
            self.send(ack * perWrite)
            self.factory.logMessages(self, chunk[:end], perWrite)
            chunk, count = chunk[end:], count - perWrite
            if self.paused:
                return chunk
            if clock is not None:
                LineProtocol.pauseProducing(self)
                self.factory.waitForTurn(self)
                return chunk
        self.send(ack * count)
        self.factory.logMessages(self, chunk, count)
        return None

    def nextTurn(self):
        """
        Answer the next batch, as the factory's turn comes round.
        """
        LineProtocol.resumeProducing(self)

    def connectionLost(self, reason):
        self.factory.leaveTurns(self)
        LineProtocol.connectionLost(self, reason)


class GreetFactory(LineFactory):
    """
    @ivar ack: the acknowledgement line, ending in LF.
    @ivar acksPerWrite: how many acks one write may carry (L{ACKS_PER_WRITE}
        bytes of them, at least one), worked out when C{ack} is set rather
        than on every read.
    """

    mode = "greet"
    protocol = GreetProtocol
    messageFormat = "Buffer: {message} (from {peer})"

    def __init__(self, log, maxLine=65536, greeting=b"connect\n",
                 ack=b"Information Received\n", limits=None):
        super().__init__(log, maxLine, greeting, limits)
        self.setAck(ack)
        #: The protocols with batches left to answer, in the order they
        #: will get their turn (a dict as an ordered set).
        self._waiting = {}
        self._turn = None

    def waitForTurn(self, proto):
        """
        Give C{proto} its next batch in a later reactor turn. One timed call
        serves every waiting protocol, L{BATCHES_PER_TURN} of them a turn:
        a timed call each would run them all in every turn, thousands of
        flooding clients in one turn while a new client waits.
        """
        self._waiting[proto] = None
        if self._turn is None:
            self._turn = self.limits.clock.callLater(0, self._nextTurns)

    def leaveTurns(self, proto):
        self._waiting.pop(proto, None)
        if not self._waiting and self._turn is not None:
            self._turn.cancel()
            self._turn = None

    def _nextTurns(self):
        self._turn = None
        waiting = self._waiting
        for proto in list(islice(waiting, BATCHES_PER_TURN)):
            del waiting[proto]
            proto.nextTurn()
        if waiting and self._turn is None:
            self._turn = self.limits.clock.callLater(0, self._nextTurns)

    def setAck(self, ack):
        """
        Answer every line with C{ack} from now on (a reload may change it).
        """
        self.ack = ack
        self.acksPerWrite = ACKS_PER_WRITE // len(ack) or 1
