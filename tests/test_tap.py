"""
The plugin's options and the service they build.
"""

import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile

from twisted.application.service import IServiceMaker
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.hubs.local import LocalHub
from sockservice.service.listening import ListeningService
from sockservice.hubs.redis import RedisHub
from sockservice.hubs.redisurl import RedisAddress
from sockservice.modes.relay import RelayFactory
from sockservice.config import Config
from sockservice.tap import Options, makeService
from tests.support import connect, disconnect, makeCertificate


def parse(*argv):
    options = Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    def assertUsageError(self, argv, message):
        """
        A bad command line ends with exit status 2 and exactly one line on
        stderr.
        """
        with self.assertRaises(SystemExit) as caught:
            parse(*argv)
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(
            self.stderr.getvalue(),
            f"twistd sockservice: {message} (see twistd sockservice --help)\n",
        )
        self.stderr.truncate(0)
        self.stderr.seek(0)

    def test_defaults(self):
        self.assertEqual(parse().config, Config(argv=()))
        config = parse().config
        self.assertEqual(config.mode, "greet")
        self.assertEqual(config.endpoints, ("tcp:12345:interface=0.0.0.0",))
        self.assertEqual(config.greeting, b"connect\n")
        self.assertEqual(config.ack, b"Information Received\n")
        self.assertEqual(config.maxLine, 65536)
        self.assertEqual(config.count, 5)

    def test_modeGreetings(self):
        self.assertEqual(parse("--mode", "collect").config.greeting, "测试成功！\n".encode())
        self.assertEqual(parse("--mode", "relay").config.greeting, b"")
        self.assertEqual(parse("-m", "relay", "--greeting", "hi").config.greeting, b"hi\n")
        self.assertEqual(parse("--greeting", "").config.greeting, b"")

    def test_utf8Text(self):
        config = parse("--greeting", "你好", "--ack", "收到 ✓").config
        self.assertEqual(config.greeting, "你好\n".encode())
        self.assertEqual(config.ack, "收到 ✓\n".encode())

    def test_portAndInterface(self):
        self.assertEqual(
            parse("--port", "8000", "--interface", "127.0.0.1").config.endpoints,
            ("tcp:8000:interface=127.0.0.1",),
        )
        self.assertEqual(
            parse("-p", "0", "-i", "::1").config.endpoints, ("tcp:0:interface=\\:\\:1",)
        )

    def test_listenRepeats(self):
        options = parse("--listen", "tcp:1234", "--listen", "tcp6:port=1235:interface=\\:\\:1")
        self.assertEqual(
            options.config.endpoints, ("tcp:1234", "tcp6:port=1235:interface=\\:\\:1")
        )

    def test_countAndMaxLine(self):
        config = parse("--mode", "collect", "--count", "1", "--max-line", "10").config
        self.assertEqual((config.count, config.maxLine), (1, 10))

    def test_unknownMode(self):
        self.assertUsageError(
            ["--mode", "chat"], "unknown --mode 'chat': choose greet, collect or relay"
        )

    def test_badPort(self):
        for value in ("99999", "-1", "http", ""):
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertUsageError(
                ["--port", value],
                f"--port must be a whole number from 0 to 65535, not {value!r}",
            )

    def test_badCount(self):
        self.assertUsageError(
            ["--mode", "collect", "--count", "0"],
            "--count must be a whole number of 1 or more, not '0'",
        )

    def test_badMaxLine(self):
        self.assertUsageError(
            ["--max-line", "1k"], "--max-line must be a whole number of 1 or more, not '1k'"
        )

    def test_badInterface(self):
        self.assertUsageError(
            ["--interface", "example.com"],
            "--interface must be an IP address, not 'example.com'",
        )

    def test_badListen(self):
        self.assertUsageError(
            ["--listen", "nope:1"],
            "--listen 'nope:1' is not a usable endpoint: Unknown endpoint type: 'nope'",
        )

    def test_listenWithPort(self):
        self.assertUsageError(
            ["--listen", "tcp:1", "--port", "2"],
            "--listen replaces --port and --interface: give one or the other",
        )

    def test_multilineGreeting(self):
        self.assertUsageError(
            ["--greeting", "a\nb"], "--greeting must be one line, without CR or LF"
        )

    def test_undecodableAck(self):
        self.assertUsageError(
            ["--ack", "caf\udce9"], "--ack is not valid UTF-8 text"
        )

    def test_optionOfAnotherMode(self):
        self.assertUsageError(["--count", "3"], "--count applies only to --mode collect")
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertUsageError(
            ["--mode", "relay", "--ack", "ok"], "--ack applies only to --mode greet"
        )
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.assertUsageError(["--log-messages"], "--log-messages applies only to --mode relay")

    def test_backplane(self):
        config = parse("-m", "relay", "--backplane", "redis://:pw@127.0.0.1:6380/1").config
        self.assertEqual(config.backplaneAddress, RedisAddress("127.0.0.1", 6380, "pw", None, 1))
        self.assertEqual(config.channel, "sockservice:relay")
        self.assertEqual(config.backplaneOutbox, 1 << 20)
        config = parse("-m", "relay", "--backplane", "redis://h", "--channel", "chat:eu",
                       "--backplane-outbox", "0").config
        self.assertEqual((config.channel, config.backplaneOutbox), ("chat:eu", 0))
        self.assertIsNone(parse("-m", "relay").config.backplaneAddress)

    def test_badBackplane(self):
        self.assertUsageError(
            ["-m", "relay", "--backplane", "localhost:6379"],
            "--backplane must be a redis:// or rediss:// URL, such as "
            "redis://:PASSWORD@127.0.0.1:6379/0",
        )

    def test_backplaneOptionsNeedRelayAndBackplane(self):
        self.assertUsageError(
            ["--backplane", "redis://h"], "--backplane applies only to --mode relay"
        )
        self.assertUsageError(
            ["-m", "relay", "--channel", "c"], "--channel applies only with --backplane"
        )
        self.assertUsageError(
            ["-m", "relay", "--backplane-outbox", "5"],
            "--backplane-outbox applies only with --backplane",
        )

    def test_unknownOption(self):
        self.assertUsageError(["--bogus"], "option --bogus not recognized")


class RaisingMemoryReactorClock(RaisingMemoryReactor, Clock):
    """
    A reactor whose listen fails, with the clock a real reactor has.
    """

    def __init__(self, listenException):
        RaisingMemoryReactor.__init__(self, listenException=listenException)
        Clock.__init__(self)


class PluginTests(SynchronousTestCase):
    def test_listed(self):
        import twisted.plugins

        makers = {p.tapname: p for p in getPlugins(IServiceMaker, twisted.plugins)}
        self.assertIn("sockservice", makers)
        self.assertIs(makers["sockservice"].options, Options)

    def test_withoutEpoll(self):
        """
        Where there is no epoll (not Linux), the options still load and
        parse, without the directepoll reactor.
        """
        done = subprocess.run(
            [sys.executable, "-c",
             "import select, sys; del select.epoll\n"
             "from sockservice.tap import Options\n"
             "Options().parseOptions(['--mode', 'relay'])\n"
             "print(sorted(m for m in sys.modules if 'epoll' in m))"],
            capture_output=True, text=True,
        )
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, "[]\n", ""))


class FakeSignals:
    """
    Stands in for the L{signal} module: records the handlers installed.
    """

    SIGHUP, SIGINT, SIGTERM, SIG_IGN = signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIG_IGN
    Signals = signal.Signals

    def __init__(self):
        self.handlers = {}

    def signal(self, number, handler):
        self.handlers[number] = handler

    def getsignal(self, number):
        return self.handlers.get(number, signal.SIG_DFL)


def build(options, reactor, openFileLimit=lambda connections: connections, environ={},
          signals=None):
    """
    makeService on a memory reactor, leaving the process's open file limit
    and signal handlers alone.
    """
    return makeService(options, reactor=reactor, environ=environ, openFileLimit=openFileLimit,
                       signals=FakeSignals() if signals is None else signals)


class NoReactorTests(SynchronousTestCase):
    def test_parsingInstallsNoReactor(self):
        """
        Options parse every kind of --listen, TLS included, without
        installing a reactor: twistd's --reactor must still be free to.
        """
        directory = tempfile.mkdtemp(prefix="sockservice-noreactor-")
        self.addCleanup(shutil.rmtree, directory)
        key, cert = makeCertificate(directory)
        done = subprocess.run(
            [sys.executable, "-c",
             "import sys\n"
             "from sockservice.tap import Options\n"
             "Options().parseOptions(sys.argv[1:])\n"
             "print('twisted.internet.reactor' in sys.modules)",
             "--listen", "tcp:0", "--listen", f"ssl:0:privateKey={key}:certKey={cert}",
             "--listen", "unix:/nonexistent/s"],
            capture_output=True, text=True,
        )
        self.assertEqual((done.returncode, done.stdout, done.stderr), (0, "False\n", ""))


class MakeServiceTests(SynchronousTestCase):
    def start(self, *argv, **kwargs):
        self.reactor = MemoryReactorClock()
        service = build(parse(*argv), self.reactor, **kwargs)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return service

    def test_greetListens(self):
        self.start("--port", "4321", "--interface", "127.0.0.1", "--max-line", "7")
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((port, interface), (4321, "127.0.0.1"))
        self.assertIsInstance(factory, GreetFactory)
        self.assertEqual(factory.maxLine, 7)

    def test_oneFactoryOnEveryEndpoint(self):
        self.start("--mode", "relay", "--listen", "tcp:1", "--listen", "tcp:2")
        factories = [server[1] for server in self.reactor.tcpServers]
        self.assertEqual([server[0] for server in self.reactor.tcpServers], [1, 2])
        self.assertIsInstance(factories[0], RelayFactory)
        self.assertIs(factories[0], factories[1])

    def test_relayHub(self):
        """
        Relay uses the local hub, or with --backplane the Redis hub, which
        runs as a child service.
        """
        self.start("--mode", "relay")
        self.assertIsInstance(self.reactor.tcpServers[0][1].hub, LocalHub)
        service = build(
            parse("-m", "relay", "--backplane", "redis://127.0.0.1:6380", "--channel", "c",
                  "--backplane-outbox", "99"),
            MemoryReactorClock(),
        )
        hub = list(service)[0]
        [listener] = [each for each in service if isinstance(each, ListeningService)]
        self.assertIs(listener.factory.hub, hub)
        self.assertIsInstance(hub, RedisHub)
        self.assertEqual((hub.channel, hub.outbox.limit), ("c", 99))

    def test_collectStopsListeningThenReactor(self):
        """
        At the count the listeners stop; when the last connection closes
        the reactor stops, so twistd exits 0.
        """
        service = self.start("--mode", "collect", "--count", "1")
        factory = self.reactor.tcpServers[0][1]
        self.assertIsInstance(factory, CollectFactory)
        [listener] = [each for each in service if isinstance(each, ListeningService)]
        self.assertIsNotNone(listener.port)
        proto, transport = connect(factory)
        self.assertIsNone(listener.port)
        self.assertFalse(listener.running)
        self.assertFalse(self.reactor.hasStopped)
        proto.dataReceived(b"done\n")
        disconnect(proto)
        self.assertTrue(self.reactor.hasStopped)

    def test_cannotListen(self):
        """
        A port in use ends makeService, before twistd can daemonize, with one
        line on stderr and status 1.
        """
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        error = CannotListenError("0.0.0.0", 12345, OSError(98, "Address already in use"))
        with self.assertRaises(SystemExit) as caught:
            build(parse(), RaisingMemoryReactorClock(listenException=error))
        self.assertEqual(caught.exception.code, 1)
        self.assertEqual(
            stderr.getvalue(),
            "sockservice: cannot listen on tcp:12345:interface=0.0.0.0: "
            "Address already in use\n",
        )

    def test_listensOnce(self):
        """
        makeService listens; twistd's start finds it done and listens no
        more, and a stop closes the port.
        """
        reactor = MemoryReactorClock()
        service = build(parse("--listen", "tcp:1"), reactor)
        self.assertEqual([server[0] for server in reactor.tcpServers], [1])
        service.privilegedStartService()
        service.startService()
        self.assertEqual(len(reactor.tcpServers), 1)
        [listener] = [each for each in service if isinstance(each, ListeningService)]
        stopped = []
        listener.port.stopListening = lambda: stopped.append(True)
        service.stopService()
        self.assertIsNone(listener.port)
        self.assertEqual(stopped, [True])

    def test_cannotListenLater(self):
        """
        An endpoint whose listening fails after startup is logged, not lost.
        """
        listening = Deferred()

        class LateEndpoint:
            def listen(self, factory):
                return listening

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        listener = ListeningService(LateEndpoint(), "tcp:1", GreetFactory(None))
        listener.privilegedStartService()
        listening.errback(CannotListenError("", 1, OSError(98, "Address already in use")))
        [event] = [e for e in events if e.get("log_level") == LogLevel.critical]
        self.assertEqual(formatEvent(event), "cannot listen on tcp:1: Address already in use")
        self.assertIsNone(listener.port)


class LimitOptionsTests(SynchronousTestCase):
    """
    The hardening options: their defaults, their checks, and the limits
    and gate the factory gets from them.
    """

    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)

    assertUsageError = OptionsTests.assertUsageError
    start = MakeServiceTests.start

    def test_defaults(self):
        self.start("--mode", "relay")
        factory = self.reactor.tcpServers[0][1]
        limits = factory.limits
        self.assertEqual(
            (limits.idleTimeout, limits.maxConnections, limits.maxPerIP, limits.maxBuffer),
            (300, 10000, 0, 1 << 20),
        )
        self.assertIs(limits.clock, self.reactor)
        self.assertIsNone(factory.gate)
        self.assertEqual(factory.maxLine, 65536)

    def test_given(self):
        directory = tempfile.mkdtemp(prefix="sockservice-token-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "token")
        with open(path, "w") as f:
            f.write("tok\n")
        self.start(
            "--mode", "relay", "--idle-timeout", "0", "--max-connections", "3",
            "--max-per-ip", "2", "--max-buffer", "4096", "--token-file", path,
        )
        factory = self.reactor.tcpServers[0][1]
        limits = factory.limits
        self.assertEqual(
            (limits.idleTimeout, limits.maxConnections, limits.maxPerIP, limits.maxBuffer),
            (0, 3, 2, 4096),
        )
        self.assertEqual(factory.gate.token, b"tok")

    def test_bad(self):
        for argv, message in [
            (["--idle-timeout", "-1"], "--idle-timeout must be a whole number of 0 or more, not '-1'"),
            (["--max-connections", "0"],
             "--max-connections must be a whole number of 1 or more, not '0'"),
            (["--max-per-ip", "x"], "--max-per-ip must be a whole number of 0 or more, not 'x'"),
            (["--mode", "relay", "--max-buffer", "0"],
             "--max-buffer must be a whole number of 1 or more, not '0'"),
            (["--max-buffer", "10"], "--max-buffer applies only to --mode relay"),
            (["--token-file", "t"], "--token-file applies only to --mode relay"),
            (["--mode", "relay", "--token-file", "/nonexistent/t"],
             "cannot read --token-file '/nonexistent/t': No such file or directory"),
        ]:
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertUsageError(argv, message)

    def test_openFileLimitTooLow(self):
        """
        When the open file limit cannot be raised far enough, startup says
        so rather than let connections fail without C{ERROR server full}.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        wanted = []
        self.start("--max-connections", "5000",
                   openFileLimit=lambda connections: wanted.append(connections) or 960)
        self.assertEqual(wanted, [5000])
        self.assertIn(
            "the open file limit lets only 960 connections in, not --max-connections 5000: "
            "raise it (ulimit -n, LimitNOFILE=)",
            [formatEvent(event) for event in events],
        )
