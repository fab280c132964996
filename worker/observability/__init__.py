"""Metrics (Prometheus), structured logs (structlog JSON) and the health/metrics HTTP endpoint."""
