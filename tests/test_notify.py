"""
Telling systemd about readiness and shutdown over NOTIFY_SOCKET.
"""

import os
import shutil
import socket
import tempfile

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock, _FakePort
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sockservice.modes.greet import GreetFactory
from sockservice.service.listening import ListeningService
from sockservice.service.notify import NotifyService, notifyAddress, sendNotification
from sockservice.tap import Options
from tests.test_tap import build
from tests.support import CapturedLog


class PendingEndpoint:
    """
    A server endpoint whose listening finishes when the test says so.
    """

    def __init__(self):
        self.listening = Deferred()

    def listen(self, factory):
        return self.listening


def socketPath(testCase):
    """
    A path for a UNIX socket, short enough for its 108-byte limit wherever
    the checkout is.
    """
    directory = tempfile.mkdtemp(prefix="sockservice-")
    testCase.addCleanup(shutil.rmtree, directory)
    return os.path.join(directory, "notify")


def datagramSocket(testCase, address):
    """
    A bound AF_UNIX datagram socket, closed when the test ends.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    testCase.addCleanup(sock.close)
    sock.bind(address)
    sock.settimeout(5)
    return sock


class NotifyAddressTests(SynchronousTestCase):
    def test_path(self):
        self.assertEqual(
            notifyAddress({"NOTIFY_SOCKET": "/run/systemd/notify"}), b"/run/systemd/notify"
        )

    def test_abstract(self):
        """
        A leading C{@} is the abstract namespace: a NUL byte in the address.
        """
        self.assertEqual(notifyAddress({"NOTIFY_SOCKET": "@sd/notify"}), b"\0sd/notify")

    def test_noneUsable(self):
        for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}):
            self.assertIsNone(notifyAddress(environ))


class SendNotificationTests(SynchronousTestCase):
    def test_oneDatagramToPath(self):
        path = socketPath(self)
        receiver = datagramSocket(self, path)
        sendNotification(notifyAddress({"NOTIFY_SOCKET": path}), "READY=1\nSTATUS=ok")
        self.assertEqual(receiver.recv(4096), b"READY=1\nSTATUS=ok")

    def test_abstractNamespace(self):
        name = f"@sockservice-test-{os.getpid()}-{id(self)}"
        receiver = datagramSocket(self, b"\0" + name[1:].encode())
        sendNotification(notifyAddress({"NOTIFY_SOCKET": name}), "STOPPING=1")
        self.assertEqual(receiver.recv(4096), b"STOPPING=1")


class NotifyServiceTests(SynchronousTestCase):
    def setUp(self):
        self.sent = []
        self.endpoints = [PendingEndpoint(), PendingEndpoint()]
        factory = GreetFactory(CapturedLog().log)
        self.listeners = [
            ListeningService(endpoint, f"test:{n}", factory)
            for n, endpoint in enumerate(self.endpoints)
        ]

    def send(self, address, state):
        self.sent.append((address, state))

    def test_readyOnceTheReactorRuns(self):
        reactor = MemoryReactorClock()
        notifier = NotifyService(self.listeners, reactor, {"NOTIFY_SOCKET": "@x"}, self.send)
        for listener in self.listeners:
            listener.startService()
        notifier.startService()
        self.endpoints[1].listening.callback(_FakePort(IPv6Address("TCP", "::1", 2)))
        self.endpoints[0].listening.callback(_FakePort(IPv4Address("TCP", "0.0.0.0", 1)))
        self.assertEqual(self.sent, [], "not before the reactor runs")
        reactor.run()
        self.assertEqual(
            self.sent, [(b"\0x", "READY=1\nSTATUS=listening on 0.0.0.0:1, [::1]:2")]
        )

    def test_readyOnceEveryListenerIsBound(self):
        reactor = MemoryReactorClock()
        reactor.run()
        notifier = NotifyService(self.listeners, reactor, {"NOTIFY_SOCKET": "@x"}, self.send)
        for listener in self.listeners:
            listener.startService()
        notifier.startService()
        self.endpoints[1].listening.callback(_FakePort(IPv6Address("TCP", "::1", 2)))
        self.assertEqual(self.sent, [])
        self.endpoints[0].listening.callback(_FakePort(IPv4Address("TCP", "0.0.0.0", 1)))
        self.assertEqual(
            self.sent, [(b"\0x", "READY=1\nSTATUS=listening on 0.0.0.0:1, [::1]:2")]
        )
        notifier.stopService()
        self.assertEqual(self.sent[1:], [(b"\0x", "STOPPING=1")])

    def test_silentWithoutNotifySocket(self):
        notifier = NotifyService(self.listeners, MemoryReactorClock(), {}, self.send)
        for listener in self.listeners:
            listener.startService()
        notifier.startService()
        for endpoint in self.endpoints:
            endpoint.listening.callback(_FakePort(IPv4Address("TCP", "0.0.0.0", 1)))
        notifier.stopService()
        self.assertEqual(self.sent, [])

    def test_sendFailureIsLogged(self):
        """
        A notification that cannot be sent is a warning, not a crash.
        """
        events = []
        self.patch(NotifyService, "log", Logger(observer=events.append))

        def refuse(address, state):
            raise ConnectionRefusedError(111, "Connection refused")

        notifier = NotifyService([], MemoryReactorClock(), {"NOTIFY_SOCKET": "/nowhere"}, refuse)
        notifier.stopService()
        self.assertEqual(
            [formatEvent(event) for event in events],
            ["cannot notify systemd at NOTIFY_SOCKET: Connection refused"],
        )


class MakeServiceNotifyTests(SynchronousTestCase):
    def test_readyAndStopping(self):
        """
        The plugin's service tells the socket in NOTIFY_SOCKET it is ready
        once listening and that it is stopping when stopped.
        """
        path = socketPath(self)
        receiver = datagramSocket(self, path)
        options = Options()
        options.parseOptions(["--listen", "tcp:4321", "--listen", "tcp:4322"])
        reactor = MemoryReactorClock()
        top = build(options, reactor, environ={"NOTIFY_SOCKET": path})
        top.privilegedStartService()
        top.startService()
        reactor.run()
        self.assertEqual(
            receiver.recv(4096), b"READY=1\nSTATUS=listening on 0.0.0.0:4321, 0.0.0.0:4322"
        )
        top.stopService()
        self.assertEqual(receiver.recv(4096), b"STOPPING=1")
