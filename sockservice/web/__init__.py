"""
The HTTP side of the service: the browser chat page and its WebSocket, and
Prometheus metrics with health checks on a listener of their own.
"""
