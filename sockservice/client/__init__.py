"""
The client side: protocols for each server and the C{sockservice} command.
"""
