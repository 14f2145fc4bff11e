"""
The bounded outbox to Redis: held while Redis is away, sent again when a
connection is lost before Redis confirmed, dropped and counted beyond its
limit, never more than the limit taken.
"""

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sockservice.hubs.outbox import Outbox


class Sender:
    """
    Records messages sent; each waits for the test to confirm or fail it.
    """

    def __init__(self):
        self.sent = []

    def __call__(self, message):
        replied = Deferred()
        self.sent.append((message, replied))
        return replied

    def messages(self):
        return [message for message, replied in self.sent]

    def confirm(self, *indexes):
        for index in indexes:
            self.sent[index][1].callback(b"1-0")


class OutboxTests(SynchronousTestCase):
    def setUp(self):
        self.losses = []
        self.outbox = Outbox(10, lambda *lost: self.losses.append(lost))
        self.send = Sender()

    def test_sentAtOnceWhenAttached(self):
        self.outbox.attach(self.send)
        self.outbox.put(b"abc", 1)
        self.assertEqual(self.send.messages(), [b"abc"])
        self.assertEqual(self.outbox.size, 3)
        self.send.confirm(0)
        self.assertEqual((self.outbox.size, self.outbox.lost), (0, 0))

    def test_heldInOrderUntilAttached(self):
        for message in (b"1", b"22", b"333"):
            self.outbox.put(message, 1)
        self.assertEqual(self.send.sent, [])
        self.assertFalse(self.outbox.attached)
        self.outbox.attach(self.send)
        self.outbox.put(b"4", 1)
        self.assertEqual(self.send.messages(), [b"1", b"22", b"333", b"4"])

    def test_whatDoesNotFitIsDroppedAndCounted(self):
        """
        Held and unconfirmed messages together never take more than the
        limit; a message that does not fit is dropped, later ones that fit
        still go.
        """
        self.outbox.attach(self.send)
        self.outbox.put(b"123456", 2)
        self.outbox.put(b"abcd", 1)
        self.outbox.put(b"x", 1)
        self.outbox.put(b"", 0)
        self.assertEqual(self.outbox.size, 10)
        self.assertEqual(
            (self.outbox.lost, self.outbox.lostLines, self.outbox.lostBytes, self.losses),
            (1, 1, 1, [(1, 1, "full")]),
        )
        self.send.confirm(0)
        self.outbox.put(b"y", 1)
        self.assertEqual(self.send.messages(), [b"123456", b"abcd", b"", b"y"])

    def test_unconfirmedSentAgainFirst(self):
        """
        What a lost connection had not confirmed goes again, in order and
        before what was held meanwhile; the failed replies on the old
        connection are not losses.
        """
        self.outbox.attach(self.send)
        for message in (b"1", b"2", b"3"):
            self.outbox.put(message, 1)
        self.send.confirm(0)
        self.outbox.detach()
        for index in (1, 2):
            self.send.sent[index][1].errback(ConnectionError("Lost connection"))
        self.outbox.put(b"4", 1)
        again = Sender()
        self.outbox.attach(again)
        self.assertEqual(again.messages(), [b"2", b"3", b"4"])
        self.assertEqual((self.outbox.size, self.outbox.lost), (3, 0))
        again.confirm(0, 1, 2)
        self.assertEqual(self.outbox.size, 0)

    def test_refusedByRedisCounted(self):
        """
        An error reply loses that message, the oldest unconfirmed; the
        later ones are still confirmed in order.
        """
        self.outbox.attach(self.send)
        self.outbox.put(b"abc", 1)
        self.outbox.put(b"de", 1)
        self.send.sent[0][1].errback(ValueError("OOM command not allowed"))
        self.assertEqual((self.outbox.size, self.outbox.lost, self.outbox.lostBytes), (2, 1, 3))
        self.assertEqual(self.losses, [(1, 3, "OOM command not allowed")])
        self.send.confirm(1)
        self.assertEqual(self.outbox.size, 0)

    def test_idleWhenAllConfirmed(self):
        idle = []
        self.outbox = Outbox(10, onIdle=lambda: idle.append(self.outbox.sending))
        self.outbox.attach(self.send)
        self.assertFalse(self.outbox.sending)
        self.outbox.put(b"a", 1)
        self.outbox.put(b"b", 1)
        self.assertTrue(self.outbox.sending)
        self.send.confirm(0)
        self.assertEqual(idle, [])
        self.send.confirm(1)
        self.assertEqual(idle, [False])

    def test_whenEmpty(self):
        emptied = self.outbox.whenEmpty()
        self.assertIsNone(self.successResultOf(emptied))
        self.outbox.put(b"ab", 1)
        emptied = self.outbox.whenEmpty()
        self.outbox.attach(self.send)
        self.assertNoResult(emptied)
        self.send.confirm(0)
        self.successResultOf(emptied)

    def test_abandonCountsTheRest(self):
        self.outbox.attach(self.send)
        self.outbox.put(b"ab", 1)
        self.outbox.put(b"cde", 2)
        self.send.confirm(0)
        self.outbox.abandon()
        self.assertEqual((self.outbox.size, self.outbox.lostLines), (0, 2))
        self.assertEqual(self.losses, [(2, 3, "stopping")])
        self.assertFalse(self.outbox.attached)
        self.outbox.put(b"f", 1)
        self.assertEqual(self.losses[-1], (1, 1, "stopping"))
        self.assertEqual(self.outbox.size, 0)
