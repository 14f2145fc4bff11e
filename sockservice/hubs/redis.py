"""
relay across nodes: a hub that relays to this node's clients at once, as
L{LocalHub} does, and through Redis pub/sub to the clients of every other
node. Redis being away never stops the local relay: what cannot cross nodes
meanwhile is counted and logged, and the hub reconnects by itself.
"""

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

from sockservice.hubs.envelope import pack, unpack
from sockservice.hubs.local import LocalHub
from sockservice.hubs.outbox import OUTBOX_LIMIT, Outbox

CONNECT_TIMEOUT = 10


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


class _KeepsLostReason:
    """
    Keeps why the connection was lost (a TLS error, say): txredisapi fails
    the commands in flight only with "Lost connection".
    """

    lostReason = None

    def connectionLost(self, why):
        self.lostReason = why
        super().connectionLost(why)


class _Publisher(_KeepsLostReason, txredisapi.RedisProtocol):
    pass


class _Subscriber(_KeepsLostReason, txredisapi.SubscriberProtocol):
    """
    Hands every message on the channel to the hub.
    """

    def messageReceived(self, pattern, channel, message):
        self.factory.hub.received(message)


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


class RedisHub(service.Service):
    """
    A hub shared by the relay nodes that publish to and subscribe to
    C{channel} on one Redis.

    @ivar node: this node's id in the envelopes it publishes; what comes back
        with it is not delivered again.
    @ivar outbox: the L{Outbox} to Redis; its C{lost} and C{lostBytes} count
        what could not cross nodes.
    """

    def __init__(self, reactor, endpoint, address, channel, log,
                 node=None, outboxLimit=OUTBOX_LIMIT, retryPolicy=None):
        self.local = LocalHub()
        self.address = address
        self.channel = channel
        self.log = log
        self.node = node or uuid4().hex[:16].encode()
        self.outbox = Outbox(channel, outboxLimit, self._lost)
        self._senders = {}
        self._nextSender = count(1).__next__
        self._clock = reactor
        self._preparing = set()
        self._troubleLogged = False
        self._failedSetups = 0
        self._links = set()
        self._everLinked = set()
        self._reconnects = 0
        self._downSince = reactor.seconds()
        self._backoff = retryPolicy or backoffPolicy(initialDelay=0.5, maxDelay=10.0, factor=2.0)
        watched = _WatchedEndpoint(endpoint, str(address), self._connectFailed)
        self.clients = [
            ClientService(
                watched, _RedisFactory(kind, self, reactor), self._retryDelay, reactor, prepare
            )
            for kind, prepare in [
                (_Publisher, self._preparePublisher),
                (_Subscriber, self._prepareSubscriber),
            ]
        ]

    def join(self, member):
        self.local.join(member)
        self._senders[member] = self._nextSender()

    def leave(self, member):
        self.local.leave(member)
        self._senders.pop(member, None)

    def publish(self, sender, data):
        """
        Deliver C{data} to the other local members now and publish it once
        for the other nodes.
        """
        self.local.publish(sender, data)
        self.outbox.put(pack(self.node, self._senders.get(sender, 0), data))

    def received(self, message):
        """
        Deliver what another node published to every local member.
        """
        try:
            envelope = unpack(message)
        except ValueError as e:
            self.log.warn(
                "foreign", "ignored a message on {channel}: {problem}",
                channel=self.channel, problem=str(e),
            )
            return
        if envelope.node != self.node:
            self.local.publish(None, envelope.data)

    def startService(self):
        service.Service.startService(self)
        for client in self.clients:
            client.startService()

    @inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        self.log.stop()
        # A ClientService stopped while a connection is being prepared hears
        # of its loss only once stopped, which it cannot take: close those
        # connections first and let their preparation end.
        for proto in list(self._preparing):
            lost = proto.whenDisconnected()
            proto.transport.abortConnection()
            yield lost
        yield deferLater(self._clock, 0, lambda: None)
        yield gatherResults([client.stopService() for client in self.clients])

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
            self.log.logger.error(
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
        self.log.logger.warn(
            "cannot reach the Redis backplane {address} ({problem}): "
            "relaying locally only, retrying",
            address=str(self.address), problem=problem,
        )

    def _doneWith(self, result, proto):
        self._preparing.discard(proto)
        return result

    def _retryDelay(self, attempt):
        return self._backoff(max(attempt, self._failedSetups))

    def _preparePublisher(self, proto):
        def attach(pong):
            proto.whenDisconnected().addCallback(lambda _: self._disconnected("publisher"))
            self.outbox.attach(proto)
            self._linked("publisher")
            self._troubleLogged = False
            self.log.logger.info(
                "Redis backplane {address} connected: publishing on {channel} "
                "as node {node} ({lost} messages, {lostBytes} bytes could not "
                "cross nodes so far)",
                address=str(self.address), channel=self.channel,
                node=self.node.decode(), lost=self.outbox.lost,
                lostBytes=self.outbox.lostBytes,
            )

        # PING: connected only once Redis has answered (a TLS handshake, for
        # one, is not done when the connection is made).
        return self._ready(proto, lambda: proto.ping().addCallback(attach))

    def _prepareSubscriber(self, proto):
        def watch(subscribed):
            proto.whenDisconnected().addCallback(lambda _: self._disconnected("subscriber"))
            self._linked("subscriber")
            self.log.logger.info(
                "Redis backplane {address}: subscribed to {channel}",
                address=str(self.address), channel=self.channel,
            )

        return self._ready(proto, lambda: proto.subscribe(self.channel).addCallback(watch))

    def _disconnected(self, role):
        self._links.discard(role)
        if self._downSince is None:
            self._downSince = self._clock.seconds()
        if role == "publisher":
            self.outbox.detach()
        if self.running:
            self.log.logger.warn(
                "lost the Redis backplane {address} ({role}): relaying locally "
                "only until it is back",
                address=str(self.address), role=role,
            )

    def _linked(self, role):
        if role in self._everLinked:
            self._reconnects += 1
        self._everLinked.add(role)
        self._links.add(role)
        if len(self._links) == 2:
            self._downSince = None

    def stats(self):
        """
        L{LocalHub.stats}, and the backplane's state for metrics and health
        checks (read when scraped): C{up} (both connections to Redis ready),
        C{downSince} (when it last went down, on the hub's clock, or
        L{None}), C{outboxBytes}, C{lost} and C{lostBytes} (what could not
        cross nodes), C{reconnects}.
        """
        return {
            **self.local.stats(),
            "up": self._downSince is None,
            "downSince": self._downSince,
            "outboxBytes": self.outbox.size,
            "lost": self.outbox.lost,
            "lostBytes": self.outbox.lostBytes,
            "reconnects": self._reconnects,
        }

    def _connectFailed(self, reason):
        if not self._troubleLogged:
            self._troubleLogged = True
            self._unreachable(reason)

    def _lost(self, nbytes):
        if self.log.take("not relayed to other nodes", 1, nbytes):
            self.log.logger.warn(
                "not relayed to other nodes: {nbytes} bytes (Redis backplane away "
                "or slow, outbox of {limit} bytes full; {lost} messages, "
                "{lostBytes} bytes so far)",
                nbytes=nbytes, limit=self.outbox.limit, lost=self.outbox.lost,
                lostBytes=self.outbox.lostBytes,
            )
