"""
What one relay node publishes to the others: a one-line header naming the
node and the sender, then the sender's bytes untouched. The header keeps the
message readable in C{redis-cli subscribe}; the body is never decoded.
"""

from typing import NamedTuple

MAGIC = b"sockservice/1"


class Envelope(NamedTuple):
    node: bytes
    sender: int
    data: bytes


def pack(node, sender, data):
    """
    Wrap C{data} from local client number C{sender} of node C{node} (a token
    without spaces or line breaks).
    """
    return b"%s %s %d\n%s" % (MAGIC, node, sender, data)


def unpack(message):
    """
    The L{Envelope} in C{message}; L{ValueError} if it is not one.
    """
    header, newline, data = message.partition(b"\n")
    fields = header.split(b" ")
    if not newline or len(fields) != 3 or fields[0] != MAGIC or not fields[1]:
        raise ValueError(f"not a sockservice envelope: {message[:40]!r}")
    if not fields[2].isdigit():
        raise ValueError(f"bad sender in envelope: {header!r}")
    return Envelope(fields[1], int(fields[2]), data)
