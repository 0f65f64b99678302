"""What the sidecars tell their users about calls (issue 12; docs/telemetry.md).

Prometheus metrics: counters.py keeps the per-call counts (pure; the only per-call work),
collector.py turns them and the sidecar's state into metric families at scrape time,
exposition.py renders them, and merge.py sums the workers' expositions for the primary's
/metrics (--workers). window.py keeps the last minute for /stat (grpcmesh stat), tap.py feeds
grpcmesh tap, access_log.py writes --access-log, tracing.py records spans for --otlp.
"""
