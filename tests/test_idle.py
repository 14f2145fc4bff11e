"""
L{IdleWatch}: one timer closing each watched connection exactly its timeout
after its last line.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sockservice.wire.idle import IdleWatch


class Peer:
    """
    Records when the watch timed it out.
    """

    def __init__(self, name, clock, timedOut):
        self.name = name
        self.clock = clock
        self.timedOut = timedOut

    def timeoutConnection(self):
        self.timedOut.append((self.name, self.clock.seconds()))


class IdleWatchTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.watch = IdleWatch(self.clock, 10)
        self.timedOut = []

    def peer(self, name):
        peer = Peer(name, self.clock, self.timedOut)
        self.watch.watch(peer)
        return peer

    def test_eachAtItsOwnDeadline(self):
        """
        Each peer times out exactly C{timeout} seconds after its last touch,
        in order of those deadlines, with one timer pending at a time.
        """
        a = self.peer("a")
        self.clock.advance(3)
        b = self.peer("b")
        self.clock.advance(4)
        self.watch.touch(a)
        self.peer("c")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        for _ in range(30):
            self.clock.advance(1)
        self.assertEqual(self.timedOut, [("b", 13), ("a", 17), ("c", 17)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.watch.touch(b)
        self.clock.advance(100)
        self.assertEqual(len(self.timedOut), 3)

    def test_forgottenNeverTimesOut(self):
        """
        A forgotten peer is not timed out and a touch does not bring it
        back; the timer outlives the last peer until its deadline, and then
        ends without timing anybody out.
        """
        a = self.peer("a")
        b = self.peer("b")
        self.watch.forget(a)
        self.watch.touch(a)
        self.clock.advance(10)
        self.assertEqual(self.timedOut, [("b", 10)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        c = self.peer("c")
        self.watch.forget(b)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.watch.forget(c)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(10)
        self.assertEqual(self.timedOut, [("b", 10)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
