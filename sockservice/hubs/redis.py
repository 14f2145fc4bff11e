"""
relay across nodes: a hub that relays to this node's clients at once, as
L{LocalHub} does, and through a Redis stream to the clients of every other
node. Each node appends its clients' lines to the stream (C{XADD}, trimmed
to about C{retain} entries) and reads the others' with a blocking C{XREAD}
from the last entry it has seen, on a connection of its own, so that an
outage of Redis or of the link delays lines but loses none that Redis still
has. Redis being away never stops the local relay; lines that could not
cross nodes, here or on the way, are counted and logged.
"""

from collections import OrderedDict
from functools import partial
from itertools import count
from uuid import uuid4

import txredisapi
from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import endpoints, protocol
from twisted.internet.defer import CancelledError, TimeoutError, gatherResults, inlineCallbacks
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.task import deferLater
from zope.interface import implementer

from sockservice.fastpath.directwrite import noDelay, writeNow
from sockservice.hubs.envelope import pack, prefix, unpack
from sockservice.hubs.local import LocalHub
from sockservice.hubs.outbox import OUTBOX_LIMIT, Outbox
from sockservice.hubs.redisurl import RETAIN

CONNECT_TIMEOUT = 10
#: How long one C{XREAD} waits for entries, in milliseconds; Redis not
#: answering it within C{CONNECT_TIMEOUT} seconds more is taken as gone.
BLOCK_MS = 5000
#: Entries taken per C{XREAD}: bounds what one reply holds in memory.
READ_COUNT = 1000
#: Nodes whose last line number is remembered to drop what comes twice.
MAX_NODES = 4096
#: Seconds a stopping hub waits for Redis to confirm what it was handed.
FLUSH_TIMEOUT = 5
#: Bytes of reads gathered into one entry, at most (plus one read).
BATCH_BYTES = 65536
#: The field of a stream entry that holds the envelope.
FIELD = b"m"
#: Why lines of another node may be missing, as far as a node can tell.
GAP_CAUSE = "lost by Redis, trimmed past --backplane-retain, or dropped by that node"
#: The stream ID before every entry.
START = b"0-0"


def redisEndpoint(reactor, address):
    """
    The client endpoint for a L{sockservice.hubs.redisurl.RedisAddress}.
    """
    endpoint = endpoints.HostnameEndpoint(
        reactor, address.host, address.port, timeout=CONNECT_TIMEOUT
    )
    if address.tls:
        from twisted.internet import ssl

        endpoint = endpoints.wrapClientTLS(ssl.optionsForClientTLS(address.host), endpoint)
    return endpoint


@implementer(IStreamClientEndpoint)
class _WatchedEndpoint:
    """
    An endpoint that tells C{failed} why a connection attempt failed.
    """

    def __init__(self, endpoint, description, failed):
        self._endpoint = endpoint
        self._description = description
        self._failed = failed

    def __repr__(self):
        return self._description

    def connect(self, factory):
        def failed(reason):
            if not reason.check(CancelledError):
                self._failed(reason)
            return reason

        return self._endpoint.connect(factory).addErrback(failed)


class _WritesNow:
    """
    A transport whose writes go to the socket at once when nothing is
    queued (L{writeNow}); everything else is the transport's.
    """

    def __init__(self, transport):
        self._transport = transport

    def write(self, data):
        writeNow(self._transport, data)

    def __getattr__(self, name):
        return getattr(self._transport, name)


class _KeepsLostReason:
    """
    Keeps why the connection was lost (a TLS error, say): txredisapi fails
    the commands in flight only with "Lost connection".
    """

    lostReason = None

    def connectionLost(self, why):
        self.lostReason = why
        super().connectionLost(why)


class _Connection(_KeepsLostReason, txredisapi.RedisProtocol):
    """
    Overrides two methods of txredisapi's C{BaseRedisProtocol} (1.6; the
    package is pinned below 2): C{_build_command} (private), which encodes
    each argument through a chain of type checks and C{str.format}, a
    seventh of a busy node's time (this hub's arguments are only bytes, str
    and int), and C{tryConvertData}.
    """

    def connectionMade(self):
        # Commands go out at once: not held by Nagle's algorithm until the
        # previous one is acknowledged, nor queued for the next reactor
        # iteration (a read waits for its command, so each iteration it
        # waited would add to every line's latency).
        noDelay(self.transport)
        self.transport = _WritesNow(self.transport)
        return super().connectionMade()

    def tryConvertData(self, data):
        """
        Replies as hiredis parsed them: with no charset and no number
        conversion, txredisapi's own would only copy every list of a reply,
        entry by entry.
        """
        return data

    def _build_command(self, *args, **kwargs):
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int):
                arg = b"%d" % arg
            parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
        return b"".join(parts)


class _RedisFactory(protocol.Factory):
    """
    Builds txredisapi protocols that keep message bodies as bytes and
    schedule on the hub's reactor.
    """

    noisy = False

    def __init__(self, protocol, hub, clock):
        self.protocol = protocol
        self.hub = hub
        self.clock = clock

    def buildProtocol(self, addr):
        proto = self.protocol(charset=None, convertNumbers=False)
        proto.factory = self
        proto.callLater = self.clock.callLater
        return proto


def streamId(entryId):
    """
    A stream entry ID (C{b"MS-SEQ"}) as a tuple that sorts as Redis does.
    """
    ms, _, seq = entryId.partition(b"-")
    return int(ms), int(seq or 0)


class RedisHub(service.Service):
    """
    A hub shared by the relay nodes that append to and read the stream
    C{channel} on one Redis.

    @ivar node: this node's id in the envelopes it appends; what it reads
        back with it is not delivered again.
    @ivar outbox: the L{Outbox} to Redis; its C{lostLines} count what could
        not cross nodes from here.
    @ivar lastId: the ID of the last stream entry read, from which reading
        resumes after any outage; L{None} until Redis was first reached.
    @ivar missed: lines of other nodes known lost on the way here (a gap in
        a node's line numbers).
    @ivar resets: times Redis lost entries this node had not read, in a
        number unknown until their senders' next lines (a restart without
        persistence).
    """

    def __init__(self, reactor, endpoint, address, channel, log, node=None,
                 outboxLimit=OUTBOX_LIMIT, retain=RETAIN, history=0,
                 retryPolicy=None, flushTimeout=FLUSH_TIMEOUT):
        self.local = LocalHub(history)
        self.address = address
        self.channel = channel
        self.retain = retain
        self.log = log
        self.node = node or uuid4().hex[:16].encode()
        self.outbox = Outbox(outboxLimit, self._dropped, self._appendSoon)
        self.lastId = None
        self.missed = 0
        self.resets = 0
        self.flushTimeout = flushTimeout
        self._lines = 0
        self._ownPrefix = prefix(self.node)
        self._batch = []
        self._batchSize = 0
        self._batchSender = 0
        self._appending = None
        self._lastLines = OrderedDict()
        self._gapCause = GAP_CAUSE
        self._senders = {}
        self._nextSender = count(1).__next__
        self._clock = reactor
        self._preparing = set()
        self._connections = {}
        self._silence = None
        self._troubleLogged = False
        self._failedSetups = 0
        self._everConnected = set()
        self._reconnects = 0
        self._downSince = reactor.seconds()
        self._backoff = retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=5.0, factor=2.0)
        watched = _WatchedEndpoint(endpoint, str(address), self._connectFailed)
        self.clients = [
            ClientService(
                watched, _RedisFactory(_Connection, self, reactor), self._retryDelay,
                reactor, prepare,
            )
            for prepare in (self._prepareWriter, self._prepareReader)
        ]

    def join(self, member):
        self.local.join(member)
        self._senders[member] = self._nextSender()

    def leave(self, member):
        self.local.leave(member)
        self._senders.pop(member, None)

    def publish(self, sender, data):
        """
        Deliver C{data} to the other local members now, and append it once
        for the other nodes, with what else comes meanwhile (up to
        L{BATCH_BYTES}): once the reactor has handled the other reads that
        arrived with it, or, while an append is waiting for Redis, as soon
        as Redis has confirmed it. Under load, one entry, one command and
        one reply for many reads.
        """
        self.local.publish(sender, data)
        if not self._batch:
            self._batchSender = self._senders.get(sender, 0)
        elif self._batchSender != self._senders.get(sender, 0):
            self._batchSender = 0
        self._batch.append(data)
        self._batchSize += len(data)
        if self._batchSize >= BATCH_BYTES:
            self._appendBatch()
        elif not self.outbox.sending:
            self._appendSoon()

    def _appendSoon(self):
        """
        Append the batch at the start of the next reactor iteration: after
        every read that came with this one, before the reactor waits again.
        """
        if self._appending is None:
            self._appending = self._clock.callLater(0, self._appendBatch)

    def _appendBatch(self):
        if self._appending is not None:
            if self._appending.active():
                self._appending.cancel()
            self._appending = None
        if not self._batch:
            return
        data = b"".join(self._batch)
        self._batch, self._batchSize = [], 0
        lines = data.count(b"\n")
        self._lines += lines
        self.outbox.put(pack(self.node, self._batchSender, self._lines, data), lines)

    def received(self, entries):
        """
        Deliver what other nodes appended (stream entries, oldest first) to
        every local member, once each, in one write.
        """
        chunks = []
        own = self._ownPrefix
        for entryId, fields in entries:
            self.lastId = entryId
            if fields[1:] and fields[1].startswith(own):
                continue
            envelope = self._envelope(fields)
            if envelope is None:
                continue
            last = self._lastLines.get(envelope.node)
            if last is not None:
                if envelope.line <= last:
                    continue
                missing = envelope.line - envelope.data.count(b"\n") - last
                if missing > 0:
                    self._missing(envelope.node, missing)
                self._lastLines.move_to_end(envelope.node)
            elif len(self._lastLines) >= MAX_NODES:
                self._lastLines.popitem(last=False)
            self._lastLines[envelope.node] = envelope.line
            chunks.append(envelope.data)
        if chunks:
            self.local.publish(None, b"".join(chunks))

    def _envelope(self, fields):
        """
        The L{Envelope} in an entry's fields, or L{None} (logged) if the
        entry is not one of ours.
        """
        try:
            if len(fields) != 2 or fields[0] != FIELD:
                raise ValueError(f"not a sockservice entry: {fields[:2]!r:.60}")
            return unpack(fields[1])
        except ValueError as e:
            self.log.warn(
                "ignored an entry in {channel}: {problem}",
                channel=self.channel, problem=str(e),
                kind="foreign",
            )
            return None

    def startService(self):
        service.Service.startService(self)
        for client in self.clients:
            client.startService()

    @inlineCallbacks
    def stopService(self):
        """
        Wait up to C{flushTimeout} seconds for Redis to confirm every line
        this node was handed (so stop the listeners and drain the clients
        first), count what is left as lost, then disconnect.
        """
        service.Service.stopService(self)
        self._appendBatch()
        if self.outbox.size:
            try:
                yield self.outbox.whenEmpty().addTimeout(self.flushTimeout, self._clock)
            except TimeoutError:
                pass
        self.outbox.abandon()
        # A ClientService stopped while a connection is being prepared hears
        # of its loss only once stopped, which it cannot take: close those
        # connections first and let their preparation end.
        for proto in list(self._preparing):
            lost = proto.whenDisconnected()
            proto.transport.abortConnection()
            yield lost
        yield deferLater(self._clock, 0, lambda: None)
        yield gatherResults([client.stopService() for client in self.clients])
        self.log.stop()
        if self.outbox.lostLines or self.missed or self.resets:
            self.log.warn(
                "Redis backplane {address} stopped: {tally}",
                address=str(self.address), tally=self.tally(),
            )

    def tally(self):
        """
        What is known lost across nodes so far, in words. A node knows what
        it could not append; what Redis lost after appending, the readers
        count.
        """
        text = (
            f"{self.outbox.lostLines} lines from this node not appended to Redis, "
            f"{self.missed} lines from other nodes lost on the way here"
        )
        if self.resets:
            text += f", Redis lost the stream {self.resets} times"
        return text

    def stats(self):
        """
        L{LocalHub.stats}, and the backplane's state for metrics and health
        checks (read when scraped): C{up} (both connections to Redis
        ready), C{downSince} (when it last went down, on the hub's clock, or
        L{None}), C{outboxBytes} (waiting to be appended), C{lost} (lines
        that could not cross nodes: not appended from here, and lost on the
        way here), C{resets} and C{reconnects}.
        """
        return {
            **self.local.stats(),
            "up": self._downSince is None,
            "downSince": self._downSince,
            "outboxBytes": self.outbox.size + self._batchSize,
            "lost": self.outbox.lostLines + self.missed,
            "resets": self.resets,
            "reconnects": self._reconnects,
        }

    def _ready(self, proto, command):
        """
        Authenticate and select the database on a new connection, then run
        C{command}, within L{CONNECT_TIMEOUT} seconds. A refusal (logged
        once a streak), a lost connection or no answer closes it and the
        next attempt waits longer. Fails only when cancelled: L{ClientService}
        cannot take a prepared connection that fails and is then lost.
        """
        self._preparing.add(proto)
        prepared = self._prepare(proto, command)
        prepared.addTimeout(CONNECT_TIMEOUT, self._clock)
        prepared.addCallbacks(self._prepared, self._notPrepared, errbackArgs=(proto,))
        prepared.addBoth(self._doneWith, proto)
        return prepared

    @inlineCallbacks
    def _prepare(self, proto, command):
        address = self.address
        if address.password is not None:
            yield proto.auth(address.password, address.username)
        if address.db is not None:
            yield proto.select(address.db)
        yield command()

    def _prepared(self, result):
        self._failedSetups = 0

    def _notPrepared(self, reason, proto):
        if reason.check(CancelledError):
            return reason
        self._failedSetups += 1
        proto.transport.abortConnection()
        if self._troubleLogged:
            return None
        self._troubleLogged = True
        if reason.check(txredisapi.ConnectionError) and proto.lostReason is not None:
            reason = proto.lostReason
        if reason.check(txredisapi.ResponseError):
            self.log.error(
                "Redis at {address} refused this node ({problem}): "
                "relaying locally only, retrying",
                address=str(self.address), problem=reason.getErrorMessage(),
            )
        else:
            self._unreachable(reason)

    def _unreachable(self, reason):
        if reason.check(TimeoutError):
            problem = f"no answer within {CONNECT_TIMEOUT} seconds"
        else:
            problem = reason.getErrorMessage()
        self.log.warn(
            "cannot reach the Redis backplane {address} ({problem}): "
            "relaying locally only, retrying",
            address=str(self.address), problem=problem,
        )

    def _doneWith(self, result, proto):
        self._preparing.discard(proto)
        return result

    def _retryDelay(self, attempt):
        return self._backoff(max(attempt, self._failedSetups))

    def _watch(self, proto, role):
        self._connections[role] = proto
        if role in self._everConnected:
            self._reconnects += 1
        self._everConnected.add(role)
        if len(self._connections) == 2:
            self._downSince = None
        proto.whenDisconnected().addCallback(lambda _: self._disconnected(role))

    def _prepareWriter(self, proto):
        def attach(pong):
            self._watch(proto, "writer")
            self.outbox.attach(partial(self._append, proto))
            self._troubleLogged = False
            self.log.info(
                "Redis backplane {address} connected: appending to {channel} "
                "as node {node} ({tally} so far)",
                address=str(self.address), channel=self.channel,
                node=self.node.decode(), tally=self.tally(),
            )

        # PING: connected only once Redis has answered (a TLS handshake, for
        # one, is not done when the connection is made).
        return self._ready(proto, lambda: proto.ping().addCallback(attach))

    def _append(self, proto, message):
        return proto.execute_command(
            b"XADD", self.channel, b"MAXLEN", b"~", self.retain, b"*", FIELD, message
        )

    def _prepareReader(self, proto):
        def read(positioned):
            self._watch(proto, "reader")
            self.log.info(
                "Redis backplane {address}: reading {channel} after entry {lastId}",
                address=str(self.address), channel=self.channel,
                lastId=self.lastId.decode(),
            )
            self._read(proto)

        return self._ready(proto, lambda: self._position(proto).addCallback(read))

    @inlineCallbacks
    def _position(self, proto):
        """
        Decide where reading resumes: where this node left off, unless Redis
        lost that entry (then say so); on the first connection, at the
        stream's newest entry, after taking the history from before it.
        """
        try:
            info = yield proto.execute_command(b"XINFO", b"STREAM", self.channel)
        except txredisapi.ResponseError as e:
            if "no such key" not in str(e):
                raise
            stream = {}
        else:
            stream = dict(zip(info[::2], info[1::2]))
        newest = stream.get(b"last-generated-id")
        self._gapCause = GAP_CAUSE
        if self.lastId is None:
            if newest and self.local.history is not None:
                yield self._seedHistory(proto, newest)
            self.lastId = newest or START
        elif self.lastId == START:
            pass
        elif newest is None:
            self._lostUnread("the stream is gone")
            self.lastId = START
        elif streamId(newest) < streamId(self.lastId):
            self._lostUnread(f"its newest entry is now {newest.decode()}")
            self.lastId = newest
        else:
            still = yield proto.execute_command(
                b"XRANGE", self.channel, self.lastId, self.lastId
            )
            # Redis 7 says up to which entry it trimmed (or deleted).
            deleted = stream.get(b"max-deleted-entry-id")
            if still or deleted is None:
                pass
            elif streamId(deleted) < streamId(self.lastId):
                self._lostUnread("that entry is gone, not trimmed")
            elif deleted != self.lastId:
                self._gapCause = (
                    f"trimmed past --backplane-retain {self.retain} before this node "
                    "read them, or dropped by that node"
                )

    @inlineCallbacks
    def _seedHistory(self, proto, newest):
        """
        Put the stream's last lines before the history, but for this node's
        own: those it appended while it could not read yet are in it
        already.
        """
        entries = yield proto.execute_command(
            b"XREVRANGE", self.channel, newest, b"-", b"COUNT", self.local.history.size
        )
        envelopes = (self._envelope(fields) for entryId, fields in reversed(entries))
        self.local.history.seed([
            envelope.data for envelope in envelopes
            if envelope is not None and envelope.node != self.node
        ])

    def _lostUnread(self, why):
        self.resets += 1
        self.log.warn(
            "the Redis backplane {address} lost entries of {channel} ({why}; "
            "restarted without persistence?): lines other nodes appended after "
            "entry {lastId}, if any, never reach this node; each sender's loss "
            "is counted when its next line arrives",
            address=str(self.address), channel=self.channel, why=why,
            lastId=self.lastId.decode(),
        )

    def _read(self, proto):
        if not (self.running and proto.connected):
            return
        reading = proto.execute_command(
            b"XREAD", b"COUNT", READ_COUNT, b"BLOCK", BLOCK_MS, b"STREAMS",
            self.channel, self.lastId, apply_timeout=False,
        )
        # One timer per connection, pushed back at each read (cheap: the
        # reactor re-sorts it only when it comes due).
        timeout = BLOCK_MS / 1000 + CONNECT_TIMEOUT
        if self._silence is None:
            self._silence = self._clock.callLater(timeout, self._silent)
        else:
            self._silence.reset(timeout)
        reading.addCallbacks(self._entriesRead, self._readFailed, (proto,), None, (proto,))

    def _entriesRead(self, reply, proto):
        # Ask for the next entries first, so that Redis answers while these
        # are delivered.
        for channel, entries in reply or ():
            if entries:
                self.lastId = entries[-1][0]
        self._read(proto)
        for channel, entries in reply or ():
            self.received(entries)

    def _readFailed(self, reason, proto):
        if reason.check(txredisapi.ConnectionError):
            return
        self._failedSetups += 1
        self.log.warn(
            "Redis backplane {address} refused to read {channel} "
            "({problem}): reconnecting", address=str(self.address),
            channel=self.channel, problem=reason.getErrorMessage(),
            kind="read refused",
        )
        proto.transport.abortConnection()

    def _silent(self):
        """
        Redis has not answered a read for longer than it was asked to block:
        it is hung, or the network between is; start both connections again
        (what was appended and not confirmed is appended again).
        """
        self._silence = None
        self.log.warn(
            "Redis backplane {address} did not answer for {seconds:g} seconds: reconnecting",
            address=str(self.address), seconds=BLOCK_MS / 1000 + CONNECT_TIMEOUT,
        )
        for proto in list(self._connections.values()):
            proto.transport.abortConnection()

    def _disconnected(self, role):
        del self._connections[role]
        if self._downSince is None:
            self._downSince = self._clock.seconds()
        if role == "writer":
            self.outbox.detach()
        elif self._silence is not None:
            self._silence.cancel()
            self._silence = None
        if self.running:
            self.log.warn(
                "lost the Redis backplane {address} ({role}): relaying locally "
                "only until it is back",
                address=str(self.address), role=role,
            )

    def _connectFailed(self, reason):
        if not self._troubleLogged:
            self._troubleLogged = True
            self._unreachable(reason)

    def _missing(self, node, lines):
        self.missed += lines
        self.log.warn(
            "lost {lines} lines from node {node} on the way ({cause}); "
            "{missed} lines from other nodes lost so far",
            lines=lines, node=node.decode("utf-8", "replace"), cause=self._gapCause,
            missed=self.missed,
            kind="lost on the way",
        )

    def _dropped(self, lines, nbytes, why):
        if why == "full":
            why = f"Redis backplane away or slow, outbox of {self.outbox.limit} bytes full"
        elif why == "stopping":
            why = "not confirmed by Redis when the node stopped"
        else:
            why = f"Redis refused it: {why}"
        if self.log.take("not relayed to other nodes", 1, nbytes):
            self.log.warn(
                "not relayed to other nodes: {lines} lines, {nbytes} bytes ({why}; "
                "{lost} lines, {lostBytes} bytes so far)",
                lines=lines, nbytes=nbytes, why=why, lost=self.outbox.lostLines,
                lostBytes=self.outbox.lostBytes,
            )
