"""
The fan-out behind relay mode. A hub knows the connected members and passes
what one publishes to all the others; the Redis backplane across nodes
stands in its place with the same three methods.
"""

from collections import deque


class History:
    """
    The last C{size} relayed lines, for clients that join later. Kept as
    the chunks they were relayed in (one C{count} per chunk, no splitting
    on the hot path), so it holds at most C{size} lines plus the older part
    of its first chunk: bounded by C{size} chunks of at most C{--max-line}
    bytes per line.
    """

    def __init__(self, size):
        self.size = size
        self._chunks = deque()
        self._lines = 0

    def add(self, chunk):
        """
        Keep C{chunk} (complete lines) as the newest.
        """
        self._chunks.append((chunk, chunk.count(b"\n")))
        self._lines += self._chunks[-1][1]
        self._trim()

    def seed(self, chunks):
        """
        Put C{chunks}, oldest first, before everything kept so far.
        """
        for chunk in reversed(chunks):
            self._chunks.appendleft((chunk, chunk.count(b"\n")))
            self._lines += self._chunks[0][1]
        self._trim()

    def _trim(self):
        chunks = self._chunks
        while chunks and self._lines - chunks[0][1] >= self.size:
            self._lines -= chunks.popleft()[1]

    def lines(self):
        """
        The last C{size} lines (fewer if fewer were relayed), as one chunk.
        """
        data = b"".join(chunk for chunk, count in self._chunks)
        start = 0
        for _ in range(self._lines - self.size):
            start = data.index(b"\n", start) + 1
        return data[start:]


class LocalHub:
    """
    Relays between the members connected to this process, in join order.
    Members provide C{deliver(data)}. Given C{history}, a member that joins
    first gets the last C{history} lines relayed, then every later one: the
    join is one step, so there is no gap or duplicate between the two.

    @ivar history: the L{History}, or L{None} when off.
    """

    def __init__(self, history=0):
        self.members = {}
        self.history = History(history) if history else None
        self.delivered = 0
        self.deliveredBytes = 0
        self._publishing = False
        self._leaving = []

    def join(self, member):
        if self.history is not None:
            past = self.history.lines()
            if past:
                self._count(past, 1)
                member.deliver(past)
        self.members[member] = None

    def leave(self, member):
        """
        C{member} gets nothing more; one that leaves while a publish hands
        out a chunk (a reader dropped as too slow) is taken out after it.
        """
        if self._publishing:
            self._leaving.append(member)
        else:
            self.members.pop(member, None)

    def publish(self, sender, data):
        """
        Deliver C{data} (complete lines) to every member but C{sender}.
        """
        if self.history is not None:
            self.history.add(data)
        self._count(data, len(self.members) - (sender in self.members))
        # A member may publish in turn (its deliver closing it with a last
        # line): only the outermost publish takes the leavers out.
        publishing, self._publishing = self._publishing, True
        try:
            for member in self.members:
                if member is not sender:
                    member.deliver(data)
        finally:
            self._publishing = publishing
            if not publishing and self._leaving:
                leaving, self._leaving = self._leaving, []
                for member in leaving:
                    self.members.pop(member, None)

    def _count(self, data, recipients):
        # Once per publish, not per member: the fan-out is the hot path.
        self.delivered += data.count(b"\n") * recipients
        self.deliveredBytes += len(data) * recipients

    def stats(self):
        """
        For metrics, read when scraped: C{delivered}, the lines handed to
        members (one line to 9 others is 9; history given on joining too),
        and C{deliveredBytes}.
        """
        return {"delivered": self.delivered, "deliveredBytes": self.deliveredBytes}
