"""
The two modules that lean on Twisted internals for speed: a reactor without a
log context per event, and writes that skip the transport's buffer.
"""
