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

Twisted internals used, as of Twisted 26.10 (pyproject pins C{<27}; the
tests in tests/test_directepoll.py run every path against Twisted's own
C{_doReadOrWrite} and Twisted's reactor tests against this reactor, so a
change shows there): C{EPollReactor.doPoll}, whose loop this replaces, and
its C{_poller} and C{_selectables}; C{posixbase._PollLikeMixin._doReadOrWrite}, for
every event but a plain read, and C{_disconnectSelectable}.
"""

from select import EPOLLIN

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.internet.posixbase import _NO_FILEDESC
from twisted.python import log


class DirectEPollReactor(EPollReactor):
    """
    L{EPollReactor} without the per-event log context, and with a short
    way for plain reads.
    """

    def doPoll(self, timeout):
        # epoll_wait interrupted by a signal is retried by Python (PEP 475),
        # so unlike EPollReactor.doPoll there is no EINTR to catch.
        if timeout is None:
            timeout = -1
        events = self._poller.poll(timeout, len(self._selectables))
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
