"""The HTTP side of the service: the browser chat page and its WebSocket."""
