"""
What one relay node appends to the stream for the others: a one-line header
naming the node, the sender and the node's number of the chunk's last line,
then the sender's bytes untouched. The header keeps the entry readable in
C{redis-cli xrange}; the body is never decoded.

The line number makes delivery exact: a receiver drops a chunk whose last
line it has already had (sent again after a reconnect) and counts the lines
missing before one that skips ahead (trimmed, or lost with Redis).
"""

from typing import NamedTuple

MAGIC = b"sockservice/2"


class Envelope(NamedTuple):
    node: bytes
    sender: int
    line: int
    data: bytes


def prefix(node):
    """
    How every envelope from C{node} starts: a node skips its own entries by
    it without unpacking them.
    """
    return b"%s %s " % (MAGIC, node)


def pack(node, sender, line, data):
    """
    Wrap C{data} from local client number C{sender} (0: several) of node
    C{node} (a token without spaces or line breaks), whose last line is that
    node's line number C{line}.
    """
    return b"%s%d %d\n%s" % (prefix(node), sender, line, data)


def unpack(message):
    """
    The L{Envelope} in C{message}; L{ValueError} if it is not one.
    """
    header, newline, data = message.partition(b"\n")
    fields = header.split(b" ")
    if not newline or len(fields) != 4 or fields[0] != MAGIC or not fields[1]:
        raise ValueError(f"not a sockservice envelope: {message[:40]!r}")
    if not (fields[2].isdigit() and fields[3].isdigit()):
        raise ValueError(f"bad numbers in envelope: {header[:80]!r}")
    return Envelope(fields[1], int(fields[2]), int(fields[3]), data)
