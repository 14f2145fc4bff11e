"""
A TCP listening port that empties the kernel's accept queue before it sets
connections up, so a burst of clients is not dropped by a full listen queue.

Twisted's C{tcp.Port.doRead} accepts a connection and at once builds its
protocol and transport (in sockservice: the limits checked, the counters,
the greeting sent), about 30 µs each, before it accepts the next: the kernel
queue drains only as fast as connections are set up. Loopback clients
connect faster than that, and once C{backlog} of them wait the kernel drops
the next handshakes (C{TcpExtListenOverflows}); those clients wait a second
or more for a SYN retransmit. This port accepts every connection the kernel
holds (a few µs each) into a queue of its own, builds from that queue, and
empties the kernel's again every L{EagerAcceptPort.batch} builds. It builds
at most L{EagerAcceptPort.buildsPerRead} connections a call, so a connect
storm cannot starve the connections already open, and goes on in the next
reactor iteration. It holds at most as many accepted connections as the
kernel's queue can (L{EagerAcceptPort.maxQueued}); past that the kernel
holds the rest, as before, so twice the listen backlog can wait in all. It
reads how many the kernel holds (L{acceptQueue}, Linux only, as epoll is)
rather than calling C{accept} until it fails with C{EAGAIN}: a failing
C{accept} costs the kernel about as much as one that succeeds.

Twisted internals used, as of Twisted 26.10 (pyproject pins C{<27}):
C{tcp._accept} (the accept loop with its handling of C{EAGAIN}, C{EPERM},
C{EMFILE} with the reserved descriptor C{tcp._reservedFD}, C{ENFILE},
C{ENOBUFS}, C{ENOMEM}, C{ECONNABORTED} and their log events), used as is;
C{tcp._BuffersLogs}, which holds those events until the accepting is done;
C{Port._logger}, read as Twisted's port reads it so the events keep their
namespace; and C{Port.doRead}'s setting up of one connection (the IPv6 scope
in the address, C{_buildAddr}, a factory returning L{None} closing the
socket, C{sessionno}, C{transport}), which L{EagerAcceptPort._build}
repeats. Twisted's own port, TLS and accept-failure tests run against it in
tests/test_directepoll.py and tests/test_eageraccept.py, so a change in
Twisted shows there.
"""

import socket
from collections import deque
from struct import Struct

from twisted.internet import tcp
from twisted.python import log


_LISTENER_INFO = Struct("=II")


def acceptQueue(listening):
    """
    The kernel's accept queue for the listening TCP socket C{listening}:
    how many connections it holds, and how many it can hold (the listen
    backlog, as the kernel capped it). Linux's C{TCP_INFO} gives them, for a
    listening socket, as C{tcpi_unacked} and C{tcpi_sacked}, the fifth and
    sixth 32-bit fields after 8 bytes (see "listeners aliased fields" in the
    kernel's C{tcp_get_info}).
    """
    info = listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    return _LISTENER_INFO.unpack_from(info, 24)


class NoDelayServer(tcp.Server):
    """
    A connection accepted by L{EagerAcceptPort}: its socket has
    C{TCP_NODELAY} on already, so nothing need set it again.
    """


class EagerAcceptPort(tcp.Port):
    """
    A L{tcp.Port} that accepts every waiting connection before it sets any
    of them up.

    @ivar batch: connections built between two emptyings of the kernel's
        queue.
    @ivar buildsPerRead: connections built at most per C{doRead}.
    @ivar maxQueued: accepted connections held, not yet built, at most: as
        many as the kernel's queue holds, read when it starts listening.
        Each one held is one more a client that connects after them waits
        for: a deeper queue takes a bigger burst, and in a flood of
        connections that each bring work, makes a new client wait longer.
    """

    batch = 32
    buildsPerRead = 256
    maxQueued = 0
    transport = NoDelayServer

    _resuming = None
    _withoutNoDelay = 0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._accepted = deque()
        # Accept errors logged under Twisted's port's namespace, as before:
        # a class's Logger takes the name of the class it is read from.
        self._logger = tcp.Port._logger.__get__(self, tcp.Port)

    def startListening(self):
        """
        Listen, with C{TCP_NODELAY} on the listening socket: Linux copies it
        to each connection as the handshake completes, which saves a system
        call per connection (and covers TLS, whose transport is no socket).
        The connections already waiting (a socket systemd held, or a client
        quick enough) lack it and get it one by one: they are the first
        accepted.
        """
        super().startListening()
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._withoutNoDelay, self.maxQueued = acceptQueue(self.socket)

    def doRead(self):
        """
        Accept every connection waiting (at least one: the socket was
        reported readable), then build them in order, accepting again every
        L{batch}; what L{buildsPerRead} leaves is built in the next reactor
        iteration.
        """
        try:
            with tcp._BuffersLogs(self._logger.namespace, self._logger.observer) as logger:
                self._acceptWaiting(logger, 1)
                for built in range(1, self.buildsPerRead + 1):
                    if not self._accepted:
                        break
                    self._build(*self._accepted.popleft())
                    if built % self.batch == 0:
                        self._acceptWaiting(logger, 0)
        except BaseException:
            log.deferr()
        if self._accepted and self._resuming is None:
            self._resuming = self.reactor.callLater(0, self._resume)

    def _resume(self):
        self._resuming = None
        if self.connected and not self.disconnecting:
            self.doRead()

    def _acceptWaiting(self, logger, atLeast):
        """
        Accept as many as the kernel holds, or C{atLeast}, as far as
        L{maxQueued} allows. Counted first, not accepted until C{EAGAIN}:
        an C{accept} that fails costs about as much as one that succeeds.
        """
        count = max(acceptQueue(self.socket)[0], atLeast)
        count = min(count, self.maxQueued - len(self._accepted))
        self._accepted.extend(tcp._accept(logger, range(count), self.socket, tcp._reservedFD))

    def _build(self, skt, addr):
        """
        Set up one accepted connection as C{tcp.Port.doRead} does.
        """
        if len(addr) == 4:
            # IPv6: the scope ID as part of the host.
            host = socket.getnameinfo(addr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)
            addr = (host[0], *addr[1:])
        if self._withoutNoDelay:
            self._withoutNoDelay -= 1
            skt.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        protocol = self.factory.buildProtocol(self._buildAddr(addr))
        if protocol is None:
            skt.close()
            return
        s = self.sessionno
        self.sessionno = s + 1
        transport = self.transport(skt, protocol, addr, self, s, self.reactor)
        protocol.makeConnection(transport)

    def connectionLost(self, reason):
        """
        Close the connections accepted and not yet built, as closing the
        listening socket resets those the kernel still holds.
        """
        if self._resuming is not None:
            self._resuming.cancel()
            self._resuming = None
        while self._accepted:
            self._accepted.popleft()[0].close()
        super().connectionLost(reason)
