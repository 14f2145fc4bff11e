"""
The eager-accepting port on real loopback sockets and a memory reactor, the
factory reading the kernel's accept queue at each build, so what was
accepted before what was built is visible; Twisted's own accept-failure
tests and its adopted-port tests run against it; and the directepoll
reactor listening with it.
"""

import errno
import os
import resource
import socket

from twisted.internet import tcp, unix
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.test import test_tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.test import test_tcp_internals
from twisted.trial.unittest import SynchronousTestCase

from sockservice.fastpath.directepoll import DirectEPollReactor
from sockservice.fastpath.eageraccept import EagerAcceptPort, NoDelayServer, acceptQueue
from tests.test_directepoll import ReactorTestsMixin, underDirectEPoll


def connectClients(testCase, port, count):
    """
    Connect C{count} clients to C{port} on 127.0.0.1, closed when
    C{testCase} ends; the kernel holds them until the port accepts them.
    """
    clients = []
    for _ in range(count):
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        testCase.addCleanup(client.close)
        clients.append(client)
    return clients


def noDelayOf(protocol):
    return protocol.transport.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def waiting(listening):
    return acceptQueue(listening)[0]


class Recording(Factory):
    """
    A factory that records, at each build, the address it is given and how
    many connections the kernel still holds, then calls C{onBuild} (with
    the build's number, from 1) and returns what it returns, or a protocol.
    """

    def __init__(self, onBuild=lambda built: Protocol()):
        self.onBuild = onBuild
        self.port = None
        self.addresses = []
        self.waiting = []
        self.protocols = []

    def buildProtocol(self, addr):
        self.addresses.append(addr)
        self.waiting.append(waiting(self.port.socket))
        protocol = self.onBuild(len(self.addresses))
        if protocol is not None:
            self.protocols.append(protocol)
        return protocol


class PortMixin:
    """
    A port of C{portClass} on 127.0.0.1 with a L{Recording} factory and a
    memory reactor, and clients connecting to it: their connections complete
    in the kernel, which holds them until the port accepts them.
    """

    portClass = EagerAcceptPort

    def listen(self, factory, **attributes):
        self.reactor = MemoryReactorClock()
        port = self.portClass(0, factory, 1024, "127.0.0.1", self.reactor)
        port.startListening()
        port.__dict__.update(attributes)
        factory.port = port
        self.addCleanup(self.stop, port)
        self.events = []
        port._logger = Logger(namespace=port._logger.namespace, observer=self.events.append)
        return port

    def stop(self, port):
        for protocol in port.factory.protocols:
            protocol.transport.socket.close()
        if port.connected:
            port.stopListening()
            self.reactor.advance(0)

    def connect(self, port, count):
        clients = connectClients(self, port, count)
        self.assertEqual(waiting(port.socket), len(clients))
        return clients


class EagerAcceptTests(PortMixin, SynchronousTestCase):
    def test_acceptsAllBeforeBuilding(self):
        """
        Every connection the kernel holds is accepted before the first is
        built; each is built with its address and the next session number,
        in the order they connected.
        """
        factory = Recording()
        port = self.listen(factory)
        clients = self.connect(port, 40)
        port.doRead()
        self.assertEqual(factory.waiting, [0] * 40)
        self.assertEqual(
            factory.addresses,
            [IPv4Address("TCP", "127.0.0.1", c.getsockname()[1]) for c in clients],
        )
        self.assertEqual([p.transport.sessionno for p in factory.protocols], list(range(40)))
        self.assertEqual(port.sessionno, 40)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_acceptsWhatTheKernelHolds(self):
        """
        It calls C{accept} as many times as the kernel holds connections,
        not once more to see it fail; once if it holds none.
        """
        factory = Recording()
        port = self.listen(factory)
        self.connect(port, 5)
        port.socket = counting = FailingSocket(port.socket, {})
        port.doRead()
        self.assertEqual((counting.calls, len(factory.protocols)), (5, 5))
        port.doRead()
        self.assertEqual((counting.calls, len(factory.protocols)), (6, 5))

    def test_noDelay(self):
        """
        Every connection built has C{TCP_NODELAY} on, copied from the
        listening socket, and a transport that says so.
        """
        factory = Recording()
        port = self.listen(factory)
        self.connect(port, 3)
        port.doRead()
        self.assertEqual(port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)
        self.assertEqual([(type(p.transport), noDelayOf(p)) for p in factory.protocols],
                         [(NoDelayServer, 1)] * 3)

    def test_noDelayForThoseWaitingBefore(self):
        """
        The connections that completed before the port set C{TCP_NODELAY}
        on the listening socket (one systemd held while the service
        started) get it one by one, as the first accepted; later ones
        inherit it.
        """
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)
        self.addCleanup(listening.close)
        early = [socket.create_connection(listening.getsockname()) for _ in range(2)]
        for client in early:
            self.addCleanup(client.close)
        self.reactor = MemoryReactorClock()
        factory = Recording()
        port = EagerAcceptPort._fromListeningDescriptor(
            self.reactor, listening.fileno(), socket.AF_INET, factory)
        port.startListening()
        factory.port = port
        self.addCleanup(self.stop, port)
        self.assertEqual(port._withoutNoDelay, 2)
        connectClients(self, port, 2)
        port.doRead()
        self.assertEqual([noDelayOf(p) for p in factory.protocols], [1] * 4)
        self.assertEqual(port._withoutNoDelay, 0)

    def test_twistedBuildsAsItAccepts(self):
        """
        Twisted's own port builds each connection before it accepts the
        next, the kernel holding the rest meanwhile: what this port is for.
        """
        self.portClass = tcp.Port
        factory = Recording()
        port = self.listen(factory)
        self.connect(port, 40)
        port.doRead()
        self.assertEqual(factory.waiting, list(range(39, -1, -1)))

    def test_acceptsAgainEveryBatch(self):
        """
        Connections arriving while it builds are accepted after every
        C{batch} builds, and built in the same call.
        """

        def onBuild(built):
            if built == 1:
                self.connect(port, 5)
            return Protocol()

        factory = Recording(onBuild)
        port = self.listen(factory, batch=32)
        self.connect(port, 40)
        port.doRead()
        self.assertEqual(factory.waiting, [0] + [5] * 31 + [0] * 13)
        self.assertEqual(len(factory.protocols), 45)

    def test_buildsPerRead(self):
        """
        It builds at most C{buildsPerRead} a call, first come first built,
        and the rest in the next reactor iteration (one call scheduled,
        however often the port is read meanwhile).
        """
        factory = Recording()
        port = self.listen(factory, buildsPerRead=10, batch=4)
        clients = self.connect(port, 25)
        port.doRead()
        self.assertEqual(len(factory.protocols), 10)
        self.assertEqual(waiting(port.socket), 0)
        self.assertEqual([c.getTime() for c in self.reactor.getDelayedCalls()], [0])
        clients += self.connect(port, 2)
        port.doRead()
        self.assertEqual(len(factory.protocols), 20)
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)
        self.reactor.advance(0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertEqual(factory.waiting, [0] * 27)
        self.assertEqual(
            [a.port for a in factory.addresses], [c.getsockname()[1] for c in clients]
        )

    def test_maxQueuedIsTheBacklog(self):
        """
        It holds at most as many as the kernel's queue, as the kernel capped
        the backlog asked for (C{somaxconn}).
        """
        with open("/proc/sys/net/core/somaxconn") as f:
            somaxconn = int(f.read())
        for backlog, queued in [(7, 7), (somaxconn + 1, somaxconn)]:
            port = EagerAcceptPort(0, Factory(), backlog, "127.0.0.1", MemoryReactorClock())
            port.startListening()
            self.addCleanup(port.connectionLost, None)
            self.assertEqual(port.maxQueued, queued)

    def test_maxQueued(self):
        """
        It holds at most C{maxQueued} accepted and not built; the kernel
        keeps the rest, for the next time the port is readable.
        """
        factory = Recording()
        port = self.listen(factory, maxQueued=5)
        self.connect(port, 8)
        port.doRead()
        self.assertEqual(factory.waiting, [3] * 5)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        port.doRead()
        self.assertEqual(factory.waiting, [3] * 5 + [0] * 3)

    def test_factoryReturnsNone(self):
        """
        A connection the factory returns L{None} for is closed, and takes no
        session number.
        """
        factory = Recording(lambda built: None if built == 2 else Protocol())
        port = self.listen(factory)
        clients = self.connect(port, 3)
        port.doRead()
        self.assertEqual([p.transport.sessionno for p in factory.protocols], [0, 1])
        clients[1].settimeout(5)
        self.assertEqual(clients[1].recv(1), b"")
        clients[0].setblocking(False)
        self.assertRaises(BlockingIOError, clients[0].recv, 1)

    def test_stopListeningClosesQueued(self):
        """
        Stopping closes what was accepted and not built, as closing the
        listening socket resets what the kernel held; nothing more is built.
        """
        factory = Recording()
        port = self.listen(factory, buildsPerRead=2)
        clients = self.connect(port, 5)
        port.doRead()
        port.stopListening()
        self.reactor.advance(0)
        self.assertEqual(len(factory.protocols), 2)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        for client in clients[2:]:
            client.settimeout(5)
            self.assertEqual(client.recv(1), b"")

    def test_buildFailureLoggedAndRest(self):
        """
        A build that raises is logged, as Twisted's port does, and the
        connections still queued are built in the next iteration.
        """
        factory = Recording(lambda built: 1 / 0 if built == 2 else Protocol())
        port = self.listen(factory)
        self.connect(port, 4)
        port.doRead()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(factory.protocols), 1)
        self.reactor.advance(0)
        self.assertEqual(len(factory.protocols), 3)

    def test_acceptErrorLoggedAfterBuilds(self):
        """
        An accept error (here C{ECONNABORTED}) ends the accepting with
        Twisted's event, to the port's own logger (which sockservice folds),
        after the connections accepted before it are built.
        """
        seen = []
        factory = Recording(lambda built: seen.append(len(self.events)) or Protocol())
        port = self.listen(factory)
        self.connect(port, 3)
        port.socket = FailingSocket(port.socket, {2: errno.ECONNABORTED})
        port.doRead()
        self.assertEqual(seen, [0])
        self.assertEqual(
            [(e["log_format"], e["acceptError"]) for e in self.events],
            [("Could not accept new connection ({acceptError})", "ECONNABORTED")],
        )
        self.assertEqual(self.events[0]["log_namespace"], "twisted.internet.tcp.Port")
        port.doRead()
        self.assertEqual(len(factory.protocols), 3)

    def test_outOfDescriptors(self):
        """
        Out of descriptors (a real C{EMFILE}), Twisted's recovery runs as
        it does on its own port: the reserved descriptor freed, what the
        kernel still holds accepted and closed, the events logged after the
        connections accepted before it are built.
        """
        factory = Recording()
        port = self.listen(factory)
        clients = self.connect(port, 4)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.addCleanup(resource.setrlimit, resource.RLIMIT_NOFILE, (soft, hard))
        resource.setrlimit(resource.RLIMIT_NOFILE, (freeDescriptors(2)[-1] + 1, hard))
        port.doRead()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        self.assertEqual(len(factory.protocols), 2)
        self.assertEqual(
            [e["log_format"] for e in self.events],
            ["EMFILE encountered; releasing reserved file descriptor."]
            + ["EMFILE recovery: Closed socket from {address}"] * 2
            + ["Re-reserving EMFILE recovery file descriptor."],
        )
        self.assertEqual(
            [e["address"][1] for e in self.events[1:3]],
            [c.getsockname()[1] for c in clients[2:]],
        )
        for client in clients[2:]:
            client.settimeout(5)
            self.assertEqual(client.recv(1), b"")


def freeDescriptors(count):
    """
    The lowest C{count} descriptor numbers not in use: with the open-file
    limit just above the last, exactly C{count} more files can be opened.
    """
    free = []
    for fd in range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]):
        try:
            os.fstat(fd)
        except OSError:
            free.append(fd)
            if len(free) == count:
                return free
    raise AssertionError(f"fewer than {count} descriptors free")


class FailingSocket:
    """
    A listening socket whose C{accept} calls, counted from 1, raise the
    C{errno} that C{failures} gives for their number.
    """

    def __init__(self, listening, failures):
        self.listening = listening
        self.failures = failures
        self.calls = 0

    def accept(self):
        self.calls += 1
        if self.calls in self.failures:
            code = self.failures[self.calls]
            raise OSError(code, os.strerror(code))
        return self.listening.accept()

    def __getattr__(self, name):
        return getattr(self.listening, name)


class TwistedAcceptFailureTests(test_tcp_internals.SelectReactorTests):
    """
    Twisted's tests of its port's C{doRead} when C{accept} fails, against
    this port; its two tests of C{numberAccepts}, which this port does not
    use, replaced by what holds here instead.
    """

    def port(self, portNumber, factory, interface):
        port = EagerAcceptPort(portNumber, factory, interface=interface)
        port.startListening()
        self.ports.append(port)
        return port

    def test_acceptScaling(self):
        """
        It accepts what the kernel holds whatever C{numberAccepts} says.
        """
        factory = Factory.forProtocol(Protocol)
        port = self.port(0, factory, interface="127.0.0.1")
        connectClients(self, port, 3)
        built = []
        self.patch(factory, "buildProtocol", lambda addr: built.append(addr))
        port.numberAccepts = 1
        port.doRead()
        self.assertEqual(len(built), 3)

    def patch(self, obj, attribute, value):
        """
        Twisted's tests put a fake with only C{accept} in the place of the
        port's socket: the port counts what it accepts with the real
        socket's C{getsockopt}.
        """
        if attribute == "socket":
            value.getsockopt = obj.socket.getsockopt
        return super().patch(obj, attribute, value)

    def test_permissionFailure(self):
        """
        C{EPERM} (netfilter) is retried, as many times as the kernel holds
        connections; they are accepted the next time.
        """
        factory = Factory.forProtocol(Protocol)
        port = self.port(0, factory, interface="127.0.0.1")
        connectClients(self, port, 3)
        failing = FailingSocket(port.socket, dict.fromkeys([1, 2, 3], errno.EPERM))
        self.patch(port, "socket", failing)
        port.doRead()
        self.assertEqual((failing.calls, waiting(failing)), (3, 3))
        port.doRead()
        self.assertEqual((failing.calls, waiting(failing)), (6, 0))


class ListeningTests(ReactorTestsMixin, SynchronousTestCase):
    """
    The directepoll reactor listens with L{EagerAcceptPort} on TCP, TLS and
    adopted TCP sockets; adopted UNIX sockets stay Twisted's.
    """

    def setUp(self):
        self.reactor = self.makeReactor(DirectEPollReactor)

    def listening(self, port):
        self.addCleanup(port.connectionLost, None)
        return port

    def test_listenTCP(self):
        port = self.listening(self.reactor.listenTCP(0, Factory(), 7, "127.0.0.1"))
        self.assertIs(type(port), EagerAcceptPort)
        self.assertEqual((port.backlog, port.getHost().host), (7, "127.0.0.1"))
        self.assertEqual(port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    def test_listenSSL(self):
        from twisted.internet.ssl import CertificateOptions

        port = self.listening(
            self.reactor.listenSSL(0, Factory(), CertificateOptions(), interface="127.0.0.1")
        )
        self.assertIs(type(port), EagerAcceptPort)
        self.assertEqual(port._type, "TLS")
        # Each TLS connection's socket takes TCP_NODELAY from this one.
        self.assertEqual(port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    def test_adoptStreamPortTCP(self):
        listening = socket.create_server(("127.0.0.1", 0), backlog=9)
        listening.setblocking(False)
        self.addCleanup(listening.close)
        port = self.listening(
            self.reactor.adoptStreamPort(listening.fileno(), socket.AF_INET, Factory())
        )
        self.assertIs(type(port), EagerAcceptPort)
        self.assertEqual(port.getHost().port, listening.getsockname()[1])
        self.assertEqual(port.maxQueued, 9)
        self.assertEqual(listening.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), 1)

    def test_adoptStreamPortUNIX(self):
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(self.mktemp())
        listening.listen()
        listening.setblocking(False)
        self.addCleanup(listening.close)
        port = self.listening(
            self.reactor.adoptStreamPort(listening.fileno(), socket.AF_UNIX, Factory())
        )
        self.assertIs(type(port), unix.Port)


globals().update(underDirectEPoll(test_tcp.TCPFDPortTestsBuilder))
