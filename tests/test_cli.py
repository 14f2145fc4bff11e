"""
The C{sockservice} command's options, and how it connects and reports, on a
memory reactor.
"""

import io
import sys

from twisted.internet.address import IPv4Address
from twisted.internet._resolver import HostResolution
from twisted.internet.error import (
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    TimeoutError,
)
from twisted.internet.interfaces import IHostnameResolver
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sockservice.client.cli import Options, run, serverName
from tests.support import makeCertificate


class OutputTestCase(SynchronousTestCase):
    def setUp(self):
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def parse(self, *argv):
        options = Options()
        options.parseOptions(list(argv))
        return options

    def assertUsageError(self, argv, line):
        with self.assertRaises(SystemExit) as raised:
            self.parse(*argv)
        self.assertEqual(raised.exception.code, 2)
        self.assertEqual(self.stderr.getvalue(), line + "\n")
        self.assertEqual(self.stdout.getvalue(), "")


class OptionsTests(OutputTestCase):
    def test_defaults(self):
        options = self.parse("greet")
        self.assertEqual(options.subCommand, "greet")
        command = options.subOptions
        self.assertEqual(
            (command["host"], command["port"], command["timeout"], command["messages"]),
            ("127.0.0.1", 12345, 10.0, [b"SOME DATA"]),
        )
        self.assertEqual(self.parse("collect").subOptions["message"], b"hello")

    def test_messagesAsGiven(self):
        """
        Messages are sent as the bytes they were given in, even ones that are
        not UTF-8 (Python hands those over as surrogate escapes).
        """
        options = self.parse("send", "--host", "::1", "-p", "80", "-t", "0.5", "你好", "\udcc4\udce3")
        command = options.subOptions
        self.assertEqual(command["messages"], ["你好".encode(), b"\xc4\xe3"])
        self.assertEqual((command["host"], command["port"], command["timeout"]), ("::1", 80, 0.5))
        self.assertEqual(serverName(command), "[::1]:80")
        self.assertEqual(self.parse("collect", "a b").subOptions["message"], b"a b")

    def test_noCommand(self):
        self.assertUsageError(
            [], "sockservice: choose a command: greet, send, collect, chat or status (see sockservice --help)"
        )

    def test_unknownCommand(self):
        self.assertUsageError(
            ["talk"], "sockservice: Unknown command: talk (see sockservice --help)"
        )

    def test_badPort(self):
        self.assertUsageError(
            ["greet", "--port", "0"],
            "sockservice greet: --port must be a whole number from 1 to 65535, not '0'"
            " (see sockservice greet --help)",
        )

    def test_badTimeout(self):
        self.assertUsageError(
            ["collect", "--timeout", "-1"],
            "sockservice collect: --timeout must be a number of seconds above 0, not '-1'"
            " (see sockservice collect --help)",
        )

    def test_unknownOption(self):
        self.assertUsageError(
            ["chat", "--bogus"],
            "sockservice chat: option --bogus not recognized (see sockservice chat --help)",
        )

    def test_sendNeedsAMessage(self):
        self.assertUsageError(
            ["send"],
            "sockservice send: give at least one MESSAGE to send (see sockservice send --help)",
        )

    def test_collectTakesOneMessage(self):
        self.assertUsageError(
            ["collect", "a", "b"],
            "sockservice collect: give one MESSAGE (quote it if it has spaces)"
            " (see sockservice collect --help)",
        )

    def test_multiLineMessage(self):
        self.assertUsageError(
            ["greet", "a\nb"],
            "sockservice greet: a MESSAGE must be one line, without CR or LF"
            " (see sockservice greet --help)",
        )

    def test_helpPerCommand(self):
        """
        C{-h} and C{--help} print each command's help and exit 0.
        """
        for command, synopsis in [
            ("greet", "[options] [HOST PORT] [MESSAGE ...]"),
            ("send", "[options] [HOST PORT] MESSAGE [MESSAGE ...]"),
            ("collect", "[options] [HOST PORT] [MESSAGE]"),
            ("chat", "[options] [HOST [PORT]]"),
        ]:
            for flag in ["-h", "--help"]:
                self.stdout.seek(0)
                self.stdout.truncate()
                with self.assertRaises(SystemExit) as raised:
                    self.parse(command, flag)
                self.assertEqual(raised.exception.code, 0)
                help = self.stdout.getvalue()
                self.assertTrue(help.startswith(f"Usage: sockservice {command} {synopsis}\n"), help)
                self.assertIn("  -h, --help ", help)
                self.assertIn("      --host=", help)
                self.assertIn("--timeout=", help)

    def test_statusHelpAndVersion(self):
        """
        C{status} takes C{-h} for help and prints sockservice's version, as
        the other commands do.
        """
        from sockservice import __version__

        for flag in ["-h", "--help"]:
            self.stdout.seek(0)
            self.stdout.truncate()
            with self.assertRaises(SystemExit) as raised:
                self.parse("status", flag)
            self.assertEqual(raised.exception.code, 0)
            self.assertTrue(self.stdout.getvalue().startswith(
                "Usage: sockservice status [--metrics-url URL] [--interval SECONDS]\n"
            ))
        self.stdout.seek(0)
        self.stdout.truncate()
        with self.assertRaises(SystemExit):
            self.parse("status", "--version")
        self.assertEqual(self.stdout.getvalue(), f"sockservice {__version__}\n")

    def test_helpCommands(self):
        with self.assertRaises(SystemExit) as raised:
            self.parse("-h")
        self.assertEqual(raised.exception.code, 0)
        self.assertTrue(self.stdout.getvalue().startswith("Usage: sockservice COMMAND [options]\n"))

    def test_version(self):
        from sockservice import __version__

        with self.assertRaises(SystemExit):
            self.parse("greet", "--version")
        self.assertEqual(self.stdout.getvalue(), f"sockservice {__version__}\n")


class ServerArgumentsTests(OutputTestCase):
    """
    HOST PORT as nc takes them, and the rule that keeps them apart from
    messages.
    """

    def server(self, *argv):
        command = self.parse(*argv).subOptions
        return command["host"], command["port"]

    def test_hostAndPort(self):
        """
        The first two arguments are HOST and PORT when the second is a
        number; the rest are messages.
        """
        options = self.parse("greet", "127.0.0.1", "12345").subOptions
        self.assertEqual(
            (options["host"], options["port"], options["messages"]), ("127.0.0.1", 12345, [b"SOME DATA"])
        )
        options = self.parse("send", "example.com", "80", "one", "2").subOptions
        self.assertEqual(
            (options["host"], options["port"], options["messages"]), ("example.com", 80, [b"one", b"2"])
        )
        options = self.parse("collect", "::1", "7", "hi").subOptions
        self.assertEqual((options["host"], options["port"], options["message"]), ("::1", 7, b"hi"))

    def test_messages(self):
        """
        Arguments whose second is not a number are all messages, as before.
        """
        options = self.parse("greet", "hello", "world").subOptions
        self.assertEqual(
            (options["host"], options["port"], options["messages"]),
            ("127.0.0.1", 12345, [b"hello", b"world"]),
        )

    def test_afterSeparator(self):
        """
        After C{--}, everything is a message, even what reads as HOST PORT.
        """
        options = self.parse("greet", "--port", "80", "--", "127.0.0.1", "12345").subOptions
        self.assertEqual(
            (options["host"], options["port"], options["messages"]),
            ("127.0.0.1", 80, [b"127.0.0.1", b"12345"]),
        )
        self.assertEqual(self.parse("send", "--", "--", "localhost").subOptions["messages"], [b"--", b"localhost"])

    def test_hostWithoutPort(self):
        """
        An IP address or localhost first, without a port after it, is
        neither sent as a message nor taken for the host.
        """
        for command, host in [("greet", "127.0.0.1"), ("send", "localhost"), ("collect", "::1")]:
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertUsageError(
                [command, host],
                f"sockservice {command}: {host!r} is a host: give HOST PORT to connect to it,"
                f" or put messages after -- (see sockservice {command} --help)",
            )

    def test_hostColonPort(self):
        """
        HOST:PORT in one argument is refused, not sent as a message.
        """
        for command, server in [
            ("greet", "127.0.0.1:12345"), ("send", "example.com:80"), ("collect", "[::1]:7"),
        ]:
            self.stderr.seek(0)
            self.stderr.truncate()
            self.assertUsageError(
                [command, server],
                f"sockservice {command}: {server!r} reads as HOST:PORT: give HOST PORT as two"
                f" arguments, or put messages after -- (see sockservice {command} --help)",
            )
        self.assertEqual(
            self.parse("send", "--", "example.com:80").subOptions["messages"], [b"example.com:80"]
        )
        self.assertEqual(
            self.parse("send", "at 10:30", "a:b:1").subOptions["messages"], [b"at 10:30", b"a:b:1"]
        )

    def test_bothForms(self):
        self.assertUsageError(
            ["greet", "--port", "1", "127.0.0.1", "2"],
            "sockservice greet: give the server as HOST PORT or with --host/--port, not both"
            " (put messages after --) (see sockservice greet --help)",
        )

    def test_badPort(self):
        self.assertUsageError(
            ["send", "127.0.0.1", "65536", "x"],
            "sockservice send: --port must be a whole number from 1 to 65535, not '65536'"
            " (see sockservice send --help)",
        )

    def test_sendNeedsAMessageAfterHostPort(self):
        self.assertUsageError(
            ["send", "127.0.0.1", "12345"],
            "sockservice send: give at least one MESSAGE to send (see sockservice send --help)",
        )

    def test_chat(self):
        """
        chat takes HOST, or HOST and PORT.
        """
        self.assertEqual(self.server("chat"), ("127.0.0.1", 12345))
        self.assertEqual(self.server("chat", "example.com"), ("example.com", 12345))
        self.assertEqual(self.server("chat", "::1", "80"), ("::1", 80))
        self.assertEqual(self.server("chat", "--port", "80", "--host", "::1"), ("::1", 80))

    def test_chatTooMany(self):
        self.assertUsageError(
            ["chat", "a", "1", "b"],
            "sockservice chat: give at most HOST and PORT: chat sends what you type"
            " (see sockservice chat --help)",
        )

    def test_chatBothForms(self):
        self.assertUsageError(
            ["chat", "--host", "a", "b"],
            "sockservice chat: give the server as HOST PORT or with --host/--port, not both"
            " (see sockservice chat --help)",
        )

    def test_chatBadPort(self):
        self.assertUsageError(
            ["chat", "a", "port"],
            "sockservice chat: --port must be a whole number from 1 to 65535, not 'port'"
            " (see sockservice chat --help)",
        )


class RunTests(OutputTestCase):
    """
    L{run} connects through a host name endpoint with the options' host,
    port and timeout, and turns a failure into one line naming the server.
    """

    def start(self, *argv):
        self.reactor = MemoryReactorClock()
        self.shown = []
        self.done = run(self.reactor, self.parse(*argv), self.shown.append)
        self.reactor.advance(0)
        [(host, port, self.factory, timeout, bind)] = self.reactor.tcpClients
        return host, port, timeout

    def failConnecting(self, exception):
        self.factory.clientConnectionFailed(self.reactor.connectors[0], Failure(exception))
        self.reactor.advance(1)
        self.assertEqual(self.failureResultOf(self.done, SystemExit).value.code, 1)
        return self.stderr.getvalue()

    def test_connectsAndRuns(self):
        self.assertEqual(self.start("greet", "-p", "4000", "-t", "3", "hi"), ("127.0.0.1", 4000, 3))
        client = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 4000))
        transport = StringTransport()
        client.makeConnection(transport)
        client.dataReceived(b"connect\n")
        self.assertEqual(transport.value(), b"hi\n")
        client.dataReceived(b"ok\n")
        self.assertTrue(transport.disconnecting)
        client.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.shown, [b"connect\n", b"ok\n"])
        self.assertEqual(self.failureResultOf(self.done, SystemExit).value.code, 1)
        self.assertEqual(
            self.stderr.getvalue(),
            "sockservice greet: 127.0.0.1:4000: connection lost"
            " (Connection to the other side was lost in a non-clean fashion.)\n",
        )

    def test_interruptedByShutdown(self):
        self.start("collect")
        client = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        client.makeConnection(StringTransport())
        for trigger, args, kwargs in self.reactor.triggers["before"]["shutdown"]:
            trigger(*args, **kwargs)
        client.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.failureResultOf(self.done, SystemExit).value.code, 1)
        self.assertEqual(self.stderr.getvalue(), "sockservice collect: 127.0.0.1:12345: interrupted\n")

    def test_interruptedWhileConnecting(self):
        self.start("greet")
        for trigger, args, kwargs in self.reactor.triggers["before"]["shutdown"]:
            trigger(*args, **kwargs)
        self.assertEqual(self.failureResultOf(self.done, SystemExit).value.code, 1)
        self.assertEqual(self.stderr.getvalue(), "sockservice greet: 127.0.0.1:12345: interrupted\n")

    def test_completedExchange(self):
        self.start("send", "x")
        client = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        client.makeConnection(StringTransport())
        client.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(self.done))
        self.assertEqual(self.shown, [b"CONNECTED\n"])
        self.assertEqual(self.stderr.getvalue(), "")

    def test_refused(self):
        self.start("greet")
        self.assertEqual(
            self.failConnecting(ConnectionRefusedError()),
            "sockservice greet: 127.0.0.1:12345: connection refused\n",
        )

    def test_connectTimeout(self):
        self.start("collect", "--timeout", "2.5")
        self.assertEqual(
            self.failConnecting(TimeoutError()),
            "sockservice collect: 127.0.0.1:12345: no connection within 2.5s\n",
        )

    def test_unresolvableHost(self):
        self.reactor = MemoryReactorClock()
        self.reactor.installNameResolver(NoAddresses())
        done = run(self.reactor, self.parse("chat", "nowhere.invalid"))
        self.assertEqual(self.failureResultOf(done, SystemExit).value.code, 1)
        self.assertEqual(
            self.stderr.getvalue(),
            "sockservice chat: nowhere.invalid:12345: cannot resolve nowhere.invalid\n",
        )

    def test_invalidHostName(self):
        done = run(MemoryReactorClock(), self.parse("greet", "--host", "a..b"))
        self.assertEqual(self.failureResultOf(done, SystemExit).value.code, 1)
        self.assertEqual(
            self.stderr.getvalue(),
            "sockservice greet: a..b:12345: cannot connect (invalid hostname: a..b)\n",
        )


@implementer(IHostnameResolver)
class NoAddresses:
    """
    A resolver that finds no address for any name.
    """

    def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None,
                        transportSemantics="TCP"):
        receiver.resolutionBegan(HostResolution(hostName))
        receiver.resolutionComplete()


class SecurityOptionsTests(OutputTestCase):
    """
    C{--tls}, C{--cafile} and C{--token-file}, on every command.
    """

    def setUp(self):
        OutputTestCase.setUp(self)
        self.key, self.cert = makeCertificate(self.mktemp())

    def test_plainByDefault(self):
        command = self.parse("greet").subOptions
        self.assertEqual((command["tls"], command["trustRoot"], command["token"]), (0, None, None))

    def test_cafileImpliesTLS(self):
        command = self.parse("chat", "--cafile", self.cert).subOptions
        self.assertTrue(command["tls"])
        with open(self.cert, "rb") as f:
            self.assertEqual(command["trustRoot"].dumpPEM(), f.read())

    def test_tokenFile(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"let me in\r\n")
        self.assertEqual(self.parse("send", "--token-file", path, "x").subOptions["token"],
                         b"let me in")

    def test_unreadableFiles(self):
        for argv, problem in [
            (["greet", "--cafile", "/nonexistent"],
             "cannot read --cafile '/nonexistent': No such file or directory"),
            (["greet", "--cafile", self.key],
             f"--cafile {self.key!r} holds no PEM certificate"),
            (["greet", "--token-file", "/nonexistent"],
             "cannot read --token-file '/nonexistent': No such file or directory"),
        ]:
            self.stderr.truncate(0)
            self.stderr.seek(0)
            self.assertUsageError(
                argv, f"sockservice greet: {problem} (see sockservice greet --help)"
            )


class SecureRunTests(OutputTestCase):
    """
    With C{--tls} the connection speaks TLS from its first byte, and the
    token goes first on it.
    """

    start = RunTests.start

    def test_tls(self):
        self.start("greet", "--tls")
        client = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        transport = StringTransport()
        client.makeConnection(transport)
        self.assertEqual(transport.value()[:2], b"\x16\x03")

    def test_tokenFirst(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"tok\n")
        self.start("send", "--token-file", path, "hello")
        client = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
        transport = StringTransport()
        client.makeConnection(transport)
        self.assertEqual(transport.value(), b"tok\nhello\n")
