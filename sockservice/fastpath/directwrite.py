"""
Writing to a socket at once. A Twisted transport's C{write} only queues: the
bytes leave on the next reactor iteration, after one C{epoll_ctl} to watch
for writability and another to stop (upstream, twisted#5303: the default
transport does not write bytes out immediately; open). When nothing is
queued, sending straight to the socket puts the same bytes on the wire in
the same order without either; whatever the socket does not take is queued
as usual.

Whether anything is queued is read from the transport's state, which is not
public API. Twisted internals used, as of Twisted 26.10 (pyproject pins
C{<27}): C{tcp.Connection}'s C{socket}, C{TLS}, C{connected},
C{disconnecting}, and its write buffer C{dataBuffer}, C{_tempDataBuffer}
and C{_writeDisconnecting} (from C{abstract.FileDescriptor}).
tests/test_directwrite.py checks every case on Twisted's own transports, so
a change in Twisted shows there first.
"""

from twisted.internet import tcp

from sockservice.fastpath.eageraccept import NoDelayServer


def noDelay(transport):
    """
    Turn Nagle's algorithm off on a socket connection (a no-op on UNIX
    sockets and on one whose listening port turned it on already), so small
    replies are not held back waiting for an ACK.
    """
    if isinstance(transport, tcp.Connection) and not isinstance(transport, NoDelayServer):
        transport.setTcpNoDelay(True)


def writeNow(transport, data):
    """
    Write C{data} to C{transport}: straight to the socket of a plain TCP or
    UNIX connection with nothing queued, else through C{transport.write}
    (TLS, which encrypts in its own write; a connection closing or closed;
    a test's string transport). What the socket does not take is queued.
    """
    if (
        not isinstance(transport, tcp.Connection)
        or transport.TLS
        or transport.dataBuffer
        or transport._tempDataBuffer
        or transport.disconnecting
        or transport._writeDisconnecting
        or not transport.connected
    ):
        transport.write(data)
        return
    try:
        sent = transport.socket.send(data)
    except OSError:
        # EAGAIN, or a broken connection, which the reactor finds and
        # reports when it writes the queued bytes.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])
