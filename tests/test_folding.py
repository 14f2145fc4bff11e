"""
FoldingLog: Logger's signature plus a kind; events of a kind fold into a
summary past the budget, events without one never do.
"""

from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sockservice.logs.folding import FoldingLog


class FoldingLogTests(SynchronousTestCase):
    def setUp(self):
        self.events = []
        self.clock = Clock()
        self.log = FoldingLog(Logger(observer=self.events.append), self.clock, budget=2)

    def messages(self):
        return [formatEvent(event) for event in self.events]

    def test_kindFoldsPastTheBudget(self):
        for n in range(5):
            self.log.info("event {n}", kind="chatter", n=n)
        self.assertEqual(self.messages(), ["event 0", "event 1"])
        self.assertEqual(self.events[0]["n"], 0)
        self.assertEqual(self.events[0]["log_level"], LogLevel.info)
        self.clock.advance(1)
        self.assertEqual(self.messages()[-1], "not logged one by one in the last 1s: chatter 3")

    def test_noKindNeverFolds(self):
        """
        Events without a kind (collect's messages) are logged whatever the
        rate, and take no budget from those with one.
        """
        for n in range(5):
            self.log.info("message {n}", n=n)
        self.log.warn("refused {n}", kind="refused", n=5)
        self.log.error("failed")
        self.assertEqual(
            self.messages(),
            [f"message {n}" for n in range(5)] + ["refused 5", "failed"],
        )
        self.assertEqual([e["log_level"] for e in self.events[-2:]],
                         [LogLevel.warn, LogLevel.error])
