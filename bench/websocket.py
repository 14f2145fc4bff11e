"""
WebSocket next to TCP, on one sockservice server in one run (bench/run.py
--only websocket): relay deliveries per second and memory per idle
connection, each measured the same way over both.

loadgen.c speaks only TCP, so this load client is Python, the same for both
kinds of connection: wsproto makes the handshake and one masked client frame,
which the senders replay; receivers only count bytes, since every message
has the same size. Ratios of the two within one run are what compare. Each
relay round is listed too, with the share of the time the load client was
busy, which shows whether it, not the server, set the pace.
"""

import re
import selectors
import socket
import time

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from bench.procstat import cpuSeconds
from bench.rounds import roundOrder

NAME = "websocket"
WEBSOCKET_LISTENING = re.compile(rb"\(WebSocket\) mode listening on 127\.0\.0\.1:(\d+)")
LINE = b"relay benchmark\n"
CLIENTS, SENDERS, WINDOW, BATCHES = 50, 10, 16, 8
TARGETS = {"relay": 0.5, "idle": 8 * 1024}


class TCPKind:
    """
    Lines over plain TCP: what a message looks like each way.
    """

    name = "TCP"
    received = len(LINE)

    def __init__(self, port):
        self.port = port

    def connect(self):
        client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        return client, b""

    def frame(self, client):
        return LINE


class WebSocketKind:
    """
    Lines as WebSocket messages: unmasked server frames of a 2-byte header,
    masked client frames built by wsproto.
    """

    name = "WebSocket"
    received = 2 + len(LINE) - 1

    def __init__(self, port):
        self.port = port
        self._connections = {}

    def connect(self):
        client = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        ws = WSConnection(ConnectionType.CLIENT)
        client.sendall(ws.send(Request(host=f"127.0.0.1:{self.port}", target="/ws")))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(4096)
            if not chunk:
                raise OSError("closed during the WebSocket handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        ws.receive_data(head + b"\r\n\r\n")
        if not any(isinstance(event, AcceptConnection) for event in ws.events()):
            raise OSError(f"WebSocket handshake refused: {head[:40]!r}")
        self._connections[client] = ws
        return client, rest

    def frame(self, client):
        return self._connections[client].send(TextMessage(LINE[:-1].decode()))


def relayRate(kind, duration, pid):
    """
    Deliveries per second through the relay server C{pid}, per second of
    its CPU time (what the load client's pace and other work on the machine
    change least), and the share of the time this load client was busy on
    a core (near 1, it would be what sets the pace): CLIENTS connections,
    SENDERS of them sending, each receiving from all the others. Senders
    send WINDOW messages at a time, while at most BATCHES of them are not
    yet received by everyone, so the server (not this client's round trips)
    sets the pace.
    """
    clients = [kind.connect()[0] for _ in range(CLIENTS)]
    senders = clients[:SENDERS]
    frames = {client: kind.frame(client) * WINDOW for client in senders}
    selector = selectors.DefaultSelector()
    receivedBytes = {}
    for client in clients:
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.setblocking(False)
        selector.register(client, selectors.EVENT_READ)
        receivedBytes[client] = 0
    sentBy = dict.fromkeys(clients, 0)
    sent = 0
    try:
        cpuBefore = cpuSeconds(pid)
        clientBefore = time.process_time()
        started = time.monotonic()
        deadline = started + duration
        while time.monotonic() < deadline:
            lag = max(
                sent - sentBy[client] - receivedBytes[client] // kind.received
                for client in clients
            )
            if lag <= (BATCHES - 1) * WINDOW * SENDERS:
                for sender in senders:
                    sender.setblocking(True)
                    sender.sendall(frames[sender])
                    sender.setblocking(False)
                    sentBy[sender] += WINDOW
                    sent += WINDOW
            for key, _ in selector.select(0.05):
                data = key.fileobj.recv(1 << 18)
                if not data:
                    raise OSError(f"the server closed a {kind.name} connection")
                receivedBytes[key.fileobj] += len(data)
        elapsed = time.monotonic() - started
        cpu = cpuSeconds(pid) - cpuBefore
        clientCPU = time.process_time() - clientBefore
    finally:
        selector.close()
        for client in clients:
            client.close()
    deliveries = sum(receivedBytes.values()) // kind.received
    return deliveries / elapsed, deliveries / cpu, clientCPU / elapsed


def idleMemory(kind, server, count):
    """
    Bytes of server memory per idle connection: resident size grown by
    opening C{count} connections that each got their greeting.
    """
    greetingSize = kind.received - len(LINE) + len(b"connect\n")
    warm, _ = kind.connect()
    warm.close()
    time.sleep(0.2)
    before = server.rss()
    clients = []
    try:
        for start in range(0, count, 25):
            batch = [kind.connect() for _ in range(min(25, count - start))]
            for client, data in batch:
                while len(data) < greetingSize:
                    chunk = client.recv(100)
                    if not chunk:
                        raise OSError(f"the server closed a {kind.name} connection")
                    data += chunk
                clients.append(client)
        time.sleep(0.5)
        after = server.rss()
    finally:
        for client in clients:
            client.close()
    return (after - before) / count


def _ratioRow(title, rounds):
    """
    A table row for C{rounds} of (TCP, WebSocket) rates: the median round
    by ratio, and the range of ratios.
    """
    tcp, web = sorted(rounds, key=lambda r: r[1] / r[0])[len(rounds) // 2]
    ratios = [web / tcp for tcp, web in rounds]
    return (f"| {title} | {tcp:,.0f} | {web:,.0f} | {web / tcp:.2f} "
            f"| {min(ratios):.2f}-{max(ratios):.2f} | >= {TARGETS['relay']} |")


def _roundsTable(rounds):
    """
    Each relay round of each server (C{rounds}: server name to a list of
    rounds of TCP and WebSocket figures from L{relayRate}), in the order run.
    """
    rows = [
        "| relay round | TCP per second | WebSocket | ratio | TCP per second of server CPU "
        "| WebSocket | ratio | load client busy (TCP, WebSocket) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for number in range(len(next(iter(rounds.values())))):
        for name, measured in rounds.items():
            tcp, web = measured[number]
            rows.append(
                f"| {number + 1}{name} | {tcp[0]:,.0f} | {web[0]:,.0f} | {web[0] / tcp[0]:.2f} "
                f"| {tcp[1]:,.0f} | {web[1]:,.0f} | {web[1] / tcp[1]:.2f} "
                f"| {tcp[2]:.2f}, {web[2]:.2f} |"
            )
    return rows


def measure(startServer, twistd, arguments):
    """
    Measure both figures over TCP and WebSocket on one server each (relay,
    then greet), C{arguments.rounds} rounds of relay alternating the two;
    return the table to print. With C{arguments.baseline} (another
    checkout's twistd), its servers are measured too, each round in turn
    with these, and its rows follow, named so. C{startServer(name, argv)}
    starts a server process (bench.run.Server).
    """
    commands = {"": twistd}
    if arguments.baseline:
        commands[" (baseline)"] = [arguments.baseline, *twistd[1:]]
    rows, roundRows = [], []
    for mode in ("relay", "greet"):
        servers = {}
        try:
            for name, command in commands.items():
                server = servers[name] = startServer(f"sockservice-{mode}-websocket{name}", [
                    *command, "sockservice", "--mode", mode, "--interface", "127.0.0.1",
                    "--port", "0", "--websocket", "tcp:0:interface=127.0.0.1",
                ])
                webPort = WEBSOCKET_LISTENING.search(server.logPath.read_bytes()).group(1)
                server.kinds = [TCPKind(server.port), WebSocketKind(int(webPort))]
            if mode == "relay":
                rounds = {name: [] for name in servers}
                for number in range(arguments.rounds):
                    for name in roundOrder(list(servers), number):
                        server = servers[name]
                        measured = {
                            kind: relayRate(kind, arguments.duration, server.process.pid)
                            for kind in roundOrder(server.kinds, number)
                        }
                        rounds[name].append([measured[kind] for kind in server.kinds])
                for name in servers:
                    for title, which in [("", 0), (" of server CPU", 1)]:
                        rows.append(_ratioRow(
                            f"relay deliveries per second{title} "
                            f"({CLIENTS} clients, {SENDERS} senders){name}",
                            [(tcp[which], web[which]) for tcp, web in rounds[name]],
                        ))
                roundRows = _roundsTable(rounds)
            else:
                for name, server in servers.items():
                    tcp, web = (idleMemory(kind, server, arguments.idle) for kind in server.kinds)
                    rows.append(
                        f"| memory per idle connection ({arguments.idle}){name} "
                        f"| {tcp / 1024:.2f} KB | {web / 1024:.2f} KB | {web / tcp:.2f} | "
                        f"| <= {TARGETS['idle'] / 1024:g} KB |"
                    )
        finally:
            for server in servers.values():
                server.stop()
    return "\n".join([
        "| WebSocket next to TCP (Python load client) | TCP | WebSocket | ratio | rounds "
        "| target |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        *roundRows,
    ])
