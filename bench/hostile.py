"""
Attack a real C{twistd -n sockservice} as hostile and bursty clients would,
on 127.0.0.1 only, and check the bounds docs/security-and-limits.md states.

    .venv/bin/python bench/hostile.py [--clients 9990] [--hold 8] [--only ATTACK ...]

Each attack gets a fresh server at the default options (but for the mode,
the greeting relay needs for its probe, and TLS where named) and prints:
the clients used, the server's resident memory before, at its peak and after
the attackers left, the longest a fresh, well-behaved client took to be
greeted and answered (one every half second while the attack is held), and
pass/fail: peak under 512 MiB and every fresh client answered within 1 s. The burst attack passes when every
client is greeted within 2 s and the kernel's TcpExtListenOverflows counter
(/proc/net/netstat, system-wide: other programs can move it) did not move.

The attackers hold at most --clients sockets, each asking for a 4 KiB
receive buffer so the kernel keeps little for them: what a server could
leave in the kernel it holds itself. The run raises its own open-file limit,
and ends on its own (a few minutes at the defaults). Exit status 1 if any
attack failed.
"""

import argparse
import os
import selectors
import socket
import ssl
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.procstat import mebibytes  # noqa: E402
from bench.run import BenchError, Server, raiseFileLimit  # noqa: E402
from tests.realserver import twistdCommand  # noqa: E402

MEMORY_BOUND = 512 << 20
ANSWER_BOUND = 1.0
BURST_BOUND = 2.0
MAX_LINE = 65536


def attackerSocket(port):
    """
    A connected attacker: a small receive buffer, non-blocking.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def sendSome(sock, data):
    """
    Send what the socket takes of C{data} now, never waiting.
    """
    try:
        return sock.send(data)
    except OSError:
        return 0


def listenOverflows(netstat="/proc/net/netstat"):
    """
    The kernel's TcpExt ListenOverflows counter, system-wide.
    """
    lines = Path(netstat).read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    return 0


class Probe:
    """
    A fresh, well-behaved client: connects, waits for the greeting, sends a
    line and waits for its answer, on blocking sockets with a timeout.
    """

    def __init__(self, port, tls=None):
        self.port = port
        self.tls = tls

    def connect(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname="localhost")
        return sock

    def readUntil(self, sock, line):
        """
        Read until C{line} (ending in LF) has come as a whole line, keeping
        only the end of what came before: a relay probe reads a blast.
        """
        tail = b""
        while (b"\n" + line) not in (b"\n" + tail):
            chunk = sock.recv(65536)
            if not chunk:
                raise BenchError(f"probe: closed after {tail[-80:]!r}")
            tail = tail[-len(line) - 1:] + chunk

    def greetAnswer(self):
        """
        Seconds from connecting to the ack of one line (greet).
        """
        started = time.monotonic()
        with self.connect() as sock:
            self.readUntil(sock, b"connect\n")
            sock.sendall(b"probe\n")
            self.readUntil(sock, b"Information Received\n")
        return time.monotonic() - started

    def relayAnswer(self):
        """
        Seconds from connecting two clients to one's line reaching the other
        (relay, greeting C{hi}).
        """
        started = time.monotonic()
        with self.connect() as speaker, self.connect() as listener:
            self.readUntil(speaker, b"hi\n")
            self.readUntil(listener, b"hi\n")
            speaker.sendall(b"probe\n")
            self.readUntil(listener, b"probe\n")
        return time.monotonic() - started


class Sampler(threading.Thread):
    """
    Samples the server's resident memory every 50 ms; L{peak} is the most.
    """

    def __init__(self, server):
        threading.Thread.__init__(self, daemon=True)
        self.server = server
        self.peak = server.rss()
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.05):
            try:
                self.peak = max(self.peak, self.server.rss())
            except (OSError, AttributeError):
                return

    def stop(self):
        self.stopping.set()
        self.join()
        return self.peak


class Blaster(threading.Thread):
    """
    A relay client that sends lines as fast as the server takes them until
    stopped, reading (and dropping) what is relayed to it.
    """

    def __init__(self, port):
        threading.Thread.__init__(self, daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.setblocking(False)
        self.stopping = threading.Event()
        self.sent = 0

    def run(self):
        data = (b"x" * 99 + b"\n") * 640
        with selectors.DefaultSelector() as selector:
            selector.register(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while not self.stopping.is_set():
                for key, events in selector.select(0.1):
                    if events & selectors.EVENT_READ:
                        try:
                            self.sock.recv(65536)
                        except OSError:
                            pass
                    if events & selectors.EVENT_WRITE:
                        self.sent += sendSome(self.sock, data)

    def stop(self):
        self.stopping.set()
        self.join()
        self.sock.close()


class Attacks:
    def __init__(self, arguments, workdir):
        self.arguments = arguments
        self.workdir = workdir
        self.results = []

    def server(self, name, serverArgs=(), listen=None):
        """
        A fresh C{twistd -n sockservice SERVERARGS} on 127.0.0.1, or on
        C{listen}.
        """
        where = ["--listen", listen] if listen else ["--interface", "127.0.0.1", "--port", "0"]
        return Server(name, [twistdCommand(), "-n", "--pidfile=", "sockservice",
                             *serverArgs, *where], self.workdir)

    @contextmanager
    def attacking(self, name, serverArgs=(), listen=None):
        """
        A fresh server under attack: yields a L{Figures} whose C{server} and
        C{sockets} (the attackers) the block uses; when it is done the
        attackers close, and the figures get the server's RSS before, at
        its peak during the block, and 3 s after the attackers left.
        """
        figures = Figures(self.server(name, serverArgs, listen))
        try:
            time.sleep(0.5)
            figures.before = figures.server.rss()
            sampler = Sampler(figures.server)
            sampler.start()
            try:
                yield figures
            finally:
                figures.peak = sampler.stop()
            for sock in figures.sockets:
                sock.close()
            time.sleep(3)
            figures.after = figures.server.rss()
        finally:
            for sock in figures.sockets:
                sock.close()
            figures.server.stop()

    def run(self, name, serverArgs, attack, answer, tls=None, listen=None):
        """
        Attack a fresh server with C{attack(port, sockets)}, probe it with
        C{answer(probe)} every half second for C{--hold} seconds once all
        attackers are on, and record the figures (the slowest answer).
        """
        with self.attacking(name, serverArgs, listen) as figures:
            extra = attack(figures.server.port, figures.sockets)
            answered = 0.0
            probe = Probe(figures.server.port, tls)
            holding = time.monotonic() + self.arguments.hold
            while time.monotonic() < holding:
                try:
                    answered = max(answered, answer(probe))
                except (BenchError, OSError) as e:
                    print(f"bench/hostile.py: {name}: {e}", file=sys.stderr)
                    answered = float("inf")
                    break
                time.sleep(0.5)
            if extra is not None:
                extra.stop()
        passed = figures.peak < MEMORY_BOUND and answered < ANSWER_BOUND
        self.results.append((name, len(figures.sockets), figures.before, figures.peak,
                             figures.after, f"{answered:.3f} s", passed))

    def connectAll(self, port, sockets, then=None):
        for _ in range(self.arguments.clients):
            sock = attackerSocket(port)
            sockets.append(sock)
            if then is not None:
                then(sock)

    # The attacks.

    def greetNewlines(self):
        """
        greet: every client sends 64 KiB of bare newlines and never reads.
        """
        flood = b"\n" * 65536
        self.run("greet: bare newlines, never read", [],
                 lambda port, sockets: self.connectAll(port, sockets,
                                                       lambda s: sendSome(s, flood)),
                 Probe.greetAnswer)

    def partialLines(self):
        """
        greet: every client holds a partial line one byte short of --max-line.
        """
        partial = b"x" * (MAX_LINE - 1)
        self.run("greet: partial lines of 65,535 bytes", [],
                 lambda port, sockets: self.connectAll(port, sockets,
                                                       lambda s: sendSome(s, partial)),
                 Probe.greetAnswer)

    def relayNonReaders(self):
        """
        relay: clients that read nothing while one sender blasts.
        """

        def attack(port, sockets):
            self.connectAll(port, sockets)
            blaster = Blaster(port)
            blaster.start()
            return blaster

        self.run("relay: non-readers, one sender blasting", ["--mode", "relay", "--greeting",
                                                             "hi"], attack, Probe.relayAnswer)

    def tlsStall(self):
        """
        greet over TLS: clients that stop halfway through their ClientHello.
        """
        from tests.support import makeCertificate

        keyPath, certPath = makeCertificate(tempfile.mkdtemp())
        hello = clientHello()
        tls = ssl.create_default_context(cafile=certPath)

        def attack(port, sockets):
            self.connectAll(port, sockets, lambda s: sendSome(s, hello[: len(hello) // 2]))

        self.run("greet over TLS: stalled handshakes", [], attack, Probe.greetAnswer, tls=tls,
                 listen=f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}")

    def burst(self):
        """
        5,000 clients connecting at once, each waiting for its greeting.
        """
        count = min(5000, self.arguments.clients)
        with self.attacking("burst") as figures:
            overflows = listenOverflows()
            started = time.monotonic()
            with selectors.DefaultSelector() as selector:
                for _ in range(count):
                    sock = socket.socket()
                    sock.setblocking(False)
                    sock.connect_ex(("127.0.0.1", figures.server.port))
                    figures.sockets.append(sock)
                    selector.register(sock, selectors.EVENT_READ)
                greeted = 0
                deadline = started + 20
                while greeted < count and time.monotonic() < deadline:
                    for key, _ in selector.select(0.5):
                        selector.unregister(key.fileobj)
                        greeted += 1
            took = time.monotonic() - started
            moved = listenOverflows() - overflows
        passed = greeted == count and took < BURST_BOUND and moved == 0
        self.results.append((f"burst: {count:,} connect at once ({greeted:,} greeted, "
                             f"ListenOverflows +{moved})", count, figures.before, figures.peak,
                             figures.after, f"{took:.3f} s (all)", passed))


class Figures:
    """
    One attack's server, its attackers and its memory figures.
    """

    def __init__(self, server):
        self.server = server
        self.sockets = []
        self.before = self.peak = self.after = 0


def clientHello():
    """
    The first flight of a real TLS client, to send half of.
    """
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


ATTACKS = {
    "greet-newlines": Attacks.greetNewlines,
    "partial-lines": Attacks.partialLines,
    "relay-nonreaders": Attacks.relayNonReaders,
    "tls-stall": Attacks.tlsStall,
    "burst": Attacks.burst,
}


def formatTable(results):
    rows = ["| attack | clients | RSS before | RSS peak | RSS after | fresh client answered "
            "| result |", "|---|---|---|---|---|---|---|"]
    for name, clients, before, peak, after, answered, passed in results:
        rows.append(f"| {name} | {clients:,} | {mebibytes(before)} | {mebibytes(peak)} | "
                    f"{mebibytes(after)} | {answered} | {'pass' if passed else 'FAIL'} |")
    return "\n".join(rows)


def parseArguments(argv):
    parser = argparse.ArgumentParser(
        prog="bench/hostile.py",
        description="Attack a real sockservice on 127.0.0.1 and check its bounds.",
    )
    parser.add_argument("--clients", type=int, default=9990,
                        help="attackers per attack (default 9990: the default "
                             "--max-connections, 10,000, less room for the probes)")
    parser.add_argument("--hold", type=float, default=8.0,
                        help="seconds each attack is held, probed every half second (default 8)")
    parser.add_argument("--only", nargs="+", choices=sorted(ATTACKS),
                        help="run only these attacks")
    return parser.parse_args(argv)


def main(argv=None):
    arguments = parseArguments(argv)
    limit = raiseFileLimit(arguments.clients + 10064)
    if limit < arguments.clients + 100:
        print(f"bench/hostile.py: the open-file limit ({limit}) is too low for "
              f"{arguments.clients} clients: raise the hard limit (ulimit -Hn)", file=sys.stderr)
        return 2
    attacks = Attacks(arguments, Path(tempfile.mkdtemp(prefix="sockservice-hostile-")))
    try:
        for name in arguments.only or ATTACKS:
            ATTACKS[name](attacks)
            print(formatTable(attacks.results[-1:]).splitlines()[-1], flush=True)
    except BenchError as e:
        print(f"bench/hostile.py: {e}", file=sys.stderr)
        return 1
    print()
    print(f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
          "bounds: RSS peak under 512 MiB, fresh client within 1 s, burst within 2 s")
    print(formatTable(attacks.results))
    return 0 if all(result[-1] for result in attacks.results) else 1


if __name__ == "__main__":
    sys.exit(main())
