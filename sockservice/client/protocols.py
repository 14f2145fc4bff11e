"""
The client side of each mode, as protocols the C{sockservice} command drives
and other programs can reuse: they write what they show to an C{output}
callable (bytes of UTF-8 text) and report the end of the exchange through
their C{done} Deferred.
"""

from OpenSSL.SSL import Error as TLSError
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, INegotiated
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from zope.interface import implementer

from sockservice.wire.lines import LINE_TOO_LONG, stripLineEnding


class ExchangeFailed(Exception):
    """
    The exchange did not complete; the message says what happened, for a
    line naming the server.
    """


def displayText(line):
    """
    A received line, without its line ending, as one line of UTF-8 text:
    bytes that are not UTF-8 are shown escaped (C{\\xff}) so any input can be
    printed.
    """
    text = stripLineEnding(line).decode("utf-8", "backslashreplace")
    return text.encode("utf-8") + b"\n"


def tlsProblem(reason):
    """
    What failed in TLS (C{certificate verify failed}, say) when that is why
    the connection ended, else L{None}.
    """
    if not reason.check(TLSError):
        return None
    errors = reason.value.args[0] if reason.value.args else ()
    details = [error[-1] for error in errors if isinstance(error, tuple)]
    return "TLS failed: " + (", ".join(details) or reason.getErrorMessage())


class LineClient(LineReceiver, TimeoutMixin):
    """
    Shows received lines and fails the exchange when a reply it awaits does
    not come within C{timeout} seconds on C{clock}.

    @ivar awaiting: what the client waits for, as named in a timeout.
    @ivar firstLine: sent before anything else (a relay's token), or L{None}.
    @ivar done: fires with L{None} when the exchange completed, or fails with
        L{ExchangeFailed}.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20
    awaiting = "reply"
    firstLine = None

    def __init__(self, output, clock, timeout):
        self.output = output
        self.callLater = clock.callLater
        self.timeout = timeout
        self.done = Deferred()
        self._problem = None

    def makeConnection(self, transport):
        if self.firstLine is not None:
            transport.write(self.firstLine + b"\n")
        LineReceiver.makeConnection(self, transport)

    def show(self, line):
        self.output(displayText(line))

    def dataReceived(self, data):
        self.resetTimeout()
        LineReceiver.dataReceived(self, data)

    def fail(self, problem):
        """
        End the exchange as failed because of C{problem}.
        """
        if self._problem is None:
            self._problem = problem
        self.setTimeout(None)
        self.transport.abortConnection()

    def interrupt(self):
        """
        The program is being stopped (Ctrl-C): the connection closing now
        ends the exchange as interrupted.
        """
        if self._problem is None:
            self._problem = "interrupted"

    def timeoutConnection(self):
        self.fail(f"no {self.awaiting} within {self.timeout:g}s")

    def lineLengthExceeded(self, line):
        self.fail(f"sent a line longer than {self.MAX_LENGTH} bytes")

    def connectionLost(self, reason):
        self.setTimeout(None)
        problem = self._problem or tlsProblem(reason) or self.closedProblem(reason)
        if problem:
            self.done.errback(ExchangeFailed(problem))
        else:
            self.done.callback(None)

    def closedProblem(self, reason):
        """
        What went wrong when the connection ended for C{reason}, or L{None}
        if the exchange completed.
        """
        if reason.check(ConnectionDone):
            return None
        return f"connection lost ({reason.getErrorMessage()})"


class GreetClient(LineClient):
    """
    The seed 000 client: reads the greeting, then sends each message and
    waits for its ack before the next; closes once every ack arrived.
    """

    awaiting = "greeting"

    def __init__(self, output, clock, timeout, messages=(b"SOME DATA",)):
        super().__init__(output, clock, timeout)
        self.messages = list(messages)
        self.acked = 0
        self._greeted = False

    def connectionMade(self):
        self.setTimeout(self.timeout)

    def lineReceived(self, line):
        if line + b"\n" == LINE_TOO_LONG:
            self.fail(f"refused a message: {line.decode()}")
            return
        self.show(line)
        if self._greeted:
            self.acked += 1
        self._greeted = True
        if self.acked < len(self.messages):
            self.awaiting = "ack"
            self.sendLine(self.messages[self.acked])
        else:
            self.setTimeout(None)
            self.transport.loseConnection()

    def closedProblem(self, reason):
        if self.acked == len(self.messages):
            return LineClient.closedProblem(self, reason)
        if not self._greeted:
            return "closed the connection before the greeting"
        return (
            f"closed the connection after {self.acked} of "
            f"{len(self.messages)} acks"
        )


class SendClient(LineClient):
    """
    The seed 002 client: says C{CONNECTED}, sends each message as a line and
    closes, which flushes everything written first. Replies are ignored.
    """

    awaiting = "clean close"

    def __init__(self, output, clock, timeout, messages):
        super().__init__(output, clock, timeout)
        self.messages = messages

    def connectionMade(self):
        self.output(b"CONNECTED\n")
        self.transport.writeSequence([message + b"\n" for message in self.messages])
        self.setTimeout(self.timeout)
        self.transport.loseConnection()

    def dataReceived(self, data):
        pass


class CollectClient(LineClient):
    """
    The seed 004 client: sends its message (with CRLF, as the seed did) and
    shows everything the server sends until the server closes.
    """

    def __init__(self, output, clock, timeout, message=b"hello"):
        super().__init__(output, clock, timeout)
        self.message = message

    def connectionMade(self):
        self.transport.write(self.message + b"\r\n")
        self.setTimeout(self.timeout)

    def lineReceived(self, line):
        self.show(line)

    def connectionLost(self, reason):
        rest = self.clearLineBuffer()
        if rest and not self._problem:
            self.show(rest)
        LineClient.connectionLost(self, reason)


@implementer(IHandshakeListener)
class ChatClient(LineClient):
    """
    The relay client: shows every line relayed to it. The exchange ends
    well when this side closes (L{ChatInput} at the end of its input) and
    fails when the server closes first.

    Over TLS it closes only once the handshake is done: Twisted aborts a TLS
    connection closed before then with nothing written.
    """

    awaiting = "TLS handshake"

    def __init__(self, output, clock, timeout):
        super().__init__(output, clock, timeout)
        self.leaving = False
        self._handshaking = False

    def connectionMade(self):
        self._handshaking = INegotiated.providedBy(self.transport)

    def handshakeCompleted(self):
        self._handshaking = False
        if self.leaving:
            self.setTimeout(None)
            self.transport.loseConnection()

    def lineReceived(self, line):
        self.show(line)

    def leave(self):
        """
        Close this side once everything sent is flushed (and, over TLS, the
        handshake is done, which may take up to the timeout).
        """
        self.leaving = True
        if self._handshaking:
            self.setTimeout(self.timeout)
        else:
            self.transport.loseConnection()

    def closedProblem(self, reason):
        if not self.leaving and reason.check(ConnectionDone):
            return "closed the connection"
        return LineClient.closedProblem(self, reason)


@implementer(IHalfCloseableProtocol)
class ChatInput(Protocol):
    """
    The terminal or pipe side of a chat (on L{twisted.internet.stdio}): what
    is read goes to C{client} byte for byte; the end of input makes it leave.

    @ivar closed: fires once everything shown is flushed and the terminal
        side is closed, or as soon as its output is gone.
    """

    def __init__(self, client):
        self.client = client
        self.closed = Deferred()

    def dataReceived(self, data):
        self.client.transport.write(data)

    def readConnectionLost(self):
        self.client.leave()

    def writeConnectionLost(self):
        self._close()
        self.client.leave()

    def connectionLost(self, reason):
        self._close()

    def _close(self):
        if not self.closed.called:
            self.closed.callback(None)
