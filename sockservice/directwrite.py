"""
Writing to a socket at once. A Twisted transport's C{write} only queues: the
bytes leave on the next reactor iteration, after one C{epoll_ctl} to watch
for writability and another to stop. When nothing is queued, sending
straight to the socket puts the same bytes on the wire in the same order
without either; whatever the socket does not take is queued as usual.
"""

from twisted.internet import tcp


def _direct(transport):
    """
    Whether C{transport} is a plain socket connection a send may bypass: not
    TLS (whose bytes are encrypted by the transport's own write).
    """
    return isinstance(transport, tcp.Connection) and not transport.TLS


def directWriter(transport):
    """
    Return a callable that writes bytes to C{transport}: straight to the
    socket while nothing is queued on it, else (and for any other transport:
    TLS, a test's string transport) through C{transport.write}. It also
    turns Nagle's algorithm off (a no-op on UNIX sockets), so small replies
    are not held back.
    """
    if not _direct(transport):
        return transport.write
    transport.setTcpNoDelay(True)
    send = transport.socket.send
    queue = transport.write

    def write(data):
        if (
            transport.dataBuffer
            or transport._tempDataBuffer
            or transport.disconnecting
            or transport._writeDisconnecting
            or not transport.connected
            or transport.TLS
        ):
            queue(data)
            return
        try:
            sent = send(data)
        except OSError:
            # EAGAIN, or a broken connection, which the reactor finds and
            # reports when it writes the queued bytes.
            sent = 0
        if sent < len(data):
            queue(data[sent:])

    return write
