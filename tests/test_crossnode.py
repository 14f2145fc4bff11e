"""
Relay across nodes: two real C{twistd -n sockservice --mode relay} processes
on one real C{redis-server}, clients on both, over loopback.
"""

import os
import signal

from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError, inlineCallbacks
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import TestCase

from tests.realserver import (
    RedisServer, connectPeer, redisCommand, startRedis, startTwistd,
)
from tests.support import makeCertificate

GREETING = b"hi\n"
LOCAL = ("--interface", "127.0.0.1", "--port", "0", "--mode", "relay", "--greeting", "hi")
CONNECTED = b"connected: appending to sockservice:relay"
READING = b": reading sockservice:relay after entry "


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
        yield node.logged(READING, times)


@inlineCallbacks
def receiveUntil(peer, ending):
    """
    Fire once what C{peer} received ends with C{ending}.
    """
    while not peer.data.endswith(ending):
        yield peer.receive(len(peer.data) + 1)


def sleep(seconds):
    return deferLater(reactor, seconds, lambda: None)


@inlineCallbacks
def receiveWithin(peer, size, seconds):
    """
    Fire with what C{peer} received once it is C{size} bytes, or after
    C{seconds} with what came by then.
    """
    try:
        yield peer.receive(size).addTimeout(seconds, reactor)
    except TimeoutError:
        pass
    return peer.data


class NumberedSender:
    """
    Sends numbered lines (C{b"1\\n"}, C{b"2\\n"}, ...) from C{peer}, C{perTick}
    lines every 10 ms, for C{seconds}.

    @ivar sent: lines sent so far.
    @ivar done: fires when it has stopped.
    """

    def __init__(self, peer, seconds, perTick=20):
        self.peer = peer
        self.perTick = perTick
        self.sent = 0
        self.done = Deferred()
        self._loop = LoopingCall(self._tick)
        self._loop.start(0.01)
        reactor.callLater(seconds, self._stop)

    def _tick(self):
        first, self.sent = self.sent + 1, self.sent + self.perTick
        self.peer.send(numbered(first, self.sent))

    def _stop(self):
        self._loop.stop()
        self.done.callback(self.sent)


def numbered(first, last):
    return b"".join(b"%d\n" % n for n in range(first, last + 1))


class CrossNodeTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def sendAcross(self, redisArgs=(), nodeArgs=()):
        """
        A redis-server with C{redisArgs}, two nodes on it with C{nodeArgs},
        and a client on each; fire with all five once the backplane is up.
        Each node's C{port} is the one it listens on.
        """
        redis = yield startRedis(self, *redisArgs)
        one, one.port = yield startNode(self, redis, *nodeArgs)
        two, two.port = yield startNode(self, redis, *nodeArgs)
        yield backplaneUp([one, two])
        a = yield connectClient(self, one.port)
        c = yield connectClient(self, two.port)
        return redis, one, two, a, c

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
        lines = numbered(0, 999)
        a.send(payload)
        for start in range(0, len(lines), 777):
            a.send(lines[start:start + 777])
        a.send(b"last without LF")
        a.transport.loseConnection()
        fromA = payload + lines + b"last without LF\n"
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
        it comes; when it is killed the local relay goes on, what fits the
        outbox crosses once Redis is back, and what did not fit is counted
        by the node that dropped it and by the node that missed it.
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
        yield one.logged(b"lost the Redis backplane " + redis.url.encode() + b" (writer)")
        held, dropped = b"1" * 200 + b"\n", b"2" * 200 + b"\n"
        a.send(held)
        yield receiveUntil(b, held)
        a.send(dropped)
        yield receiveUntil(b, dropped)
        self.assertEqual(b.data, b"local only\nacross\n" + held + dropped)
        yield one.logged(
            b"not relayed to other nodes: 1 lines, 236 bytes (Redis backplane away or "
            b"slow, outbox of 300 bytes full; 1 lines, 236 bytes so far)"
        )

        yield redis.start()
        yield backplaneUp([one, two], 2)
        yield one.logged(
            b"(1 lines from this node not appended to Redis, 0 lines from other nodes "
            b"lost on the way here"
        )
        a.send(b"back\n")
        yield receiveUntil(c, b"back\n")
        # Node two started reading when it first reached Redis: the line
        # node one held from before then reached it only if node two was
        # first. What node one held during the outage reaches it, once.
        self.assertIn(c.data, [early + b"across\n" + held + b"back\n"
                               for early in (b"", b"local only\n")])
        yield two.logged(b"lost 1 lines from node ")
        c.send(b"hello one\n")
        self.assertEqual((yield a.receive(10)), b"hello one\n")
        for node in (one, two):
            self.assertNotIn(b"Traceback", node.output)

    @inlineCallbacks
    def test_redisKilledAndRestartedWithoutPersistence(self):
        """
        The outage of issue 16: a sender on node one writes numbered lines
        for 10 s; Redis is killed (-9) at 3 s and started again, empty, at
        8 s. A reader on node two gets every line node one accepted, in
        order, once; both nodes say Redis lost its stream and neither counts
        a lost line.
        """
        redis, one, two, a, c = yield self.sendAcross()
        sender = NumberedSender(a, 10)
        yield sleep(3)
        yield redis.kill()
        yield sleep(5)
        yield redis.start()
        sent = yield sender.done
        got = yield receiveWithin(c, len(numbered(1, sent)), 20)
        self.assertNumbered(got, 1, sent)
        yield backplaneUp([one, two], 2)
        for node in (one, two):
            self.assertEqual(node.output.count(b"restarted without persistence?"), 1)
            self.assertEqual(node.output.count(b"connected: appending to"), 2)
            for loss in (b"not relayed to other nodes", b"lines from node", b"Traceback"):
                self.assertNotIn(loss, node.output)

    def assertNumbered(self, data, first, last):
        """
        C{data} is the numbered lines C{first} to C{last}, each once, in
        order; the failure says how it is not.
        """
        numbers = [int(line) for line in data.split()]
        self.assertEqual(
            (len(numbers), len(set(numbers)), numbers[:1], numbers[-1:], numbers == sorted(numbers)),
            (last - first + 1, last - first + 1, [first], [last], True),
        )
        self.assertEqual(data, numbered(first, last))

    @inlineCallbacks
    def test_trimmedPastRetain(self):
        """
        A node that falls further behind than --backplane-retain (stopped
        with SIGSTOP here) gets every line Redis still has, in order, once,
        and logs how many lines it lost, exactly.
        """
        redis, one, two, a, c = yield self.sendAcross(nodeArgs=("--backplane-retain", "10"))
        a.send(b"0\n")
        yield receiveUntil(c, b"0\n")
        two.transport.signalProcess(signal.SIGSTOP)
        self.addCleanup(two.transport.signalProcess, signal.SIGCONT)
        for first in range(1, 3000, 10):
            a.send(numbered(first, first + 9))
            yield sleep(0.001)
        length = yield redisCommand(self, redis, b"XLEN", b"sockservice:relay")
        self.assertLess(int(length[1:]), 300)
        two.transport.signalProcess(signal.SIGCONT)
        yield receiveUntil(c, b"\n3000\n")
        numbers = [int(line) for line in c.data.split()]
        self.assertEqual(numbers, sorted(set(numbers)))
        lost = 3001 - len(numbers)
        self.assertGreater(lost, 0)
        yield two.logged(b"lost %d lines from node " % lost)
        self.assertIn(b"; %d lines from other nodes lost so far" % lost, two.output)

    @inlineCallbacks
    def test_nodeRestartedWhileOthersSend(self):
        """
        Node two stopped and started again while node one sends: node one
        goes on, the new node two reads from where the stream is when it
        comes, so its client gets an unbroken run of the lines sent after
        it came back, nothing from before and nothing twice.
        """
        redis, one, two, a, c = yield self.sendAcross()
        sender = NumberedSender(a, 4)
        yield sleep(1)
        yield two.stop()
        beforeRestart = sender.sent
        two, twoPort = yield startNode(self, redis)
        yield backplaneUp([two])
        c2 = yield connectClient(self, twoPort)
        sent = yield sender.done
        got = yield receiveWithin(c2, 1, 10)
        first = int(got.split(b"\n", 1)[0])
        self.assertGreater(first, beforeRestart)
        got = yield receiveWithin(c2, len(numbered(first, sent)), 10)
        self.assertNumbered(got, first, sent)
        self.assertNumbered(c.data, 1, int(c.data.split()[-1]))
        self.assertNotIn(b"after entry 0-0", two.output)
        for node in (one, two):
            for loss in (b"not relayed to other nodes", b"lines from node", b"lost entries",
                         b"Traceback"):
                self.assertNotIn(loss, node.output)

    @inlineCallbacks
    def test_redisSlowedDown(self):
        """
        Redis asleep for 2 s (DEBUG SLEEP): node one keeps relaying locally
        meanwhile, and node two gets every line once, in order, when Redis
        wakes; nobody reconnects or counts a loss.
        """
        redis, one, two, a, c = yield self.sendAcross(redisArgs=("--enable-debug-command", "yes"))
        b = yield connectClient(self, one.port)
        sender = NumberedSender(a, 4)
        yield sleep(1)
        asleep = redisCommand(self, redis, b"DEBUG", b"SLEEP", b"2")
        yield sleep(0.5)
        localBefore = len(b.data)
        self.assertEqual((yield asleep), b"+OK")
        self.assertGreater(len(b.data), localBefore)
        sent = yield sender.done
        got = yield receiveWithin(c, len(numbered(1, sent)), 10)
        self.assertNumbered(got, 1, sent)
        for node in (one, two):
            self.assertEqual(node.output.count(b"connected: appending to"), 1)
            for trouble in (b"not relayed", b"lines from node", b"did not answer",
                            b"lost the Redis backplane", b"lost entries", b"Traceback"):
                self.assertNotIn(trouble, node.output)

    @inlineCallbacks
    def test_historyIsTheStreams(self):
        """
        With --history, a client joining any node first gets the last lines
        relayed on any node, then the live ones; a node started later takes
        its history from the stream.
        """
        redis, one, two, a, c = yield self.sendAcross(nodeArgs=("--history", "3"))
        a.send(b"1\n2\r\n3\n")
        a.send(b"4\n5\n")
        yield receiveUntil(c, b"5\n")
        three, threePort = yield startNode(self, redis, "--history", "3")
        yield backplaneUp([three])
        for port in (two.port, threePort, one.port):
            late = yield connectPeer(self, port)
            history = GREETING + b"3\n4\n5\n"
            self.assertEqual((yield late.receive(len(history))), history)
        a.send(b"6\n")
        self.assertEqual((yield late.receive(len(history) + 2)), history + b"6\n")

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
