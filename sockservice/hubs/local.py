"""
The fan-out behind relay mode. A hub knows the connected members and passes
what one publishes to all the others; another backplane (Redis pub/sub across
nodes) can stand in its place with the same three methods.
"""


class LocalHub:
    """
    Relays between the members connected to this process, in join order.
    Members provide C{deliver(data)}.
    """

    def __init__(self):
        self.members = {}
        self.delivered = 0
        self.deliveredBytes = 0

    def join(self, member):
        self.members[member] = None

    def leave(self, member):
        self.members.pop(member, None)

    def publish(self, sender, data):
        """
        Deliver C{data} (complete lines) to every member but C{sender}.
        """
        self._count(data, len(self.members) - (sender in self.members))
        for member in self.members:
            if member is not sender:
                member.deliver(data)

    def _count(self, data, recipients):
        # Once per publish, not per member: the fan-out is the hot path.
        self.delivered += data.count(b"\n") * recipients
        self.deliveredBytes += len(data) * recipients

    def stats(self):
        """
        For metrics, read when scraped: C{delivered}, the lines handed to
        members (one line to 9 others is 9), and C{deliveredBytes}.
        """
        return {"delivered": self.delivered, "deliveredBytes": self.deliveredBytes}
