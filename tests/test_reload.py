"""
Reloading on SIGHUP: what changes live and what waits for a restart, with
the connections open at the time kept; and a second SIGINT or SIGTERM
while stopping.
"""

import os
import shutil
import signal
import tempfile

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sockservice.service.abort import SecondSignalService
from sockservice.service.notify import NotifyService
from sockservice.service.reload import ReloadService
from sockservice.tap import Options
from sockservice.web.websocket import WebSocketService
from tests.support import connect, makeCertificate, received
from tests.test_tap import FakeSignals, build
from tests.test_websocket import Browser


class ThreadCallingReactor(MemoryReactorClock):
    """
    A memory reactor that keeps what signal handlers hand it with
    callFromThread, to run them when told.
    """

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.threadCalls = []

    def callFromThread(self, f, *args, **kwargs):
        self.threadCalls.append((f, args, kwargs))

    def runThreadCalls(self):
        calls, self.threadCalls = self.threadCalls, []
        for f, args, kwargs in calls:
            f(*args, **kwargs)


class ReloadTests(SynchronousTestCase):
    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix="sockservice-reload-")
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, "sockservice.toml")
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)
        self.sent = []

    def write(self, text):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def start(self, text, *argv):
        """
        Start the service on a memory reactor with the config file holding
        C{text}; return its factory.
        """
        self.write(text)
        options = Options()
        options.parseOptions(["--config", self.path, *argv])
        self.reactor = ThreadCallingReactor()
        self.signals = FakeSignals()
        self.service = build(options, self.reactor, signals=self.signals)
        [self.reloader] = [s for s in self.service if isinstance(s, ReloadService)]
        [notifier] = [s for s in self.service if isinstance(s, NotifyService)]
        notifier.address = b"\0test"
        notifier._send = lambda address, state: self.sent.append(state)
        notifier._monotonic = lambda: 1234567890
        self.service.privilegedStartService()
        self.service.startService()
        self.reactor.run()
        self.addCleanup(self.service.stopService)
        return self.reloader.factory

    def hangUp(self, text):
        """
        Write C{text} to the config file and send SIGHUP; return the log
        lines of the reload.
        """
        self.write(text)
        del self.events[:]
        sent = len(self.sent)
        self.signals.handlers[signal.SIGHUP](signal.SIGHUP, None)
        self.assertEqual(self.events, [], "a signal handler only schedules the reload")
        self.assertEqual(self.sent[sent:], ["RELOADING=1\nMONOTONIC_USEC=1234567"],
                         "systemd hears RELOADING=1 from the handler itself")
        self.reactor.runThreadCalls()
        return [(e["log_level"], formatEvent(e)) for e in self.events
                if e.get("log_namespace", "").startswith("sockservice.service.reload")]

    def test_liveChanges(self):
        """
        Greeting, ack, max-line and the limits change in the running factory;
        a connection open across the reload stays and gets the new ack.
        """
        factory = self.start('listen = ["tcp:1"]\ngreeting = "hi"\n')
        before, transport = connect(factory)
        self.assertEqual(received(transport), b"hi\n")
        lines = self.hangUp(
            'listen = ["tcp:1"]\ngreeting = "hello"\nack = "ok"\nmax-line = 9\n'
            "idle-timeout = 30\nmax-connections = 7\nmax-per-ip = 2\ndrain-timeout = 3\n"
        )
        self.assertEqual(lines, [(
            LogLevel.info,
            f"reloaded {self.path}: greeting, ack, max-line, drain-timeout, idle-timeout, "
            "max-connections, max-per-ip changed",
        )])
        self.assertEqual((factory.greeting, factory.ack, factory.maxLine), (b"hello\n", b"ok\n", 9))
        limits = factory.limits
        self.assertEqual(
            (limits.idleTimeout, limits.idle.timeout, limits.maxConnections, limits.maxPerIP),
            (30, 30, 7, 2),
        )
        self.assertEqual(limits.perHost, {"127.0.0.1": 1})
        self.assertEqual(self.reloader.draining.timeout, 3)
        before.dataReceived(b"x\n")
        self.assertEqual(received(transport), b"ok\n")
        self.assertFalse(transport.disconnecting)
        after, transport = connect(factory)
        self.assertEqual(received(transport), b"hello\n")
        self.assertEqual(
            self.sent,
            ["READY=1\nSTATUS=listening on 0.0.0.0:1", "RELOADING=1\nMONOTONIC_USEC=1234567",
             "READY=1\nSTATUS=listening on 0.0.0.0:1"],
        )

    def test_tokenFile(self):
        token = os.path.join(self.directory, "token")
        with open(token, "w") as f:
            f.write("one\n")
        text = f'mode = "relay"\nlisten = ["tcp:1"]\ntoken-file = "{token}"\n'
        factory = self.start(text)
        self.assertEqual(factory.gate.token, b"one")
        with open(token, "w") as f:
            f.write("two\n")
        self.assertEqual(
            self.hangUp(text), [(LogLevel.info, f"reloaded {self.path}: token-file changed")]
        )
        self.assertEqual(factory.gate.token, b"two")

    def test_needsRestart(self):
        """
        A changed mode or listener is logged as needing a restart and left as
        it was; the rest of the file is applied.
        """
        factory = self.start('listen = ["tcp:1"]\n')
        lines = self.hangUp('mode = "relay"\nlisten = ["tcp:2"]\ngreeting = "x"\n')
        self.assertEqual(lines, [
            (LogLevel.info, f"reloaded {self.path}: greeting changed"),
            (LogLevel.warn, f"mode, listen changed in {self.path}: left as it was until a restart"),
        ])
        self.assertEqual(self.reloader.config.mode, "greet")
        self.assertEqual(self.reloader.config.endpoints, ("tcp:1",))
        self.assertEqual(factory.greeting, b"x\n")
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_observabilityNeedsRestart(self):
        """
        metrics and log-format are set up once, at start: a change is
        logged as needing a restart.
        """
        self.start('listen = ["tcp:1"]\n')
        lines = self.hangUp(
            'listen = ["tcp:1"]\nmetrics = "tcp:0:interface=127.0.0.1"\nlog-format = "json"\n'
        )
        self.assertEqual(lines, [
            (LogLevel.info, f"reloaded {self.path}: nothing changed"),
            (LogLevel.warn,
             f"metrics, log-format changed in {self.path}: left as it was until a restart"),
        ])
        self.assertEqual((self.reloader.config.metrics, self.reloader.config.logFormat),
                         (None, "text"))
        self.assertEqual(len(self.reactor.tcpServers), 1)

    def test_badFileChangesNothing(self):
        factory = self.start('listen = ["tcp:1"]\n')
        lines = self.hangUp('listen = ["tcp:1"]\ngreeting = "x"\nmax-line = -1\n')
        self.assertEqual(lines, [(
            LogLevel.error,
            f"reload failed, nothing changed: {self.path}: max-line: "
            "must be a whole number of 1 or more, not '-1'",
        )])
        self.assertEqual((factory.greeting, factory.maxLine), (b"connect\n", 65536))
        self.assertEqual(self.sent[-2:], ["RELOADING=1\nMONOTONIC_USEC=1234567",
                                          "READY=1\nSTATUS=listening on 0.0.0.0:1"])

    def test_nothingChanged(self):
        self.start('listen = ["tcp:1"]\n')
        self.assertEqual(
            self.hangUp('listen = ["tcp:1"]\n'),
            [(LogLevel.info, f"reloaded {self.path}: nothing changed")],
        )

    def test_certificate(self):
        """
        New handshakes get the new certificate; an unreadable key leaves the
        old one in use.
        """
        key, cert = makeCertificate(self.directory)
        text = f'listen = ["ssl:1:privateKey={key}:certKey={cert}"]\n'
        self.start(text)
        [tls] = self.reloader.tls.values()

        def served():
            return tls.serverConnectionForTLS(None).get_certificate().digest("sha256")

        first = served()
        makeCertificate(self.directory)
        self.assertEqual(self.hangUp(text), [(
            LogLevel.info,
            f"reloaded {self.path}: certificate of ssl:1:privateKey={key}:certKey={cert} changed",
        )])
        second = served()
        self.assertNotEqual(first, second)
        os.chmod(key, 0)
        if os.access(key, os.R_OK):
            os.remove(key)
        [(level, line)] = self.hangUp(text)
        self.assertEqual(level, LogLevel.error)
        self.assertTrue(line.startswith("reload failed, nothing changed: "), line)
        self.assertEqual(served(), second)

    def test_sighupIgnoredOnceStopping(self):
        """
        Once stopping, SIGHUP is ignored: it must not end the drain by
        killing the process.
        """
        self.start('listen = ["tcp:1"]\n')
        self.assertIsInstance(self.signals.handlers[signal.SIGHUP].__self__, ReloadService)
        self.service.stopService()
        self.assertEqual(self.signals.handlers[signal.SIGHUP], signal.SIG_IGN)

    def test_webSocketConnections(self):
        """
        The live limits apply to browser connections too (they share the
        factory); changed WebSocket listeners need a restart.
        """
        config = 'mode = "relay"\nlisten = ["tcp:1"]\nwebsocket = ["tcp:2"]\n'
        factory = self.start(config)
        [[listener]] = [s.listeners for s in self.service if isinstance(s, WebSocketService)]
        browser = Browser(listener.factory)
        lines = self.hangUp(config.replace("tcp:2", "tcp:3") + "max-line = 9\nmax-per-ip = 1\n")
        self.assertEqual(lines, [
            (LogLevel.info, f"reloaded {self.path}: max-line, max-per-ip changed"),
            (LogLevel.warn, f"websocket changed in {self.path}: left as it was until a restart"),
        ])
        self.assertEqual(factory.limits.perHost, {"127.0.0.1": 1})
        refused = Browser(listener.factory, port=5001)
        self.assertEqual((refused.read(), refused.closeCode()), (["ERROR server full"], 1013))
        browser.send("0123456789")
        self.assertEqual((browser.read(), browser.closeCode()), (["ERROR line too long"], 1009))


    def test_webSocketCertificate(self):
        """
        A wss listener's certificate is reloaded as the others are.
        """
        key, cert = makeCertificate(self.directory)
        wss = f"ssl:2:privateKey={key}:certKey={cert}"
        text = f'listen = ["tcp:1"]\nwebsocket = ["{wss}"]\n'
        self.start(text)
        [[listener]] = [s.listeners for s in self.service if isinstance(s, WebSocketService)]
        self.assertEqual(self.reloader.tls, {wss: listener.endpoint._sslContextFactory})
        makeCertificate(self.directory)
        self.assertEqual(self.hangUp(text), [
            (LogLevel.info, f"reloaded {self.path}: certificate of {wss} changed"),
        ])


class SecondSignalTests(SynchronousTestCase):
    def setUp(self):
        from sockservice.modes.greet import GreetFactory
        from tests.support import CapturedLog

        self.factory = GreetFactory(CapturedLog().log)
        self.transports = [connect(self.factory)[1] for _ in range(2)]
        self.reactor = ThreadCallingReactor()
        self.signals = FakeSignals()
        self.reactorStops = []
        for number in (signal.SIGINT, signal.SIGTERM):
            self.signals.signal(number, lambda number, frame: self.reactorStops.append(number))
        self.service = SecondSignalService(self.factory, self.reactor, self.signals)
        self.service.startService()
        self.reactor.run()
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def signal(self, number):
        self.signals.handlers[number](number, None)

    def assertAborted(self, name):
        self.assertEqual(self.events, [], "a signal handler only schedules the abort")
        self.reactor.runThreadCalls()
        self.assertEqual(
            [formatEvent(e) for e in self.events],
            [f"{name} again while stopping: aborting 2 connection(s)"],
        )
        self.assertEqual([t.disconnected for t in self.transports], [True, True])

    def test_firstToTheReactorThenAbort(self):
        """
        The first SIGINT goes to the reactor's handler (it stops); a SIGTERM
        after it aborts every open connection, with one log line.
        """
        self.signal(signal.SIGINT)
        self.assertEqual(self.reactorStops, [signal.SIGINT])
        self.assertEqual([t.disconnected for t in self.transports], [False, False])
        self.signal(signal.SIGTERM)
        self.assertEqual(self.reactorStops, [signal.SIGINT])
        self.assertAborted("SIGTERM")

    def test_ignoredSignalStaysIgnored(self):
        """
        A signal the process inherited as ignored (SIGINT in a shell's
        background job), for which the reactor installed no handler, is
        left ignored: taking it over would make it start a stop that never
        comes, and the SIGTERM after it an abort that leaves the reactor
        running.
        """
        signals = FakeSignals()
        signals.signal(signal.SIGINT, signal.SIG_IGN)
        signals.signal(signal.SIGTERM, lambda number, frame: self.reactorStops.append(number))
        reactor = ThreadCallingReactor()
        SecondSignalService(self.factory, reactor, signals).startService()
        reactor.run()
        self.assertIs(signals.handlers[signal.SIGINT], signal.SIG_IGN)
        signals.handlers[signal.SIGTERM](signal.SIGTERM, None)
        self.assertEqual(self.reactorStops, [signal.SIGTERM])

    def test_abortWhenStoppingAnyway(self):
        """
        Once the service stops for another reason (collect mode done), the
        first signal aborts already: the reactor is stopping.
        """
        self.service.stopService()
        self.signal(signal.SIGINT)
        self.assertEqual(self.reactorStops, [])
        self.assertAborted("SIGINT")
