"""
The soak (bench/soak.py) as a test: a short run by default, as long as
C{SOCKSERVICE_SOAK_SECONDS} says when set (CI sets 20).
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from bench.soak import Soak


class SoakTests(TestCase):
    seconds = float(os.environ.get("SOCKSERVICE_SOAK_SECONDS", "2"))
    timeout = seconds + 120

    @inlineCallbacks
    def test_soak(self):
        """
        Many clients connect, talk, reset, stall and leave; afterwards the
        well-behaved lost nothing, and the servers are back to their open
        descriptors and near their memory from before.
        """
        soak = Soak(reactor, self.seconds, clients=20, seed=5)
        passed = yield soak.run()
        self.assertEqual(soak.failures, [])
        self.assertTrue(passed)
        self.assertGreater(sum(soak.sessions.values()), 20)
