"""
The three servers: greet, collect and relay, each a protocol and its factory.
"""
