"""
bench/loadgen.c, the benchmark's own load generator, built with gcc and run
briefly against the real twistd on loopback.
"""

import os
import shutil
import subprocess

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.protocols.wire import Echo
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from tests.realserver import freePort, startTwistd

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "loadgen.c")
LOCAL = ("--interface", "127.0.0.1", "--port", "0")


class LoadgenTests(TestCase):
    timeout = 60

    if shutil.which("gcc") is None:
        skip = "gcc is missing"

    def setUp(self):
        self.loadgen = os.path.abspath(self.mktemp())
        subprocess.run(["gcc", "-O2", "-o", self.loadgen, SOURCE], check=True, timeout=60)

    @inlineCallbacks
    def load(self, *args):
        """
        Run loadgen for a third of a second; its exit status and its fields.
        """
        out, err, status = yield getProcessOutputAndValue(
            self.loadgen, [*args, "-d", "0.3"], env=dict(os.environ)
        )
        self.assertEqual(err, b"")
        fields = dict(item.split("=", 1) for item in out.decode().split())
        return status, fields

    @inlineCallbacks
    def test_greet(self):
        server = startTwistd(self, *LOCAL, "--ack", "ok")
        port = str((yield server.listening))
        status, ack = yield self.load("ack", "127.0.0.1", port, "-c", "5", "-g", "1", "-p", "2")
        self.assertEqual((status, ack["mode"], ack["conns"]), (0, "ack", "5"))
        self.assertGreater(int(ack["replies"]), 0)
        self.assertGreater(int(ack["rate"]), 0)
        self.assertLessEqual(int(ack["p50_us"]), int(ack["p99_us"]))
        status, churn = yield self.load("churn", "127.0.0.1", port, "-c", "3", "-g", "1")
        self.assertEqual((status, churn["mode"]), (0, "churn"))
        self.assertGreater(int(churn["cycles"]), 0)

    @inlineCallbacks
    def test_relay(self):
        """
        Every message reaches every other client in order and never its
        sender.
        """
        server = startTwistd(self, *LOCAL, "--mode", "relay")
        port = str((yield server.listening))
        status, relay = yield self.load("relay", "127.0.0.1", port, "-c", "6", "-s", "2", "-w", "4")
        self.assertEqual((status, relay["echoes"], relay["bad"]), (0, "0", "0"))
        self.assertGreater(int(relay["deliveries"]), 0)

    @inlineCallbacks
    def test_echoesAndBadLinesCounted(self):
        """
        A sender's own message coming back counts as an echo, and a line
        that is no relayed message (a greet ack) as bad.
        """
        echo = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        self.addCleanup(echo.stopListening)
        status, fields = yield self.load(
            "relay", "127.0.0.1", str(echo.getHost().port), "-c", "3", "-s", "1", "-w", "2"
        )
        self.assertEqual((status, fields["deliveries"], fields["echoes"]), (0, "0", "2"))
        server = startTwistd(self, *LOCAL, "--greeting", "")
        port = str((yield server.listening))
        status, fields = yield self.load("relay", "127.0.0.1", port, "-c", "3", "-s", "1", "-w", "2")
        self.assertEqual((status, fields["deliveries"], fields["bad"]), (0, "0", "2"))

    @inlineCallbacks
    def test_refused(self):
        status, fields = yield self.load("ack", "127.0.0.1", str(freePort()))
        self.assertEqual((status, fields["error"]), (1, "connect"))
