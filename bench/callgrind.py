"""
Instructions per greet reply and per short connection, counted by callgrind.

Wall-clock rates need a quiet machine; instruction counts do not. This runs
the real C{twistd -n sockservice} (greet mode, default reactor and options)
under C{valgrind --tool=callgrind} and drives it from this process over
127.0.0.1, one request in flight:

 - greet replies: on one connection, send C{x\\n} and read its ack;
 - short connections: connect, read the greeting, send one line, read its
   ack, close.

Each load runs twice, C{--few} and C{--many} times, between a
C{callgrind_control --zero} and a C{--dump}; the difference between the two
counts, divided by the difference in operations, is the cost of one
operation, so startup, the dump itself and the reactor's idle wake-ups
cancel out. A warm-up first lets the interpreter specialise its hot code.

    .venv/bin/python bench/callgrind.py [--few 200] [--many 1000] [--server-args '...']

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
    parser.add_argument("--server-args", default="",
                        help="more sockservice options, e.g. '--idle-timeout 0'")
    arguments = parser.parse_args(argv)
    if not 0 < arguments.few < arguments.many:
        parser.error("need 0 < --few < --many")
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
        Instructions the server ran while C{load} did C{number} operations.
        """
        before = set(self.workdir.glob("callgrind.out.*"))
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
        return int(match.group(1))

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
    Instructions per operation of each load, by name.
    """
    server = Server(workdir, arguments.server_args)
    try:
        greetReplies(server.port, 100)
        shortConnections(server.port, 100)
        loads = {"greet reply": greetReplies, "short connection": shortConnections}
        results = {}
        for name, load in loads.items():
            few = server.count(load, arguments.few)
            many = server.count(load, arguments.many)
            results[name] = (many - few) / (arguments.many - arguments.few)
        return results
    finally:
        server.stop()


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
    for name, instructions in results.items():
        print(f"instructions per {name}: {instructions:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
