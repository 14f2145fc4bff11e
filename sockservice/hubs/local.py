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

    def join(self, member):
        self.members[member] = None

    def leave(self, member):
        self.members.pop(member, None)

    def publish(self, sender, data):
        """
        Deliver C{data} (complete lines) to every member but C{sender}.
        """
        for member in self.members:
            if member is not sender:
                member.deliver(data)
