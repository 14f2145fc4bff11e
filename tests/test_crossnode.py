"""
Relay across nodes: two real C{twistd -n sockservice --mode relay} processes
on one real C{redis-server}, clients on both, over loopback.
"""

import os

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.realserver import RedisServer, connectPeer, startRedis, startTwistd
from tests.support import makeCertificate

GREETING = b"hi\n"
LOCAL = ("--interface", "127.0.0.1", "--port", "0", "--mode", "relay", "--greeting", "hi")
CONNECTED = b"connected: publishing on sockservice:relay"
SUBSCRIBED = b": subscribed to sockservice:relay"


@inlineCallbacks
def startNode(testCase, redis, *args, env=None):
    """
    A relay node on C{redis}; fire with it and its port once listening.
    """
    node = startTwistd(testCase, *LOCAL, "--backplane", redis.url, *args, env=env)
    port = yield node.listening
    return node, port


@inlineCallbacks
def connectClient(testCase, port):
    """
    Connect a L{Peer} and wait for the node's greeting, so that the node
    counts it among its clients before anyone sends; then forget the
    greeting.
    """
    peer = yield connectPeer(testCase, port)
    yield peer.receive(len(GREETING))
    peer.data = peer.data[len(GREETING):]
    return peer


@inlineCallbacks
def backplaneUp(nodes, times=1):
    """
    Fire once every node has published and subscribed C{times} times.
    """
    for node in nodes:
        yield node.logged(CONNECTED, times)
        yield node.logged(SUBSCRIBED, times)


@inlineCallbacks
def receiveUntil(peer, ending):
    """
    Fire once what C{peer} received ends with C{ending}.
    """
    while not peer.data.endswith(ending):
        yield peer.receive(len(peer.data) + 1)


class CrossNodeTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_exactBytesAndOrderAcrossNodes(self):
        """
        Every line reaches the clients of both nodes byte for byte and in
        the order sent, never back to its sender.
        """
        redis = yield startRedis(self)
        one, onePort = yield startNode(self, redis)
        two, twoPort = yield startNode(self, redis)
        yield backplaneUp([one, two])
        a = yield connectClient(self, onePort)
        b = yield connectClient(self, onePort)
        c = yield connectClient(self, twoPort)
        payload = "你好".encode("gbk") + b"\r\n" + bytes(range(256)).replace(b"\n", b"") + b"\n"
        numbered = b"".join(b"%d\n" % n for n in range(1000))
        a.send(payload)
        for start in range(0, len(numbered), 777):
            a.send(numbered[start:start + 777])
        a.send(b"last without LF")
        a.transport.loseConnection()
        fromA = payload + numbered + b"last without LF\n"
        self.assertEqual((yield c.receive(len(fromA))), fromA)
        self.assertEqual((yield b.receive(len(fromA))), fromA)
        c.send(b"from two\r\n")
        self.assertEqual((yield b.receive(len(fromA) + 10)), fromA + b"from two\r\n")
        b.send(b"from one\n")
        self.assertEqual((yield c.receive(len(fromA) + 9)), fromA + b"from one\n")
        self.assertEqual((yield a.closed), b"")

    @inlineCallbacks
    def test_redisDownAtStartLostAndBack(self):
        """
        Nodes started before Redis serve their own clients and connect when
        it comes; when it is killed the local relay goes on and what could
        not cross nodes is counted and logged; when it is back, cross-node
        relay resumes by itself.
        """
        redis = RedisServer(self)
        args = ("--backplane-outbox", "300")
        one, onePort = yield startNode(self, redis, *args)
        two, twoPort = yield startNode(self, redis, *args)
        yield one.logged(b"cannot reach the Redis backplane " + redis.url.encode())
        a = yield connectClient(self, onePort)
        b = yield connectClient(self, onePort)
        c = yield connectClient(self, twoPort)
        a.send(b"local only\n")
        self.assertEqual((yield b.receive(11)), b"local only\n")

        yield redis.start()
        yield backplaneUp([one, two])
        a.send(b"across\n")
        yield receiveUntil(c, b"across\n")

        yield redis.kill()
        yield one.logged(b"lost the Redis backplane " + redis.url.encode() + b" (publisher)")
        held, dropped = b"1" * 200 + b"\n", b"2" * 200 + b"\n"
        a.send(held)
        yield receiveUntil(b, held)
        a.send(dropped)
        yield receiveUntil(b, dropped)
        self.assertEqual(b.data, b"local only\nacross\n" + held + dropped)
        yield one.logged(
            b"not relayed to other nodes: 234 bytes (Redis backplane away or slow, "
            b"outbox of 300 bytes full; 1 messages, 234 bytes so far)"
        )

        yield redis.start()
        yield backplaneUp([one, two], 2)
        yield one.logged(b"(1 messages, 234 bytes could not cross nodes so far)")
        a.send(b"back\n")
        yield receiveUntil(c, b"back\n")
        # What node one held while Redis was away is published when it is
        # back, maybe before node two has subscribed again: at most once,
        # in order, and never what was dropped.
        self.assertIn(
            c.data,
            [early + b"across\n" + late + b"back\n"
             for early in (b"", b"local only\n") for late in (b"", held)],
        )
        c.send(b"hello one\n")
        self.assertEqual((yield a.receive(10)), b"hello one\n")
        for node in (one, two):
            self.assertNotIn(b"Traceback", node.output)

    @inlineCallbacks
    def test_wrongPassword(self):
        """
        A refused password is one clear error line; the node still serves
        its own clients.
        """
        redis = yield startRedis(self, "--requirepass", "right")
        url = redis.url.replace("//", "//:wrong@")
        node = startTwistd(self, *LOCAL, "--backplane", url)
        port = yield node.listening
        line = (
            f"[sockservice.backplane#error] Redis at {redis.url} refused this node "
            "(WRONGPASS invalid username-password pair or user is disabled.): "
            "relaying locally only, retrying\n"
        ).encode()
        yield node.logged(line)
        a = yield connectClient(self, port)
        b = yield connectClient(self, port)
        a.send(b"still relaying\n")
        self.assertEqual((yield b.receive(15)), b"still relaying\n")
        self.assertEqual(node.output.count(b"refused this node"), 1)
        self.assertNotIn(b"Traceback", node.output)
        self.assertNotIn(b"wrong", node.output)


class TLSBackplaneTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_redissAcrossNodes(self):
        """
        Over rediss:// nodes relay across as over redis://; the server's
        certificate is checked (trusted here through SSL_CERT_FILE), and a
        node that does not trust it says why.
        """
        key, certificate = makeCertificate(os.path.abspath(self.mktemp()))
        redis = yield startRedis(self, tls=(certificate, key))
        trusting = {"SSL_CERT_FILE": certificate}
        one, onePort = yield startNode(self, redis, env=trusting)
        two, twoPort = yield startNode(self, redis, env=trusting)
        yield backplaneUp([one, two])
        a = yield connectClient(self, onePort)
        c = yield connectClient(self, twoPort)
        a.send(b"over TLS\r\n")
        self.assertEqual((yield c.receive(10)), b"over TLS\r\n")
        doubting = startTwistd(self, *LOCAL, "--backplane", redis.url)
        yield doubting.logged(b"certificate verify failed")
        self.assertIn(
            b"cannot reach the Redis backplane " + redis.url.encode(), doubting.output)
