"""
Shared test helpers: protocols on string transports, captured log events.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent

from twisted.python.failure import Failure

from sockservice.foldinglog import FoldingLog


def peerAddress(port=5000):
    return IPv4Address("TCP", "127.0.0.1", port)


class CapturedLog:
    """
    A L{FoldingLog} on a fake clock whose events are kept for assertions.
    """

    def __init__(self, budget=100):
        self.events = []
        self.clock = Clock()
        self.log = FoldingLog(Logger(observer=self.events.append), self.clock, budget)

    def messages(self):
        return [formatEvent(event) for event in self.events]


def connect(factory, port=5000, transportType=StringTransport):
    """
    Connect a protocol from C{factory} to a new C{transportType} (a string
    transport); return both.
    """
    address = peerAddress(port)
    proto = factory.buildProtocol(address)
    transport = transportType(peerAddress=address)
    proto.makeConnection(transport)
    return proto, transport


def received(transport):
    """
    Return and clear what was written to C{transport}.
    """
    data = transport.value()
    transport.clear()
    return data


def disconnect(proto, reason=ConnectionDone):
    """
    Tell C{proto} its connection ended (by default, cleanly).
    """
    proto.connectionLost(Failure(reason()))


class HalfClosingTransport(StringTransport):
    """
    A L{StringTransport} that can close its sending side alone, as TCP and
    UNIX transports can.

    @ivar writeClosed: whether L{loseWriteConnection} was called.
    """

    writeClosed = False

    def loseWriteConnection(self):
        self.writeClosed = True

