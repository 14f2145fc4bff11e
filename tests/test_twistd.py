"""
The real C{twistd -n sockservice} process, talked to over loopback.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.realserver import connectPeer, startTwistd, twistdCommand
from tests.support import clientTLSOptions, makeCertificate

ACK = b"Information Received\n"
LOCAL = ("--interface", "127.0.0.1", "--port", "0")


class GreetProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_seedExchangeAndPipelining(self):
        server = startTwistd(self, *LOCAL)
        port = yield server.listening
        peer = yield connectPeer(self, port)
        self.assertEqual((yield peer.receive(8)), b"connect\n")
        peer.send(b"SOME DATA\n")
        self.assertEqual((yield peer.receive(8 + len(ACK))), b"connect\n" + ACK)
        peer.send(b"a\r\nb\nc")
        peer.send(b"\n")
        self.assertEqual((yield peer.receive(8 + 4 * len(ACK))), b"connect\n" + ACK * 4)
        peer.transport.loseConnection()
        yield peer.closed
        self.assertEqual((yield server.stop()), -signal.SIGTERM)
        self.assertIn(b"Buffer: SOME DATA (from 127.0.0.1:", server.output)
        self.assertIn(b"connection opened: 127.0.0.1:", server.output)
        self.assertIn(b"connection closed: 127.0.0.1:", server.output)

    @inlineCallbacks
    def test_greetingAckAndMaxLine(self):
        server = startTwistd(
            self, *LOCAL, "--greeting", "你好", "--ack", "好的", "--max-line", "4"
        )
        port = yield server.listening
        peer = yield connectPeer(self, port)
        peer.send(b"1234\r\n12345\n")
        self.assertEqual(
            (yield peer.closed), "你好\n好的\n".encode() + b"ERROR line too long\n"
        )


class CollectProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_countThenExit(self):
        """
        After --count connections the port is closed, and once they are
        done the process exits 0 by itself.
        """
        server = startTwistd(self, *LOCAL, "--mode", "collect", "--count", "2")
        port = yield server.listening
        greeting = "测试成功！\n".encode()
        first = yield connectPeer(self, port)
        second = yield connectPeer(self, port)
        yield first.receive(len(greeting))
        yield second.receive(len(greeting))
        yield self.assertFailure(connectPeer(self, port), ConnectionRefusedError)
        first.send(b"hello \r\n")
        second.send("你好".encode())
        second.transport.loseConnection()
        self.assertEqual((yield first.closed), greeting)
        self.assertEqual((yield second.closed), greeting)
        self.assertEqual((yield server.ended), 0)
        self.assertIn("收到的信息:hello  (from 127.0.0.1:".encode(), server.output)
        self.assertIn("收到的信息:你好 (from 127.0.0.1:".encode(), server.output)


class RelayProcessTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_relayBetweenClients(self):
        server = startTwistd(self, *LOCAL, "--mode", "relay", "--greeting", "hi")
        port = yield server.listening
        a = yield connectPeer(self, port)
        b = yield connectPeer(self, port)
        c = yield connectPeer(self, port)
        for peer in (a, b, c):
            yield peer.receive(3)
        payload = "你好".encode("gbk") + b"\r\n" + bytes(range(256)).replace(b"\n", b"") + b"\n"
        a.send(payload)
        self.assertEqual((yield b.receive(3 + len(payload))), b"hi\n" + payload)
        self.assertEqual((yield c.receive(3 + len(payload))), b"hi\n" + payload)
        b.send(b"from b\n")
        self.assertEqual((yield a.receive(10)), b"hi\nfrom b\n")
        c.transport.abortConnection()
        yield c.closed
        a.send(b"after reset\nbye")
        a.transport.loseConnection()
        expected = b"hi\n" + payload + b"after reset\nbye\n"
        self.assertEqual((yield b.receive(len(expected))), expected)
        self.assertEqual((yield a.closed), b"hi\nfrom b\n")
        self.assertEqual((yield server.stop()), -signal.SIGTERM)


class StartupFailureTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def test_portInUse(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = startTwistd(self, "--interface", "127.0.0.1", "--port", str(port))
        self.assertEqual((yield server.ended), 1)
        self.assertEqual(
            server.errors.decode(),
            f"sockservice: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "Address already in use\n",
        )
        self.assertNotIn(b"Traceback", server.output)

    @inlineCallbacks
    def test_badOption(self):
        server = startTwistd(self, "--mode", "chat")
        self.assertEqual((yield server.ended), 2)
        self.assertEqual(
            server.errors.decode(),
            "twistd sockservice: unknown --mode 'chat': choose greet, collect or relay"
            " (see twistd sockservice --help)\n",
        )
        self.assertEqual(server.output, b"")


class DaemonStartupFailureTests(SynchronousTestCase):
    def test_portInUseWithoutNodaemon(self):
        """
        Without -n a port in use ends the command at once with the same one
        line, status 1, no pid file and no process left behind.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        directory = tempfile.mkdtemp(prefix="sockservice-daemon-")
        self.addCleanup(shutil.rmtree, directory)
        pidfile = os.path.join(directory, "twistd.pid")
        began = time.monotonic()
        done = subprocess.run(
            [twistdCommand(), "--pidfile", pidfile, "--logfile", os.path.join(directory, "log"),
             "sockservice", "--interface", "127.0.0.1", "--port", str(port)],
            capture_output=True, text=True, timeout=20, cwd=directory,
        )
        self.assertLess(time.monotonic() - began, 5)
        self.assertEqual(
            (done.returncode, done.stdout, done.stderr),
            (1, "", f"sockservice: cannot listen on tcp:{port}:interface=127.0.0.1: "
                    "Address already in use\n"),
        )
        self.assertFalse(os.path.exists(pidfile))
        left = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if pidfile.encode() in f.read():
                        left.append(pid)
            except OSError:
                pass
        self.assertEqual(left, [])


class ReloadProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_sighupReloadsWithClientConnected(self):
        """
        SIGHUP under -n re-reads the config file: the new greeting and ack
        apply, a client connected across it stays, a bad file changes
        nothing, and the server goes on running.
        """
        directory = tempfile.mkdtemp(prefix="sockservice-reload-")
        self.addCleanup(shutil.rmtree, directory)
        config = os.path.join(directory, "sockservice.toml")
        with open(config, "w") as f:
            f.write('listen = ["tcp:0:interface=127.0.0.1"]\ngreeting = "one"\n')
        server = startTwistd(self, "--config", config)
        port = yield server.listening
        before = yield connectPeer(self, port)
        self.assertEqual((yield before.receive(4)), b"one\n")
        with open(config, "w") as f:
            f.write('listen = ["tcp:0:interface=127.0.0.1"]\ngreeting = "two"\nack = "ok"\n')
        server.transport.signalProcess("HUP")
        yield server.logged(f"reloaded {config}: greeting, ack changed".encode())
        before.send(b"still here\n")
        self.assertEqual((yield before.receive(7)), b"one\nok\n")
        after = yield connectPeer(self, port)
        self.assertEqual((yield after.receive(4)), b"two\n")
        with open(config, "w") as f:
            f.write("max-line = 0\n")
        server.transport.signalProcess("HUP")
        yield server.logged(
            f"reload failed, nothing changed: {config}: max-line: must be a whole number "
            "of 1 or more, not '0'".encode()
        )
        self.assertFalse(server.ended.called)
        self.assertEqual((yield server.stop()), -signal.SIGTERM)
        self.assertNotIn(b"Traceback", server.output)

    @inlineCallbacks
    def test_tlsCertificateReloaded(self):
        """
        After a reload new TLS handshakes present the new certificate; a
        client connected before keeps its connection.
        """
        directory = tempfile.mkdtemp(prefix="sockservice-tls-")
        self.addCleanup(shutil.rmtree, directory)
        key, cert = makeCertificate(directory)
        server = startTwistd(
            self, "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"
        )
        port = yield server.listening
        before = yield connectPeer(self, port, tls=clientTLSOptions(cert))
        self.assertEqual((yield before.receive(8)), b"connect\n")
        shutil.copy(cert, os.path.join(directory, "old.pem"))
        makeCertificate(directory)
        server.transport.signalProcess("HUP")
        yield server.logged(b"reloaded the command line: certificate of ssl:")
        after = yield connectPeer(self, port, tls=clientTLSOptions(cert))
        self.assertEqual((yield after.receive(8)), b"connect\n")
        before.send(b"x\n")
        self.assertEqual((yield before.receive(8 + len(ACK))), b"connect\n" + ACK)
        oldOnly = clientTLSOptions(os.path.join(directory, "old.pem"))
        refused = yield connectPeer(self, port, tls=oldOnly)
        yield refused.closed
        self.assertEqual(refused.data, b"")


class SecondSignalProcessTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_secondSigintAbortsTheDrain(self):
        """
        A client that does not read its acks holds the drain; a second
        SIGINT aborts it and the process ends at once, one line, no
        traceback.
        """
        server = startTwistd(self, *LOCAL, "--drain-timeout", "120")
        port = yield server.listening
        stuck = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.addCleanup(stuck.close)
        # The greeting says the reactor runs, with its signal handlers: it
        # listens before that.
        self.assertEqual(stuck.recv(8), b"connect\n")
        stuck.setblocking(False)
        sent = 0
        for _ in range(2000):
            try:
                sent += stuck.send(b"x\n" * 8192)
            except BlockingIOError:
                break
        self.assertGreater(sent, 0)
        server.transport.signalProcess("INT")
        yield server.logged(b"Received SIGINT, shutting down.")
        began = time.monotonic()
        server.transport.signalProcess("INT")
        status = yield server.ended
        self.assertLess(time.monotonic() - began, 5)
        self.assertEqual(status, -signal.SIGINT)
        self.assertIn(b"SIGINT again while stopping: aborting 1 connection(s)", server.output)
        self.assertNotIn(b"Traceback", server.output)
        self.assertNotIn(b"ReactorNotRunning", server.output)
