"""
The bounded outbox to Redis: held while Redis is away, dropped and counted
beyond its limit, never more than the limit taken.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from txredisapi import ConnectionError

from sockservice.hubs.outbox import Outbox


class Publisher:
    """
    Records publishes; each waits for the test to confirm or fail it.
    """

    def __init__(self):
        self.sent = []

    def publish(self, channel, message):
        replied = Deferred()
        self.sent.append((channel, message, replied))
        return replied

    def messages(self):
        return [message for channel, message, replied in self.sent]


class OutboxTests(SynchronousTestCase):
    def setUp(self):
        self.losses = []
        self.outbox = Outbox("chan", 10, self.losses.append)
        self.publisher = Publisher()

    def test_publishedAtOnceWhenAttached(self):
        self.outbox.attach(self.publisher)
        self.outbox.put(b"abc")
        self.assertEqual(self.publisher.sent[0][:2], ("chan", b"abc"))
        self.assertEqual(self.outbox.size, 3)
        self.publisher.sent[0][2].callback(1)
        self.assertEqual((self.outbox.size, self.outbox.lost), (0, 0))

    def test_heldInOrderUntilAttached(self):
        for message in (b"1", b"22", b"333"):
            self.outbox.put(message)
        self.assertEqual(self.publisher.sent, [])
        self.outbox.attach(self.publisher)
        self.outbox.put(b"4")
        self.assertEqual(self.publisher.messages(), [b"1", b"22", b"333", b"4"])

    def test_whatDoesNotFitIsDroppedAndCounted(self):
        """
        Held and unconfirmed messages together never take more than the
        limit; a message that does not fit is dropped, later ones that fit
        still go.
        """
        self.outbox.attach(self.publisher)
        self.outbox.put(b"123456")
        self.outbox.detach()
        self.outbox.put(b"abcd")
        self.outbox.put(b"x")
        self.outbox.put(b"")
        self.assertEqual(self.outbox.size, 10)
        self.assertEqual((self.outbox.lost, self.outbox.lostBytes, self.losses), (1, 1, [1]))
        self.publisher.sent[0][2].callback(0)
        self.outbox.put(b"y")
        self.outbox.attach(self.publisher)
        self.assertEqual(self.publisher.messages(), [b"123456", b"abcd", b"", b"y"])

    def test_unconfirmedWhenConnectionLostCounted(self):
        self.outbox.attach(self.publisher)
        self.outbox.put(b"abc")
        self.outbox.detach()
        self.publisher.sent[0][2].errback(ConnectionError("Lost connection"))
        self.assertEqual((self.outbox.size, self.outbox.lost, self.outbox.lostBytes), (0, 1, 3))

    def test_publisherAlreadyGone(self):
        """
        A publisher whose connection is already lost raises at once; the
        message is counted as lost, not raised to the relay.
        """

        class Gone:
            def publish(self, channel, message):
                raise ConnectionError("Not connected")

        self.outbox.attach(Gone())
        self.outbox.put(b"abc")
        self.assertEqual((self.outbox.size, self.outbox.lost, self.losses), (0, 1, [3]))
