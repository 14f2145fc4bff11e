"""
The Redis streams hub on fakes: local delivery at once, one entry per chunk,
other nodes' entries delivered once and in order, its own never; where
reading resumes after an outage, and what it says when Redis lost or trimmed
entries; its connections to Redis on string transports and a fake clock:
authentication, losses counted, backoff, a hung Redis, flushing on stop.
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
from sockservice.hubs.redis import CONNECT_TIMEOUT, RedisHub, streamId
from sockservice.hubs.redisurl import RedisAddress
from tests.support import CapturedLog, received
from tests.test_relay import Member

NODE = b"thisnode00000000"
OTHER = b"othernode0000000"
NO_KEY = b"-ERR no such key\r\n"


def command(*args):
    """
    A Redis command as the client writes it.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


def reply(value):
    """
    C{value} as Redis answers it: bytes as a bulk string, an int as an
    integer, a list as an array, L{None} as a nil array.
    """
    if value is None:
        return b"*-1\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    return b"*%d\r\n" % len(value) + b"".join(reply(item) for item in value)


def entries(*items):
    """
    An XREAD reply: stream entries C{(id, envelope)} of the stream C{chan}.
    """
    return reply([[b"chan", [[entryId, [b"m", envelope]] for entryId, envelope in items]]])


def info(newest, deleted=b"0-0"):
    """
    An XINFO STREAM reply, the fields this hub reads and a few more.
    """
    return reply([b"length", 2, b"last-generated-id", newest,
                  b"max-deleted-entry-id", deleted, b"entries-added", 2, b"groups", 0])


def xread(after):
    return command(b"XREAD", b"COUNT", b"1000", b"BLOCK", b"5000", b"STREAMS", b"chan", after)


def xadd(envelope):
    return command(b"XADD", b"chan", b"MAXLEN", b"~", b"100000", b"*", b"m", envelope)


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


class StreamIdTests(SynchronousTestCase):
    def test_order(self):
        self.assertLess(streamId(b"9-5"), streamId(b"10-0"))
        self.assertLess(streamId(b"10-0"), streamId(b"10-1"))
        self.assertEqual(streamId(b"0-0"), (0, 0))


class RedisHubTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.captured = CapturedLog(budget=1)
        self.endpoint = Endpoint()
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379))

    def makeHub(self, address, **kwargs):
        return RedisHub(
            self.clock, self.endpoint, address, "chan", self.captured.log,
            node=NODE, retryPolicy=lambda attempt: attempt, **kwargs,
        )

    def start(self):
        self.hub.startService()
        self.addCleanup(self.hub.stopService)

    def connectWriter(self):
        writer, wt = self.endpoint.accept()
        self.assertEqual(received(wt), command(b"PING"))
        writer.dataReceived(b"+PONG\r\n")
        return writer, wt

    def connectReader(self, stream=NO_KEY, after=b"0-0"):
        """
        Accept the reader's connection, answer its XINFO with C{stream} and
        see it read after entry C{after}.
        """
        reader, rt = self.endpoint.accept()
        self.assertEqual(received(rt), command(b"XINFO", b"STREAM", b"chan"))
        reader.dataReceived(stream)
        self.assertEqual(received(rt), xread(after))
        return reader, rt

    def connectBoth(self):
        writer, wt = self.connectWriter()
        reader, rt = self.connectReader()
        return writer, wt, reader, rt

    def dueNow(self):
        """
        The calls the hub scheduled for the next reactor iteration.
        """
        now = self.clock.seconds()
        return [call for call in self.clock.getDelayedCalls() if call.getTime() <= now]

    def lose(self, *protos):
        for proto in protos:
            proto.connectionLost(Failure(ConnectionLost()))

    def test_localAtOnceAndAppendedOnce(self):
        """
        A chunk goes to the other local members at once and, once, to the
        stream with this node's id, the sender's number and the node's
        number of its last line, when the reactor has handled the reads that
        came with it. Chunks that come while an append waits for Redis make
        one entry (sender 0 if from several) once it is confirmed.
        """
        a, b, c = Member(), Member(), Member()
        for member in (a, b, c):
            self.hub.join(member)
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        self.hub.publish(b, b"\x00\xff\r\n2\n")
        self.assertEqual((a.got, b.got, c.got), ([b"\x00\xff\r\n2\n"], [], [b"\x00\xff\r\n2\n"]))
        self.assertEqual(received(wt), b"")
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 2, 2, b"\x00\xff\r\n2\n")))
        self.hub.publish(a, b"3\n")
        self.hub.publish(a, b"4\n")
        self.clock.advance(0)
        self.assertEqual(received(wt), b"")
        writer.dataReceived(reply(b"1-0"))
        self.hub.publish(a, b"5\n")
        self.assertEqual(received(wt), b"")
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 1, 5, b"3\n4\n5\n")))
        self.hub.publish(a, b"6\n")
        self.hub.publish(c, b"7\n")
        writer.dataReceived(reply(b"1-1"))
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 0, 7, b"6\n7\n")))
        writer.dataReceived(reply(b"1-2"))
        self.clock.advance(0)
        self.assertEqual(received(wt), b"")
        self.assertEqual(b.got, [b"3\n", b"4\n", b"5\n", b"6\n", b"7\n"])

    def test_readsOfOneIterationOneEntry(self):
        """
        Reads from several clients that the reactor handles in one
        iteration, Redis idle, become one entry and one XADD, at the start
        of the next iteration.
        """
        a, b, c = Member(), Member(), Member()
        for member in (a, b, c):
            self.hub.join(member)
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        for member, data in ((a, b"1\n2\n"), (b, b"3\n"), (c, b"4\n"), (a, b"5\n")):
            self.hub.publish(member, data)
        self.assertEqual(received(wt), b"")
        self.assertEqual(self.hub.stats()["outboxBytes"], 10)
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 0, 5, b"1\n2\n3\n4\n5\n")))
        self.hub.publish(b, b"6\n")
        writer.dataReceived(reply(b"1-0"))
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 2, 6, b"6\n")))
        self.assertEqual(self.dueNow(), [])

    def test_batchBounded(self):
        """
        An entry grows to BATCH_BYTES and one read more at most: then it is
        appended at once, in the same iteration.
        """
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        big = b"x" * 40000 + b"\n"
        for n in range(4):
            self.hub.publish(None, big)
        self.assertEqual(
            received(wt), xadd(pack(NODE, 0, 2, big + big)) + xadd(pack(NODE, 0, 4, big + big))
        )
        self.assertEqual(self.dueNow(), [])
        self.hub.publish(None, big)
        writer.dataReceived(reply(b"1-0") + reply(b"1-1"))
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 0, 5, big)))

    def test_othersOnceInOrderOwnNever(self):
        """
        Other nodes' entries of one read go to every local member in one
        write, in stream order; this node's own are skipped; the next read
        starts after the last entry.
        """
        a, b = Member(), Member()
        self.hub.join(a)
        self.hub.join(b)
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        reader.dataReceived(entries(
            (b"5-0", pack(OTHER, 1, 1, b"x\n")),
            (b"5-1", pack(NODE, 1, 1, b"mine\n")),
            (b"6-0", pack(OTHER, 3, 3, b"1\r\n2\n")),
        ))
        self.assertEqual((a.got, b.got), ([b"x\n1\r\n2\n"], [b"x\n1\r\n2\n"]))
        self.assertEqual(received(rt), xread(b"6-0"))
        self.assertEqual(self.hub.lastId, b"6-0")

    def test_blockTimesOutAndReadsAgain(self):
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        reader.dataReceived(reply(None))
        self.assertEqual(received(rt), xread(b"0-0"))

    def test_duplicateDroppedGapCounted(self):
        """
        An entry a node appended twice (sent again after a reconnect) is
        delivered once; one that skips line numbers is delivered, and the
        lines missing before it are one warning and counted.
        """
        a = Member()
        self.hub.join(a)
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        reader.dataReceived(entries(
            (b"1-0", pack(OTHER, 1, 2, b"1\n2\n")),
            (b"2-0", pack(OTHER, 1, 2, b"1\n2\n")),
            (b"3-0", pack(OTHER, 1, 3, b"3\n")),
            (b"4-0", pack(OTHER, 1, 7, b"6\n7\n")),
        ))
        self.assertEqual(a.got, [b"1\n2\n3\n6\n7\n"])
        self.assertEqual(self.hub.missed, 2)
        self.assertEqual(
            self.captured.messages()[-1],
            "lost 2 lines from node othernode0000000 on the way (lost by Redis, trimmed "
            "past --backplane-retain, or dropped by that node); 2 lines from other "
            "nodes lost so far",
        )

    def test_foreignEntryIgnored(self):
        a = Member()
        self.hub.join(a)
        self.hub.received([(b"1-0", [b"m", b"hello from redis-cli"]),
                           (b"2-0", [b"x", b"1"])])
        self.assertEqual(a.got, [])
        self.assertEqual(self.hub.lastId, b"2-0")
        self.captured.log.stop()
        self.assertEqual(
            self.captured.messages(),
            ["ignored an entry in chan: not a sockservice envelope: b'hello from redis-cli'",
             "not logged one by one in the last 1s: foreign 1"],
        )

    def test_authenticateAndSelectBoth(self):
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379, "pw", None, 3))
        self.start()
        for role in (b"PING", b"XINFO"):
            proto, transport = self.endpoint.accept()
            self.assertEqual(received(transport), command(b"AUTH", b"pw"))
            proto.dataReceived(b"+OK\r\n")
            self.assertEqual(received(transport), command(b"SELECT", b"3"))
            proto.dataReceived(b"+OK\r\n")
            self.assertTrue(received(transport).startswith(b"*"), role)

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
                self.lose(proto)
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
        the outbox is counted in lines and logged, folded past the log
        budget.
        """
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379), outboxLimit=100)
        a, b = Member(), Member()
        self.hub.join(a)
        self.hub.join(b)
        self.start()
        self.endpoint.refuse()
        self.endpoint.refuse()
        for n in range(4):
            self.hub.publish(a, b"%d" % n * 20 + b"\n" + b"%d" % n * 10 + b"\n")
            self.clock.advance(0)
        self.assertEqual(len(b.got), 4)
        self.assertEqual(
            (self.hub.outbox.lost, self.hub.outbox.lostLines, self.hub.outbox.lostBytes),
            (3, 6, 3 * 67),
        )
        self.captured.log.stop()
        self.assertEqual(
            self.captured.messages(),
            [
                "cannot reach the Redis backplane redis://127.0.0.1:6379 (Connection was "
                "refused by other side: Connection refused.): relaying locally only, retrying",
                "not relayed to other nodes: 2 lines, 67 bytes (Redis backplane away or "
                "slow, outbox of 100 bytes full; 2 lines, 67 bytes so far)",
                "not logged one by one in the last 1s: not relayed to other nodes 2 (134 bytes)",
            ],
        )
        self.assertEqual(
            self.hub.tally(),
            "6 lines from this node not appended to Redis, 0 lines from other nodes "
            "lost on the way here",
        )

    def test_refusedAppendCounted(self):
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        self.hub.publish(None, b"x\n")
        self.clock.advance(0)
        writer.dataReceived(b"-OOM command not allowed when used memory > 'maxmemory'.\r\n")
        self.assertEqual(self.hub.outbox.lostLines, 1)
        self.assertEqual(
            self.captured.messages()[-1],
            "not relayed to other nodes: 1 lines, 37 bytes (Redis refused it: OOM command "
            "not allowed when used memory > 'maxmemory'.; 1 lines, 37 bytes so far)",
        )

    def test_reconnectResumesAndSendsAgain(self):
        """
        After Redis comes back, reading resumes after the last entry read
        (still in the stream: nothing lost), and the writer appends what was
        not confirmed and what was held, in order.
        """
        a = Member()
        self.hub.join(a)
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        reader.dataReceived(entries((b"7-0", pack(OTHER, 1, 1, b"before\n"))))
        self.hub.publish(a, b"1\n")
        self.clock.advance(0)
        self.lose(writer, reader)
        self.hub.publish(a, b"2\n")
        self.clock.advance(0)
        self.assertEqual(self.endpoint.attempts, [])
        self.clock.advance(1)
        writer, wt = self.connectWriter()
        self.assertEqual(
            received(wt), xadd(pack(NODE, 1, 1, b"1\n")) + xadd(pack(NODE, 1, 2, b"2\n"))
        )
        reader, rt = self.endpoint.accept()
        self.assertEqual(received(rt), command(b"XINFO", b"STREAM", b"chan"))
        reader.dataReceived(info(b"9-0"))
        self.assertEqual(received(rt), command(b"XRANGE", b"chan", b"7-0", b"7-0"))
        reader.dataReceived(reply([[b"7-0", [b"m", pack(OTHER, 1, 1, b"before\n")]]]))
        self.assertEqual(received(rt), xread(b"7-0"))
        reader.dataReceived(entries((b"8-0", pack(OTHER, 1, 2, b"back\n"))))
        self.assertEqual(a.got, [b"before\n", b"back\n"])
        self.assertEqual((self.hub.outbox.lost, self.hub.missed, self.hub.resets), (0, 0, 0))
        self.assertIn(
            "Redis backplane redis://127.0.0.1:6379: reading chan after entry 7-0",
            self.captured.messages(),
        )

    def reconnectReader(self, stream, after):
        """
        Read one entry, lose the reader, and connect it again to
        C{stream} (an XINFO reply).
        """
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        reader.dataReceived(entries((b"7-0", pack(OTHER, 1, 1, b"before\n"))))
        self.lose(reader)
        self.clock.advance(1)
        reader, rt = self.endpoint.accept()
        received(rt)
        reader.dataReceived(stream)
        return reader, rt

    def test_streamGone(self):
        """
        A stream that is gone (Redis restarted without persistence) is one
        warning, counted; reading starts at the new stream's beginning.
        """
        reader, rt = self.reconnectReader(NO_KEY, b"0-0")
        self.assertEqual(received(rt), xread(b"0-0"))
        self.assertEqual(self.hub.resets, 1)
        self.assertIn(
            "the Redis backplane redis://127.0.0.1:6379 lost entries of chan (the stream "
            "is gone; restarted without persistence?): lines other nodes appended after "
            "entry 7-0, if any, never reach this node; each sender's loss is counted "
            "when its next line arrives",
            self.captured.messages(),
        )

    def test_idsWentBack(self):
        """
        A stream whose newest entry is older than the last one read (Redis
        restored an older snapshot) is one warning; reading resumes after
        its newest entry, not replaying it.
        """
        reader, rt = self.reconnectReader(info(b"3-0"), b"3-0")
        self.assertEqual(received(rt), xread(b"3-0"))
        self.assertEqual(self.hub.resets, 1)
        self.assertIn("(its newest entry is now 3-0; restarted", self.captured.messages()[-2])

    def test_lastEntryGoneNotTrimmed(self):
        """
        After a restart without persistence other nodes may have appended
        again before this node is back: the entry read last is gone though
        nothing was trimmed. One warning; what the other nodes appended
        since is read.
        """
        reader, rt = self.reconnectReader(info(b"20-0"), b"7-0")
        self.assertEqual(received(rt), command(b"XRANGE", b"chan", b"7-0", b"7-0"))
        reader.dataReceived(reply([]))
        self.assertEqual(received(rt), xread(b"7-0"))
        self.assertEqual(self.hub.resets, 1)
        self.assertIn("(that entry is gone, not trimmed; restarted", self.captured.messages()[-2])

    def test_trimmedWhileAway(self):
        """
        Entries trimmed past --backplane-retain before this node read them
        are no reset: the lost lines are counted per sender, with the cause.
        """
        a = Member()
        self.hub.join(a)
        reader, rt = self.reconnectReader(info(b"90-0", deleted=b"50-0"), b"7-0")
        self.assertEqual(received(rt), command(b"XRANGE", b"chan", b"7-0", b"7-0"))
        reader.dataReceived(reply([]))
        self.assertEqual(received(rt), xread(b"7-0"))
        reader.dataReceived(entries((b"51-0", pack(OTHER, 1, 44, b"44\n"))))
        self.assertEqual(a.got, [b"before\n", b"44\n"])
        self.assertEqual((self.hub.resets, self.hub.missed), (0, 42))
        self.assertEqual(
            self.captured.messages()[-1],
            "lost 42 lines from node othernode0000000 on the way (trimmed past "
            "--backplane-retain 100000 before this node read them, or dropped by that "
            "node); 42 lines from other nodes lost so far",
        )

    def test_firstConnectionTakesHistoryThenReadsOn(self):
        """
        A node with --history reads the stream's last lines before its
        newest entry, then reads after it: a client that joins gets those
        lines, then what comes next, nothing twice (not even the node's own
        line, appended before it could read).
        """
        self.hub = self.makeHub(RedisAddress("127.0.0.1", 6379), history=3)
        self.start()
        writer, wt = self.connectWriter()
        self.hub.publish(None, b"mine\n")
        self.clock.advance(0)
        self.assertEqual(received(wt), xadd(pack(NODE, 0, 1, b"mine\n")))
        reader, rt = self.endpoint.accept()
        self.assertEqual(received(rt), command(b"XINFO", b"STREAM", b"chan"))
        reader.dataReceived(info(b"9-0"))
        self.assertEqual(
            received(rt), command(b"XREVRANGE", b"chan", b"9-0", b"-", b"COUNT", b"3")
        )
        reader.dataReceived(reply([
            [b"9-0", [b"m", pack(NODE, 1, 1, b"mine\n")]],
            [b"8-0", [b"m", pack(OTHER, 2, 4, b"3\n4\n")]],
            [b"7-0", [b"m", pack(OTHER, 1, 2, b"1\n2\n")]],
        ]))
        self.assertEqual(received(rt), xread(b"9-0"))
        reader.dataReceived(entries((b"10-0", pack(OTHER, 1, 5, b"5\n"))))
        late = Member()
        self.hub.join(late)
        reader.dataReceived(entries((b"11-0", pack(OTHER, 1, 6, b"6\n"))))
        self.assertEqual(late.got, [b"4\nmine\n5\n", b"6\n"])

    def test_hungRedis(self):
        """
        A read not answered for BLOCK plus CONNECT_TIMEOUT seconds (Redis
        hung, or the network) starts both connections again.
        """
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        self.clock.advance(10)
        reader.dataReceived(reply(None))
        self.clock.advance(5 + CONNECT_TIMEOUT - 1)
        self.assertFalse(rt.disconnecting)
        self.clock.advance(1)
        self.assertTrue(wt.disconnecting and rt.disconnecting)
        self.assertIn(
            "Redis backplane redis://127.0.0.1:6379 did not answer for 15 seconds: reconnecting",
            self.captured.messages(),
        )

    def test_lostReaderNotWatched(self):
        self.start()
        writer, wt, reader, rt = self.connectBoth()
        self.lose(reader)
        self.clock.advance(60)
        self.assertFalse(wt.disconnecting)
        self.assertNotIn("did not answer", " ".join(self.captured.messages()))

    def test_noAnswerTimesOut(self):
        """
        A connection on which Redis does not answer (a TLS mismatch, a hung
        server) is closed after CONNECT_TIMEOUT and tried again.
        """
        self.start()
        writer, wt = self.endpoint.accept()
        self.clock.advance(CONNECT_TIMEOUT)
        self.assertTrue(wt.disconnecting)
        self.lose(writer)
        self.clock.advance(1)
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.assertEqual(
            self.captured.messages(),
            ["cannot reach the Redis backplane redis://127.0.0.1:6379 (no answer "
             "within 10 seconds): relaying locally only, retrying"],
        )

    def test_stopFlushesFirst(self):
        """
        Stopping waits for Redis to confirm every line the hub was handed,
        then disconnects.
        """
        self.hub.startService()
        writer, wt, reader, rt = self.connectBoth()
        self.hub.publish(None, b"last\n")
        stopped = self.hub.stopService()
        self.assertNoResult(stopped)
        self.assertFalse(wt.disconnecting)
        writer.dataReceived(reply(b"12-0"))
        self.clock.advance(0)
        self.assertTrue(wt.disconnecting and rt.disconnecting)
        self.lose(writer, reader)
        self.successResultOf(stopped)
        self.assertEqual(self.hub.outbox.lost, 0)

    def test_stopFlushBounded(self):
        """
        Redis away at stop: the hub waits flushTimeout seconds for it, then
        counts what it still held as lost and says so.
        """
        self.hub.startService()
        self.endpoint.refuse()
        self.endpoint.refuse()
        self.hub.publish(None, b"1\n2\n")
        stopped = self.hub.stopService()
        self.clock.advance(4)
        self.assertNoResult(stopped)
        self.clock.advance(1)
        self.successResultOf(stopped)
        self.assertEqual(self.hub.outbox.lostLines, 2)
        self.assertEqual(
            self.captured.messages()[-1],
            "Redis backplane redis://127.0.0.1:6379 stopped: 2 lines from this node not "
            "appended to Redis, 0 lines from other nodes lost on the way here",
        )

    def test_stopWhilePreparing(self):
        """
        Stopping closes a connection still being prepared and waits for it
        before stopping the reconnecting services.
        """
        self.hub.startService()
        writer, wt = self.endpoint.accept()
        stopped = self.hub.stopService()
        self.assertTrue(wt.disconnecting)
        self.assertNoResult(stopped)
        self.lose(writer)
        self.clock.advance(0)
        self.successResultOf(stopped)
        [(factory, readerAttempt)] = self.endpoint.attempts
        self.assertTrue(readerAttempt.called)
        self.assertFalse(any(client.running for client in self.hub.clients))
