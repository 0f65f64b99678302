"""Telemetry: Prometheus metrics on the sidecar's admin port (docs/telemetry.md).

counters.py keeps the per-call counts (pure; the only per-call work), collector.py turns them
and the sidecar's state into metric families at scrape time, exposition.py renders them, and
merge.py sums the workers' expositions for the primary's /metrics (--workers).
"""
