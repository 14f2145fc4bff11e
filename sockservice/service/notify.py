"""
Telling systemd how the service is doing (the sd_notify protocol): one
datagram of C{KEY=value} lines on the AF_UNIX socket named by NOTIFY_SOCKET,
so a unit can be C{Type=notify} without a libsystemd dependency.
"""

import os
import socket
import time

from twisted.application import service
from twisted.internet.defer import gatherResults
from twisted.logger import Logger

from sockservice.wire.addresses import describeAddress


def notifyAddress(environ):
    """
    The socket address in C{environ}'s NOTIFY_SOCKET, or L{None} when it is
    unset or not an AF_UNIX address. A leading C{@} names the abstract
    namespace (a NUL byte on the wire).
    """
    name = os.fsencode(environ.get("NOTIFY_SOCKET", ""))
    if name.startswith(b"@"):
        return b"\0" + name[1:]
    if name.startswith(b"/"):
        return name
    return None


def sendNotification(address, state):
    """
    Send C{state} (C{"READY=1"}, ...) to C{address} as one datagram.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.sendto(state.encode("utf-8"), address)


class NotifyService(service.Service):
    """
    Sends C{READY=1} once every listener is bound and C{reactor} runs,
    C{RELOADING=1} then
    C{READY=1} around a reload, and C{STOPPING=1} when stopping; does
    nothing without NOTIFY_SOCKET. Add it after the listeners so it starts
    after them and stops before them.

    @ivar listeners: L{sockservice.service.listening.ListeningService}s.
    """

    log = Logger()
    status = ""

    def __init__(self, listeners, reactor, environ=os.environ, send=sendNotification,
                 monotonic=time.monotonic_ns):
        self.listeners = listeners
        self.address = notifyAddress(environ)
        self._reactor = reactor
        self._send = send
        self._monotonic = monotonic
        if self.address is None and environ.get("NOTIFY_SOCKET"):
            self.log.warn(
                "NOTIFY_SOCKET={name!r} is not an AF_UNIX socket: not notifying",
                name=environ["NOTIFY_SOCKET"],
            )

    def startService(self):
        service.Service.startService(self)
        if self.address is not None:
            # Ready once the reactor runs too: from then on its signal
            # handlers are in place, so a stop right away still drains.
            self._reactor.callWhenRunning(self._whenRunning)

    def _whenRunning(self):
        ports = gatherResults([each.whenListening() for each in self.listeners])
        ports.addCallback(self._ready)

    def _ready(self, ports):
        addresses = ", ".join(describeAddress(port.getHost()) for port in ports)
        self.status = f"listening on {addresses}"
        self.notify(f"READY=1\nSTATUS={self.status}")

    def reloading(self):
        """
        Tell systemd a reload has begun: it waits for L{reloaded}. The
        CLOCK_MONOTONIC time in microseconds is what sd_notify(3) asks to go
        with it.
        """
        if self.address is not None:
            self.notify(f"RELOADING=1\nMONOTONIC_USEC={self._monotonic() // 1000}")

    def reloaded(self):
        """
        Tell systemd the reload is over, whether or not it changed anything.
        """
        if self.address is not None:
            self.notify(f"READY=1\nSTATUS={self.status}")

    def stopService(self):
        service.Service.stopService(self)
        if self.address is not None:
            self.notify("STOPPING=1")

    def notify(self, state):
        try:
            self._send(self.address, state)
        except OSError as e:
            self.log.warn(
                "cannot notify systemd at NOTIFY_SOCKET: {reason}", reason=e.strerror
            )
