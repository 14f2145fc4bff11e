"""
An epoll reactor that hands each ready descriptor straight to its handler:
C{twistd --reactor directepoll}, what C{twistd -n sockservice} runs on.

Twisted's epoll reactor runs every read and write inside
C{log.callWithLogger}, which builds a legacy log context (the connection's
C{logPrefix}, as the "system" of C{log.msg} calls made meanwhile) at about
2 µs an event: a fifth of the work of answering one line. Upstream this is
twisted#2534 (event dispatch overhead, the log context first among it) and
twisted#6789 (stop using callWithLogger in reactors), both open. sockservice
logs through C{twisted.logger}, which never reads that context, so this
reactor skips it, and reads a descriptor that is only readable (most events)
without the call to C{_doReadOrWrite}, making the checks that method makes
for that case. The only difference a user can see: a legacy log line that
Twisted writes while handling a read or write says C{[-]} where the epoll
reactor names the connection.

It also bounds a pass of the loop: when more connections are ready than
L{EVENTS_PER_TURN}, or some wait from an earlier pass, each pass handles at
most that many, and the others wait their turn. One relayed line for
10,000 clients that never read makes all their sockets writable at once, and
filling each one's kernel buffer costs the kernel tens of microseconds: in
one pass, a second or more in which no new client is accepted or answered.
Taken in turns, connections ready anew come first (a new client, one that
keeps up, one ready for more than at its turn, such as a client that
closed), then those waiting, oldest first; one still ready after its turn,
for no more than it had it for, goes to the back (a client that does not
read; the sender of that line, read again only once the writes it caused
are done: back-pressure).
Listening ports and the waker are not connections, and are handled in
every pass. While none wait, every ready descriptor is handled in each
pass, in the order epoll reports them, as the epoll reactor does.

Twisted internals used, as of Twisted 26.10 (pyproject pins C{<27}; the
tests in tests/test_directepoll.py run every path against Twisted's own
C{_doReadOrWrite} and Twisted's reactor tests against this reactor, so a
change shows there): C{EPollReactor.doPoll}, whose loop this replaces, and
its C{_poller} and C{_selectables}; C{posixbase._PollLikeMixin._doReadOrWrite}, for
every event but a plain read, and C{_disconnectSelectable}.
"""

from select import EPOLLIN, EPOLLOUT
from socket import AF_INET, AF_INET6

from twisted.internet import tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log

from sockservice.fastpath.eageraccept import EagerAcceptPort

#: Connections one pass of the loop handles at most, once more are ready:
#: tens of milliseconds of writes to clients that never read (10,000 of them
#: under a relay blast), and more than a server has ready at once while it
#: keeps up with its clients.
EVENTS_PER_TURN = 256

#: Past L{TURNS} times L{EVENTS_PER_TURN} ready at once, a pass handles this
#: share of them: every pass costs the kernel and L{DirectEPollReactor._takeTurns}
#: a little for each ready descriptor, handled or not, so thousands ready are
#: gone through in a few passes, not in dozens.
TURNS = 16


class DirectEPollReactor(EPollReactor):
    """
    L{EPollReactor} without the per-event log context, with a short way for
    plain reads, and connections taken in turns when more are ready than a
    pass handles.

    @ivar _waiting: the connections ready in an earlier pass but not handled
        yet, in their order: a C{dict} from descriptor to the events it
        waits to be handled for.
    @ivar _turns: the connections that had their turn and have been ready
        ever since, by descriptor, with the events they had it for.
    """

    def __init__(self):
        EPollReactor.__init__(self)
        self._waiting = {}
        self._turns = {}

    def doPoll(self, timeout):
        # epoll_wait interrupted by a signal is retried by Python (PEP 475),
        # so unlike EPollReactor.doPoll there is no EINTR to catch.
        if self._waiting:
            timeout = 0
        elif timeout is None:
            timeout = -1
        events = self._poller.poll(timeout, len(self._selectables))
        if self._waiting or len(events) > EVENTS_PER_TURN:
            events = self._takeTurns(events)
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            # What callWithLogger caught, caught here at no cost unless raised.
            try:
                if event == EPOLLIN:
                    # Readable and nothing else, the usual event: handled as
                    # _doReadOrWrite handles it (its checks, its inRead),
                    # without the call.
                    inRead = False
                    try:
                        if selectable.fileno() == -1:
                            why = _NO_FILEDESC
                        else:
                            why = selectable.doRead()
                            inRead = True
                    except BaseException as e:
                        why = e
                        log.err(system=_logPrefix(selectable))
                    if why:
                        self._disconnectSelectable(selectable, why, inRead)
                else:
                    handle(selectable, fd, event)
            except KeyboardInterrupt:
                raise
            except BaseException:
                log.err(system=_logPrefix(selectable))

    doIteration = doPoll

    def _takeTurns(self, events):
        """
        Choose what this pass handles of C{events} (all that are ready):
        every descriptor that is not a connection, and L{EVENTS_PER_TURN}
        connections (or a L{TURNS}th of those ready, if more), first those
        ready anew (the last reported first; one waiting that is now ready
        for more counts as anew), then those waiting, oldest first. The
        others wait, in that order, and
        behind them those still ready since their turn, for nothing more
        than they had it for (a connection written to that has now closed
        is ready anew); one waiting that is no longer ready, or gone, is
        dropped. Return the events to handle.
        """
        selectables, waiting = self._selectables, self._waiting
        ready = dict(events)
        turns = {
            fd: turn for fd, turn in self._turns.items()
            if fd in ready and selectables.get(fd) is turn[0]
        }
        now, fresh, again = [], [], []
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            if fd in waiting:
                if not event & ~waiting[fd]:
                    continue
                # Ready for more than it waits for (a client waiting to be
                # written to has sent a line): ready anew.
                del waiting[fd]
            if not isinstance(selectable, tcp.Connection):
                now.append((fd, event))
            elif fd in turns and not event & ~turns[fd][1]:
                again.append(fd)
            else:
                fresh.append(fd)
        # epoll reports them in the order they became ready, and a relayed
        # line makes the hub's members ready in the order they joined: the
        # last first, a new client is not served after thousands that were
        # there before it.
        fresh.reverse()
        order = fresh + [fd for fd in waiting if fd in ready and fd in selectables]
        perTurn = max(EVENTS_PER_TURN, len(events) // TURNS)
        self._waiting = {fd: ready[fd] for fd in order[perTurn:] + again}
        for fd in order[:perTurn]:
            turns[fd] = selectables[fd], ready[fd]
            now.append((fd, ready[fd]))
        # With none waiting, the next pass handles every ready connection.
        self._turns = turns if self._waiting else {}
        return now

    def listenTCP(self, port, factory, backlog=50, interface=""):
        """
        Listen with L{EagerAcceptPort}, which takes a burst of connections
        without overflowing the kernel's queue; C{listenSSL} comes here too.
        """
        p = EagerAcceptPort(port, factory, backlog, interface, self)
        p.startListening()
        return p

    def adoptStreamPort(self, fileDescriptor, addressFamily, factory):
        """
        An adopted TCP socket (C{systemd:}) as an L{EagerAcceptPort} too.
        """
        if addressFamily not in (AF_INET, AF_INET6):
            return EPollReactor.adoptStreamPort(self, fileDescriptor, addressFamily, factory)
        p = EagerAcceptPort._fromListeningDescriptor(self, fileDescriptor, addressFamily, factory)
        p.startListening()
        return p


def _logPrefix(selectable):
    try:
        return selectable.logPrefix()
    except BaseException:
        return "(buggy logPrefix method)"


def install():
    """
    Install L{DirectEPollReactor} as the global reactor.
    """
    installReactor(DirectEPollReactor())
