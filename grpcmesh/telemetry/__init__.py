"""What the sidecars tell their users about calls: metrics, access logs, traces (issue 12)."""
