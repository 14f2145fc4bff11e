"""
Benchmark sockservice against the C reference server in one run.

Starts the real C{twistd -n sockservice} in each mode and the C reference
(cbroker) beside it, drives both with a C load generator (loadgen) on
127.0.0.1, and prints each figure as a ratio to the reference. Both C tools
are compiled with C{gcc -O2} from this directory's own bench/loadgen.c and
bench/cbroker.c, so a checkout alone reproduces the ratios, or from
C{--tools DIR} / C{$SOCKSERVICE_TOOLS} to compare with other ones.

    .venv/bin/python bench/run.py [--duration 3] [--rounds 3] [--idle 5000]
                                  [--reactor directepoll epoll ...]
                                  [--server-args '--max-line 1024'] [--only greet-1 ...]
                                  [--metrics] [--baseline OLD/venv/bin/twistd]

Each reactor named gets its own sockservice server, measured in the same
rounds as the reference; with --metrics, a second one per reactor serves
/metrics (named REACTOR+metrics), scraped every second while measured.
With --baseline, an earlier sockservice (another checkout's venv) is
measured in the same rounds too, under the first reactor, so a change is
compared with the code before it on equal terms.

Only figures from one run compare: the machine may be busy with other work.
"""

import argparse
import os
import platform
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import websocket as websocketBench  # noqa: E402
from bench.procstat import cpuTimes  # noqa: E402
from bench.rounds import roundOrder  # noqa: E402
from tests.realserver import LISTENING, freePort, twistdCommand  # noqa: E402

#: The C reference serves at most this many connections (its MAXC, 4096,
#: less the descriptors it holds itself).
C_CONNECTIONS = 4000


class Figure:
    """
    One benchmark: a mode of both servers and the loadgen arguments.
    """

    def __init__(self, name, title, mode, loadgen, target):
        self.name = name
        self.title = title
        self.mode = mode
        self.loadgen = loadgen
        self.target = target


LOAD_FIGURES = [
    Figure("greet-1", "greet replies/s, 1 in flight", "greet",
           ["ack", "-c", "50", "-g", "1", "-p", "1"], 0.7),
    Figure("greet-16", "greet replies/s, 16 in flight", "greet",
           ["ack", "-c", "50", "-g", "1", "-p", "16"], 0.8),
    Figure("churn", "short connections/s", "greet",
           ["churn", "-c", "20", "-g", "1"], 0.8),
    Figure("relay", "relay deliveries/s (50 clients, 10 senders)", "relay",
           ["relay", "-c", "50", "-s", "10", "-w", "16"], 0.35),
]
#: The name of the server that --baseline runs.
BASELINE = "baseline"

IDLE = Figure("idle", "memory per idle connection", "greet", None, 2048)
FIGURES = {figure.name: figure for figure in LOAD_FIGURES + [IDLE]}
C_MODES = {"greet": "ack", "relay": "relay"}


class BenchError(Exception):
    """
    A reason the benchmark cannot go on, said in one line.
    """


def parseArguments(argv):
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Benchmark sockservice against the C reference (cbroker) in one run.",
    )
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per round of a load figure on each server (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds per load figure, alternating C and sockservice (default 3)")
    parser.add_argument("--idle", type=int, default=5000,
                        help="idle connections for the memory figure (default 5000)")
    parser.add_argument("--tools", default=os.environ.get("SOCKSERVICE_TOOLS"),
                        help="directory holding loadgen.c and cbroker.c "
                             "(default $SOCKSERVICE_TOOLS, else bench/ itself)")
    parser.add_argument("--reactor", nargs="+", default=["directepoll", "epoll"],
                        help="twistd --reactor for each sockservice server measured; "
                             "'default' runs it without one (default: directepoll epoll)")
    parser.add_argument("--server-args", default="",
                        help="more sockservice options for the greet servers, e.g. '--max-line 1024'")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES) + [websocketBench.NAME],
                        help="measure only these figures")
    parser.add_argument("--metrics", action="store_true",
                        help="also measure each reactor's server with --metrics on, "
                             "scraped every second")
    parser.add_argument("--baseline", metavar="TWISTD",
                        help="also measure the sockservice that this twistd runs (an earlier "
                             "checkout's venv/bin/twistd), under the first --reactor, in the same "
                             "rounds: the figures a change must not fall behind")
    arguments = parser.parse_args(argv)
    if arguments.baseline and not os.access(arguments.baseline, os.X_OK):
        parser.error(f"--baseline {arguments.baseline}: not an executable twistd")
    return arguments


def findTools(tools):
    """
    The C sources to build, by tool name: loadgen.c and cbroker.c from
    C{tools}, which must hold both, else this directory's own.
    """
    if tools:
        directory = Path(tools)
        for name in ("loadgen.c", "cbroker.c"):
            if not (directory / name).is_file():
                raise BenchError(
                    f"no {name} in {directory}: pass --tools DIR or set SOCKSERVICE_TOOLS"
                )
    else:
        directory = Path(__file__).resolve().parent
    return {name: directory / f"{name}.c" for name in ("loadgen", "cbroker")}


def compileTools(sources, build):
    """
    Compile each of C{sources} with C{gcc -O2} into C{build}.
    """
    compiler = os.environ.get("CC", "gcc")
    if shutil.which(compiler) is None:
        raise BenchError(f"{compiler} not found: install gcc (apt-get install -y gcc)")
    built = {}
    for name, source in sources.items():
        output = build / name
        result = subprocess.run(
            [compiler, "-O2", "-o", str(output), str(source)],
            capture_output=True, text=True,
        )
        if result.returncode:
            raise BenchError(f"{compiler} failed on {source.name}: {result.stderr.strip()}")
        built[name] = str(output)
    return built


def raiseFileLimit(wanted):
    """
    Raise the open-file limit (inherited by the servers) as far as the hard
    limit allows; return the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (hard != resource.RLIM_INFINITY and soft >= hard):
        return soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, wanted)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def waitUntil(check, what, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    raise BenchError(f"timed out waiting for {what}")


class Server:
    """
    A server process under test, listening on 127.0.0.1:C{port}.
    """

    def __init__(self, name, argv, workdir, port=None):
        self.name = name
        self.logPath = workdir / f"{name}.log"
        self._log = open(self.logPath, "wb")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir
        )
        self.port = port or waitUntil(self._listeningPort, f"{name} to listen")
        if port:
            waitUntil(self._accepting, f"{name} to accept")
        self._scraping = threading.Event()
        if name.endswith("+metrics"):
            url = waitUntil(self._metricsURL, f"{name} to serve metrics")
            threading.Thread(target=self._scrape, args=(url,), daemon=True).start()

    def _metricsURL(self):
        match = re.search(rb"metrics on (http://\S+/metrics)", self.logPath.read_bytes())
        return match and match.group(1).decode()

    def _scrape(self, url):
        """
        Scrape C{url} every second, as Prometheus would (every 15 s by
        default), until stopped.
        """
        while not self._scraping.wait(1.0):
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    response.read()
            except OSError:
                return

    def _listeningPort(self):
        self._checkRunning()
        match = LISTENING.search(self.logPath.read_bytes())
        return int(match.group(1)) if match else None

    def _accepting(self):
        self._checkRunning()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def _checkRunning(self):
        if self.process.poll() is not None:
            tail = self.logPath.read_bytes()[-400:].decode("utf-8", "replace")
            raise BenchError(f"{self.name} ended with status {self.process.returncode}: {tail}")

    def rss(self):
        """
        Resident memory of the server process, in bytes.
        """
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1)) * 1024

    def stop(self):
        self._scraping.set()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


class Bench:
    """
    @ivar names: the servers measured: C{"C"}, the reference, then one
        sockservice per reactor.
    """

    def __init__(self, arguments, tools, workdir):
        self.arguments = arguments
        self.tools = tools
        self.workdir = workdir
        self.measured = arguments.reactor + (
            [f"{reactor}+metrics" for reactor in arguments.reactor] if arguments.metrics else []
        ) + ([BASELINE] if arguments.baseline else [])
        self.names = ["C"] + self.measured

    def startC(self, mode):
        port = freePort()
        return Server(f"cbroker-{mode}", [self.tools["cbroker"], C_MODES[mode], str(port)],
                      self.workdir, port)

    def startSockservice(self, mode, name):
        twistd, reactor = twistdCommand(), name
        if name == BASELINE:
            twistd, reactor = self.arguments.baseline, self.arguments.reactor[0]
        reactor, metrics, _ = reactor.partition("+metrics")
        argv = [twistd, "-n", "--pidfile="]
        if reactor != "default":
            argv += ["--reactor", reactor]
        argv += ["sockservice", "--mode", mode, "--interface", "127.0.0.1", "--port", "0"]
        if metrics:
            argv += ["--metrics", "tcp:0:interface=127.0.0.1"]
        if mode == "greet":
            argv += shlex.split(self.arguments.server_args)
        return Server(f"sockservice-{mode}-{name}", argv, self.workdir)

    def start(self, mode, name):
        """
        Start the server called C{name}: C{"C"}, or sockservice under that
        reactor.
        """
        return self.startC(mode) if name == "C" else self.startSockservice(mode, name)

    def startAll(self, mode):
        """
        Every server in L{names}, by name.
        """
        servers = {}
        try:
            for name in self.names:
                servers[name] = self.start(mode, name)
        except BaseException:
            for server in servers.values():
                server.stop()
            raise
        return servers

    def loadgen(self, figure, server):
        argv = [self.tools["loadgen"], figure.loadgen[0], "127.0.0.1", str(server.port),
                *figure.loadgen[1:], "-d", str(self.arguments.duration)]
        userBefore, systemBefore = cpuTimes(server.process.pid)
        result = subprocess.run(argv, capture_output=True, text=True,
                                timeout=self.arguments.duration + 60)
        user, system = cpuTimes(server.process.pid)
        user, system = user - userBefore, system - systemBefore
        fields = dict(item.split("=", 1) for item in result.stdout.split() if "=" in item)
        if result.returncode or "error" in fields or "rate" not in fields:
            problem = (result.stdout + result.stderr).strip().replace("\n", "; ")
            return {"failed": problem or f"status {result.returncode}"}
        operations = float(fields["rate"]) * float(fields["secs"])
        measured = {"value": float(fields["rate"]),
                    "latency": (int(fields["p50_us"]), int(fields["p99_us"])),
                    "cpu": (user + system) * 1e6 / operations if operations else None,
                    "user": user * 1e6 / operations if operations else None}
        for wrong in ("echoes", "bad"):
            if int(fields.get(wrong, 0)):
                measured["failed"] = f"{wrong}={fields[wrong]}"
        return measured

    def idleMemory(self, server, count):
        """
        Bytes of server memory per idle connection: resident size grown by
        opening C{count} connections that each got their greeting.
        """
        with socket.create_connection(("127.0.0.1", server.port)) as warm:
            _greeting(warm)
        time.sleep(0.2)
        before = server.rss()
        clients = []
        try:
            # Batches within Twisted's default listen backlog (50): a full
            # backlog drops connection attempts, which retry after a second.
            for start in range(0, count, 25):
                batch = [socket.create_connection(("127.0.0.1", server.port), timeout=10)
                         for _ in range(min(25, count - start))]
                for client in batch:
                    _greeting(client)
                clients += batch
            time.sleep(0.5)
            after = server.rss()
        finally:
            for client in clients:
                client.close()
        return {"value": (after - before) / count, "latency": None, "count": count}

    def run(self, figures):
        """
        Measure C{figures}: a dict from each figure's name to what each
        server measured, by server name (C{"C"} or a reactor).
        """
        results = {}
        for mode in ("greet", "relay"):
            chosen = [f for f in LOAD_FIGURES if f.mode == mode and f.name in figures]
            if not chosen:
                continue
            servers = self.startAll(mode)
            try:
                for figure in chosen:
                    # Alternate the servers round by round, so a burst of
                    # other work on the machine hits them all alike.
                    rounds = [{name: self.loadgen(figure, servers[name])
                               for name in roundOrder(self.names, number)}
                              for number in range(self.arguments.rounds)]
                    results[figure.name] = {
                        name: _median([one[name] for one in rounds]) for name in servers
                    }
                    for name in servers:
                        results[figure.name][name]["rounds"] = [one[name] for one in rounds]
                        for part in ("cpu", "user"):
                            cpu = sorted(one[name][part] for one in rounds
                                         if one[name].get(part) is not None)
                            if cpu:
                                results[figure.name][name][part] = cpu[len(cpu) // 2]
                    for name in self.measured:
                        results[figure.name][name]["ratios"] = [
                            one[name]["value"] / one["C"]["value"] for one in rounds
                            if "failed" not in one["C"]
                            and "failed" not in one[name]]
            finally:
                for server in servers.values():
                    server.stop()
        if IDLE.name in figures:
            results[IDLE.name] = {}
            for name in self.names:
                count = min(self.arguments.idle, C_CONNECTIONS) if name == "C" else self.arguments.idle
                server = self.start("greet", name)
                try:
                    results[IDLE.name][name] = self.idleMemory(server, count)
                finally:
                    server.stop()
        return results


def _median(measured):
    """
    The round with the median rate; the first failure if any round failed.
    """
    for one in measured:
        if "failed" in one:
            return one
    ordered = sorted(measured, key=lambda one: one["value"])
    return dict(ordered[len(ordered) // 2])


def _greeting(client):
    data = b""
    while not data.endswith(b"\n"):
        chunk = client.recv(100)
        if not chunk:
            raise BenchError("server closed a connection before greeting it")
        data += chunk


def describeMachine(arguments):
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import twisted

    extra = f", sockservice {arguments.server_args}" if arguments.server_args else ""
    return (f"{os.cpu_count()} x {model}, Linux {platform.release()}, "
            f"Python {platform.python_version()}, Twisted {twisted.__version__}{extra}; "
            f"medians of {arguments.rounds} rounds of "
            f"{arguments.duration:g} s per figure and server")


def _number(value, figure):
    if figure is IDLE:
        return f"{value / 1024:.2f} KB"
    return f"{value:,.0f}"


def _latency(measured):
    latency = measured.get("latency")
    return f"{latency[0]} / {latency[1]}" if latency else ""


def _range(ratios):
    if not ratios:
        return ""
    return f"{min(ratios):.2f}-{max(ratios):.2f}"


def formatTable(results):
    lines = [
        "| figure | reactor | sockservice | C reference | ratio | rounds | target "
        "| p50 / p99 µs | C p50 / p99 µs | CPU µs/op | C CPU µs/op |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, measured in results.items():
        figure = FIGURES[name]
        c = measured["C"]
        for reactor, ours in measured.items():
            if reactor == "C":
                continue
            lines.append(f"| {_title(figure, ours, c)} | {reactor} | {_row(figure, ours, c)} |")
    return "\n".join(lines)


def formatRounds(results):
    """
    Every round's rate, per figure and server, in the order run: the
    medians in the table hide how far apart the rounds were.
    """
    lines = []
    for name, measured in results.items():
        for server, ours in measured.items():
            if "rounds" in ours:
                rates = ", ".join(
                    one.get("failed") or _number(one["value"], FIGURES[name])
                    for one in ours["rounds"]
                )
                lines.append(f"{name} {server}: {rates}")
    return "\n".join(lines)


def _title(figure, ours, c):
    if figure is IDLE and "count" in ours:
        return f"{figure.title} ({ours['count']}; C {c['count']})"
    return figure.title


def _row(figure, ours, c):
    """
    A table row's cells after the reactor; C{c} is what the reference
    measured.
    """
    failure = ours.get("failed") or (c.get("failed") and "C: " + c["failed"])
    if failure:
        return f"failed: {failure} | | | | | | | |"
    if figure is IDLE:
        target = f"<= {figure.target / 1024:g} KB"
    else:
        target = f">= {figure.target:g}"
    theirs = _number(c["value"], figure)
    ratio = f"{ours['value'] / c['value']:.2f}" if c["value"] > 0 else "-"
    return (f"{_number(ours['value'], figure)} | {theirs} "
            f"| {ratio} | {_range(ours.get('ratios'))} | {target} "
            f"| {_latency(ours)} | {_latency(c)} | {_cpu(ours)} | {_cpu(c)}")


def _cpu(measured):
    """
    The server's CPU time (user and system) per reply, connection or
    delivery, median of the rounds: what its own work costs, which a busy
    machine moves far less than it moves the rates.
    """
    cpu = measured.get("cpu")
    if not cpu:
        return ""
    return f"{cpu:.2f} ({measured['user']:.2f} user)"


def main(argv=None):
    arguments = parseArguments(argv)
    arguments.reactor = list(dict.fromkeys(arguments.reactor))
    figures = arguments.only or list(FIGURES) + [websocketBench.NAME]
    try:
        source = findTools(arguments.tools)
        limit = raiseFileLimit(arguments.idle + 100)
        if IDLE.name in figures and limit < arguments.idle + 100:
            raise BenchError(
                f"open-file limit {limit} is too low for --idle {arguments.idle}: "
                f"raise the hard limit (ulimit -Hn) or lower --idle"
            )
        with tempfile.TemporaryDirectory(prefix="sockservice-bench-") as temporary:
            workdir = Path(temporary)
            tools = compileTools(source, workdir)
            print(describeMachine(arguments), flush=True)
            print(f"C reference and load generator: {source['cbroker']}, {source['loadgen']}",
                  flush=True)
            results = Bench(arguments, tools, workdir).run(figures)
            if results:
                print(formatTable(results), flush=True)
                print(formatRounds(results), flush=True)
            if websocketBench.NAME in figures:
                print(websocketBench.measure(
                    lambda name, argv: Server(name, argv, workdir),
                    [twistdCommand(), "-n", "--pidfile="], arguments,
                ))
    except BenchError as e:
        sys.stderr.write(f"bench/run.py: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
