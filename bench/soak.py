"""
A bounded soak of the real servers: for a set time, many clients connect,
talk, reset, stall and leave against greet and relay, then the run checks
that well-behaved clients lost nothing, that the servers hold no more file
descriptors than before, and that their memory is back near where it began.

    python -m bench.soak [--seconds 20] [--clients 40] [--seed N]

Exits 0 when every check holds, 1 otherwise, printing figures either way.
Traffic goes to 127.0.0.1 only and stops by itself.
"""

import argparse
import random
import socket
import tempfile
from collections import Counter

from twisted.internet.defer import DeferredList, gatherResults, inlineCallbacks
from twisted.internet.task import deferLater, react
from twisted.protocols.basic import LineReceiver

from bench.procstat import describeDescriptors, mebibytes, openDescriptors, residentBytes
from tests.realserver import DigestPeer, Peer, connectProtocolTo, spawnTwistd

GREETING = b"hi\n"
STEADY = b"\x01"  # starts the steady members' lines; no other client sends it
ACK = b"Information Received\n"
SEND_EVERY = 0.02
WAIT = 30
SETTLE = 15
RSS_MARGIN = 16 * 2**20
#: relay's --max-buffer here: the default, 1 MiB. A steady member reads all
#: the time, but in this one process with every other client; with its kernel
#: send buffer capped at 32 KiB (wire/limits.py), what it owes waits in the
#: server, and two churners' 256 KiB bursts at once overflowed 256 KiB.
RELAY_MAX_BUFFER = 1 << 20


class SteadyMember(LineReceiver):
    """
    A relay client connected for the whole soak, checking that the lines of
    every other steady member arrive complete and in order.

    @ivar seen: the next sequence number expected from each steady sender.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 17

    def __init__(self, name, failures):
        self.name = name
        self.failures = failures
        self.seen = Counter()

    def lineReceived(self, line):
        if not line.startswith(STEADY):
            return
        sender, seq = line[1:].split(b" ")
        if int(seq) != self.seen[sender]:
            self.failures.append(
                f"steady {self.name}: from {sender.decode()} got {int(seq)}, "
                f"expected {self.seen[sender]}"
            )
        self.seen[sender] = int(seq) + 1

    def connectionLost(self, reason):
        if not self.leaving:
            self.failures.append(f"steady {self.name} lost: {reason.getErrorMessage()}")

    leaving = False


class Soak:
    """
    One soak run against a greet and a relay server.
    """

    def __init__(self, reactor, seconds, clients, seed):
        self.reactor = reactor
        self.seconds = seconds
        self.clients = clients
        self.random = random.Random(seed)
        self.failures = []
        self.sessions = Counter()

    def sleep(self, seconds):
        return deferLater(self.reactor, seconds, lambda: None)

    def bounded(self, d):
        """
        C{d}, failing after L{WAIT} seconds so the soak always ends.
        """
        return d.addTimeout(WAIT, self.reactor)

    @inlineCallbacks
    def run(self):
        greet = spawnTwistd(
            tempfile.mkdtemp(prefix="sockservice-soak-"),
            "--interface", "127.0.0.1", "--port", "0", "--greeting", "hi",
        )
        relay = spawnTwistd(
            tempfile.mkdtemp(prefix="sockservice-soak-"),
            "--mode", "relay", "--interface", "127.0.0.1", "--port", "0",
            "--max-buffer", str(RELAY_MAX_BUFFER),
        )
        try:
            self.greetPort = yield greet.listening
            self.relayPort = yield relay.listening
            servers = {"greet": greet, "relay": relay}
            # twistd starts its reactor (and opens its signal pipes) after it
            # listens: one session each first, so the baseline is the idle one.
            yield self.greetTalker()
            yield self.leaver(self.relayPort)
            yield self.sleep(0.5)
            before = {name: self.measure(s) for name, s in servers.items()}
            self.deadline = self.reactor.seconds() + self.seconds
            steady = yield self.steadyMembers(4)
            yield DeferredList(
                [self.steadySender(member, steady) for member in steady]
                + [self.worker() for _ in range(self.clients)]
            )
            yield self.caughtUp(steady)
            for member in steady:
                member.leaving = True
                member.transport.loseConnection()
            after = yield self.settled(servers, before)
            self.report(servers, before, after)
        finally:
            yield gatherResults([greet.stop(), relay.stop()])
        return not self.failures

    def measure(self, server):
        pid = server.transport.pid
        return openDescriptors(pid), residentBytes(pid)

    @inlineCallbacks
    def settled(self, servers, before):
        """
        Wait until each server is back to its open descriptors from before
        (closing and aborting take a moment), or L{SETTLE} seconds.
        """
        for _ in range(int(SETTLE / 0.2)):
            after = {name: self.measure(s) for name, s in servers.items()}
            if all(after[name][0] <= before[name][0] for name in servers):
                break
            yield self.sleep(0.2)
        return after

    def report(self, servers, before, after):
        print(f"soak: {self.seconds}s, {self.clients} clients at a time; sessions: "
              + ", ".join(f"{kind} {n}" for kind, n in sorted(self.sessions.items())))
        for name, server in servers.items():
            (fdsBefore, rssBefore), (fdsAfter, rssAfter) = before[name], after[name]
            print(f"{name}: open fds {fdsBefore} before, {fdsAfter} after; "
                  f"RSS {mebibytes(rssBefore)} before, {mebibytes(rssAfter)} after")
            event = {"greet": b"reading from it paused", "relay": b"is too slow"}[name]
            print(f"{name}: {event.decode()}: {server.output.count(event)} times "
                  "(those logged one by one; the rest fold into summaries)")
            if fdsAfter > fdsBefore:
                self.failures.append(
                    f"{name}: {fdsAfter - fdsBefore} descriptors left open: "
                    f"{describeDescriptors(server.transport.pid)}"
                )
            if rssAfter > rssBefore + RSS_MARGIN:
                self.failures.append(
                    f"{name}: RSS {mebibytes(rssAfter - rssBefore)} above where it began"
                )
            if b"Traceback" in server.output:
                self.failures.append(f"{name}: traceback in the log")
        for failure in self.failures:
            print(f"FAILED: {failure}")
        print("soak: " + ("FAILED" if self.failures else "ok"))

    @inlineCallbacks
    def steadyMembers(self, count):
        members = []
        for n in range(count):
            member = SteadyMember(f"S{n}".encode(), self.failures)
            members.append((yield connectProtocolTo(self.relayPort, member)))
        return members

    @inlineCallbacks
    def steadySender(self, member, steady):
        """
        Send numbered lines until the deadline; they must reach the others.
        """
        member.sent = 0
        while self.reactor.seconds() < self.deadline:
            member.sendLine(STEADY + b"%s %d" % (member.name, member.sent))
            member.sent += 1
            yield self.sleep(SEND_EVERY)

    @inlineCallbacks
    def caughtUp(self, steady):
        for _ in range(int(SETTLE / 0.2)):
            if all(m.seen[o.name] == o.sent for m in steady for o in steady if o is not m):
                return
            yield self.sleep(0.2)
        for m in steady:
            for o in steady:
                if o is not m and m.seen[o.name] != o.sent:
                    self.failures.append(
                        f"steady {m.name.decode()} got {m.seen[o.name]} of "
                        f"{o.sent} lines from {o.name.decode()}"
                    )

    @inlineCallbacks
    def worker(self):
        """
        Run one random session after another until the deadline.
        """
        sessions = [
            self.greetTalker, self.greetStaller, self.greetResetter, self.leaver,
            self.relayChurner, self.relayStaller,
        ]
        while self.reactor.seconds() < self.deadline:
            session = self.random.choice(sessions)
            self.sessions[session.__name__] += 1
            try:
                yield session()
            except Exception as e:
                self.failures.append(f"{session.__name__}: {e!r}")

    def lines(self, count, size=40):
        return b"".join(
            bytes(self.random.randrange(32, 127) for _ in range(self.random.randrange(size)))
            + self.random.choice([b"\n", b"\r\n"])
            for _ in range(count)
        )

    def sendChunked(self, transport, data):
        while data:
            cut = self.random.randrange(1, len(data) + 1)
            transport.write(data[:cut])
            data = data[cut:]

    @inlineCallbacks
    def greetTalker(self):
        """
        Well behaved: pipelined lines in random pieces; every ack must come.
        """
        peer = yield connectProtocolTo(self.greetPort, Peer())
        count = self.random.randrange(1, 50)
        self.sendChunked(peer.transport, self.lines(count))
        expected = GREETING + ACK * count
        got = yield self.bounded(peer.receive(len(expected)))
        if got != expected:
            self.failures.append(f"greetTalker: {len(got)} bytes, not the {count} acks")
        peer.transport.loseConnection()
        yield self.bounded(peer.closed)

    @inlineCallbacks
    def greetStaller(self):
        """
        Pipelines 200,000 lines without reading (4 MB of acks), stalls, then
        either resets or reads on and must get every ack.
        """
        peer = yield connectProtocolTo(self.greetPort, DigestPeer())
        peer.transport.pauseProducing()
        count = 200_000
        peer.transport.write(b"x\n" * count)
        yield self.sleep(self.random.uniform(0.1, 1.0))
        if self.random.random() < 0.5:
            peer.transport.abortConnection()
        else:
            peer.transport.resumeProducing()
            yield self.bounded(peer.receive(len(GREETING) + count * len(ACK)))
            if peer.count != len(GREETING) + count * len(ACK):
                self.failures.append(f"greetStaller: {peer.count} bytes, not {count} acks")
            peer.transport.loseConnection()
        yield self.bounded(peer.closed)

    @inlineCallbacks
    def greetResetter(self):
        peer = yield connectProtocolTo(self.greetPort, Peer())
        peer.transport.write(self.lines(self.random.randrange(1, 20)))
        yield self.sleep(self.random.uniform(0, 0.2))
        peer.transport.abortConnection()
        yield self.bounded(peer.closed)

    @inlineCallbacks
    def leaver(self, port=None):
        """
        Sends half a line to either server and closes.
        """
        if port is None:
            port = self.random.choice([self.greetPort, self.relayPort])
        peer = yield connectProtocolTo(port, Peer())
        peer.transport.write(b"no line ending")
        peer.transport.loseConnection()
        yield self.bounded(peer.closed)

    @inlineCallbacks
    def relayChurner(self):
        """
        Joins, sends a few lines (sometimes a 256 KiB burst), reads a while,
        leaves cleanly or with a reset.
        """
        peer = yield connectProtocolTo(self.relayPort, DigestPeer())
        if self.random.random() < 0.2:
            peer.transport.write((b"C" + b"b" * 65000 + b"\n") * 4)
        else:
            peer.transport.write(b"C" + self.lines(self.random.randrange(1, 10)))
        yield self.sleep(self.random.uniform(0, 0.5))
        if self.random.random() < 0.5:
            peer.transport.abortConnection()
        else:
            peer.transport.loseConnection()
        yield self.bounded(peer.closed)

    @inlineCallbacks
    def relayStaller(self):
        """
        Joins and stops reading for a while, then resets.
        """
        peer = yield connectProtocolTo(self.relayPort, DigestPeer())
        peer.transport.pauseProducing()
        peer.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        yield self.sleep(self.random.uniform(0.5, 3.0))
        peer.transport.abortConnection()
        yield self.bounded(peer.closed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    seed = random.randrange(2**32) if args.seed is None else args.seed
    print(f"soak: seed {seed}")

    @inlineCallbacks
    def soak(reactor):
        passed = yield Soak(reactor, args.seconds, args.clients, seed).run()
        if not passed:
            raise SystemExit(1)

    react(soak)


if __name__ == "__main__":
    main()
