"""HTTP beside the line protocol: Prometheus metrics and health checks."""
