"""
Writing straight to the socket: real socket pairs under Twisted's own
transports on a memory reactor, so every send, queue and flush is visible;
and the real server over TLS and a UNIX socket, where the direct path must
step aside or fit in.
"""

import os
import select
import socket
import struct
import time

from twisted.internet import main, reactor, ssl, tcp, unix
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import (
    SSL4ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sockservice.fastpath.directwrite import noDelay, writeNow
from sockservice.fastpath.eageraccept import NoDelayServer
from tests.realserver import Peer, startTwistd
from tests.support import makeCertificate

BIG = bytes(range(256)) * 16384


def tcpPair(testCase):
    """
    A connected loopback TCP pair: (server side, its peer's address, client).
    """
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, address = listener.accept()
    testCase.addCleanup(client.close)
    testCase.addCleanup(server.close)
    client.setblocking(False)
    return server, address, client


def serve(testCase, transportClass=tcp.Server, pair=tcpPair):
    """
    Put a Twisted server transport on the server side of a socket pair.

    @return: the transport, its memory reactor and the client socket.
    """
    server, address, client = pair(testCase)
    reactor = MemoryReactor()
    protocol = Protocol()
    transport = transportClass(server, protocol, address, None, 1, reactor)
    protocol.makeConnection(transport)
    return transport, reactor, client


def readAvailable(client):
    """
    Everything the non-blocking C{client} socket can read now.
    """
    data = b""
    for _ in range(len(BIG)):
        try:
            chunk = client.recv(1 << 20)
        except BlockingIOError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"still reading after {len(data)} bytes")


def drain(transport, client, size, seconds=10):
    """
    Let the transport flush its queue (as the reactor would) while the
    client reads, until C{size} bytes arrived; return them. Fail if they do
    not arrive within C{seconds}.
    """
    data = b""
    deadline = time.monotonic() + seconds
    while len(data) < size:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(data)} of {size} bytes arrived in {seconds}s")
        if transport.dataBuffer or transport._tempDataBuffer:
            transport.doWrite()
        select.select([client], [], [], 0.1)
        data += readAvailable(client)
    return data


def fillSendBuffer(transport):
    """
    Send on the raw socket until the kernel takes no more; return what it
    took.
    """
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = b""
    for _ in range(1000):
        try:
            sent += BIG[: transport.socket.send(BIG)]
        except BlockingIOError:
            return sent
    raise AssertionError(f"the socket took {len(sent)} bytes and wants more")


class DirectWriterTests(SynchronousTestCase):
    def test_sendsAtOnce(self):
        """
        With nothing queued, the bytes are on the wire when the call returns
        and the reactor is never asked to watch for writability.
        """
        transport, reactor, client = serve(self)
        writeNow(transport, b"hello\n")
        self.assertEqual(readAvailable(client), b"hello\n")
        self.assertNotIn(transport, reactor.getWriters())

    def test_noDelay(self):
        transport, reactor, client = serve(self)
        self.assertFalse(transport.getTcpNoDelay())
        noDelay(transport)
        self.assertTrue(transport.getTcpNoDelay())

    def test_noDelayInherited(self):
        """
        A connection an eager-accepting port built has C{TCP_NODELAY} from
        its listening socket: no system call sets it again.
        """
        transport, reactor, client = serve(self)
        transport.__class__ = NoDelayServer
        calls = []
        self.patch(transport, "setTcpNoDelay", calls.append)
        noDelay(transport)
        self.assertEqual(calls, [])

    def test_queuedDataGoesFirst(self):
        """
        Bytes queued by C{transport.write} leave before later ones.
        """
        transport, reactor, client = serve(self)
        transport.write(b"one\n")
        writeNow(transport, b"two\n")
        self.assertEqual(readAvailable(client), b"")
        self.assertIn(transport, reactor.getWriters())
        self.assertEqual(drain(transport, client, 8), b"one\ntwo\n")
        self.assertNotIn(transport, reactor.getWriters())

    def test_partialSendQueuesTheRest(self):
        """
        What the socket does not take is queued, and later writes queue
        behind it, so the peer gets every byte in order.
        """
        transport, reactor, client = serve(self)
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        writeNow(transport, BIG)
        queued = len(transport.dataBuffer) + transport._tempDataLen
        self.assertTrue(0 < queued < len(BIG), queued)
        self.assertIn(transport, reactor.getWriters())
        writeNow(transport, b"after\n")
        self.assertEqual(transport._tempDataLen, queued + 6)
        self.assertEqual(drain(transport, client, len(BIG) + 6), BIG + b"after\n")

    def test_fullSocketQueues(self):
        """
        When the socket takes nothing (C{EAGAIN}), everything is queued.
        """
        transport, reactor, client = serve(self)
        filled = fillSendBuffer(transport)
        writeNow(transport, b"after\n")
        self.assertEqual(transport._tempDataBuffer, [b"after\n"])
        self.assertIn(transport, reactor.getWriters())
        self.assertEqual(drain(transport, client, len(filled) + 6), filled + b"after\n")

    def test_afterLoseConnection(self):
        """
        Once closing, writes queue like C{transport.write}'s, ahead of the
        close.
        """
        transport, reactor, client = serve(self)
        transport.loseConnection()
        writeNow(transport, b"last\n")
        self.assertEqual(transport._tempDataBuffer, [b"last\n"])
        self.assertIs(transport.doWrite(), main.CONNECTION_DONE)
        self.assertEqual(readAvailable(client), b"last\n")

    def test_afterConnectionLost(self):
        """
        Writes to a closed connection are dropped, as C{transport.write}
        drops them.
        """
        transport, reactor, client = serve(self)
        transport.connectionLost(Failure(ConnectionDone()))
        writeNow(transport, b"gone\n")
        self.assertEqual(transport._tempDataBuffer, [])
        self.assertEqual(readAvailable(client), b"")

    def test_resetConnection(self):
        """
        A send to a connection the peer reset does not raise: the bytes are
        queued and the reactor's write finds the connection lost.
        """
        transport, reactor, client = serve(self)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        writeNow(transport, b"late\n")
        self.assertEqual(transport._tempDataBuffer, [b"late\n"])
        self.assertIsInstance(transport.doWrite(), ConnectionLost)

    def test_unixSocket(self):
        """
        A UNIX socket connection is written straight to its socket too.
        """

        def unixPair(testCase):
            server, client = socket.socketpair()
            testCase.addCleanup(client.close)
            testCase.addCleanup(server.close)
            client.setblocking(False)
            return server, b"", client

        transport, reactor, client = serve(self, unix.Server, unixPair)
        writeNow(transport, b"hello\n")
        self.assertEqual(readAvailable(client), b"hello\n")
        self.assertNotIn(transport, reactor.getWriters())

    def test_otherTransports(self):
        """
        A transport that is no socket connection is written through its own
        C{write}.
        """
        transport = StringTransport()
        noDelay(transport)
        writeNow(transport, b"hello\n")
        self.assertEqual(transport.value(), b"hello\n")


def serverContext(testCase):
    key, certificate = makeCertificate(testCase.mktemp())
    return ssl.DefaultOpenSSLContextFactory(key, certificate)


class TLSTests(SynchronousTestCase):
    """
    TLS transports encrypt in their own C{write}: nothing may bypass it.
    """

    def test_tls(self):
        transport, reactor, client = serve(self)
        transport.startTLS(serverContext(self))
        writeNow(transport, b"secret\n")
        self.assertNotIn(b"secret", readAvailable(client))


class ServerTransportTests(TestCase):
    """
    The real greet server over TLS and over a UNIX socket.
    """

    timeout = 30

    @inlineCallbacks
    def exchange(self, server, endpoint):
        yield server.listening
        peer = yield connectProtocol(endpoint, Peer())
        self.addCleanup(lambda: peer.closed.called or peer.transport.abortConnection())
        self.assertEqual((yield peer.receive(8)), b"connect\n")
        peer.send(b"one\ntwo\r\n")
        self.assertEqual(
            (yield peer.receive(50)), b"connect\n" + b"Information Received\n" * 2
        )

    @inlineCallbacks
    def test_tls(self):
        key, certificate = makeCertificate(os.path.abspath(self.mktemp()))
        server = startTwistd(
            self, "--listen", f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={certificate}"
        )
        port = yield server.listening
        yield self.exchange(
            server, SSL4ClientEndpoint(reactor, "127.0.0.1", port, ssl.CertificateOptions())
        )

    @inlineCallbacks
    def test_unixSocket(self):
        """
        Listening on TCP after the UNIX socket tells when that is ready:
        the TCP port is logged only once both listen.
        """
        path = os.path.abspath(self.mktemp())
        server = startTwistd(
            self, "--listen", f"unix:{path}", "--listen", "tcp:0:interface=127.0.0.1"
        )
        yield self.exchange(server, UNIXClientEndpoint(reactor, path))
