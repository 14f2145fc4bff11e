"""
sockservice: the line servers of the PHP socket tutorials, as a Twisted service.

Three modes share one wire (LF-terminated lines of bytes): C{greet}
acknowledges every line, C{collect} takes one message per connection and
stops after a count, C{relay} passes every line to every other client.
"""

__version__ = "0.1.0"
