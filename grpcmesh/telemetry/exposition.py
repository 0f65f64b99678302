"""/metrics: the collector's metrics in Prometheus's text format, from a registry of our own
(never prometheus-client's global one, which would add the process's Python metrics and is
shared by everything in the process)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Exposition:
    def __init__(self, *collectors: Collector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            self.registry.register(collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)
