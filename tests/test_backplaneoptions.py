"""
The backplane's and the history's options: defaults, bounds, the hub they
build, and one clear line when the Redis client (the C{[redis]} extra) is
not installed.
"""

import io
import sys

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sockservice.hubs.local import LocalHub
from sockservice.hubs.redis import RedisHub
from sockservice.tap import makeHub
from tests.test_tap import OptionsTests, parse


class BackplaneOptionsTests(SynchronousTestCase):
    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    assertUsageError = OptionsTests.assertUsageError

    def test_defaults(self):
        options = parse("-m", "relay", "--backplane", "redis://h")
        self.assertEqual((options["backplane-retain"], options["history"]), (100000, 0))
        self.assertIsNone(parse("-m", "relay")["backplane-retain"])

    def test_hubs(self):
        """
        --history and --backplane-retain reach the hub.
        """
        reactor = MemoryReactorClock()
        hub = makeHub(parse("-m", "relay", "--history", "7").config, reactor)
        self.assertIsInstance(hub, LocalHub)
        self.assertEqual(hub.history.size, 7)
        self.assertIsNone(makeHub(parse("-m", "relay").config, reactor).history)
        hub = makeHub(parse("-m", "relay", "--backplane", "redis://h", "--history", "5",
                            "--backplane-retain", "900").config, reactor)
        self.assertIsInstance(hub, RedisHub)
        self.assertEqual((hub.retain, hub.local.history.size), (900, 5))

    def test_bounds(self):
        self.assertUsageError(
            ["-m", "relay", "--backplane-retain", "10"],
            "--backplane-retain applies only with --backplane",
        )
        self.assertUsageError(
            ["-m", "relay", "--backplane", "redis://h", "--backplane-retain", "0"],
            "--backplane-retain must be a whole number of 1 or more, not '0'",
        )
        self.assertUsageError(
            ["--history", "3"], "--history applies only to --mode relay"
        )
        self.assertUsageError(
            ["-m", "relay", "--history", "-1"],
            "--history must be a whole number of 0 or more, not '-1'",
        )

    def test_redisClientMissing(self):
        """
        Without txredisapi (importing it fails, as when the [redis] extra is
        not installed) --backplane is one line naming the extra; relay
        without it still parses.
        """
        self.patch(sys, "modules", dict(sys.modules, txredisapi=None))
        self.assertUsageError(
            ["-m", "relay", "--backplane", "redis://127.0.0.1:6379"],
            "--backplane needs the Redis client: pip install 'sockservice[redis]'",
        )
        self.assertIsNone(parse("-m", "relay").config.backplaneAddress)
