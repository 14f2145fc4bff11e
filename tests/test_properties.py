"""
Properties of every protocol on string transports, for any input: a byte
stream in any chunking gives the same acks, deliveries and messages as the
stream sent whole; no exception escapes; a line over --max-line is always
refused.
"""

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sockservice.wire.auth import TokenGate
from sockservice.modes.collect import CollectFactory
from sockservice.modes.greet import GreetFactory
from sockservice.hubs.local import LocalHub
from sockservice.wire.limits import Limits
from sockservice.modes.relay import RelayFactory
from tests.support import CapturedLog, connect, disconnect, received

MAX_LINE = 8
ACK = b"ok\n"
TOO_LONG = b"ERROR line too long\n"

# Lines around --max-line, some ending in CRLF, rich in CR and LF.
lines = st.lists(
    st.tuples(st.binary(max_size=MAX_LINE + 3).map(lambda b: b.replace(b"\n", b"")),
              st.sampled_from([b"\n", b"\r\n"])).map(b"".join),
    max_size=8,
)
streams = st.tuples(lines.map(b"".join), st.binary(max_size=MAX_LINE + 3)).map(b"".join)


def chunked(data, cuts):
    """
    C{data} split at the offsets in C{cuts}.
    """
    edges = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[a:b] for a, b in zip(edges, edges[1:])]


cutLists = st.lists(st.integers(min_value=0), max_size=12)

# Each example is fast, but a busy CI machine must not fail one on time.
noDeadline = settings(deadline=None)


def expectedAcks(data):
    """
    What greet answers C{data} with, worked out line by line: an ack per
    line until the first over C{MAX_LINE} bytes (without its line ending),
    which is refused. A trailing partial line is refused as soon as it
    cannot end within the limit.
    """
    *complete, tail = data.split(b"\n")
    out = b""
    for line in complete:
        if len(line.removesuffix(b"\r")) > MAX_LINE:
            return out + TOO_LONG
        out += ACK
    if len(tail) > MAX_LINE + 1 or (len(tail) == MAX_LINE + 1 and not tail.endswith(b"\r")):
        return out + TOO_LONG
    return out


def feed(proto, transport, chunks):
    for chunk in chunks:
        proto.dataReceived(chunk)
    return received(transport), bool(transport.disconnecting)


class GreetPropertyTests(SynchronousTestCase):
    def run_greet(self, chunks):
        factory = GreetFactory(CapturedLog().log, maxLine=MAX_LINE, greeting=b"", ack=ACK)
        return feed(*connect(factory), chunks)

    @noDeadline
    @given(streams, cutLists)
    def test_chunkingDoesNotMatter(self, data, cuts):
        self.assertEqual(self.run_greet(chunked(data, cuts)), self.run_greet([data]))

    @noDeadline
    @given(streams, cutLists)
    def test_acksAndMaxLine(self, data, cuts):
        out, closed = self.run_greet(chunked(data, cuts))
        self.assertEqual(out, expectedAcks(data))
        self.assertEqual(closed, out.endswith(TOO_LONG))


class RelayPropertyTests(SynchronousTestCase):
    def run_relay(self, chunks, gate=None):
        """
        Relay C{chunks} from one client, which then disconnects; return what
        another client received and whether the sender was closed.
        """
        factory = RelayFactory(CapturedLog().log, LocalHub(), maxLine=MAX_LINE, gate=gate)
        sender, senderTransport = connect(factory, 5001)
        other, otherTransport = connect(factory, 5002)
        if gate is not None:
            other.dataReceived(gate.token + b"\n")
        result = feed(sender, senderTransport, chunks)
        disconnect(sender)
        return received(otherTransport), result

    @noDeadline
    @given(streams, cutLists)
    def test_chunkingDoesNotMatter(self, data, cuts):
        self.assertEqual(self.run_relay(chunked(data, cuts)), self.run_relay([data]))

    @noDeadline
    @given(streams, cutLists)
    def test_deliveriesAndMaxLine(self, data, cuts):
        delivered, (out, closed) = self.run_relay(chunked(data, cuts))
        acks = expectedAcks(data)
        count = acks.count(ACK)
        if acks.endswith(TOO_LONG):
            self.assertEqual((out, closed), (TOO_LONG, True))
            self.assertEqual(delivered, b"".join(data.split(b"\n")[i] + b"\n" for i in range(count)))
        else:
            self.assertEqual((out, closed), (b"", False))
            partial = data.split(b"\n")[-1]
            self.assertEqual(delivered, data + (b"\n" if partial else b""))

    @noDeadline
    @given(streams, cutLists)
    def test_tokenChunkingDoesNotMatter(self, data, cuts):
        gate = TokenGate(b"tok")
        for stream in (data, b"tok\r\n" + data):
            self.assertEqual(
                self.run_relay(chunked(stream, cuts), gate), self.run_relay([stream], gate)
            )


class CollectPropertyTests(SynchronousTestCase):
    def run_collect(self, chunks):
        captured = CapturedLog()
        factory = CollectFactory(captured.log, maxLine=MAX_LINE, greeting=b"")
        proto, transport = connect(factory)
        result = feed(proto, transport, chunks)
        disconnect(proto)
        return captured.messages()[1:-1], result

    @noDeadline
    @given(streams, cutLists)
    @example(b"\n" + b"x" * 9 + b"\n", [1])
    def test_chunkingDoesNotMatter(self, data, cuts):
        """
        The example: a first line, then a long one in the same read. The
        connection closes with the first, so the long one is not refused.
        """
        self.assertEqual(self.run_collect(chunked(data, cuts)), self.run_collect([data]))


class NothingEscapesTests(SynchronousTestCase):
    """
    Any bytes, in any chunking, with the transport pausing, resuming and
    timing out in between, and the connection lost at any point: every
    protocol handles it without raising.
    """

    events = st.lists(
        st.one_of(
            st.binary(max_size=24),
            st.sampled_from(["pause", "resume", "tick", "lose"]),
        ),
        max_size=30,
    )

    def play(self, factory, events, clock):
        proto, transport = connect(factory, 5001)
        other, _ = connect(factory, 5002)
        for event in events:
            if isinstance(event, bytes):
                proto.dataReceived(event)
                other.dataReceived(event[::-1])
            elif event == "lose":
                disconnect(proto)
                return
            elif event == "tick":
                clock.advance(1)
            elif transport.producer is not None:
                getattr(transport.producer, f"{event}Producing")()
        disconnect(proto)

    @settings(max_examples=200, deadline=None)
    @given(st.sampled_from(["greet", "collect", "relay", "relay-token"]), events)
    def test_noException(self, mode, events):
        clock = Clock()
        limits = Limits(clock, idleTimeout=2, maxConnections=5, maxPerIP=5, maxBuffer=16)
        common = dict(log=CapturedLog().log, maxLine=MAX_LINE, limits=limits)
        factory = {
            "greet": lambda: GreetFactory(**common),
            "collect": lambda: CollectFactory(**common),
            "relay": lambda: RelayFactory(hub=LocalHub(), **common),
            "relay-token": lambda: RelayFactory(hub=LocalHub(), gate=TokenGate(b"t"), **common),
        }[mode]()
        self.play(factory, events, clock)
        clock.advance(10)
