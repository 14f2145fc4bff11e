"""
Cross-node relay figures: deliveries per second and latency between two relay
nodes on one Redis stream, next to one node without a backplane, on this
machine, at each window in one run, with the cross-node to single-node ratio.

    .venv/bin/python bench/crossnode.py [--senders 4] [--receivers 8] [--windows 1 16] [--seconds 5]
                                        [--rounds 1] [--baseline CHECKOUT]

Self-contained: starts its own redis-server (Debian's package) on a free
loopback port, and the relay nodes with the twistd beside this interpreter;
stops them all when done. With --baseline (another checkout of this
repository, say `git worktree add /tmp/base main`), two more nodes run that
checkout's code on a stream of their own, and each round measures both
versions' cross-node scenarios one after the other (which goes first
alternates), so that on a shared machine the two see the same load. Senders keep at most --window messages each not
yet received by every receiver; a message carries its send time, so latency
is from send to each receipt. The CPU time the servers (relay nodes and
Redis) took per line sent tells the versions apart where the rates, on a
shared machine, do not; the CPU time this process took per line sent (the
load generator: "client µs/line") shows how much of the machine the client
itself took. Traffic stays on 127.0.0.1 and each scenario stops after
--seconds.
"""

import argparse
import itertools
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procstat import cpuSeconds  # noqa: E402
from tests.realserver import freePort  # noqa: E402

SCENARIOS = itertools.count()
SINGLE = "one node, no backplane"
ACROSS = "across nodes (send on one, receive on two)"
OF_TWO = "one node of two, with Redis"
BASELINE = " (baseline)"
LISTENING = re.compile(rb"mode listening on 127\.0\.0\.1:(\d+)")
READING = b": reading "


def waitFor(process, logPath, pattern, seconds=15):
    """
    Wait until the log at C{logPath} matches C{pattern}; return the match.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open(logPath, "rb") as log:
            match = re.search(pattern, log.read())
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise SystemExit(f"crossnode: no {pattern!r} in {logPath}")


class Processes:
    """
    Child processes with their logs in one temporary directory.
    """

    def __init__(self):
        self.directory = tempfile.mkdtemp(prefix="crossnode-")
        self.children = []

    def start(self, name, argv, env=None):
        logPath = os.path.join(self.directory, name + ".log")
        with open(logPath, "wb") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, env=env
            )
        self.children.append(process)
        return process, logPath

    def relay(self, name, *args, checkout=None):
        """
        Start a relay node, of the code in C{checkout} if given; return its
        port once it listens (and reads the stream, with a backplane).
        """
        env = None
        if checkout is not None:
            env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        process, logPath = self.start(name, [
            twistd, "-n", "--pidfile=", "sockservice", "--mode", "relay",
            "--interface", "127.0.0.1", "--port", "0", *args,
        ], env)
        port = int(waitFor(process, logPath, LISTENING).group(1))
        if args:
            waitFor(process, logPath, READING)
        return port

    def cpuSeconds(self):
        """
        The CPU time (user and system) that the children used so far.
        """
        return sum(cpuSeconds(process.pid) for process in self.children)

    def stop(self):
        for process in self.children:
            process.terminate()
        for process in self.children:
            process.wait(10)
        shutil.rmtree(self.directory, ignore_errors=True)


class Driver:
    """
    Senders and receivers on non-blocking sockets in one select loop.
    """

    def __init__(self, senderPort, receiverPort, senders, receivers, window):
        self.selector = selectors.DefaultSelector()
        self.window = window
        self.senders = [self._connect(senderPort) for _ in range(senders)]
        self.receivers = [self._connect(receiverPort) for _ in range(receivers)]
        self.next = [0] * senders
        # seen[r][s]: messages of sender s that receiver r has had
        self.seen = [[0] * senders for _ in range(receivers)]
        self.buffers = {}
        self.latencies = []
        self.deliveries = 0
        self.bad = 0
        self.tag = b"#m%d" % next(SCENARIOS)

    def _connect(self, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return sock

    def run(self, seconds):
        time.sleep(0.3)  # let the nodes register every client first
        for index, sock in enumerate(self.senders):
            self.selector.register(sock, selectors.EVENT_READ, (None, index))
        for index, sock in enumerate(self.receivers):
            self.selector.register(sock, selectors.EVENT_READ, (index, None))
            self.buffers[sock] = b""
        for sender in range(len(self.senders)):
            self._fill(sender)
        start = time.monotonic()
        end = start + seconds
        while (now := time.monotonic()) < end:
            for key, events in self.selector.select(end - now):
                receiver, sender = key.data
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                if receiver is not None:
                    self._received(receiver, key.fileobj, data)
        elapsed = time.monotonic() - start
        for sock in self.senders + self.receivers:
            sock.close()
        return elapsed

    def _fill(self, sender):
        base = min(seen[sender] for seen in self.seen)
        lines = []
        while self.next[sender] - base < self.window:
            lines.append(b"%s:%d:%d:%d\n" % (
                self.tag, sender, self.next[sender], time.perf_counter_ns()))
            self.next[sender] += 1
        if lines:
            self.senders[sender].sendall(b"".join(lines))

    def _received(self, receiver, sock, data):
        now = time.perf_counter_ns()
        lines = (self.buffers[sock] + data).split(b"\n")
        self.buffers[sock] = lines.pop()
        seen = self.seen[receiver]
        touched = set()
        for line in lines:
            try:
                tag, sender, seq, sent = line.split(b":")
                sender, seq = int(sender), int(seq)
            except ValueError:
                self.bad += 1
                continue
            if tag != self.tag:
                # An earlier scenario's line, still crossing nodes.
                continue
            if seq != seen[sender]:
                self.bad += 1
            seen[sender] = seq + 1
            self.deliveries += 1
            self.latencies.append(now - int(sent))
            touched.add(sender)
        for sender in touched:
            self._fill(sender)


def measure(name, processes, senderPort, receiverPort, options, window):
    """
    One scenario's row: its name, deliveries a second, p50 and p99 latency
    in ms, the CPU time the servers (nodes and Redis) took per line sent, in
    µs, the CPU time this process (the load generator) took per line sent,
    and the lines out of their sender's order.
    """
    driver = Driver(senderPort, receiverPort, options.senders, options.receivers, window)
    cpu = processes.cpuSeconds()
    client = time.process_time()
    elapsed = driver.run(options.seconds)
    client = time.process_time() - client
    cpu = processes.cpuSeconds() - cpu
    latencies = sorted(driver.latencies) or [0]
    lines = driver.deliveries / options.receivers
    return (
        name,
        driver.deliveries / elapsed,
        latencies[len(latencies) // 2] / 1e6,
        latencies[int(len(latencies) * 0.99)] / 1e6,
        cpu * 1e6 / lines if lines else 0,
        client * 1e6 / lines if lines else 0,
        driver.bad,
    )


def crossScenarios(processes, one, two, options, window, label=""):
    """
    The two scenarios with a backplane, on nodes C{one} and C{two}.
    """
    # Across nodes before one node of two: what that sends on node one also
    # reaches node two, which would still be reading it.
    return [
        (window,) + measure(ACROSS + label, processes, one, two, options, window),
        (window,) + measure(OF_TWO + label, processes, one, one, options, window),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--receivers", type=int, default=8)
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also measure the nodes of this checkout, alternating")
    options = parser.parse_args()
    redisServer = shutil.which("redis-server")
    if redisServer is None:
        raise SystemExit("crossnode: redis-server is not installed (apt-get install redis-server)")
    if options.baseline and not os.path.isdir(os.path.join(options.baseline, "sockservice")):
        raise SystemExit(f"crossnode: no sockservice package in {options.baseline}")
    # Stopped with SIGTERM, still stop the servers it started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    processes = Processes()
    rounds = []
    try:
        redisPort = freePort()
        redis, redisLog = processes.start("redis", [
            redisServer, "--port", str(redisPort), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", processes.directory,
        ])
        waitFor(redis, redisLog, b"Ready to accept connections")
        backplane = ("--backplane", f"redis://127.0.0.1:{redisPort}")
        single = processes.relay("single")
        versions = [("", processes.relay("one", *backplane), processes.relay("two", *backplane))]
        if options.baseline:
            # A stream of their own: neither pair reads what the other sends.
            baseline = (*backplane, "--channel", "sockservice:baseline")
            versions.append((BASELINE, *(
                processes.relay(name, *baseline, checkout=options.baseline)
                for name in ("baseline-one", "baseline-two")
            )))
        for number in range(options.rounds):
            rows = []
            for window in options.windows:
                rows.append((window,) + measure(SINGLE, processes, single, single, options, window))
                for label, one, two in versions[number % 2:] + versions[:number % 2]:
                    rows += crossScenarios(processes, one, two, options, window, label)
            rounds.append(rows)
    finally:
        processes.stop()
    version = subprocess.run([redisServer, "--version"], capture_output=True).stdout.split()[2]
    print(
        f"{options.senders} senders, {options.receivers} receivers, "
        f"{options.seconds:g}s each, redis-server {version.decode()} (Redis streams)"
    )
    for number, rows in enumerate(rounds, 1):
        if len(rounds) > 1:
            print(f"round {number}")
        print(f"{'window':>6} {'scenario':56} {'deliveries/s':>13} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'CPU µs/line':>12} {'client µs/line':>15} {'out of order':>13}")
        for window, name, rate, p50, p99, cpu, client, bad in rows:
            print(f"{window:6d} {name:56} {rate:13.0f} {p50:8.2f} {p99:8.2f} {cpu:12.1f} "
                  f"{client:15.1f} {bad:13d}")
        for window in options.windows:
            print(f"window {window}: across nodes / one node = " + ", ".join(
                f"{ratio:.2f}{label}" for label, ratio in ratios(rows, window)
            ))
    if len(rounds) > 1:
        for window in options.windows:
            byLabel = {}
            for rows in rounds:
                for label, ratio in ratios(rows, window):
                    byLabel.setdefault(label, []).append(ratio)
            print(f"window {window}, median of {len(rounds)} rounds: across nodes / one node = "
                  + ", ".join(f"{statistics.median(r):.2f}{label}" for label, r in byLabel.items()))


def ratios(rows, window):
    """
    Each version's cross-node rate over the one node's, at C{window}, in
    one round's C{rows}: C{(label, ratio)} pairs.
    """
    rates = {name: rate for w, name, rate, *_ in rows if w == window}
    return [
        (label, rates[ACROSS + label] / rates[SINGLE])
        for label in ("", BASELINE) if ACROSS + label in rates
    ]


if __name__ == "__main__":
    main()
