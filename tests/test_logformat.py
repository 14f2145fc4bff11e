"""
Log lines for machines: JSON lines and journal priority prefixes, the way
twistd is told to use them, and both read back from the real twistd.
"""

import io
import json
import os
import shutil
import sys
import tempfile

from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger, globalLogPublisher
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from twisted.python.reflect import namedAny
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sockservice.logs import formats
from sockservice.logs.formats import eventAsJSON, onJournal, twistdLogger, withPriority
from tests.realserver import connectPeer, startTwistd
from tests.test_twistd import LOCAL

#: Runs the rest of its command line with JOURNAL_STREAM naming its own
#: standard output, as systemd does for a service whose output is the journal.
ON_JOURNAL = (
    sys.executable, "-c",
    "import os, sys; s = os.fstat(1); "
    "os.environ['JOURNAL_STREAM'] = f'{s.st_dev}:{s.st_ino}'; "
    "os.execv(sys.argv[1], sys.argv[1:])",
)
FOREGROUND = {"nodaemon": True, "logfile": None, "syslog": False, "logger": None}


def captured(emit):
    """
    The events that C{emit(logger)} logs.
    """
    events = []
    emit(Logger(namespace="test.space", observer=events.append))
    return events


class JSONTests(SynchronousTestCase):
    def test_event(self):
        [event] = captured(lambda log: log.warn(
            "refused {peer} after {count} lines", peer="127.0.0.1:5000", count=3,
            data=b"\xe6\xb5\x8b\xff", folded={"received": 2},
        ))
        event["log_time"] = 1796205211.5
        line = eventAsJSON(event)
        self.assertTrue(line.endswith("}\n"))
        self.assertEqual(line.count("\n"), 1)
        self.assertEqual(json.loads(line), {
            "time": "2026-12-02T09:53:31.500000+00:00",
            "level": "warn",
            "namespace": "test.space",
            "message": "refused 127.0.0.1:5000 after 3 lines",
            "fields": {
                "peer": "127.0.0.1:5000", "count": 3, "data": "测\ufffd",
                "folded": {"received": 2},
            },
        })

    def test_fieldsKeepTheirNames(self):
        """
        A field named like one of the record's keys (collect's C{message})
        stays in C{fields}, beside the formatted message.
        """
        [event] = captured(lambda log: log.info("got {message}", message="hi", time=1))
        record = json.loads(eventAsJSON(event))
        self.assertEqual(
            (record["message"], record["time"][:2], record["fields"]),
            ("got hi", "20", {"message": "hi", "time": 1}),
        )

    def test_failure(self):
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        [event] = captured(lambda log: log.failure("it broke", failure))
        record = json.loads(eventAsJSON(event))
        self.assertEqual((record["level"], record["message"]), ("critical", "it broke"))
        self.assertIn("ZeroDivisionError", record["traceback"])

    def test_unserializable(self):
        [event] = captured(lambda log: log.info("x", thing=object))
        self.assertEqual(json.loads(eventAsJSON(event))["fields"], {"thing": repr(object)})

    def test_legacyEvent(self):
        """
        twisted.python.log events keep their own fields, not the legacy
        keys the bridge adds.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        legacyLog.msg("old style", extra=5)
        [event] = [e for e in events if e.get("extra") == 5]
        record = json.loads(eventAsJSON(event))
        self.assertEqual(
            (record["level"], record["message"], record["fields"]),
            ("info", "old style", {"extra": 5}),
        )


class PriorityTests(SynchronousTestCase):
    def test_levels(self):
        events = captured(lambda log: [
            log.debug("d"), log.info("i"), log.warn("w"), log.error("e"), log.critical("c"),
        ])
        format = withPriority(lambda event: event["log_format"] + "\n")
        self.assertEqual(
            [format(event) for event in events], ["<7>d\n", "<6>i\n", "<4>w\n", "<3>e\n", "<2>c\n"]
        )

    def test_everyLine(self):
        """
        journald reads a priority per line: a traceback's lines carry the
        error's.
        """
        [event] = captured(lambda log: log.error("x"))
        format = withPriority(lambda event: "first\n\tsecond\n")
        self.assertEqual(format(event), "<3>first\n<3>\tsecond\n")

    def test_nothing(self):
        [event] = captured(lambda log: log.error("x"))
        self.assertIsNone(withPriority(lambda event: None)(event))


class JournalTests(SynchronousTestCase):
    def setUp(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        self.stream = open(os.path.join(directory, "out"), "w")
        self.addCleanup(self.stream.close)
        status = os.fstat(self.stream.fileno())
        self.journal = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}

    def test_onJournal(self):
        self.assertTrue(onJournal(self.journal, self.stream))

    def test_elsewhere(self):
        """
        An inherited JOURNAL_STREAM naming another file, none, or garbage.
        """
        device, inode = self.journal["JOURNAL_STREAM"].split(":")
        for environ in [{"JOURNAL_STREAM": f"{device}:{int(inode) + 1}"}, {},
                        {"JOURNAL_STREAM": "x"}, {"JOURNAL_STREAM": "1:2:3"}]:
            self.assertFalse(onJournal(environ, self.stream), environ)

    def test_closed(self):
        self.stream.close()
        self.assertFalse(onJournal(self.journal, self.stream))

    def test_twistdLogger(self):
        for logFormat, environ, twistd, name in [
            ("text", {}, FOREGROUND, None),
            ("json", {}, FOREGROUND, "jsonObserver"),
            ("text", self.journal, FOREGROUND, "journalTextObserver"),
            ("json", self.journal, FOREGROUND, "journalJSONObserver"),
            ("text", self.journal, dict(FOREGROUND, logfile="twistd.log"), None),
            ("text", self.journal, dict(FOREGROUND, nodaemon=False), None),
            ("text", self.journal, dict(FOREGROUND, logger="my.observer"), None),
            ("json", {}, dict(FOREGROUND, logfile="-"), "jsonObserver"),
        ]:
            self.assertEqual(
                twistdLogger(logFormat, twistd, environ, self.stream),
                name and f"sockservice.logs.formats.{name}",
                (logFormat, environ, twistd),
            )

    def test_jsonElsewhere(self):
        for twistd in [dict(FOREGROUND, logfile="twistd.log"), dict(FOREGROUND, syslog=True),
                       dict(FOREGROUND, nodaemon=False), dict(FOREGROUND, logger="my.observer")]:
            with self.assertRaises(ValueError) as caught:
                twistdLogger("json", twistd, {}, self.stream)
            self.assertEqual(
                str(caught.exception),
                "--log-format json writes to standard output: run twistd -n "
                "without --logfile, --syslog or --logger",
            )

    def test_observerFactories(self):
        """
        Each factory twistd may be given makes an observer writing to
        standard output.
        """
        output = io.StringIO()
        self.patch(sys, "stdout", output)
        [event] = captured(lambda log: log.warn("hello {who}", who="you"))
        for name in ("jsonObserver", "journalTextObserver", "journalJSONObserver"):
            namedAny(f"sockservice.logs.formats.{name}")()(event)
        json, text, journalJSON = output.getvalue().splitlines()
        self.assertTrue(json.startswith('{"time": '))
        self.assertTrue(text.startswith("<4>") and text.endswith(" [test.space#warn] hello you"))
        self.assertEqual(journalJSON, "<4>" + json)


class TwistdOptionsTests(SynchronousTestCase):
    """
    C{--log-format} as twistd parses it: it points twistd's C{--logger} at
    the factory, since twistd sets up logging before makeService.
    """

    def test_json(self):
        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "sockservice", "--log-format", "json"])
        self.assertIs(config["logger"], formats.jsonObserver)

    def test_text(self):
        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "sockservice"])
        self.assertIsNone(config["logger"])

    def test_jsonFromTheConfigFile(self):
        """
        C{log-format} in the C{--config} file takes effect as on the
        command line (the file is read before twistd's C{--logger} is set).
        """
        directory = tempfile.mkdtemp(prefix="sockservice-logformat-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "sockservice.toml")
        with open(path, "w") as f:
            f.write('log-format = "json"\n')
        config = ServerOptions()
        config.parseOptions(["-n", "--pidfile=", "sockservice", "--config", path])
        self.assertIs(config["logger"], formats.jsonObserver)
        self.assertEqual(config.subOptions.config.logFormat, "json")

    def test_jsonToALogFile(self):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        config = ServerOptions()
        with self.assertRaises(SystemExit) as caught:
            config.parseOptions(
                ["--logfile", "x.log", "sockservice", "--log-format", "json"]
            )
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(
            stderr.getvalue(),
            "twistd sockservice: --log-format json writes to standard output: run "
            "twistd -n without --logfile, --syslog or --logger (see twistd sockservice --help)\n",
        )


class ProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_json(self):
        """
        Every line is one JSON object; the listening and connection events
        carry their fields.
        """
        server = startTwistd(self, *LOCAL, "--log-format", "json")
        port = yield server.listening
        peer = yield connectPeer(self, port)
        yield peer.receive(8)
        peerAddress = f"127.0.0.1:{peer.transport.getHost().port}"
        yield server.logged(b"connection opened")
        yield server.stop()
        records = [json.loads(line) for line in server.output.decode().splitlines()]
        self.assertEqual(server.errors, b"")
        [listening] = [r for r in records if "listening" in r["message"]]
        self.assertEqual(
            (listening["level"], listening["namespace"], listening["fields"]),
            ("info", "sockservice.service.listening.ListeningService",
             {"mode": "greet", "address": f"127.0.0.1:{port}"}),
        )
        [opened] = [r for r in records if r["message"].startswith("connection opened")]
        self.assertEqual(opened["namespace"], "sockservice.greet")
        self.assertEqual(opened["fields"]["peer"], peerAddress)
        self.assertEqual(records[-1]["message"], "Server Shut Down.")

    @inlineCallbacks
    def test_journal(self):
        """
        With standard output on the journal, every line carries its
        priority: the refusal is a warning, the rest info.
        """
        server = startTwistd(self, *LOCAL, "--max-connections", "1", launcher=ON_JOURNAL)
        port = yield server.listening
        first = yield connectPeer(self, port)
        yield first.receive(8)
        second = yield connectPeer(self, port)
        yield second.closed
        yield server.logged(b"server full")
        yield server.stop()
        lines = server.output.decode().splitlines()
        priorities = {line[:3] for line in lines}
        self.assertEqual(priorities, {"<6>", "<4>"})
        self.assertEqual(
            [line for line in lines if line.startswith("<4>")],
            [line for line in lines if "server full" in line],
        )
        self.assertEqual(len([line for line in lines if line.startswith("<4>")]), 1)

    @inlineCallbacks
    def test_inheritedJournalStream(self):
        """
        A JOURNAL_STREAM that does not name standard output changes nothing.
        """
        server = startTwistd(self, *LOCAL, env={"JOURNAL_STREAM": "1:1"})
        yield server.listening
        yield server.stop()
        self.assertFalse(any(line.startswith(b"<") for line in server.output.splitlines()))
        self.assertIn(b"[sockservice.service.listening.ListeningService#info] greet mode listening",
                      server.output)
