"""
The bounded way out to Redis. An append issued while Redis is away would
wait for it (and pile up) in the client library, so messages are held here
instead, up to a limit in bytes; what does not fit is dropped and counted.
A message stays here until Redis confirms it: if the connection is lost
first, it is sent again, first, on the next one. Redis may then hold it
twice; receivers drop the second by its envelope's line number.
"""

from collections import deque

from twisted.internet.defer import Deferred, maybeDeferred

#: The default limit, in bytes.
OUTBOX_LIMIT = 1 << 20


class Outbox:
    """
    Sends messages in order through the sender it is attached to, holding
    them while it has none.

    @ivar size: bytes taken: messages held, and those sent but not yet
        confirmed by Redis. Never more than C{limit}.
    @ivar lost: messages that did not reach Redis: dropped because they did
        not fit, refused by Redis, or still held when the node stopped.
    @ivar lostLines: the lines in them.
    @ivar lostBytes: their size in bytes.
    """

    def __init__(self, limit, onLost=lambda lines, nbytes, why: None, onIdle=lambda: None):
        self.limit = limit
        self.size = 0
        self.lost = 0
        self.lostLines = 0
        self.lostBytes = 0
        self._held = deque()
        self._sent = deque()
        self._send = None
        self._connection = 0
        self._onLost = onLost
        self._onIdle = onIdle
        self._emptied = []
        self._abandoned = False

    @property
    def attached(self):
        return self._send is not None

    @property
    def sending(self):
        """
        Whether a message sent is waiting for Redis to confirm it; when the
        last one is, C{onIdle} is called.
        """
        return bool(self._sent)

    def put(self, message, lines):
        """
        Send C{message} (holding C{lines} lines) now if attached, else hold
        it; drop it if it does not fit.
        """
        nbytes = len(message)
        if self._abandoned:
            self._lose(lines, nbytes, "stopping")
            return
        if self.size + nbytes > self.limit:
            self._lose(lines, nbytes, "full")
            return
        self.size += nbytes
        if self._send is None:
            self._held.append((message, lines))
        else:
            self._sendOne((message, lines))

    def attach(self, send):
        """
        Send through C{send} (a callable taking a message and returning a
        L{Deferred} that fires once Redis has it) from now on, messages sent
        before but not confirmed first, then the held ones.
        """
        self._send = send
        while self._held and self._send is send:
            self._sendOne(self._held.popleft())

    def detach(self):
        """
        The connection is gone: hold messages until the next, and take back
        those it had not confirmed (their replies, failed, are ignored).
        """
        self._send = None
        self._connection += 1
        self._held.extendleft(reversed(self._sent))
        self._sent.clear()

    def whenEmpty(self):
        """
        A L{Deferred} that fires once Redis has confirmed every message
        put so far.
        """
        emptied = Deferred()
        if self.size == 0:
            emptied.callback(None)
        else:
            self._emptied.append(emptied)
        return emptied

    def abandon(self):
        """
        Count everything not yet confirmed as lost, and all that comes
        later: the node is stopping.
        """
        self._abandoned = True
        self.detach()
        while self._held:
            message, lines = self._held.popleft()
            self.size -= len(message)
            self._lose(lines, len(message), "stopping")

    def _sendOne(self, item):
        self._sent.append(item)
        maybeDeferred(self._send, item[0]).addCallbacks(
            self._confirmed, self._failed, (self._connection,), None, (self._connection,)
        )

    def _confirmed(self, reply, connection):
        if connection == self._connection:
            message, lines = self._sent.popleft()
            self.size -= len(message)
            if self.size == 0:
                emptied, self._emptied = self._emptied, []
                for waiting in emptied:
                    waiting.callback(None)
            if not self._sent:
                self._onIdle()

    def _failed(self, reason, connection):
        # Replies come in order, so a refusal is for the oldest message
        # sent; failures on a connection already given up are for messages
        # taken back to send again.
        if connection == self._connection:
            message, lines = self._sent[0]
            self._confirmed(None, connection)
            self._lose(lines, len(message), reason.getErrorMessage())

    def _lose(self, lines, nbytes, why):
        self.lost += 1
        self.lostLines += lines
        self.lostBytes += nbytes
        self._onLost(lines, nbytes, why)
