"""
Human-readable forms of Twisted addresses, for log events and errors.
"""

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
