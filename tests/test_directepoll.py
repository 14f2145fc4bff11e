"""
The C{directepoll} reactor: Twisted's own reactor conformance tests run
against it, failures it catches, and the real twistd serving on it by
default.
"""

from twisted.internet.defer import inlineCallbacks
from twisted.internet.test import test_core, test_tcp, test_time, test_tls, test_unix
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sockservice.directepoll import DirectEPollReactor
from tests.realserver import connectPeer, startTwistd

REACTOR = "sockservice.directepoll.DirectEPollReactor"


def underDirectEPoll(*builders):
    """
    Test case classes running each of Twisted's reactor test C{builders}
    against L{DirectEPollReactor} only.
    """
    classes = {}
    for builder in builders:
        attributes = {"_reactors": [REACTOR], "__module__": __name__}
        if hasattr(builder, "test_logPrefix"):
            attributes["test_logPrefix"] = _withoutLogContext(builder.test_logPrefix)
        ours = type(builder.__name__, (builder,), attributes)
        classes.update(ours.makeTestCaseClasses())
    return classes


def _withoutLogContext(original):
    """
    Twisted's test that a protocol reads inside its transport's log context
    fails, and fails only for that: the difference the reactor documents.
    """

    def test_logPrefix(self):
        failure = self.assertRaises(self.failureException, original, self)
        self.assertEqual(str(failure), "'Custom Client' not in '-'")

    return test_logPrefix


globals().update(
    underDirectEPoll(
        test_core.SystemEventTestsBuilder,
        test_time.TimeTestsBuilder,
        test_tcp.TCP4ClientTestsBuilder,
        test_tcp.TCP6ClientTestsBuilder,
        test_tcp.TCPPortTestsBuilder,
        test_tcp.TCPConnectionTestsBuilder,
        test_tcp.TCPTransportTestsBuilder,
        test_tcp.AbortConnectionTests,
        test_tls.SSLClientTestsMixin,
        test_tls.TLSPortTestsBuilder,
        test_unix.UNIXTestsBuilder,
        test_unix.UNIXPortTestsBuilder,
    )
)


class Selectable:
    """
    A descriptor stand-in whose handling is recorded.
    """

    def __init__(self, prefix):
        self.prefix = prefix

    def logPrefix(self):
        return self.prefix


class FakePoller:
    def __init__(self, events):
        self.events = events

    def poll(self, timeout, most):
        return self.events


class DispatchTests(SynchronousTestCase):
    def setUp(self):
        self.reactor = DirectEPollReactor()
        self.addCleanup(self.dismantle, self.reactor._poller, self.reactor._selectables)
        self.handled = []
        self.reactor._doReadOrWrite = self.handle
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def dismantle(self, poller, selectables):
        """
        Give the reactor back its poller, then close its waker and poller.
        """
        self.reactor._poller, self.reactor._selectables = poller, selectables
        for reader in list(self.reactor._internalReaders):
            self.reactor.removeReader(reader)
            reader.connectionLost(None)
        poller.close()

    def handle(self, selectable, fd, event):
        self.handled.append((selectable.prefix, fd, event))
        if selectable.prefix == "broken":
            raise ZeroDivisionError("handling failed")

    def test_eachEventHandled(self):
        """
        Every ready descriptor still registered is handled once, in order;
        an event for one no longer registered is skipped.
        """
        self.reactor._selectables = {7: Selectable("a"), 9: Selectable("b")}
        self.reactor._poller = FakePoller([(9, 1), (8, 1), (7, 4)])
        self.reactor.doPoll(0)
        self.assertEqual(self.handled, [("b", 9, 1), ("a", 7, 4)])

    def test_failureLoggedWithPrefix(self):
        """
        A failure out of handling one descriptor is logged under that
        descriptor's log prefix, and the next descriptor is still handled.
        """
        self.reactor._selectables = {5: Selectable("broken"), 6: Selectable("fine")}
        self.reactor._poller = FakePoller([(5, 1), (6, 1)])
        self.reactor.doPoll(0)
        self.assertEqual(self.handled, [("broken", 5, 1), ("fine", 6, 1)])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        failures = [e for e in self.logged if e.get("isError")]
        self.assertEqual([e["log_system"] for e in failures], ["broken"])
        self.assertIsInstance(failures[0]["failure"].value, ZeroDivisionError)

    def test_keyboardInterruptRaised(self):
        """
        KeyboardInterrupt is not swallowed, as under the epoll reactor.
        """

        def interrupt(selectable, fd, event):
            raise KeyboardInterrupt()

        self.reactor._doReadOrWrite = interrupt
        self.reactor._selectables = {5: Selectable("a")}
        self.reactor._poller = FakePoller([(5, 1)])
        self.assertRaises(KeyboardInterrupt, self.reactor.doPoll, 0)

    def test_interruptedPoll(self):
        """
        A poll interrupted by a signal returns at once, handling nothing.
        """

        class Interrupted:
            def poll(self, timeout, most):
                raise InterruptedError()

        self.reactor._selectables = {5: Selectable("a")}
        self.reactor._poller = Interrupted()
        self.reactor.doPoll(None)
        self.assertEqual(self.handled, [])


class TwistdTests(TestCase):
    """
    Which reactor the real C{twistd -n sockservice} runs on.
    """

    timeout = 30

    @inlineCallbacks
    def assertServesOn(self, reactorClass, *args, reactorName=None):
        server = startTwistd(self, *args, reactorName=reactorName)
        port = yield server.listening
        peer = yield connectPeer(self, port)
        peer.send(b"SOME DATA\nmore\r\n")
        ack = b"Information Received\n"
        self.assertEqual((yield peer.receive(8 + 2 * len(ack))), b"connect\n" + ack * 2)
        self.assertIn(f"reactor class: {reactorClass}.".encode(), server.output)

    def test_directEPollByDefault(self):
        return self.assertServesOn(REACTOR, "--interface", "127.0.0.1", "--port", "0")

    def test_directEPollWithListen(self):
        """
        Checking C{--listen} endpoints while parsing options chooses the
        reactor the same way.
        """
        return self.assertServesOn(REACTOR, "--listen", "tcp:0:interface=127.0.0.1")

    def test_reactorOptionWins(self):
        return self.assertServesOn(
            "twisted.internet.epollreactor.EPollReactor",
            "--interface", "127.0.0.1", "--port", "0", reactorName="epoll",
        )

    def test_namedDirectEPoll(self):
        return self.assertServesOn(
            REACTOR, "--interface", "127.0.0.1", "--port", "0", reactorName="directepoll"
        )
