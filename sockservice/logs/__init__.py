"""
Logging that never becomes the bottleneck.
"""
