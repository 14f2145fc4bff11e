"""
bench/cbroker.c, the benchmark's own C reference server, built with gcc and
checked byte for byte on loopback in both of its modes.
"""

import os
import shutil
import socket
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from tests.realserver import freePort

SOURCE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "cbroker.c")
ACK = b"Information Received\n"


class CbrokerTests(SynchronousTestCase):
    if shutil.which("gcc") is None:
        skip = "gcc is missing"

    def setUp(self):
        self.cbroker = os.path.abspath(self.mktemp())
        subprocess.run(["gcc", "-O2", "-o", self.cbroker, SOURCE], check=True, timeout=60)

    def start(self, mode):
        """
        Start cbroker in C{mode} on a free port; return the port once it
        accepts.
        """
        port = freePort()
        process = subprocess.Popen([self.cbroker, mode, str(port)])
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.kill)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                return port
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.02)

    def connect(self, port):
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(client.close)
        return client

    def receive(self, client, count):
        """
        Exactly C{count} bytes from C{client}, then nothing more for a moment.
        """
        data = b""
        while len(data) < count:
            chunk = client.recv(count - len(data))
            self.assertNotEqual(chunk, b"", f"closed after {data!r}")
            data += chunk
        self.assertNothing(client)
        return data

    def assertNothing(self, client):
        client.settimeout(0.1)
        try:
            self.assertRaises(socket.timeout, client.recv, 100)
        finally:
            client.settimeout(5)

    def test_ack(self):
        """
        Each connection is greeted, and every complete line, pipelined or
        split across writes, gets one ack; a partial line gets none yet.
        """
        port = self.start("ack")
        client = self.connect(port)
        self.assertEqual(self.receive(client, 8), b"connect\n")
        client.sendall(b"one\ntwo\r\nthr")
        self.assertEqual(self.receive(client, 2 * len(ACK)), 2 * ACK)
        client.sendall(b"ee\n\n")
        self.assertEqual(self.receive(client, 2 * len(ACK)), 2 * ACK)
        other = self.connect(port)
        self.assertEqual(self.receive(other, 8), b"connect\n")
        self.assertNothing(client)

    def test_relay(self):
        """
        Complete lines go, with their own endings, to every other client and
        never back to the sender; nothing is sent on connect.
        """
        port = self.start("relay")
        a, b, c = (self.connect(port) for _ in range(3))
        time.sleep(0.1)
        self.assertNothing(a)
        a.sendall(b"x\r\ny")
        self.assertEqual((self.receive(b, 3), self.receive(c, 3)), (b"x\r\n", b"x\r\n"))
        a.sendall(b"z\n\xff\xfe\n")
        self.assertEqual((self.receive(b, 6), self.receive(c, 6)), (b"yz\n\xff\xfe\n",) * 2)
        b.sendall(b"q\n")
        self.assertEqual((self.receive(a, 2), self.receive(c, 2)), (b"q\n", b"q\n"))
        self.assertNothing(b)

    def test_lineTooLong(self):
        """
        A connection that fills its 64 KiB buffer without a line feed is
        closed; the others are served on.
        """
        port = self.start("ack")
        hostile, calm = self.connect(port), self.connect(port)
        self.receive(hostile, 8)
        self.receive(calm, 8)
        hostile.sendall(b"x" * 65536)
        self.assertEqual(hostile.recv(100), b"")
        calm.sendall(b"fine\n")
        self.assertEqual(self.receive(calm, len(ACK)), ACK)

    def test_usage(self):
        for argv in ([], ["echo", "1"], ["ack", "port"], ["relay", "0"], ["ack", "1", "2"]):
            result = subprocess.run([self.cbroker, *argv], capture_output=True, timeout=10)
            self.assertEqual(
                (result.returncode, result.stdout, result.stderr),
                (2, b"", b"usage: cbroker ack|relay PORT\n"),
                argv,
            )
