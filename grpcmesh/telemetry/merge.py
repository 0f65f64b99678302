"""With --workers N, the primary's /metrics covers every worker: each worker serves its own
/metrics on its admin port, and the primary merges their texts with its own, sample by sample
(same name, same labels). prometheus-client's multiprocess mode would do it through files, but
it takes no custom collectors (FIELD-NOTES: per-worker scrape plus aggregation).

How samples with the same labels combine:
- counters and histograms: summed (each worker counts its own calls);
- grpcmesh_calls_in_flight: summed;
- grpcmesh_config_version, grpcmesh_registry_connected: the minimum (the oldest version still
  in force in some worker; connected only if every worker is);
- other gauges (an endpoint's latency estimate, cost, ejection): the maximum, the most
  pessimistic worker's view (each worker balances on its own; /endpoints shows each one's).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

_SUMMED_GAUGES = frozenset({"grpcmesh_calls_in_flight"})
_MIN_GAUGES = frozenset({"grpcmesh_config_version", "grpcmesh_registry_connected"})
Key = tuple[str, tuple[tuple[str, str], ...]]


def _rule(family: Metric) -> Callable[[float, float], float]:
    if family.type != "gauge" or family.name in _SUMMED_GAUGES:
        return lambda a, b: a + b
    return min if family.name in _MIN_GAUGES else max


def merge(texts: Iterable[str]) -> list[Metric]:
    """The families of every text, their samples combined (module docstring), in the order
    they first appear."""
    merged: dict[str, tuple[Metric, dict[Key, float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            entry = merged.get(family.name)
            if entry is None:
                entry = merged[family.name] = (
                    Metric(family.name, family.documentation, family.type), {})
            combine = _rule(family)
            values = entry[1]
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                old = values.get(key)
                values[key] = sample.value if old is None else combine(old, sample.value)
    out = []
    for metric, values in merged.values():
        for (name, labels), value in values.items():
            metric.add_sample(name, dict(labels), value)
        out.append(metric)
    return out


class _Merged(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merged_text(texts: Iterable[str]) -> bytes:
    """The texts merged into one exposition."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged(merge(texts)))
    return generate_latest(registry)
