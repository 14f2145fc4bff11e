"""
The limits a server enforces so floods, idle peers and slow readers cannot
exhaust it: connection caps, the idle timeout, the relay output backlog and
the grace given to a closing connection before it is aborted.
"""

import resource
import socket
from collections import Counter, OrderedDict

from twisted.internet import protocol, tcp
from twisted.internet.abstract import FileDescriptor

from sockservice.wire.addresses import describeAddress
from sockservice.wire.idle import IdleWatch

SERVER_FULL = b"ERROR server full\n"
SPARE_FILES = 64

#: Bytes of queued lines any slow relay reader may hold whatever the others
#: hold (L{Limits.chargeQueued}).
QUEUED_FLOOR = 64 * 1024

#: What one queued delivery costs beyond its bytes (shared with the other
#: readers): its place in the queue, counted so that a flood of tiny lines
#: is bounded too.
QUEUED_ENTRY = 64

#: Connections whose close grace ran out aborted in one go (L{AbortQueue}),
#: and the seconds before the next go.
ABORT_BATCH = 200
ABORT_SPACING = 0.01


def peerHost(address):
    """
    The host a connection's per-IP count is kept under, or L{None} for
    addresses without one (UNIX sockets).
    """
    return getattr(address, "host", None)


class Limits:
    """
    What one factory enforces, and the connection counts it needs for that.
    Zero turns a limit off; the defaults are off, but for those that bound
    memory in all (L{maxInputHeld}, L{maxQueued}, L{maxHandshakes}).

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
    @ivar inputAllowance: bytes of pending input (a partial line, lines
        waiting while paused) any connection may hold.
    @ivar maxInputHeld: bytes of pending input beyond their allowance all
        connections together may hold; a connection that would take more is
        refused (C{ERROR server busy}). On by default: 10,000 connections
        each one byte short of C{--max-line} would otherwise hold 640 MiB.
    @ivar inputHeld: bytes held beyond their allowance now.
    @ivar maxQueued: relay: bytes all slow readers together may have queued
        (beyond their transports' buffers) before those holding the most are
        dropped as too slow (L{chargeQueued}); the total stays under this
        plus L{QUEUED_FLOOR} per slow reader. On by default, for the same
        reason.
    @ivar queued: relay: bytes queued for slow readers now.
    @ivar slowReaders: relay: readers with bytes queued now.
    @ivar maxHandshakes: TLS handshakes unfinished at once before the oldest
        is aborted (L{handshakeStarted}). On by default: 10,000 clients
        stalled halfway through their handshakes would hold over 500 MiB.
    @ivar handshakes: the protocols whose TLS handshake is unfinished,
        oldest first.
    """

    def __init__(self, clock=None, idleTimeout=0, maxConnections=0, maxPerIP=0,
                 maxBuffer=0, closeGrace=5.0, inputAllowance=4096,
                 maxInputHeld=32 << 20, maxQueued=64 << 20, maxHandshakes=1000):
        self.clock = clock
        self.idleTimeout = idleTimeout
        self.idle = IdleWatch(clock, idleTimeout) if idleTimeout else None
        self.maxConnections = maxConnections
        self.maxPerIP = maxPerIP
        self.maxBuffer = maxBuffer
        self.closeGrace = closeGrace if clock is not None else 0
        self.aborts = AbortQueue(clock) if clock is not None else None
        self.perHost = Counter()
        self.inputAllowance = inputAllowance
        self.maxInputHeld = maxInputHeld
        self.inputHeld = 0
        self.maxQueued = maxQueued
        self.queued = 0
        self.slowReaders = 0
        self.maxHandshakes = maxHandshakes
        self.handshakes = OrderedDict()

    def update(self, idleTimeout, maxConnections, maxPerIP, maxBuffer, peers=()):
        """
        Change the limits while serving (a reload); C{peers} are the
        addresses of the connections open now, counted afresh for
        C{maxPerIP}. A changed idle timeout applies to every connection;
        turning it on or off, to connections opened from now on.
        """
        if idleTimeout and self.idle is not None:
            self.idle.timeout = idleTimeout
        elif idleTimeout != self.idleTimeout:
            self.idle = IdleWatch(self.clock, idleTimeout) if idleTimeout else None
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
        self.maxPerIP = maxPerIP
        self.perHost = Counter(
            host for host in map(peerHost, peers) if maxPerIP and host is not None
        )
        self.maxBuffer = maxBuffer

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

    def chargeInput(self, charged, pending):
        """
        Count a connection holding C{pending} bytes of input, C{charged} of
        which were counted before; return the bytes counted now, or L{None}
        if the total they may hold cannot take them.
        """
        wanted = pending - self.inputAllowance if pending > self.inputAllowance else 0
        over = self.inputHeld + wanted - charged > self.maxInputHeld
        if wanted > charged and self.maxInputHeld and over:
            return None
        self.inputHeld += wanted - charged
        return wanted

    def chargeQueued(self, queuedSize, nbytes):
        """
        Count C{nbytes} more queued for a slow relay reader that has
        C{queuedSize} queued already; return whether it may have them. Under
        L{maxQueued} in all, any reader may; past it, only one that would
        still hold no more than its share: L{maxQueued} divided among the
        slow readers, but at least L{QUEUED_FLOOR}, so the readers holding
        the most are dropped and one only briefly behind is not.
        """
        if self.maxQueued and self.queued + nbytes > self.maxQueued:
            share = self.maxQueued // (self.slowReaders or 1)
            if queuedSize + nbytes > max(share, QUEUED_FLOOR):
                return False
        if not queuedSize:
            self.slowReaders += 1
        self.queued += nbytes
        return True

    def keepQueued(self, queuedSize):
        """
        Count again the C{queuedSize} bytes a slow reader still holds of
        what it was allowed before (L{chargeQueued}).
        """
        if queuedSize:
            self.slowReaders += 1
            self.queued += queuedSize

    def releaseQueued(self, queuedSize):
        """
        A slow reader's C{queuedSize} bytes were written or dropped.
        """
        if queuedSize:
            self.queued -= queuedSize
            self.slowReaders -= 1

    def handshakeStarted(self, proto):
        """
        Count C{proto}'s TLS handshake. Past L{maxHandshakes} unfinished at
        once, the oldest is aborted: a stalled handshake holds tens of KiB,
        and a new client must still get its turn. Return the aborted one.
        """
        self.handshakes[proto] = None
        if self.maxHandshakes and len(self.handshakes) > self.maxHandshakes:
            oldest, _ = self.handshakes.popitem(last=False)
            oldest.transport.abortConnection()
            return oldest
        return None

    def handshakeDone(self, proto):
        self.handshakes.pop(proto, None)

    def close(self, transport):
        """
        Close C{transport} once its output is written, and abort it if that
        has not happened within L{closeGrace}; return the pending abort (for
        the protocol to cancel when the connection is lost), or L{None}.
        """
        transport.loseConnection()
        if not self.closeGrace:
            return None
        return PendingAbort(self.aborts, transport, self.closeGrace)


class PendingAbort:
    """
    One connection to abort once its close grace runs out, unless cancelled
    first: the grace's timer, then its place in the L{AbortQueue}.
    """

    def __init__(self, aborts, transport, delay):
        self.aborts = aborts
        self.transport = transport
        self.timer = aborts.clock.callLater(delay, aborts.due, self)

    def active(self):
        return self.timer.active() or self in self.aborts.pending

    def cancel(self):
        if self.timer.active():
            self.timer.cancel()
        else:
            del self.aborts.pending[self]


class AbortQueue:
    """
    Aborts the connections whose close grace ran out, L{ABORT_BATCH} at a
    time, L{ABORT_SPACING} seconds apart. Thousands refused in one instant
    (readers dropped as too slow by one blast) time out in one instant too;
    aborting them all in one turn of the event loop would keep everyone
    else waiting for a second or more.

    @ivar pending: the L{PendingAbort}s due, oldest first.
    """

    def __init__(self, clock):
        self.clock = clock
        self.pending = OrderedDict()
        self._next = None

    def due(self, abort):
        self.pending[abort] = None
        if self._next is None:
            # The next turn, so that all those due in this one are queued.
            self._next = self.clock.callLater(0, self._abortSome)

    def _abortSome(self):
        self._next = None
        for _ in range(min(ABORT_BATCH, len(self.pending))):
            abort, _ = self.pending.popitem(last=False)
            abort.transport.abortConnection()
        if self.pending:
            self._next = self.clock.callLater(ABORT_SPACING, self._abortSome)


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
            "server full ({reason}): refused {peer}",
            kind="refused",
            reason=self.reason,
            peer=describeAddress(self.transport.getPeer()),
        )
        self._abort = self.factory.limits.close(self.transport)

    def connectionLost(self, reason):
        cancelAbort(self._abort)


def limitBuffer(transport, size):
    """
    Make C{transport} pause its producer once C{size} bytes wait to be sent,
    and read at most C{size} bytes at a time: a socket transport does both
    by its C{bufferSize} (L{FileDescriptor.bufferSize}, 64 KiB by default).
    What waits there is a private copy per connection (Twisted joins it
    when it writes), so the size bounds what each slow reader costs. Other
    transports (TLS, a test's) keep their own.
    """
    if isinstance(transport, FileDescriptor):
        transport.bufferSize = size


def limitKernelBuffer(transport, size):
    """
    Cap the kernel's send buffer of C{transport}'s socket at C{size} bytes
    (Linux doubles it for its bookkeeping). On loopback the kernel sizes it
    from the 64 KiB segment, to megabytes per connection: for thousands of
    peers that never read, taking that much from each is gigabytes copied,
    and seconds in which the event loop serves no one else. Other
    transports (TLS, a test's) keep theirs.
    """
    if isinstance(transport, tcp.Connection):
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


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
