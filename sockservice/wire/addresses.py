"""
Human-readable forms of Twisted addresses, for log events and errors, and
the listen queue a server endpoint string asks for.
"""

import re

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress


def describeAddress(address):
    """
    Return C{host:port} (C{[host]:port} for IPv6), a UNIX socket's path, or
    C{repr} for anything else, so log lines name peers the way users type them.
    """
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, UNIXAddress):
        name = address.name
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name}" if name else "unix"
    return repr(address)


#: The listen queue asked for by default, where the system allows it.
BACKLOG = 1024

#: Server endpoint types that take a C{backlog=} argument.
_QUEUED_TYPES = ("tcp", "tcp6", "ssl", "unix")


def defaultBacklog(somaxconn="/proc/sys/net/core/somaxconn"):
    """
    L{BACKLOG}, or less where the system caps listen queues lower (the
    kernel would cut it to C{somaxconn} silently).
    """
    try:
        with open(somaxconn) as f:
            return min(BACKLOG, int(f.read()))
    except (OSError, ValueError):
        return BACKLOG


def withBacklog(description, backlog):
    """
    The server endpoint string C{description} with C{backlog=BACKLOG} added
    when it is of a type that takes one (TCP, SSL, UNIX) and names none:
    Twisted's default of 50 drops connections in bursts.
    """
    kind = description.split(":", 1)[0].lower()
    if kind not in _QUEUED_TYPES:
        return description
    if re.search(r"(?:^|(?<!\\):)backlog=", description):
        return description
    return f"{description}:backlog={backlog}"
