"""
The C{directepoll} reactor: Twisted's own reactor conformance tests run
against it, failures it catches, every path of the epoll reactor's
C{_doReadOrWrite} handled the same way, and the real twistd serving on it by
default.
"""

import signal
import sys
import threading
from itertools import product
from select import EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT

from twisted.internet import tcp
from twisted.internet.defer import inlineCallbacks
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.error import ConnectionDone
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.test import test_core, test_tcp, test_time, test_tls, test_unix
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sockservice.fastpath import directepoll
from sockservice.fastpath.directepoll import DirectEPollReactor
from tests.realserver import connectPeer, startTwistd

REACTOR = "sockservice.fastpath.directepoll.DirectEPollReactor"


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
    A descriptor stand-in: C{doRead} records the call, then raises
    C{raises} or returns C{returns}.
    """

    def __init__(self, prefix, handled, returns=None, raises=None):
        self.prefix = prefix
        self.handled = handled
        self.returns = returns
        self.raises = raises

    def logPrefix(self):
        return self.prefix

    def fileno(self):
        return 3

    def doRead(self):
        self.handled.append(("doRead", self.prefix))
        if self.raises is not None:
            raise self.raises
        return self.returns


class FakePoller:
    def __init__(self, events):
        self.events = events

    def poll(self, timeout, most):
        return self.events


class ReactorTestsMixin:
    """
    A reactor (C{reactorClass}) whose poller and descriptors a test sets,
    with its waker and poller closed when the test ends.
    """

    def makeReactor(self, reactorClass):
        reactor = reactorClass()
        self.addCleanup(self.dismantle, reactor, reactor._poller, reactor._selectables)
        return reactor

    def dismantle(self, reactor, poller, selectables):
        """
        Give the reactor back its poller, then close its waker and poller.
        """
        reactor._poller, reactor._selectables = poller, selectables
        for reader in list(reactor._internalReaders):
            reactor.removeReader(reader)
            reader.connectionLost(None)
        poller.close()


class DispatchTests(ReactorTestsMixin, SynchronousTestCase):
    def setUp(self):
        self.reactor = self.makeReactor(DirectEPollReactor)
        self.handled = []
        self.reactor._doReadOrWrite = self.handle
        self.reactor._disconnectSelectable = self.disconnect
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def handle(self, selectable, fd, event):
        self.handled.append(("handle", selectable.prefix, fd, event))
        if selectable.prefix == "broken":
            raise ZeroDivisionError("handling failed")
        if selectable.prefix == "interrupted":
            raise KeyboardInterrupt()

    def disconnect(self, selectable, why, inRead):
        self.handled.append(("disconnect", selectable.prefix, why, inRead))

    def poll(self, *events):
        """
        Handle C{events}, pairs of a descriptor's prefix (L{None}: not
        registered) and an event mask, as one poll returned them.
        """
        self.reactor._selectables = {
            fd: selectable for fd, (selectable, _) in enumerate(events) if selectable
        }
        self.reactor._poller = FakePoller([(fd, event) for fd, (_, event) in enumerate(events)])
        self.reactor.doPoll(0)

    def failuresLogged(self):
        return [(e["log_system"], type(e["failure"].value)) for e in self.logged if e.get("isError")]

    def test_readReadyRead(self):
        """
        A descriptor only readable is read at once; any other event goes to
        C{_doReadOrWrite}; one no longer registered is skipped; in order.
        """
        self.poll(
            (Selectable("a", self.handled), EPOLLIN),
            (None, EPOLLIN),
            (Selectable("b", self.handled), EPOLLOUT),
            (Selectable("c", self.handled), EPOLLIN | EPOLLHUP),
        )
        self.assertEqual(
            self.handled,
            [("doRead", "a"), ("handle", "b", 2, EPOLLOUT), ("handle", "c", 3, EPOLLIN | EPOLLHUP)],
        )

    def test_readEndsConnection(self):
        """
        A read that returns why the connection ended disconnects it, as
        ended while reading.
        """
        done = ConnectionDone()
        self.poll((Selectable("a", self.handled, returns=done), EPOLLIN))
        self.assertEqual(self.handled, [("doRead", "a"), ("disconnect", "a", done, True)])

    def test_readFailure(self):
        """
        A read that raises is logged under the descriptor's log prefix and
        disconnects it with the exception (not as ended while reading, as
        C{_doReadOrWrite} does it); the next descriptor is handled.
        """
        error = ZeroDivisionError("read failed")
        self.poll(
            (Selectable("a", self.handled, raises=error), EPOLLIN),
            (Selectable("b", self.handled), EPOLLIN),
        )
        self.assertEqual(
            self.handled, [("doRead", "a"), ("disconnect", "a", error, False), ("doRead", "b")]
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.failuresLogged(), [("a", ZeroDivisionError)])

    def test_handlingFailure(self):
        """
        A failure out of C{_doReadOrWrite} is logged under the descriptor's
        log prefix, and the next descriptor is still handled.
        """
        self.poll(
            (Selectable("broken", self.handled), EPOLLOUT),
            (Selectable("b", self.handled), EPOLLIN),
        )
        self.assertEqual(self.handled, [("handle", "broken", 0, EPOLLOUT), ("doRead", "b")])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.failuresLogged(), [("broken", ZeroDivisionError)])

    def test_keyboardInterruptRaised(self):
        """
        KeyboardInterrupt out of C{_doReadOrWrite} is not swallowed, as
        under the epoll reactor.
        """
        self.assertRaises(
            KeyboardInterrupt, self.poll, (Selectable("interrupted", self.handled), EPOLLOUT)
        )


class Stub:
    """
    A descriptor stand-in on C{fd}: reads record its C{name}.
    """

    def __init__(self, name, fd, handled):
        self.name = name
        self.fd = fd
        self.handled = handled

    def fileno(self):
        return self.fd

    def logPrefix(self):
        return self.name

    def doRead(self):
        self.handled.append(self.name)


class Connection(Stub, tcp.Connection):
    """
    A connection stand-in.
    """


class RecordingPoller:
    """
    Returns C{events} from each poll, recording the timeouts asked for.
    """

    def __init__(self):
        self.events = []
        self.timeouts = []

    def poll(self, timeout, most):
        self.timeouts.append(timeout)
        return self.events


class TurnTests(ReactorTestsMixin, SynchronousTestCase):
    """
    More connections ready than a pass takes (here 3) are handled in turns:
    those ready anew first, then those waiting, and those still ready after
    their turn behind them; once none wait, every pass handles all that is
    ready.
    """

    def setUp(self):
        self.patch(directepoll, "EVENTS_PER_TURN", 3)
        self.reactor = self.makeReactor(DirectEPollReactor)
        self.handled = []
        self.reactor._doReadOrWrite = lambda selectable, fd, event: self.handled.append(
            selectable.name
        )
        self.poller = self.reactor._poller = RecordingPoller()
        self.reactor._selectables = {}

    def add(self, names, kind=Connection):
        for name in names:
            fd = len(self.reactor._selectables) + 10
            self.reactor._selectables[fd] = kind(name, fd, self.handled)

    def ready(self, names, event=EPOLLOUT, **events):
        """
        Poll with C{names} ready (by default, only writable; C{events}
        by name for others); return what was handled, in order.
        """
        fds = {s.name: fd for fd, s in self.reactor._selectables.items()}
        self.poller.events = [(fds[name], events.get(name, event)) for name in names]
        del self.handled[:]
        self.reactor.doPoll(None)
        return "".join(self.handled)

    def test_atMostEventsPerTurn(self):
        """
        A pass handles at most C{EVENTS_PER_TURN} connections, the last
        reported first, and the next does not wait in epoll. Those still
        ready after their turn (a client that does not read, a sender whose
        line made all those writes) go behind those waiting: each gets one
        turn a round.
        """
        self.add("abcde")
        self.assertEqual(
            [self.ready("abcde") for _ in range(4)], ["edc", "ba", "cde", "ab"]
        )
        self.assertEqual(self.poller.timeouts, [-1, 0, 0, 0])

    def test_readyAnewFirst(self):
        """
        A connection ready anew (one that was written all it was owed after
        its turn, so keeps up; a new client) goes before those waiting.
        """
        self.add("abcdefg")
        self.assertEqual(self.ready("abcdefg"), "gfe")
        self.assertEqual(self.ready("abcdfg"), "dcb")
        self.assertEqual(self.ready("abcdefg"), "eaf")
        self.add("h")
        self.assertEqual(self.ready("abcdefgh"), "hgb")

    def test_readyForMoreAnew(self):
        """
        A connection ready for more than it had its turn for (written to,
        now closed: readable, hung up) is ready anew, not held behind the
        others.
        """
        self.add("abcde")
        self.assertEqual(self.ready("abcde"), "edc")
        self.assertEqual(self.ready("abcde", c=EPOLLOUT | EPOLLHUP, d=EPOLLIN), "dcb")
        self.assertEqual(self.ready("abcde"), "dae")

    def test_waitingReadyForMoreAnew(self):
        """
        A connection waiting to be written to that is now readable too (a
        client that sent a line while it waited) is ready anew.
        """
        self.add("abcde")
        self.assertEqual(self.ready("abcde"), "edc")
        self.assertEqual(self.ready("abcde", a=EPOLLIN | EPOLLOUT), "ab")

    def test_shareOfManyReady(self):
        """
        Past C{TURNS} times C{EVENTS_PER_TURN} ready, a pass handles a
        C{TURNS}th of them.
        """
        self.patch(directepoll, "TURNS", 2)
        self.add("abcdefgh")
        self.assertEqual(self.ready("abcdefgh"), "hgfe")
        self.assertEqual(self.ready("abcdefgh"), "dcba")

    def test_notConnectionsAtOnce(self):
        """
        A listening port (or the waker: what is not a connection) is
        handled in every pass, beyond the connections' share.
        """
        self.add("abcd")
        self.add("P", kind=Stub)
        self.assertEqual(self.ready("abcdP"), "Pdcb")
        self.assertEqual(self.ready("abcdP"), "Pa")

    def test_noLongerReady(self):
        """
        One waiting that is not ready any more is dropped.
        """
        self.add("abcde")
        self.assertEqual(self.ready("abcde"), "edc")
        self.assertEqual(self.ready("acde"), "a")
        self.assertEqual(self.ready("abcde"), "bcd")

    def test_goneWhileWaiting(self):
        """
        One waiting whose connection is gone is dropped.
        """
        self.add("abcde")
        self.assertEqual(self.ready("abcde"), "edc")
        fds = {s.name: fd for fd, s in self.reactor._selectables.items()}
        del self.reactor._selectables[fds["b"]]
        self.poller.events = [(fds[name], EPOLLOUT) for name in "abcde"]
        del self.handled[:]
        self.reactor.doPoll(None)
        self.assertEqual(self.handled, ["a"])

    def test_roundEnds(self):
        """
        Once a pass leaves none waiting, the next handles every ready
        connection, in the order epoll reports them.
        """
        self.add("abcd")
        self.assertEqual(self.ready("abcd"), "dcb")
        self.assertEqual(self.ready("a"), "a")
        self.assertEqual(self.ready("cba"), "cba")
        self.assertEqual(self.poller.timeouts, [-1, 0, -1])


class Raise:
    """
    An outcome of a L{Descriptor} method: raise C{exception}.
    """

    def __init__(self, exception):
        self.exception = exception

    def __repr__(self):
        return f"Raise({self.exception!r})"


class Descriptor:
    """
    A descriptor stand-in whose C{fileno}, C{doRead} and C{doWrite} record
    their call, then return their outcome or raise its L{Raise}.
    """

    def __init__(self, calls, fileno, read, write):
        self.calls = calls
        self.outcomes = {"fileno": fileno, "doRead": read, "doWrite": write}

    def logPrefix(self):
        return "descriptor"

    def _call(self, name):
        self.calls.append(name)
        outcome = self.outcomes[name]
        if isinstance(outcome, Raise):
            raise outcome.exception
        return outcome

    def fileno(self):
        return self._call("fileno")

    def doRead(self):
        return self._call("doRead")

    def doWrite(self):
        return self._call("doWrite")


FD = 7
FILENOS = [FD, -1, Raise(ValueError("fileno failed"))]
READS = [None, CONNECTION_DONE, CONNECTION_LOST, Raise(ZeroDivisionError("read failed")),
         Raise(ConnectionDone("raised"))]
WRITES = [None, CONNECTION_LOST, Raise(ZeroDivisionError("write failed"))]
EVENTS = [
    EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT, EPOLLHUP, EPOLLERR, EPOLLIN | EPOLLHUP,
    EPOLLIN | EPOLLERR, EPOLLOUT | EPOLLHUP, EPOLLIN | EPOLLOUT | EPOLLHUP,
]


class SameAsEPollTests(ReactorTestsMixin, SynchronousTestCase):
    """
    Every event on every kind of descriptor is handled as Twisted's epoll
    reactor handles it, running every path of its C{_doReadOrWrite}.
    """

    def setUp(self):
        self.logged = []
        globalLogPublisher.addObserver(self.logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.logged.append)

    def handled(self, reactor, event, reading, outcomes):
        """
        What C{reactor} does with C{event} on a L{Descriptor} with
        C{outcomes}, registered as a reader if C{reading}: the calls made on
        the descriptor, the disconnection, the failures logged.
        """
        calls = []
        reactor._selectables = {FD: Descriptor(calls, *outcomes)}
        reactor._reads = {FD} if reading else set()
        reactor._poller = FakePoller([(FD, event)])
        reactor._disconnectSelectable = lambda s, why, inRead: calls.append(
            ("disconnect", why, inRead)
        )
        del self.logged[:]
        reactor.doPoll(0)
        failures = [type(e["failure"].value) for e in self.logged if e.get("isError")]
        return calls, failures

    def test_everyPath(self):
        """
        C{DirectEPollReactor} does what C{EPollReactor} does for each
        combination, and together they run every line of Twisted's
        C{_doReadOrWrite}, so a path it gains in a new Twisted fails here
        until it is covered.
        """
        direct = self.makeReactor(DirectEPollReactor)
        epoll = self.makeReactor(EPollReactor)
        different = []
        code = EPollReactor._doReadOrWrite.__code__
        ran = set()

        def trace(frame, event, arg):
            if frame.f_code is code:
                ran.add(frame.f_lineno)
                return trace
            return None

        for event, reading, *outcomes in product(EVENTS, [True, False], FILENOS, READS, WRITES):
            ours = self.handled(direct, event, reading, outcomes)
            sys.settrace(trace)
            try:
                theirs = self.handled(epoll, event, reading, outcomes)
            finally:
                sys.settrace(None)
            if ours != theirs:
                different.append((event, reading, outcomes, ours, theirs))
        self.flushLoggedErrors()
        self.assertEqual(different, [])
        lines = {line for _, _, line in code.co_lines() if line is not None}
        lines.discard(code.co_firstlineno)
        self.assertEqual(sorted(lines - ran), [])


class InterruptedPollTests(ReactorTestsMixin, SynchronousTestCase):
    def test_signalDuringPoll(self):
        """
        A signal arriving while the reactor waits in C{epoll_wait} runs its
        handler, and the wait goes on (Python retries it, PEP 475): no
        C{InterruptedError} comes out.
        """
        reactor = self.makeReactor(DirectEPollReactor)
        caught = []
        previous = signal.signal(signal.SIGUSR1, lambda number, frame: caught.append(number))
        self.addCleanup(signal.signal, signal.SIGUSR1, previous)
        sender = threading.Timer(
            0.01, signal.pthread_kill, (threading.get_ident(), signal.SIGUSR1)
        )
        sender.start()
        self.addCleanup(sender.join)
        reactor.doPoll(0.1)
        self.assertEqual(caught, [signal.SIGUSR1])


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
