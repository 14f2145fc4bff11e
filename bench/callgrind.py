"""
Instructions per greet reply and per short connection, counted by callgrind.

Wall-clock rates need a quiet machine; instruction counts do not. This runs
the real C{twistd -n sockservice} (greet mode, default reactor and options)
under C{valgrind --tool=callgrind} and drives it from this process over
127.0.0.1, one request in flight:

 - greet replies: on one connection, send C{x\\n} and read its ack;
 - short connections: connect, read the greeting, send one line, read its
   ack, close.

Each load runs C{--few} and C{--many} times, each between a
C{callgrind_control --zero} and a C{--dump}, in C{--rounds} rounds. The
server logs up to 100 events of a kind one by one per second and folds the
rest (FoldingLog): a cost per second of wall-clock time, which under
valgrind's slowdown would land on the operations unevenly. So each run's
count is fitted, by least squares over all runs of a load, as a fixed part
(startup, the dump itself, idle wake-ups) plus a cost per operation plus a
cost per log line written meanwhile; the cost per operation is what is
printed, with the cost of one logged event beside it. A warm-up first lets
the interpreter specialise its hot code.

    .venv/bin/python bench/callgrind.py [--few 200] [--many 1000] [--rounds 3]
                                        [--server-args '...']

Bounded: fixed counts, each socket read times out after 30 s, and the
server is stopped by its PID at the end.
"""

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.realserver import LISTENING, twistdCommand  # noqa: E402

ACK = b"Information Received\n"
GREETING = b"connect\n"
TIMEOUT = 30


class CallgrindError(Exception):
    """
    A reason the count cannot go on, said in one line.
    """


def parseArguments(argv):
    parser = argparse.ArgumentParser(
        prog="bench/callgrind.py",
        description="Instructions per greet reply and per short connection (callgrind).",
    )
    parser.add_argument("--few", type=int, default=200,
                        help="operations in the baseline run of each load (default 200)")
    parser.add_argument("--many", type=int, default=1000,
                        help="operations in the measured run of each load (default 1000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each count (default 3)")
    parser.add_argument("--server-args", default="",
                        help="more sockservice options, e.g. '--idle-timeout 0'")
    arguments = parser.parse_args(argv)
    if not 0 < arguments.few < arguments.many:
        parser.error("need 0 < --few < --many")
    if arguments.rounds < 1:
        parser.error("need --rounds 1 or more")
    return arguments


def receive(client, expected):
    """
    Read exactly C{expected} from C{client}.
    """
    data = b""
    while len(data) < len(expected):
        chunk = client.recv(len(expected) - len(data))
        if not chunk:
            raise CallgrindError(f"server closed the connection after {data!r}")
        data += chunk
    if data != expected:
        raise CallgrindError(f"expected {expected!r}, got {data!r}")


def connect(port):
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    receive(client, GREETING)
    return client


def greetReplies(port, count):
    with connect(port) as client:
        for _ in range(count):
            client.sendall(b"x\n")
            receive(client, ACK)


def shortConnections(port, count):
    for _ in range(count):
        with connect(port) as client:
            client.sendall(b"x\n")
            receive(client, ACK)


class Server:
    """
    The real twistd under callgrind, its output in C{workdir}.
    """

    def __init__(self, workdir, serverArgs):
        self.workdir = workdir
        self.logPath = workdir / "twistd.log"
        self._log = open(self.logPath, "wb")
        argv = ["valgrind", "--tool=callgrind", "--vgdb=yes",
                f"--callgrind-out-file={workdir}/callgrind.out.%p",
                sys.executable, twistdCommand(), "-n", "--pidfile=", "sockservice",
                "--interface", "127.0.0.1", "--port", "0", *shlex.split(serverArgs)]
        # A fixed hash seed keeps dict and set layouts alike from run to run.
        env = dict(os.environ, PYTHONHASHSEED="0")
        self.process = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=workdir, env=env)
        deadline = time.monotonic() + 300
        while True:
            match = LISTENING.search(self.logPath.read_bytes())
            if match:
                self.port = int(match.group(1))
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise CallgrindError(f"twistd did not listen: {self._tail()}")
            time.sleep(0.2)

    def _tail(self):
        return self.logPath.read_bytes()[-400:].decode("utf-8", "replace")

    def control(self, option):
        result = subprocess.run(["callgrind_control", option, str(self.process.pid)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise CallgrindError(f"callgrind_control {option} failed: "
                                 f"{(result.stdout + result.stderr).strip()}")

    def count(self, load, number):
        """
        Instructions the server ran while C{load} did C{number} operations,
        and the log lines it wrote meanwhile.
        """
        before = set(self.workdir.glob("callgrind.out.*"))
        logged = self.logPath.stat().st_size
        self.control("--zero")
        load(self.port, number)
        # Let the server finish with the last close before counting.
        time.sleep(1)
        self.control("--dump")
        deadline = time.monotonic() + 60
        while not (dumped := set(self.workdir.glob("callgrind.out.*")) - before):
            if time.monotonic() > deadline:
                raise CallgrindError("callgrind wrote no dump")
            time.sleep(0.1)
        (path,) = dumped
        time.sleep(0.5)
        match = re.search(r"^summary:\s+(\d+)", path.read_text(), re.M)
        if match is None:
            raise CallgrindError(f"no summary in {path.name}")
        return int(match.group(1)), self.logPath.read_bytes()[logged:].count(b"\n")

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def measure(arguments, workdir):
    """
    Instructions per operation and per log line of each load, by name.
    """
    server = Server(workdir, arguments.server_args)
    try:
        greetReplies(server.port, 100)
        shortConnections(server.port, 100)
        loads = {"greet reply": greetReplies, "short connection": shortConnections}
        results = {}
        for name, load in loads.items():
            runs = []
            for _ in range(arguments.rounds):
                for number in (arguments.few, arguments.many):
                    instructions, lines = server.count(load, number)
                    runs.append((number, lines, instructions))
            results[name] = fit(runs)
        return results
    finally:
        server.stop()


def fit(runs):
    """
    Least squares for C{instructions = fixed + perOperation * operations +
    perLine * lines} over C{runs} of C{(operations, lines, instructions)};
    return C{(perOperation, perLine)}. When the lines written do not vary
    apart from the operations (a short run logs every event), their cost is
    part of the others and C{perLine} is L{None}; so it is when they vary
    too little apart from them to be told apart, which shows as a negative
    cost (no cost is below zero).
    """
    rows = [(1.0, float(n), float(lines)) for n, lines, _ in runs]
    values = [float(instructions) for _, _, instructions in runs]
    solution = _leastSquares(rows, values)
    if solution is None or min(solution[1:]) < 0:
        return _leastSquares([row[:2] for row in rows], values)[1], None
    return solution[1], solution[2]


def _leastSquares(rows, values):
    """
    The coefficients that fit C{rows} to C{values} best, from the normal
    equations by Gauss-Jordan elimination; L{None} if they are not determined.
    """
    size = len(rows[0])
    matrix = [[sum(r[i] * r[j] for r in rows) for j in range(size)]
              + [sum(r[i] * v for r, v in zip(rows, values))] for i in range(size)]
    for column in range(size):
        pivot = max(range(column, size), key=lambda row: abs(matrix[row][column]))
        if abs(matrix[pivot][column]) < 1e-6 * max(1.0, abs(matrix[0][0])):
            return None
        matrix[column], matrix[pivot] = matrix[pivot], matrix[column]
        for row in range(size):
            if row != column:
                factor = matrix[row][column] / matrix[column][column]
                matrix[row] = [a - factor * b for a, b in zip(matrix[row], matrix[column])]
    return [matrix[i][size] / matrix[i][i] for i in range(size)]


def main(argv=None):
    arguments = parseArguments(argv)
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            sys.stderr.write(f"bench/callgrind.py: {tool} not found: "
                             "install valgrind (apt-get install -y valgrind)\n")
            return 1
    try:
        with tempfile.TemporaryDirectory(prefix="sockservice-callgrind-") as temporary:
            results = measure(arguments, Path(temporary))
    except (CallgrindError, OSError) as e:
        sys.stderr.write(f"bench/callgrind.py: {e}\n")
        return 1
    for name, (perOperation, perLine) in results.items():
        line = f"instructions per {name}: {perOperation:,.0f}"
        if perLine is not None:
            line += f" (and {perLine:,.0f} per log line written)"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
