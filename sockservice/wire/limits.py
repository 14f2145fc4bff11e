"""
The limits a server enforces so floods, idle peers and slow readers cannot
exhaust it: connection caps, the idle timeout, the relay output backlog and
the grace given to a closing connection before it is aborted.
"""

import resource
from collections import Counter

from twisted.internet import protocol

from sockservice.wire.addresses import describeAddress
from sockservice.wire.idle import IdleWatch

SERVER_FULL = b"ERROR server full\n"
SPARE_FILES = 64


def peerHost(address):
    """
    The host a connection's per-IP count is kept under, or L{None} for
    addresses without one (UNIX sockets).
    """
    return getattr(address, "host", None)


class Limits:
    """
    What one factory enforces, and the connection counts it needs for that.
    Zero turns a limit off; the defaults are all off so a bare factory
    behaves as before.

    @ivar clock: schedules idle timeouts and aborts; L{None} with both off.
    @ivar idleTimeout: seconds without a complete line before a connection
        is closed.
    @ivar idle: the L{IdleWatch} that closes them, or L{None}.
    @ivar maxConnections: connections served at once.
    @ivar maxPerIP: connections served at once from one host.
    @ivar maxBuffer: relay: bytes queued for a client beyond the transport's
        own write buffer before it is disconnected as too slow.
    @ivar closeGrace: seconds a refused connection may take to read its
        C{ERROR} line before it is aborted. C{loseConnection} alone never
        completes for a peer that stopped reading.
    """

    def __init__(self, clock=None, idleTimeout=0, maxConnections=0, maxPerIP=0,
                 maxBuffer=0, closeGrace=5.0):
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.idle = IdleWatch(clock, idleTimeout) if idleTimeout else None
        self.maxConnections = maxConnections
        self.maxPerIP = maxPerIP
        self.maxBuffer = maxBuffer
        self.closeGrace = closeGrace if clock is not None else 0
        self.perHost = Counter()

    def refusal(self, address, connected):
        """
        Why a new connection from C{address} is refused when C{connected}
        are open already, as C{(kind, reason)} (the metrics' C{server_full}
        or C{per_ip}, and words for the log), or L{None} to serve it.
        """
        if self.maxConnections and connected >= self.maxConnections:
            return "server_full", f"{self.maxConnections} connections open"
        host = peerHost(address)
        if self.maxPerIP and host is not None and self.perHost[host] >= self.maxPerIP:
            return "per_ip", f"{self.maxPerIP} connections open from {host}"
        return None

    def opened(self, address):
        if self.maxPerIP:
            host = peerHost(address)
            if host is not None:
                self.perHost[host] += 1

    def closed(self, address):
        if self.maxPerIP:
            host = peerHost(address)
            if host is not None:
                self.perHost[host] -= 1
                if not self.perHost[host]:
                    del self.perHost[host]

    def close(self, transport):
        """
        Close C{transport} once its output is written, and abort it if that
        has not happened within L{closeGrace}; return the pending abort (for
        the protocol to cancel when the connection is lost), or L{None}.
        """
        transport.loseConnection()
        if not self.closeGrace:
            return None
        return self.clock.callLater(self.closeGrace, transport.abortConnection)


class RefusedProtocol(protocol.Protocol):
    """
    Stands in for a mode's protocol on a connection over a limit: one
    C{ERROR server full} line, one log event, and the connection closes.
    """

    _abort = None

    def __init__(self, factory, reason):
        self.factory = factory
        self.reason = reason

    def connectionMade(self):
        self.transport.write(SERVER_FULL)
        self.factory.counters.sent(SERVER_FULL)
        self.factory.log.warn(
            "refused",
            "server full ({reason}): refused {peer}",
            reason=self.reason,
            peer=describeAddress(self.transport.getPeer()),
        )
        self._abort = self.factory.limits.close(self.transport)

    def connectionLost(self, reason):
        cancelAbort(self._abort)


def cancelAbort(abort):
    """
    Cancel an abort from L{Limits.close} once the connection is gone.
    """
    if abort is not None and abort.active():
        abort.cancel()


def raiseOpenFileLimit(connections, rlimits=resource):
    """
    Raise this process's soft limit on open files so C{connections} fit
    (plus L{SPARE_FILES} for listeners, logs and pipes), as far as the hard
    limit allows: the usual soft limit of 1024 would otherwise cap
    connections far below C{--max-connections}, with no C{ERROR server
    full} for those refused. Return how many connections fit.
    """
    soft, hard = rlimits.getrlimit(rlimits.RLIMIT_NOFILE)
    wanted = connections + SPARE_FILES
    if soft != rlimits.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == rlimits.RLIM_INFINITY else min(wanted, hard)
        rlimits.setrlimit(rlimits.RLIMIT_NOFILE, (soft, hard))
    if soft == rlimits.RLIM_INFINITY:
        return connections
    return min(connections, soft - SPARE_FILES)
