"""
The C{--config} TOML file: its keys are the long option names, the command
line wins over it, and a bad key or value is one line naming the file and
the key.
"""

import dataclasses
import io
import os
import re
import shutil
import sys
import tempfile

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from sockservice.config import RESOLVED, Config, fieldName, optionName
from sockservice.modes.greet import GreetFactory
from sockservice.tap import LIST_OPTIONS, Options, makeService
from sockservice.web.metrics import MetricsService, QuietSite


class ConfigFileTests(SynchronousTestCase):
    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        directory = tempfile.mkdtemp(prefix="sockservice-config-")
        self.addCleanup(shutil.rmtree, directory)
        self.path = os.path.join(directory, "sockservice.toml")

    def write(self, text):
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)

    def parse(self, *argv):
        options = Options()
        options.parseOptions(["--config", self.path, *argv])
        return options.config

    def assertFileError(self, text, message, *argv):
        """
        The file holding C{text} ends the command with status 2 and the one
        line C{message}.
        """
        self.stderr.truncate(0)
        self.stderr.seek(0)
        self.write(text)
        with self.assertRaises(SystemExit) as caught:
            self.parse(*argv)
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(
            self.stderr.getvalue(),
            f"twistd sockservice: {message} (see twistd sockservice --help)\n",
        )

    def test_everyKindOfValue(self):
        self.write(
            'mode = "relay"\n'
            'listen = ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\\\:\\\\:1"]\n'
            'greeting = "你好"\n'
            "idle-timeout = 60\n"
            "max-per-ip = 3\n"
            "log-messages = true\n"
        )
        self.assertEqual(
            self.parse(),
            Config(mode="relay", endpoints=("tcp:0:interface=127.0.0.1",
                                            "tcp6:0:interface=\\:\\:1"),
                   greeting="你好\n".encode(), idleTimeout=60, maxPerIP=3, logMessages=True,
                   configFile=self.path, argv=("--config", self.path)),
        )

    def test_websocket(self):
        """
        The WebSocket listeners and origins are lists in the file, as listen
        is; the command line's replace them.
        """
        self.write(
            'websocket = ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\\\:\\\\:1"]\n'
            'websocket-origin = ["HTTPS://Chat.Example.com"]\n'
        )
        config = self.parse()
        self.assertEqual(
            (config.websocket, config.websocketOrigin),
            (("tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1"),
             ("https://chat.example.com",)),
        )
        self.assertEqual(self.parse("--websocket", "tcp:1").websocket, ("tcp:1",))
        self.write('websocket = "tcp:0"\n')
        self.assertEqual(self.parse().websocket, ("tcp:0",))

    def test_metrics(self):
        """
        C{metrics} in the file serves /metrics and /healthz there, apart
        from the line protocol; a bad endpoint names the file and the key.
        """
        self.write('port = 0\nmetrics = "tcp:0:interface=127.0.0.1"\nlog-format = "json"\n')
        options = Options()
        options.parseOptions(["--config", self.path])
        self.assertEqual(
            (options.config.metrics, options.config.logFormat),
            ("tcp:0:interface=127.0.0.1", "json"),
        )
        reactor = MemoryReactorClock()
        top = makeService(options, reactor=reactor, environ={})
        self.addCleanup(top.stopService)
        [metrics] = [each for each in top if isinstance(each, MetricsService)]
        self.assertEqual(
            [(port, interface, type(factory)) for port, factory, _, interface
             in reactor.tcpServers],
            [(0, "0.0.0.0", GreetFactory), (0, "127.0.0.1", QuietSite)],
        )
        self.assertIsNotNone(metrics.port)
        self.assertFileError(
            'metrics = "9101x"\n',
            f"{self.path}: metrics: '9101x' is not a usable endpoint: "
            "Unknown endpoint type: '9101x'",
        )

    def test_commandLineWins(self):
        self.write('mode = "relay"\nlisten = ["tcp:1"]\nmax-line = 100\ngreeting = "file"\n')
        config = self.parse("--max-line", "7", "--listen", "tcp:2", "--greeting", "")
        self.assertEqual(
            (config.mode, config.endpoints, config.maxLine, config.greeting),
            ("relay", ("tcp:2",), 7, b""),
        )

    def test_listenerOnCommandLineReplacesTheFiles(self):
        """
        --listen on the command line replaces the file's port and interface
        (as the socket-activated unit does), --port the file's listen.
        """
        self.write('port = 5\ninterface = "127.0.0.1"\n')
        self.assertEqual(self.parse("--listen", "tcp:1").endpoints, ("tcp:1",))
        self.write('listen = ["tcp:1"]\n')
        self.assertEqual(self.parse("--port", "2").endpoints, ("tcp:2:interface=0.0.0.0",))

    def test_portAndListenInFile(self):
        self.assertFileError(
            'port = 5\nlisten = ["tcp:1"]\n',
            f"{self.path}: port: --listen replaces --port and --interface: "
            "give one or the other",
        )

    def test_unknownKey(self):
        self.assertFileError(
            "max-lines = 5\n",
            f"{self.path}: max-lines: unknown key",
        )
        self.assertFileError(
            'config = "other.toml"\n',
            f"{self.path}: config: unknown key",
        )

    def test_wrongType(self):
        self.assertFileError(
            'max-line = "10"\n', f"{self.path}: max-line: must be a whole number, not a string"
        )
        self.assertFileError("greeting = 5\n", f"{self.path}: greeting: must be a string, "
                                               "not a whole number")
        self.assertFileError(
            'log-messages = "yes"\n', f"{self.path}: log-messages: must be true or false, "
                                      "not a string"
        )
        self.assertFileError(
            "listen = [1]\n", f"{self.path}: listen: must be a list of strings, not [1]"
        )
        self.assertFileError(
            "websocket = 8080\n", f"{self.path}: websocket: must be a list of strings, not 8080"
        )

    def test_badValue(self):
        self.assertFileError(
            "max-line = 0\n",
            f"{self.path}: max-line: must be a whole number of 1 or more, not '0'",
        )
        self.assertFileError(
            'mode = "chat"\n',
            f"{self.path}: mode: unknown --mode 'chat': choose greet, collect or relay",
        )
        self.assertFileError(
            'listen = ["nope:1"]\n',
            f"{self.path}: listen: 'nope:1' is not a usable endpoint: "
            "Unknown endpoint type: 'nope'",
        )
        self.assertFileError(
            'websocket = ["tcp:1"]\nwebsocket-origin = ["chat.example.com"]\n',
            f"{self.path}: websocket-origin: 'chat.example.com' is not an origin "
            "like https://chat.example.com",
        )
        self.assertFileError(
            'websocket-origin = ["https://chat.example.com"]\n',
            f"{self.path}: websocket-origin: applies only with --websocket",
        )
        self.assertFileError(
            'ack = "ok"\n', f"{self.path}: ack: applies only to --mode greet", "--mode", "relay"
        )

    def test_notTOML(self):
        self.assertFileError(
            "mode = relay\n",
            f"{self.path}: not valid TOML: Invalid value (at line 1, column 8)",
        )

    def test_unreadable(self):
        with self.assertRaises(SystemExit):
            self.parse()
        self.assertEqual(
            self.stderr.getvalue(),
            f"twistd sockservice: cannot read --config {self.path!r}: No such file or directory"
            " (see twistd sockservice --help)\n",
        )

    def test_configFromRaises(self):
        """
        What a reload uses: the same errors, raised, nothing written.
        """
        self.write("max-line = 0\n")
        with self.assertRaises(usage.UsageError) as caught:
            Options.configFrom(["--config", self.path])
        self.assertEqual(
            str(caught.exception),
            f"{self.path}: max-line: must be a whole number of 1 or more, not '0'",
        )
        with self.assertRaises(usage.UsageError) as caught:
            Options.configFrom(["--max-line", "x"])
        self.assertEqual(
            str(caught.exception), "--max-line must be a whole number of 1 or more, not 'x'"
        )
        self.assertEqual(self.stderr.getvalue(), "")


def optionFieldOf(option):
    """
    The field an option's value ends up in.
    """
    resolved = {name: field for field, name in RESOLVED.items()}
    return resolved.get(option, fieldName(option))


class DefaultConfigFileTests(SynchronousTestCase):
    def test_commentedDefaults(self):
        """
        The commented sockservice.toml that install.sh writes parses to the
        defaults, but for metrics on 127.0.0.1:9101, and every key it shows is
        an option.
        """
        path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "deploy",
                            "sockservice.toml")
        self.assertEqual(
            Options.configFrom(["--config", path]),
            Config(metrics="tcp:9101:interface=127.0.0.1", configFile=path,
                   argv=("--config", path)),
        )
        with open(path) as f:
            shown = re.findall(r"^# ([a-z-]+) = ", f.read(), re.M)
        options = Options()
        known = {p[0] for p in options.optParameters} | {f[0] for f in options.optFlags}
        self.assertEqual(sorted(set(shown) - known), sorted(LIST_OPTIONS))


class OptionNameTests(SynchronousTestCase):
    def test_everyOptionHasAField(self):
        """
        Every option lands in a L{Config} field of its name (or, for
        --port and --interface, in endpoints): an option added without its
        field fails here rather than be dropped.
        """
        options = Options()
        names = [p[0] for p in options.optParameters] + [f[0] for f in options.optFlags]
        fields = {f.name for f in dataclasses.fields(Config)}
        self.assertEqual(
            [name for name in names + list(LIST_OPTIONS) if optionFieldOf(name) not in fields],
            ["port", "interface"],
        )

    def test_names(self):
        self.assertEqual(
            [optionName(f) for f in ("maxLine", "maxPerIP", "endpoints", "token", "configFile")],
            ["max-line", "max-per-ip", "listen", "token-file", "config"],
        )
