"""
The real processes the integration tests start run this working tree, not a
copy installed earlier: a change in the checkout is what they run.
"""

import os
import re

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.realserver import CHECKOUT, runClient, startTwistd, temporaryDirectory

# Python imports sitecustomize at startup, before twistd or the client command
# run: this one reports, once, where the sockservice package that process
# imports comes from, at the first import after it.
PROBE = '''\
import os
import sys


def report(event, args):
    package = sys.modules.get("sockservice")
    if event == "import" and package is not None and not reported:
        reported.append(package.__file__)
        os.write(2, ("sockservice imported from %s\\n" % package.__file__).encode())


reported = []
sys.addaudithook(report)
'''

IMPORTED = re.compile(rb"sockservice imported from (.*)\n")


def probed(testCase):
    """
    The environment that makes a Python process report where it imports
    sockservice from.
    """
    directory = temporaryDirectory(testCase)
    with open(os.path.join(directory, "sitecustomize.py"), "w") as probe:
        probe.write(PROBE)
    return {"PYTHONPATH": os.pathsep.join(filter(None, [directory, os.environ.get("PYTHONPATH")]))}


class WorkingTreeTests(TestCase):
    timeout = 30

    def assertFromCheckout(self, errors):
        self.assertEqual(
            [os.fsdecode(path) for path in IMPORTED.findall(errors)],
            [os.path.join(CHECKOUT, "sockservice", "__init__.py")],
        )

    @inlineCallbacks
    def test_twistd(self):
        """
        C{twistd -n sockservice}, started away from the checkout as every
        integration test starts it, serves with the checkout's package.
        """
        server = startTwistd(self, "--interface", "127.0.0.1", "--port", "0", env=probed(self))
        yield server.listening
        self.assertFromCheckout(server.errors)

    @inlineCallbacks
    def test_clientCommand(self):
        """
        The C{sockservice} command runs the checkout's package too.
        """
        client = runClient(self, "--version", env=probed(self))
        self.assertEqual((yield client.ended), 0)
        self.assertFromCheckout(client.errors)
