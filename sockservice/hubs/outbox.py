"""
The bounded way out to Redis. A publish issued while Redis is away would wait
for it (and pile up) in the client library, so messages are held here
instead, up to a limit in bytes; what does not fit is dropped and counted.
"""

from collections import deque

from twisted.internet.defer import maybeDeferred

#: The default limit, in bytes.
OUTBOX_LIMIT = 1 << 20


class Outbox:
    """
    Publishes messages on C{channel} in order through the publisher it is
    attached to, holding them while it has none.

    @ivar size: bytes taken: messages held, and those sent but not yet
        confirmed by Redis. Never more than C{limit}.
    @ivar lost: messages that did not reach Redis: dropped because they did
        not fit, or sent on a connection that was lost before Redis
        confirmed them.
    @ivar lostBytes: their size in bytes.
    """

    def __init__(self, channel, limit, onLost=lambda nbytes: None):
        self.channel = channel
        self.limit = limit
        self.size = 0
        self.lost = 0
        self.lostBytes = 0
        self._held = deque()
        self._publisher = None
        self._onLost = onLost

    def put(self, message):
        """
        Publish C{message} now if attached, else hold it; drop it if it does
        not fit.
        """
        nbytes = len(message)
        if self.size + nbytes > self.limit:
            self._lose(nbytes)
            return
        self.size += nbytes
        if self._publisher is None:
            self._held.append(message)
        else:
            self._send(message)

    def attach(self, publisher):
        """
        Publish through C{publisher} (a connected txredisapi protocol) from
        now on, held messages first.
        """
        self._publisher = publisher
        while self._held and self._publisher is publisher:
            self._send(self._held.popleft())

    def detach(self):
        """
        The publisher's connection is gone: hold messages until the next.
        """
        self._publisher = None

    def _send(self, message):
        nbytes = len(message)
        maybeDeferred(self._publisher.publish, self.channel, message).addCallbacks(
            self._confirmed, self._failed, (nbytes,), None, (nbytes,)
        )

    def _confirmed(self, receivers, nbytes):
        self.size -= nbytes

    def _failed(self, reason, nbytes):
        self.size -= nbytes
        self._lose(nbytes)

    def _lose(self, nbytes):
        self.lost += 1
        self.lostBytes += nbytes
        self._onLost(nbytes)
