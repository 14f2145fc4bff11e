"""
Relay fan-out: the in-process hub and the Redis backplane across nodes.
"""
