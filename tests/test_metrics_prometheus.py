"""
The Prometheus files in deploy/prometheus checked by the real promtool (the
config, the alert rules, and the rules' own unit tests), and
docs/observability.md naming every metric the server exposes.
"""

import os
import shutil

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.modes.relay import RelayFactory
from sockservice.web.metrics import serverRegistry
from tests.support import CapturedLog
from tests import test_metrics

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMETHEUS = os.path.join(ROOT, "deploy", "prometheus")


class PromtoolTests(TestCase):
    timeout = 60

    def setUp(self):
        self.executable = shutil.which("promtool")
        if self.executable is None:
            raise SkipTest("promtool is not installed (apt-get install prometheus)")

    async def promtool(self, *args):
        out, err, status = await getProcessOutputAndValue(
            self.executable, args, env=dict(os.environ), path=PROMETHEUS
        )
        self.assertEqual(status, 0, (out + err).decode())
        return out + err

    async def test_config(self):
        output = await self.promtool("check", "config", "prometheus.yml")
        self.assertIn(b"SUCCESS: 1 rule files found", output)

    async def test_rules(self):
        output = await self.promtool("check", "rules", "alerts.yml")
        self.assertIn(b"SUCCESS: 3 rules found", output)

    async def test_alertsFireWhenTheyShould(self):
        await self.promtool("test", "rules", "alerts.test.yml")


class DocumentedTests(SynchronousTestCase):
    def test_everyMetricDocumented(self):
        with open(os.path.join(ROOT, "docs", "observability.md"), encoding="utf-8") as f:
            page = f.read()
        log = CapturedLog().log
        backplane = test_metrics.BackplaneTests()
        backplane.setUp()
        factories = [
            GreetFactory(log), CollectFactory(log), RelayFactory(log, backplane.hub),
        ]
        names = {
            sample.name
            for factory in factories
            for family in serverRegistry(factory, "r.R").collect()
            for sample in family.samples
        }
        self.assertIn("sockservice_backplane_up", names)
        self.assertEqual({name for name in names if f"`{name}`" not in page}, set())
