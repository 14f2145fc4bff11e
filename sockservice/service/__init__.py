"""
Lifecycles: listening, readiness for systemd, and the graceful stop.
"""
