"""
An epoll reactor that hands each ready descriptor straight to its handler:
C{twistd --reactor directepoll}.

Twisted's epoll reactor runs every read and write inside
C{log.callWithLogger}, which builds a legacy log context (the connection's
C{logPrefix}, as the "system" of C{log.msg} calls made meanwhile) at about
2 µs an event: a fifth of the work of answering one line. sockservice logs
through C{twisted.logger}, which never reads that context, so this reactor
skips it, and reads a descriptor that is only readable (most events) without
the checks C{_doReadOrWrite} makes for the others. The only difference a
user can see: a legacy log line that Twisted writes while handling a read or
write says C{[-]} where the epoll reactor names the connection.
"""

from select import EPOLLIN

from twisted.internet.epollreactor import EPollReactor
from twisted.internet.main import installReactor
from twisted.python import log


class DirectEPollReactor(EPollReactor):
    """
    L{EPollReactor} without the per-event log context, and with a short
    way for plain reads.
    """

    def doPoll(self, timeout):
        if timeout is None:
            timeout = -1
        try:
            events = self._poller.poll(timeout, len(self._selectables))
        except InterruptedError:
            return
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
                    # _doReadOrWrite would, without a call and its checks.
                    try:
                        why = selectable.doRead()
                    except BaseException as e:
                        why = e
                        log.err(system=_logPrefix(selectable))
                    if why:
                        self._disconnectSelectable(selectable, why, True)
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
