"""
The Redis hub on fakes: local delivery at once, one envelope per chunk,
other nodes' messages delivered, its own never twice; and its connections to
Redis on string transports and a fake clock: authentication, subscription,
losses counted, backoff, re-subscription after a reconnect.
"""

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from sockservice.hubs.envelope import pack
from sockservice.hubs.redis import CONNECT_TIMEOUT, RedisHub
from sockservice.hubs.redisurl import RedisAddress
from tests.support import CapturedLog, received
from tests.test_relay import Member

NODE = b"thisnode00000000"
OTHER = b"othernode0000000"


def command(*args):
    """
    A Redis command as the client writes it.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def message(channel, data):
    """
    A pub/sub message as Redis pushes it to a subscriber.
    """
    return b"*3\r\n$7\r\nmessage\r\n" + b"".join(
        b"$%d\r\n%s\r\n" % (len(part), part) for part in (channel, data)
    )


@implementer(IStreamClientEndpoint)
class Endpoint:
    """
    Connection attempts wait for the test to make or refuse them.
    """

    def __init__(self):
        self.attempts = []

    def connect(self, factory):
        attempt = Deferred()
        self.attempts.append((factory, attempt))
        return attempt

    def accept(self):
        """
        Connect the oldest attempt to a string transport.
        """
        factory, attempt = self.attempts.pop(0)
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        attempt.callback(proto)
        return proto, transport

    def refuse(self):
        factory, attempt = self.attempts.pop(0)
        attempt.errback(ConnectionRefusedError("Connection refused"))


class RedisHubTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.captured = CapturedLog(budget=1)
        self.endpoint = Endpoint()
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379))

    def makeHub(self, address, **kwargs):
        hub = RedisHub(
            self.clock, self.endpoint, address, "chan", self.captured.log,
            node=NODE, retryPolicy=lambda attempt: attempt, **kwargs,
        )
        return hub

    def start(self):
        self.hub.startService()
        self.addCleanup(self.hub.stopService)

    def connectBoth(self):
        """
        Accept the publisher's and the subscriber's connections and answer
        the subscription.
        """
        publisher, pt = self.endpoint.accept()
        self.assertEqual(received(pt), command(b"PING"))
        publisher.dataReceived(b"+PONG\r\n")
        subscriber, st = self.endpoint.accept()
        self.assertEqual(received(st), command(b"SUBSCRIBE", b"chan"))
        subscriber.dataReceived(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchan\r\n:1\r\n")
        return publisher, pt, subscriber, st

    def test_localAtOnceAndPublishedOnce(self):
        """
        A chunk goes to the other local members at once and, once, to the
        other nodes with this node's id and the sender's.
        """
        a, b, c = Member(), Member(), Member()
        for member in (a, b, c):
            self.hub.join(member)
        self.start()
        publisher, pt, subscriber, st = self.connectBoth()
        self.hub.publish(b, b"\x00\xff\r\n2\n")
        self.assertEqual((a.got, b.got, c.got), ([b"\x00\xff\r\n2\n"], [], [b"\x00\xff\r\n2\n"]))
        self.assertEqual(received(pt), command(b"PUBLISH", b"chan", pack(NODE, 2, b"\x00\xff\r\n2\n")))

    def test_othersDeliveredOwnNotTwice(self):
        a, b = Member(), Member()
        self.hub.join(a)
        self.hub.join(b)
        self.start()
        publisher, pt, subscriber, st = self.connectBoth()
        subscriber.dataReceived(message(b"chan", pack(OTHER, 1, b"x\n")))
        subscriber.dataReceived(message(b"chan", pack(NODE, 1, b"mine\n")))
        subscriber.dataReceived(message(b"chan", pack(OTHER, 3, b"1\r\n")))
        self.assertEqual((a.got, b.got), ([b"x\n", b"1\r\n"], [b"x\n", b"1\r\n"]))

    def test_foreignMessageIgnored(self):
        a = Member()
        self.hub.join(a)
        self.hub.received(b"hello from redis-cli")
        self.assertEqual(a.got, [])
        self.assertEqual(
            self.captured.messages(),
            ["ignored a message on chan: not a sockservice envelope: b'hello from redis-cli'"],
        )

    def test_authenticateAndSelect(self):
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379, "pw", None, 3))
        self.start()
        publisher, pt = self.endpoint.accept()
        self.assertEqual(received(pt), command(b"AUTH", b"pw"))
        publisher.dataReceived(b"+OK\r\n")
        self.assertEqual(received(pt), command(b"SELECT", b"3"))
        publisher.dataReceived(b"+OK\r\n")
        self.assertEqual(received(pt), command(b"PING"))
        publisher.dataReceived(b"+PONG\r\n")
        self.hub.publish(None, b"x\n")
        self.assertEqual(received(pt), command(b"PUBLISH", b"chan", pack(NODE, 0, b"x\n")))

    def test_wrongPasswordLoggedOnceAndRetried(self):
        """
        A refused password is one clear error line; the node retries later
        and later, without logging the same refusal again.
        """
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379, "bad"))
        self.start()
        refusal = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
        for attempt in (1, 2):
            for connection in range(2):
                proto, transport = self.endpoint.accept()
                self.assertEqual(received(transport), command(b"AUTH", b"bad"))
                proto.dataReceived(refusal)
                self.assertTrue(transport.disconnected)
                proto.connectionLost(Failure(ConnectionLost()))
            self.clock.advance(2 * attempt)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(
            [m for m in self.captured.messages() if "refused" in m],
            ["Redis at redis://127.0.0.1:6379 refused this node (WRONGPASS invalid "
             "username-password pair or user is disabled.): relaying locally only, retrying"],
        )

    def test_unreachableLocalGoesOnLossesCounted(self):
        """
        With Redis unreachable the local relay goes on; what does not fit
        the outbox is counted and logged, folded past the log budget.
        """
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379), outboxLimit=100)
        a, b = Member(), Member()
        self.hub.join(a)
        self.hub.join(b)
        self.start()
        self.endpoint.refuse()
        self.endpoint.refuse()
        for n in range(4):
            self.hub.publish(a, b"%d" % n * 40 + b"\n")
        self.assertEqual(len(b.got), 4)
        self.assertEqual((self.hub.outbox.lost, self.hub.outbox.lostBytes), (3, 3 * 74))
        self.captured.log.stop()
        self.assertEqual(
            self.captured.messages(),
            [
                "cannot reach the Redis backplane redis://127.0.0.1:6379 (Connection was "
                "refused by other side: Connection refused.): relaying locally only, retrying",
                "not relayed to other nodes: 74 bytes (Redis backplane away or slow, "
                "outbox of 100 bytes full; 1 messages, 74 bytes so far)",
                "not logged one by one in the last 1s: not relayed to other nodes 2 (148 bytes)",
            ],
        )

    def test_reconnectResubscribesAndFlushes(self):
        """
        After Redis comes back, the subscriber subscribes again, held
        messages go out in order, and other nodes' messages arrive again.
        """
        a = Member()
        self.hub.join(a)
        self.start()
        publisher, pt, subscriber, st = self.connectBoth()
        publisher.connectionLost(Failure(ConnectionLost()))
        subscriber.connectionLost(Failure(ConnectionLost()))
        self.hub.publish(a, b"1\n")
        self.hub.publish(a, b"2\n")
        self.assertEqual(self.endpoint.attempts, [])
        self.clock.advance(1)
        publisher, pt, subscriber, st = self.connectBoth()
        self.assertEqual(
            received(pt),
            command(b"PUBLISH", b"chan", pack(NODE, 1, b"1\n"))
            + command(b"PUBLISH", b"chan", pack(NODE, 1, b"2\n")),
        )
        subscriber.dataReceived(message(b"chan", pack(OTHER, 5, b"back\n")))
        self.assertEqual(a.got, [b"back\n"])
        self.assertEqual(self.hub.outbox.lost, 0)

    def test_noAnswerTimesOut(self):
        """
        A connection on which Redis does not answer (a TLS mismatch, a hung
        server) is closed after CONNECT_TIMEOUT and tried again.
        """
        self.start()
        publisher, pt = self.endpoint.accept()
        self.clock.advance(CONNECT_TIMEOUT)
        self.assertTrue(pt.disconnecting)
        publisher.connectionLost(Failure(ConnectionLost()))
        self.clock.advance(1)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(
            self.captured.messages(),
            ["cannot reach the Redis backplane redis://127.0.0.1:6379 (no answer "
             "within 10 seconds): relaying locally only, retrying"],
        )

    def test_stopWhilePreparing(self):
        """
        Stopping closes a connection still being prepared and waits for it
        before stopping the reconnecting services.
        """
        self.hub.startService()
        publisher, pt = self.endpoint.accept()
        stopped = self.hub.stopService()
        self.assertTrue(pt.disconnecting)
        self.assertNoResult(stopped)
        publisher.connectionLost(Failure(ConnectionLost()))
        self.clock.advance(0)
        self.successResultOf(stopped)
        [(factory, subscriberAttempt)] = self.endpoint.attempts
        self.assertTrue(subscriberAttempt.called)
        self.assertFalse(any(client.running for client in self.hub.clients))
