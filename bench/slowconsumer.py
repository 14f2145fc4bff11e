"""
The relay slow-consumer demonstration: one client that never reads while a
sender pushes a large payload (50 MB by default) through the real server
as fast as it can, and two clients read it. Prints the server's resident
memory before, at its peak and after, and whether the readers got every
byte intact.

    python -m bench.slowconsumer [--megabytes 50] [--rate 50] [--max-buffer 1048576]

Each reader is a process of its own reading a blocking socket into one
buffer. The sender pushes --rate MiB a second (0: as fast as the kernel
takes it). At several hundred MiB/s a reader that loses the CPU for a few
milliseconds falls more than --max-buffer behind and is dropped too, as the
limit intends; the default rate leaves readers on a busy 2-core machine
room to keep up.
"""

import argparse
import hashlib
import multiprocessing
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench.procstat import mebibytes, residentBytes
from tests.realserver import LISTENING, twistdCommand


class RelayServer:
    """
    C{twistd -n sockservice --mode relay} on a free loopback port, its log
    collected by a thread.
    """

    def __init__(self, *args):
        argv = [twistdCommand(), "-n", "--pidfile=", "sockservice", "--mode", "relay",
                "--interface", "127.0.0.1", "--port", "0", *args]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=tempfile.mkdtemp(prefix="sockservice-bench-"),
        )
        self.output = b""
        for line in self.process.stdout:
            self.output += line
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                break
        else:
            raise SystemExit(f"twistd ended before listening:\n{self.output.decode()}")
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self):
        for line in self.process.stdout:
            self.output += line

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port))

    def stop(self):
        self.process.terminate()
        self.process.wait(10)
        self._reader.join(10)


def payload(megabytes):
    """
    Numbered 1 KiB lines, C{megabytes} MiB of them.
    """
    filler = b"y" * 1014
    return b"".join(b"%08d " % i + filler + b"\n" for i in range(megabytes * 1024))


def read(port, size, ready, results):
    """
    Connect to C{port}, release C{ready}, and read until C{size} bytes or
    the end, straight into one buffer (hashed only at the end, so reading
    keeps up); put the count and digest on the C{results} queue.
    """
    client = socket.create_connection(("127.0.0.1", port))
    ready.release()
    buffer = bytearray(size)
    view = memoryview(buffer)
    count = 0
    while count < size:
        got = client.recv_into(view[count:])
        if not got:
            break
        count += got
    results.put((count, hashlib.sha256(view[:count]).hexdigest()))


def push(client, data, rate):
    """
    Send C{data} on C{client} at C{rate} MiB a second (0: unpaced).
    """
    if not rate:
        client.sendall(data)
        return
    piece = 1 << 18
    started = time.monotonic()
    for offset in range(0, len(data), piece):
        delay = started + offset / (rate * 2**20) - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.sendall(data[offset:offset + piece])


def demonstrate(megabytes, rate, maxBuffer):
    server = RelayServer("--max-buffer", str(maxBuffer))
    try:
        pid = server.process.pid
        data = payload(megabytes)
        stalled = server.connect()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ready = multiprocessing.Semaphore(0)
        results = multiprocessing.Queue()
        readers = [multiprocessing.Process(target=read, args=(server.port, len(data), ready, results))
                   for _ in range(2)]
        for reader in readers:
            reader.start()
            ready.acquire()
        sender = server.connect()
        time.sleep(0.2)
        before = residentBytes(pid)
        peak = before
        started = time.monotonic()
        pushing = threading.Thread(target=push, args=(sender, data, rate))
        pushing.start()
        while any(reader.is_alive() for reader in readers):
            peak = max(peak, residentBytes(pid))
            time.sleep(0.01)
        elapsed = time.monotonic() - started
        pushing.join()
        received = [results.get() for _ in readers]
        time.sleep(0.5)
        after = residentBytes(pid)
        expected = hashlib.sha256(data).hexdigest()
        intact = received == [(len(data), expected)] * 2
        dropped = b"is too slow" in server.output
        growth = peak - before
        print(f"pushed {len(data)} bytes through relay (--max-buffer {maxBuffer}) "
              f"in {elapsed:.2f}s ({len(data) / elapsed / 2**20:.0f} MiB/s)")
        print(f"readers received {[count for count, _ in received]} bytes; "
              f"all intact: {intact}")
        print(f"non-reading client dropped as too slow: {dropped}")
        print(f"server RSS before {mebibytes(before)}, peak {mebibytes(peak)}, "
              f"after {mebibytes(after)}; peak growth {mebibytes(growth)} "
              f"= {growth / maxBuffer:.1f} x --max-buffer")
        stalled.close()
        sender.close()
        return intact and dropped
    finally:
        server.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--max-buffer", type=int, default=1 << 20)
    args = parser.parse_args(argv)
    sys.exit(0 if demonstrate(args.megabytes, args.rate, args.max_buffer) else 1)


if __name__ == "__main__":
    main()
